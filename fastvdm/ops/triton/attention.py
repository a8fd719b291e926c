"""``video_attention`` on the ``triton`` backend: the launchers of :mod:`fastvdm.kernels.attention` as
``fastvdm::video_attention_triton_{fwd,bwd}`` triton ops, with the autograd every backend shares
(:mod:`fastvdm.ops.attention_common`).

- ``fastvdm::video_attention_triton_fwd(q, k, v, axis, scale) -> (o, lse)``: o (B, T, S, heads, D) contiguous
  in q's dtype; lse (Z, N) fp32, the per-query log-sum-exp (Z sequences of length N), non-differentiable.
- ``fastvdm::video_attention_triton_bwd(do, q, k, v, o, lse, axis, scale) -> (dq, dk, dv)``.

Supported: fp32, bf16, fp16 (fp32 accumulation), head dim 1 <= D <= 128, any sequence length. CUDA tensors,
or CPU tensors under ``TRITON_INTERPRET=1`` (fp32/fp16: the interpreter has no bf16 ``tl.dot``).
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor
from torch.library import triton_op

from fastvdm.kernels import attention as kernels
from fastvdm.ops import _dispatch
from fastvdm.ops.attention_common import backend_ops

MAX_HEAD_DIM = kernels.MAX_HEAD_DIM
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_attention_fwd, video_attention = backend_ops("triton", kernels, op_decorator=triton_op)


def supports(q: Tensor, k: Tensor, v: Tensor, axis: str, scale: Optional[float] = None) -> Optional[str]:
    """Why the Triton kernels cannot serve these inputs, or None."""
    if q.dtype not in _DTYPES:
        return f"dtype {q.dtype} is not supported (fp32, bf16, fp16)"
    D = q.shape[-1]
    if D > MAX_HEAD_DIM:
        return f"head dim D={D} > {MAX_HEAD_DIM} is not supported"
    if q.device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return "CPU tensors run only under TRITON_INTERPRET=1 (tests)"
        if q.dtype == torch.bfloat16:
            return "the Triton interpreter has no bf16 tl.dot (bf16 runs on a GPU)"
    elif q.device.type != "cuda":
        return f"device {q.device.type} is not supported (cuda, or cpu under TRITON_INTERPRET=1)"
    return None


_dispatch.register("video_attention", "triton", video_attention, supports=supports, auto={"cuda": 20})
