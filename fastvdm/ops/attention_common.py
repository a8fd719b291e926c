"""Host-side pieces shared by every kernel backend of ``video_attention`` (triton, cpu, cuda).

Each backend provides two ops with the same contract:
- forward(q, k, v, axis, scale) -> (o (B, T, S, heads, D) contiguous in q's dtype, lse: fp32 per-query
  logsumexp of the scaled scores, natural log, non-differentiable; its layout is the backend's own);
- backward(do, q, k, v, o, lse, axis, scale) -> (dq, dk, dv), each (B, T, S, heads, D) contiguous.
:func:`register_autograd` wires them together, :func:`public_function` is the op's public signature on top of
the forward, and :func:`backend_ops` builds both ops for a backend's launchers (the C++ extensions' namespaces, or
:mod:`fastvdm.kernels.attention`) whose ``attention_forward`` / ``attention_backward`` take the axis as an int
(0 spatial, 1 temporal, 2 joint).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

AXES = {"spatial": 0, "temporal": 1, "joint": 2}


def register_autograd(forward_op, backward_op) -> None:
    """Make ``forward_op`` differentiable in q, k, v through ``backward_op`` (o and lse saved)."""

    def setup(ctx, inputs, output):
        q, k, v, ctx.axis, ctx.scale = inputs
        o, lse = output
        ctx.mark_non_differentiable(lse)
        ctx.save_for_backward(q, k, v, o, lse)

    def backward(ctx, do, _dlse):
        q, k, v, o, lse = ctx.saved_tensors
        if do is None:
            return None, None, None, None, None
        dq, dk, dv = backward_op(do, q, k, v, o, lse, ctx.axis, ctx.scale)
        return dq, dk, dv, None, None

    forward_op.register_autograd(backward, setup_context=setup)
    from fastvdm.ops.double_backward import refuse_double_backward

    refuse_double_backward(backward_op, "video_attention")


def public_function(forward_op) -> Callable:
    """``video_attention(q, k, v, axis, scale=None)`` on top of ``forward_op``."""

    def video_attention(q: Tensor, k: Tensor, v: Tensor, axis: str, scale: Optional[float] = None) -> Tensor:
        """Attention over ``axis`` of (B, T, S, heads, D) q, k, v (any strides); scale None = D**-0.5.

        Returns (B, T, S, heads, D), contiguous, in q's dtype. Differentiable in q, k, v.
        """
        if scale is None:
            scale = q.shape[-1] ** -0.5
        return forward_op(q, k, v, axis, float(scale))[0]

    return video_attention


def backend_ops(backend: str, kernels, op_decorator: Optional[Callable] = None):
    """``fastvdm::video_attention_<backend>_{fwd,bwd}`` ops (autograd registered) calling
    ``kernels.attention_forward`` / ``kernels.attention_backward`` (``torch.ops.fastvdm_cpu``,
    ``torch.ops.fastvdm_cuda`` or :mod:`fastvdm.kernels.attention`), which take the axis as an int.
    ``op_decorator``: ``torch.library.custom_op`` (default; a fake is registered, lse (B, T, S, heads) fp32) or
    ``torch.library.triton_op`` (which traces the launchers for its fake). Returns (forward op, public function)."""
    custom = op_decorator is None
    op_decorator = op_decorator or torch.library.custom_op

    @op_decorator(f"fastvdm::video_attention_{backend}_fwd", mutates_args=())
    def forward(q: Tensor, k: Tensor, v: Tensor, axis: str, scale: float) -> tuple[Tensor, Tensor]:
        return kernels.attention_forward(q, k, v, AXES[axis], scale)

    @op_decorator(f"fastvdm::video_attention_{backend}_bwd", mutates_args=())
    def backward(
        do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, axis: str, scale: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        return kernels.attention_backward(do, q, k, v, o, lse, AXES[axis], scale)

    if custom:

        @forward.register_fake
        def _(q, k, v, axis, scale):
            B, T, S, H, D = q.shape
            o = torch.empty((B, T, S, H, D), dtype=q.dtype, device=q.device)
            return o, torch.empty((B, T, S, H), dtype=torch.float32, device=q.device)

        @backward.register_fake
        def _(do, q, k, v, o, lse, axis, scale):
            return tuple(torch.empty(q.shape, dtype=q.dtype, device=q.device) for _ in range(3))

    register_autograd(forward, backward)
    return forward, public_function(forward)
