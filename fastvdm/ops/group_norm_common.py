"""Host-side pieces shared by every kernel backend of ``group_norm`` (triton, cpu, cuda).

Each backend provides two ops with the same contract:
- forward(x, num_groups, weight, bias, eps, scale, shift, activation) -> (y of x's shape, mean (B, G) fp32,
  rstd (B, G) fp32);
- backward(grad, x, mean, rstd, num_groups, weight, bias, scale, shift, activation) -> (dx of x's shape,
  sum_s dz (B, C) fp32, sum_s dz * xhat (B, C) fp32), dz = dy * act'(z).
:func:`register_autograd` wires them together; the parameter gradients are O(B * C) torch arithmetic
(:func:`param_grads`). :func:`extension_ops` builds both ops for a C++ extension namespace (cpu, cuda).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def as_bcs(x: Tensor) -> Tensor:
    """x (B, C, *rest) as a (B, C, S) tensor: a view for contiguous / channels-last inputs, else a copy."""
    x3 = x.reshape(x.shape[0], x.shape[1], -1)
    if not (x3.is_contiguous() or x3.transpose(1, 2).is_contiguous()):
        x3 = x3.contiguous()
    return x3


def param_grads(
    sum_dz: Tensor,
    sum_dzx: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    scale: Optional[Tensor],
    shift: Optional[Tensor],
    needs: tuple,
) -> tuple:
    """(dweight, dbias, dscale, dshift) from the per-(n, c) sums (B, C) fp32 of dz and dz * xhat.

    With a = w * (1 + scale), b = bias * (1 + scale) + shift: dweight = sum_n (1 + scale) * sum_dzx,
    dbias = sum_n (1 + scale) * sum_dz, dscale = w * sum_dzx + bias * sum_dz, dshift = sum_dz.
    ``needs``: needs_input_grad of (weight, bias, scale, shift); a gradient not needed is None.
    """
    need_w, need_b, need_scale, need_shift = needs
    mod = None if scale is None else 1.0 + scale.float()
    dweight = dbias = dscale = dshift = None
    if weight is not None and need_w:
        dweight = (sum_dzx if mod is None else sum_dzx * mod).sum(0).to(weight.dtype)
    if bias is not None and need_b:
        dbias = (sum_dz if mod is None else sum_dz * mod).sum(0).to(bias.dtype)
    if scale is not None and need_scale:
        ds = sum_dzx if weight is None else sum_dzx * weight.float()
        if bias is not None:
            ds = ds + sum_dz * bias.float()
        dscale = ds.to(scale.dtype)
    if shift is not None and need_shift:
        dshift = sum_dz.to(shift.dtype)
    return dweight, dbias, dscale, dshift


def register_autograd(forward_op, backward_op) -> None:
    """Make ``forward_op`` differentiable in x, weight, bias, scale, shift through ``backward_op``."""

    def setup(ctx, inputs, output):
        x, ctx.num_groups, weight, bias, _, scale, shift, ctx.activation = inputs
        _, mean, rstd = output
        ctx.mark_non_differentiable(mean, rstd)
        ctx.save_for_backward(x, weight, bias, scale, shift, mean, rstd)

    def backward(ctx, grad, _grad_mean, _grad_rstd):
        x, weight, bias, scale, shift, mean, rstd = ctx.saved_tensors
        dx, sum_dz, sum_dzx = backward_op(
            grad, x, mean, rstd, ctx.num_groups, weight, bias, scale, shift, ctx.activation
        )
        needs = ctx.needs_input_grad
        dweight, dbias, dscale, dshift = param_grads(
            sum_dz, sum_dzx, weight, bias, scale, shift, (needs[2], needs[3], needs[5], needs[6])
        )
        return (dx if needs[0] else None), None, dweight, dbias, None, dscale, dshift, None

    forward_op.register_autograd(backward, setup_context=setup)
    from fastvdm.ops.double_backward import refuse_double_backward

    refuse_double_backward(backward_op, "group_norm")


def extension_ops(backend: str, kernels):
    """``fastvdm::group_norm_<backend>_{forward,backward}`` custom ops (with fake and autograd) calling
    ``kernels.group_norm_forward`` / ``kernels.group_norm_backward`` of a C++ extension (e.g.
    ``torch.ops.fastvdm_cpu``), which take x as (B, C, S). Returns the differentiable forward op."""

    @torch.library.custom_op(f"fastvdm::group_norm_{backend}_forward", mutates_args=())
    def forward(
        x: Tensor,
        num_groups: int,
        weight: Optional[Tensor],
        bias: Optional[Tensor],
        eps: float,
        scale: Optional[Tensor],
        shift: Optional[Tensor],
        activation: Optional[str],
    ) -> tuple[Tensor, Tensor, Tensor]:
        y, mean, rstd = kernels.group_norm_forward(
            as_bcs(x), num_groups, weight, bias, eps, scale, shift, activation == "silu"
        )
        return y.view(x.shape), mean, rstd

    @forward.register_fake
    def _(x, num_groups, weight, bias, eps, scale, shift, activation):
        stats = x.new_empty((x.shape[0], num_groups), dtype=torch.float32)
        return torch.empty_like(x), stats, stats.clone()

    @torch.library.custom_op(f"fastvdm::group_norm_{backend}_backward", mutates_args=())
    def backward(
        grad: Tensor,
        x: Tensor,
        mean: Tensor,
        rstd: Tensor,
        num_groups: int,
        weight: Optional[Tensor],
        bias: Optional[Tensor],
        scale: Optional[Tensor],
        shift: Optional[Tensor],
        activation: Optional[str],
    ) -> tuple[Tensor, Tensor, Tensor]:
        dx, sum_dz, sum_dzx = kernels.group_norm_backward(
            grad.reshape(as_bcs(x).shape), as_bcs(x), mean, rstd, num_groups, weight, bias, scale, shift,
            activation == "silu",
        )
        return dx.view(x.shape), sum_dz, sum_dzx

    @backward.register_fake
    def _(grad, x, mean, rstd, num_groups, weight, bias, scale, shift, activation):
        sums = x.new_empty((x.shape[0], x.shape[1]), dtype=torch.float32)
        return torch.empty_like(x), sums, sums.clone()

    register_autograd(forward, backward)
    return forward
