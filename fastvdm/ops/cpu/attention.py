"""``video_attention`` on the ``cpu`` backend: autograd around the OpenMP kernels of csrc/cpu/attention.cpp.

q, k, v: (B, T, S, heads, D) of any strides with a contiguous head dimension (views of one fused QKV
projection are read in place; other layouts are copied first). The kernels pack each sequence into fp32
panels and run register-blocked GEMM micro-kernels (AVX-512 / AVX2 / baseline, chosen at load time) for
q k^T and P v with an online softmax on the tile; the forward keeps each row's logsumexp, so the backward
recomputes the probabilities from it instead of re-running the forward.

Two call paths with the same kernels and results: under ``torch.compile`` the ``torch.library`` custom ops
(fake kernels registered, so graphs capture them); in eager mode a plain ``torch.autograd.Function`` (or, when
no gradient is needed, the C++ op directly), which skips the custom op's Python dispatch: about 70 us of
host time per call, a third of the tiny model's attention (bench/RESULTS.md, "per-call host overhead").

Ops:
- ``fastvdm::video_attention_cpu_fwd(q, k, v, axis, scale) -> (o, lse)``: o (B, T, S, heads, D) contiguous in
  q's dtype; lse (B, T, S, heads) fp32, the per-query logsumexp (natural log), non-differentiable.
- ``fastvdm::video_attention_cpu_bwd(do, q, k, v, o, lse, axis, scale) -> (dq, dk, dv)``, each contiguous.

Supported: fp32, bf16, fp16 (fp32 arithmetic), CPU tensors, any head dim (padded to the vector width inside
the kernel). Work is split over sequences and, when there are fewer sequences than threads need, over query
blocks (forward) or key chunks (backward).
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

_attention_fwd, _custom_op_attention = backend_ops("cpu", torch.ops.fastvdm_cpu)
_C = torch.ops.fastvdm_cpu
_AXES = {"spatial": 0, "temporal": 1, "joint": 2}


class _Attention(torch.autograd.Function):
    """Eager autograd around the C++ ops (the same saved tensors and backward as the custom op)."""

    @staticmethod
    def forward(ctx, q, k, v, axis: str, scale: float):
        o, lse = _C.attention_forward(q, k, v, _AXES[axis], scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.axis, ctx.scale = axis, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the custom op, whose derivative refuses with a clear error
            return (*torch.ops.fastvdm.video_attention_cpu_bwd(do, q, k, v, o, lse, ctx.axis, ctx.scale), None, None)
        dq, dk, dv = _C.attention_backward(do, q, k, v, o, lse, _AXES[ctx.axis], ctx.scale)
        return dq, dk, dv, None, None


def video_attention(q: Tensor, k: Tensor, v: Tensor, axis: str, scale: Optional[float] = None) -> Tensor:
    """Attention over ``axis`` of (B, T, S, heads, D) q, k, v (any strides); scale None = D**-0.5.

    Returns (B, T, S, heads, D), contiguous, in q's dtype. Differentiable in q, k, v.
    """
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if torch.compiler.is_compiling():
        return _custom_op_attention(q, k, v, axis, scale)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _Attention.apply(q, k, v, axis, float(scale))
    return _C.attention_forward(q, k, v, _AXES[axis], float(scale))[0]


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
