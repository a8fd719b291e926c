"""Triton backend of ``fastvdm.ops.video_attention``: fused spatial / temporal / joint attention, fwd + bwd.

q, k, v: (B, T, S, heads, D) with arbitrary strides (typically views into one fused (B, T, S, 3, heads, D)
QKV projection); they are addressed in place through their 5-D strides, never permuted or copied.

Kernels:
- ``axis="spatial"`` and ``"joint"`` (and ``"temporal"`` with T > 64): flash attention,
  :mod:`fastvdm.kernels.flash_attention` (online softmax, LSE saved; FA2 backward with a separate dQ kernel).
- ``axis="temporal"`` with T <= 64: :mod:`fastvdm.kernels.temporal_attention`, many (b, s, head) rows per
  program with the whole T x T tile in registers, single-pass softmax, one flat grid axis.

Launchers (kernels launched through ``wrap_triton``; the ops, their autograd and the dispatch registration
are in :mod:`fastvdm.ops.triton.attention`; this module imports nothing of fastvdm):
- :func:`attention_forward` ``(q, k, v, axis, scale) -> (o, lse)``: o (B, T, S, heads, D) contiguous in q's
  dtype; lse (Z, N) fp32, the per-query log-sum-exp (Z sequences of length N).
- :func:`attention_backward` ``(do, q, k, v, o, lse, axis, scale) -> (dq, dk, dv)``: each (B, T, S, heads, D)
  contiguous in q's dtype.

Supported: fp32, bf16, fp16 (fp32 accumulation; fp32 dots in IEEE precision, not TF32), any head dim
1 <= D <= 128 (padded to a power of two >= 16 with masks), any sequence length. CUDA tensors, or CPU tensors
under ``TRITON_INTERPRET=1`` (fp32/fp16: the interpreter has no bf16 ``tl.dot``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import flash_attention as _flash
from . import temporal_attention as _temporal

MAX_HEAD_DIM = 128


# ------------------------------------------------------------------------------------------------ layout
def _flash_geometry(axis: str, tensors) -> tuple[tuple, list[tuple]]:
    """Geometry ``(Z, N, INNER, G, H, SPLIT)`` and per tensor the 6 strides ``(b, g, h, outer, inner, d)``.

    See :mod:`fastvdm.kernels.flash_attention` for how they address token n of problem z.
    """
    B, T, S, H, D = tensors[0].shape
    if axis == "spatial":  # sequences over s, problems (b, t, h)
        geom = (B * T * H, S, S, T, H, False)
        strides = [(x.stride(0), x.stride(1), x.stride(3), 0, x.stride(2), x.stride(4)) for x in tensors]
    elif axis == "temporal":  # sequences over t, problems (b, s, h)
        geom = (B * S * H, T, T, S, H, False)
        strides = [(x.stride(0), x.stride(2), x.stride(3), 0, x.stride(1), x.stride(4)) for x in tensors]
    elif axis == "joint":  # sequences over n = t*S + s, problems (b, h)
        # One stride per token when every tensor has stride_t == S * stride_s (e.g. the fused QKV layout).
        # (With S == 1 the token stride is stride_t; with T == 1 it is stride_s.)
        split = T > 1 and S > 1 and any(x.stride(1) != S * x.stride(2) for x in tensors)
        geom = (B * H, T * S, S, 1, H, split)
        seq = 1 if S == 1 else 2
        strides = [(x.stride(0), 0, x.stride(3), x.stride(1), x.stride(seq), x.stride(4)) for x in tensors]
    else:
        raise ValueError(f"axis must be 'spatial', 'temporal' or 'joint', got {axis!r}")
    return geom, strides


def _use_temporal_kernel(axis: str, T: int) -> bool:
    return axis == "temporal" and T <= _temporal.MAX_T


# ------------------------------------------------------------------------------------------------ launchers
# The contract of the C++ extensions' attention_forward / attention_backward (fastvdm.ops.attention_common):
# axis as an int (0 spatial, 1 temporal, 2 joint), scale resolved. Kernels are launched through wrap_triton, so
# the launchers run inside the torch.library.triton_op s of fastvdm/ops/triton/attention.py.
AXES = ("spatial", "temporal", "joint")


def attention_forward(q: Tensor, k: Tensor, v: Tensor, axis: int, scale: float) -> tuple[Tensor, Tensor]:
    """(o, lse): o (B, T, S, H, D) contiguous in q's dtype; lse (Z, N) fp32 (natural log)."""
    axis = AXES[axis]
    B, T, S, H, D = q.shape
    o = torch.empty((B, T, S, H, D), dtype=q.dtype, device=q.device)
    if _use_temporal_kernel(axis, T):
        lse = torch.empty((B * S * H, T), dtype=torch.float32, device=q.device)
        _temporal.temporal_forward(q, k, v, o, lse, scale)
    else:
        geom, (sq, sk, sv, so) = _flash_geometry(axis, (q, k, v, o))
        lse = torch.empty((geom[0], geom[1]), dtype=torch.float32, device=q.device)
        _flash.flash_forward(q, k, v, o, lse, sq, sk, sv, so, geom, D, scale)
    return o, lse


def attention_backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, axis: int,
                       scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv), each (B, T, S, H, D) contiguous in q's dtype, given dO = ``do`` (any strides)."""
    axis = AXES[axis]
    B, T, S, H, D = q.shape
    dq = torch.empty((B, T, S, H, D), dtype=q.dtype, device=q.device)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    if _use_temporal_kernel(axis, T):
        _temporal.temporal_backward(q, k, v, do, lse, dq, dk, dv, scale)
    else:
        geom, (sq, sk, sv, so, sdo, sg) = _flash_geometry(axis, (q, k, v, o, do, dq))
        _flash.flash_backward(q, k, v, o, do, lse, dq, dk, dv, sq, sk, sv, so, sdo, sg, geom, D, scale)
    return dq, dk, dv
