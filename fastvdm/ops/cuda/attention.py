"""``video_attention`` on the ``cuda`` backend: autograd around the kernels of csrc/cuda/attention.cu.

q, k, v: (B, T, S, heads, D) of any strides (typically views into one fused QKV projection), read in place by
the kernels (no permute, no copy). Kernels (csrc/cuda/attention_launch.h):
- sequences of L <= 32 tokens (the temporal axis of video models; also short spatial / joint ones): one warp
  per sequence, fp32 arithmetic, every batch dimension on grid.x (no 65,535 limit);
- longer sequences: flash attention (online softmax forward; key-block-parallel backward with fp32 dq
  atomics), tile products on tensor cores (WMMA) for bf16 / fp16 and in fp32 FMAs for fp32.

Ops:
- ``fastvdm::video_attention_cuda_fwd(q, k, v, axis, scale) -> (o, lse)``: o (B, T, S, heads, D) contiguous in
  q's dtype; lse (B, T, S, heads) fp32, the per-query logsumexp (natural log), non-differentiable.
- ``fastvdm::video_attention_cuda_bwd(do, q, k, v, o, lse, axis, scale) -> (dq, dk, dv)``, each contiguous.

Supported: fp32, bf16, fp16, head dim D <= 128, CUDA tensors.

Status: compiled, not yet run on a GPU (no GPU was available when this was written); not an ``auto`` choice
until it has been verified and measured on one.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

import fastvdm._C_cuda  # noqa: F401  (registers torch.ops.fastvdm_cuda.attention_{forward,backward})
from fastvdm.ops import _dispatch
from fastvdm.ops.attention_common import backend_ops

MAX_HEAD_DIM = 128
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_attention_fwd, video_attention = backend_ops("cuda", torch.ops.fastvdm_cuda)


def supports(q: Tensor, k: Tensor, v: Tensor, axis: str, scale: Optional[float] = None) -> Optional[str]:
    """Why the CUDA kernels cannot serve these inputs, or None."""
    if q.device.type != "cuda":
        return f"the cuda backend runs on CUDA tensors, got a tensor on {q.device}"
    if q.dtype not in _DTYPES:
        return f"dtype {q.dtype} is not supported (fp32, bf16, fp16)"
    if q.shape[-1] > MAX_HEAD_DIM:
        return f"head dim D={q.shape[-1]} > {MAX_HEAD_DIM} is not supported"
    return None


# No auto priority: these kernels have not yet run on a GPU (bench/RESULTS.md). Forced with use_backend("cuda").
_dispatch.register("video_attention", "cuda", video_attention, supports=supports)
