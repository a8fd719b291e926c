"""``group_norm`` on the ``cuda`` backend: autograd around the kernels of csrc/cuda/group_norm.cu.

Forward: one call computes the (B, G) statistics (split partial sums, fp32 arithmetic, double combination) and
writes act(GN(x) * (1 + scale) + shift); it returns mean and rstd (fp32) for the backward. Backward: one call
writes dx and the per-(n, c) sums sum_s dz and sum_s dz * xhat (dz = dy * act'(z)), from which the parameter
gradients are O(B * C) torch arithmetic (:func:`param_grads`, the same formulas as the cpu backend).

Layouts: x is seen as (B, C, S) through a view; contiguous and channels-last (channels_last / channels_last_3d)
inputs are read in place, any other layout is copied to contiguous first. y and dx have x's layout (the copy's,
for other layouts). Dtypes: fp32, bf16, fp16 (fp32 statistics and arithmetic). At most 3072 channels per group.

Status: compiled, not yet run on a GPU (no GPU was available when this was written); not an ``auto`` choice
until it has been verified and measured on one.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

import fastvdm._C_cuda  # noqa: F401  (registers torch.ops.fastvdm_cuda.group_norm_{forward,backward})
from fastvdm.ops import _dispatch

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_CHANNELS_PER_GROUP = 3072  # per-channel coefficients live in shared memory (csrc/cuda/group_norm_launch.h)


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


@torch.library.custom_op("fastvdm::group_norm_cuda_forward", mutates_args=())
def _forward(
    x: Tensor,
    num_groups: int,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    eps: float,
    scale: Optional[Tensor],
    shift: Optional[Tensor],
    activation: Optional[str],
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (y of x's shape, mean (B, G) fp32, rstd (B, G) fp32)."""
    y, mean, rstd = torch.ops.fastvdm_cuda.group_norm_forward(
        as_bcs(x), num_groups, weight, bias, eps, scale, shift, activation == "silu"
    )
    return y.view(x.shape), mean, rstd


@_forward.register_fake
def _(x, num_groups, weight, bias, eps, scale, shift, activation):
    stats = x.new_empty((x.shape[0], num_groups), dtype=torch.float32)
    return torch.empty_like(x), stats, stats.clone()


@torch.library.custom_op("fastvdm::group_norm_cuda_backward", mutates_args=())
def _backward_op(
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
    """Returns (dx of x's shape, sum_dz (B, C) fp32, sum_dzx (B, C) fp32)."""
    dx, sum_dz, sum_dzx = torch.ops.fastvdm_cuda.group_norm_backward(
        grad.reshape(as_bcs(x).shape), as_bcs(x), mean, rstd, num_groups, weight, bias, scale, shift,
        activation == "silu",
    )
    return dx.view(x.shape), sum_dz, sum_dzx


@_backward_op.register_fake
def _(grad, x, mean, rstd, num_groups, weight, bias, scale, shift, activation):
    sums = x.new_empty((x.shape[0], x.shape[1]), dtype=torch.float32)
    return torch.empty_like(x), sums, sums.clone()


def _setup(ctx, inputs, output):
    x, ctx.num_groups, weight, bias, _, scale, shift, ctx.activation = inputs
    _, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.save_for_backward(x, weight, bias, scale, shift, mean, rstd)


def _backward(ctx, grad, _grad_mean, _grad_rstd):
    x, weight, bias, scale, shift, mean, rstd = ctx.saved_tensors
    dx, sum_dz, sum_dzx = _backward_op(
        grad, x, mean, rstd, ctx.num_groups, weight, bias, scale, shift, ctx.activation
    )
    needs = ctx.needs_input_grad
    dweight, dbias, dscale, dshift = param_grads(
        sum_dz, sum_dzx, weight, bias, scale, shift, (needs[2], needs[3], needs[5], needs[6])
    )
    return (dx if needs[0] else None), None, dweight, dbias, None, dscale, dshift, None


_forward.register_autograd(_backward, setup_context=_setup)


def group_norm(
    x: Tensor,
    num_groups: int,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    eps: float,
    scale: Optional[Tensor],
    shift: Optional[Tensor],
    activation: Optional[str],
) -> Tensor:
    """act(GroupNorm(x) * (1 + scale) + shift) on the CUDA kernels; the signature of ``fastvdm.ops.group_norm``."""
    return _forward(x, num_groups, weight, bias, eps, scale, shift, activation)[0]


def supports(x, num_groups, weight, bias, eps, scale, shift, activation) -> Optional[str]:
    if x.device.type != "cuda":
        return f"the cuda backend runs on CUDA tensors, got a tensor on {x.device}"
    if x.dtype not in _DTYPES:
        return f"dtype {x.dtype} is not supported (float32, bfloat16, float16)"
    if x.shape[1] // num_groups > MAX_CHANNELS_PER_GROUP:
        return f"more than {MAX_CHANNELS_PER_GROUP} channels per group"
    return None


# No auto priority: these kernels have not yet run on a GPU (bench/RESULTS.md). Forced with use_backend("cuda").
_dispatch.register("group_norm", "cuda", group_norm, supports=supports)
