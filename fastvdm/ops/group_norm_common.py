"""Host-side pieces shared by every kernel backend of ``group_norm`` (triton, cpu, cuda): the op's argument list
(written once, in :mod:`fastvdm.ops.signatures`), its two custom ops, their autograd, and the backend's public function.

Each backend supplies two kernel launchers with one contract (``torch.ops.fastvdm_cpu``,
``torch.ops.fastvdm_cuda``, :mod:`fastvdm.kernels.group_norm`), x seen as (B, C, S) (:func:`as_bcs`):
- ``group_norm_forward(x3, num_groups, weight, bias, eps, scale, shift, silu: bool, input_bias)`` -> (y3,
  mean (B, G) fp32, rstd (B, G) fp32), the statistics of u = x + input_bias (u is never stored);
- ``group_norm_backward(grad3, x3, mean, rstd, num_groups, weight, bias, scale, shift, silu: bool, input_bias)``
  -> (dx3, sum_s dz (B, C) fp32, sum_s dz * xhat (B, C) fp32), dz = dy * act'(z).
:func:`backend_ops` wraps them in ``fastvdm::group_norm_<backend>_{forward,backward}`` (``custom_op``, or
``triton_op`` for Triton) whose signatures are built from :data:`PARAMS`; the parameter gradients are
O(B * C) torch arithmetic (:func:`param_grads`), except d input_bias = sum_s dx (:func:`input_bias_grad`, one read of
dx, as the backward of a separate ``x + input_bias`` does). To add an argument to the op, add it to ``GROUP_NORM_PARAMS``
(and to the launchers, :func:`_kernel_args` and :func:`param_grads`); nothing else here lists the arguments.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from fastvdm.ops.signatures import GROUP_NORM_PARAMS as PARAMS
from fastvdm.ops.signatures import GroupNormArgs as Args
from fastvdm.ops.signatures import tensor_args, with_signature

TENSOR_ARGS = tensor_args(PARAMS)  # the differentiable arguments, by name

_STATS = (("grad", Tensor), ("mean", Tensor), ("rstd", Tensor))  # the backward op's leading arguments


def as_bcs(x: Tensor) -> Tensor:
    """x (B, C, *rest) as a (B, C, S) tensor: a view for contiguous / channels-last inputs, else a copy."""
    x3 = x.reshape(x.shape[0], x.shape[1], -1)
    if not (x3.is_contiguous() or x3.transpose(1, 2).is_contiguous()):
        x3 = x3.contiguous()
    return x3


def param_grads(sum_dz: Tensor, sum_dzx: Tensor, a: Args, needs: dict) -> dict:
    """{name: gradient} of weight, bias, scale, shift from the per-(n, c) sums (B, C) fp32 of dz and dz * xhat.

    With a = w * (1 + scale), b = bias * (1 + scale) + shift: dweight = sum_n (1 + scale) * sum_dzx,
    dbias = sum_n (1 + scale) * sum_dz, dscale = w * sum_dzx + bias * sum_dz, dshift = sum_dz.
    ``needs``: name -> whether its gradient is needed; a gradient not needed (or of an absent argument) is None.
    """
    weight, bias, scale, shift = a.weight, a.bias, a.scale, a.shift
    need_w, need_b, need_scale, need_shift = (needs[n] for n in ("weight", "bias", "scale", "shift"))
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
    return {"weight": dweight, "bias": dbias, "scale": dscale, "shift": dshift}


def input_bias_grad(dx: Tensor, input_bias: Tensor) -> Tensor:
    """d input_bias (B, C) = sum over all positions of dx (B, C, *rest), accumulated in fp32."""
    return dx.reshape(dx.shape[0], dx.shape[1], -1).sum(2, dtype=torch.float32).to(input_bias.dtype)


def input_grads(dx: Tensor, sum_dz: Tensor, sum_dzx: Tensor, a: Args, needs_input_grad) -> tuple:
    """The autograd backward's result, in ``Args`` order, from a kernel's (dx, sum_dz, sum_dzx)."""
    needs = dict(zip(Args._fields, needs_input_grad))
    grads = param_grads(sum_dz, sum_dzx, a, needs)
    grads["x"] = dx if needs["x"] else None
    if a.input_bias is not None and needs["input_bias"]:
        grads["input_bias"] = input_bias_grad(dx, a.input_bias)
    return tuple(grads.get(n) for n in Args._fields)


def _kernel_args(a: Args) -> list:
    """The launchers' arguments after x3 (forward) or after (grad3, x3, mean, rstd) (backward, without eps)."""
    return [a.activation == "silu" if n == "activation" else getattr(a, n) for n in a._fields[1:]]


def register_autograd(forward_op, backward_op) -> None:
    """Make ``forward_op`` (arguments :data:`PARAMS`) differentiable in its tensor arguments through
    ``backward_op(grad, mean, rstd, *PARAMS) -> (dx, sum_dz, sum_dzx)``."""

    def setup(ctx, inputs, output):
        a = Args(*inputs)
        _, mean, rstd = output
        ctx.mark_non_differentiable(mean, rstd)
        ctx.static = {n: v for n, v in a._asdict().items() if n not in TENSOR_ARGS}
        ctx.save_for_backward(*(getattr(a, n) for n in TENSOR_ARGS), mean, rstd)

    def backward(ctx, grad, _grad_mean, _grad_rstd):
        *tensors, mean, rstd = ctx.saved_tensors
        a = Args(**dict(zip(TENSOR_ARGS, tensors)), **ctx.static)
        return input_grads(*backward_op(grad, mean, rstd, *a), a, ctx.needs_input_grad)

    forward_op.register_autograd(backward, setup_context=setup)
    from fastvdm.ops.double_backward import refuse_double_backward

    refuse_double_backward(backward_op, "group_norm")


def backend_ops(backend: str, kernels, op_decorator: Optional[Callable] = None):
    """``fastvdm::group_norm_<backend>_{forward,backward}`` ops calling ``kernels.group_norm_forward`` /
    ``kernels.group_norm_backward`` (the launcher contract above), with autograd. ``op_decorator``:
    ``torch.library.custom_op`` (default; a fake implementation is registered) or ``torch.library.triton_op``
    (which traces the launchers for its fake). Returns the differentiable forward op (arguments :data:`PARAMS`,
    returns (y, mean, rstd))."""
    custom = op_decorator is None
    op_decorator = op_decorator or torch.library.custom_op

    @with_signature(PARAMS, tuple[Tensor, Tensor, Tensor])
    def forward(*args):
        a = Args(*args)
        x3 = as_bcs(a.x)
        y, mean, rstd = kernels.group_norm_forward(x3, *_kernel_args(a))
        return y.view(a.x.shape), mean, rstd

    @with_signature(_STATS + PARAMS, tuple[Tensor, Tensor, Tensor])
    def backward(grad, mean, rstd, *args):
        a = Args(*args)
        x3 = as_bcs(a.x)
        rest = [v for n, v in zip(a._fields[1:], _kernel_args(a)) if n != "eps"]
        dx, sum_dz, sum_dzx = kernels.group_norm_backward(grad.reshape(x3.shape), x3, mean, rstd, *rest)
        return dx.view(a.x.shape), sum_dz, sum_dzx

    forward_op = op_decorator(f"fastvdm::group_norm_{backend}_forward", mutates_args=())(forward)
    backward_op = op_decorator(f"fastvdm::group_norm_{backend}_backward", mutates_args=())(backward)
    if custom:

        @forward_op.register_fake
        def _(*args):
            x, num_groups = args[0], args[1]
            stats = x.new_empty((x.shape[0], num_groups), dtype=torch.float32)
            return torch.empty_like(x), stats, stats.clone()

        @backward_op.register_fake
        def _(grad, mean, rstd, *args):
            x = args[0]
            sums = x.new_empty((x.shape[0], x.shape[1]), dtype=torch.float32)
            return torch.empty_like(x), sums, sums.clone()

    register_autograd(forward_op, backward_op)
    return forward_op


def public_function(forward_op, backend: str) -> Callable:
    """The backend's ``group_norm`` with the positional arguments of :data:`PARAMS` (what the dispatcher calls):
    the y output of ``forward_op``."""

    @with_signature(PARAMS, Tensor)
    def group_norm(*args) -> Tensor:
        return forward_op(*args)[0]

    group_norm.__doc__ = (
        f"act(GroupNorm(x + input_bias) * (1 + scale) + shift) on the {backend} kernels (``fastvdm.ops.group_norm``)."
    )
    return group_norm
