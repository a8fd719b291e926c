"""``video_attention`` on the ``cpu`` backend: autograd around the OpenMP kernels of csrc/cpu/attention.cpp.

q, k, v: (B, T, S, heads, D) of any strides with a contiguous head dimension (views of one fused QKV
projection are read in place; other layouts are copied first). One OpenMP work item per sequence: it gathers
the sequence's q, k, v rows into fp32 buffers, computes softmax(scale q k^T) v row by row and keeps the
logsumexp of each row, so the backward recomputes the probabilities from it instead of re-running the
forward (the reference's backward re-runs it under ``torch.func.vjp``).

Ops:
- ``fastvdm::video_attention_cpu_fwd(q, k, v, axis, scale) -> (o, lse)``: o (B, T, S, heads, D) contiguous in
  q's dtype; lse (B, T, S, heads) fp32, the per-query logsumexp (natural log), non-differentiable.
- ``fastvdm::video_attention_cpu_bwd(do, q, k, v, o, lse, axis, scale) -> (dq, dk, dv)``, each contiguous.

Supported: fp32, bf16, fp16 (fp32 arithmetic), CPU tensors, any head dim. Work is split over sequences only,
so a joint-axis call with fewer sequences (B * heads) than threads leaves threads idle.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fastvdm.ops import _dispatch
from fastvdm.ops.attention_common import backend_ops
from fastvdm.ops.extensions import cpu_extension

cpu_extension()  # registers torch.ops.fastvdm_cpu.attention_{forward,backward}

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_attention_fwd, video_attention = backend_ops("cpu", torch.ops.fastvdm_cpu)


def supports(q: Tensor, k: Tensor, v: Tensor, axis: str, scale: Optional[float] = None) -> Optional[str]:
    """Why the CPU kernels cannot serve these inputs, or None."""
    if q.device.type != "cpu":
        return f"the cpu backend runs on CPU tensors, got a tensor on {q.device}"
    if q.dtype not in _DTYPES:
        return f"dtype {q.dtype} is not supported (float32, bfloat16, float16)"
    return None


# auto on "cpu": bench/bench_attention.py --small measures it faster than the reference (forward and
# forward+backward) on this machine (bench/RESULTS.md).
_dispatch.register("video_attention", "cpu", video_attention, supports=supports, auto={"cpu": 10})
