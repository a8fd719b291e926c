"""``group_norm`` on the ``cpu`` backend: autograd around the OpenMP kernels of csrc/cpu/group_norm.cpp.

Forward: one kernel call computes the (B, G) statistics of u = x + input_bias (u is never stored) and writes
act(GN(u) * (1 + scale) + shift); it returns mean and rstd (fp32) for the backward. Backward: one kernel call
writes dx and the per-(n, c) sums sum_s dz and sum_s dz * xhat (dz = dy * act'(z)), from which the parameter
gradients are O(B * C) torch arithmetic (:func:`fastvdm.ops.group_norm_common.param_grads`; d input_bias is
the sum of dx over positions).

Layouts: x is seen as (B, C, S) through a view; contiguous and channels-last (channels_last /
channels_last_3d) inputs are read in place, any other layout is copied to contiguous first. y and dx have
x's layout (the copy's, for other layouts). Dtypes: fp32, bf16, fp16 (fp32 statistics and arithmetic).

``fastvdm.ops.group_norm(..., out=t)`` reaches :func:`group_norm_out`: the forward kernel writes into t (no
output allocation; t may be x itself), without autograd.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fastvdm.ops import _dispatch, extensions
from fastvdm.ops.group_norm_common import TENSOR_ARGS, Args, _kernel_args, as_bcs, backend_ops, input_grads
from fastvdm.ops.group_norm_common import public_function
from fastvdm.ops.signatures import GROUP_NORM_PARAMS, with_signature

extensions.cpu_extension()  # registers torch.ops.fastvdm_cpu.group_norm_{forward,backward}

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_C = torch.ops.fastvdm_cpu


_forward = backend_ops("cpu", torch.ops.fastvdm_cpu)
_custom_op_group_norm = public_function(_forward, "cpu")


class _GroupNorm(torch.autograd.Function):
    """Eager autograd around the C++ launchers: what the custom ops of ``backend_ops`` run, without their Python
    dispatch (bench/RESULTS.md, "per-call host overhead")."""

    @staticmethod
    def forward(ctx, *args):
        a = Args(*args)
        y, mean, rstd = _C.group_norm_forward(as_bcs(a.x), *_kernel_args(a))
        ctx.static = {n: v for n, v in a._asdict().items() if n not in TENSOR_ARGS}
        ctx.save_for_backward(*(getattr(a, n) for n in TENSOR_ARGS), mean, rstd)
        return y.view(a.x.shape)

    @staticmethod
    def backward(ctx, grad):
        *tensors, mean, rstd = ctx.saved_tensors
        a = Args(**dict(zip(TENSOR_ARGS, tensors)), **ctx.static)
        if torch.is_grad_enabled():  # create_graph=True: the custom op, whose derivative refuses with a clear error
            dx, sum_dz, sum_dzx = torch.ops.fastvdm.group_norm_cpu_backward(grad, mean, rstd, *a)
        else:
            x3 = as_bcs(a.x)
            rest = [v for n, v in zip(a._fields[1:], _kernel_args(a)) if n != "eps"]
            dx, sum_dz, sum_dzx = _C.group_norm_backward(grad.reshape(x3.shape), x3, mean, rstd, *rest)
            dx = dx.view(a.x.shape)
        return input_grads(dx, sum_dz, sum_dzx, a, ctx.needs_input_grad)


@with_signature(GROUP_NORM_PARAMS, Tensor)
def group_norm(*args) -> Tensor:
    """act(GroupNorm(x) * (1 + scale) + shift) on the cpu kernels (``fastvdm.ops.group_norm``'s arguments).

    Eager calls run the launchers directly (an autograd.Function when a gradient is needed); under
    ``torch.compile`` the custom op (fake kernel registered) is traced instead. Same kernels, same results."""
    if torch.compiler.is_compiling():
        return _custom_op_group_norm(*args)
    if torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in args):
        return _GroupNorm.apply(*args)
    a = Args(*args)
    return _C.group_norm_forward(as_bcs(a.x), *_kernel_args(a))[0].view(a.x.shape)


def group_norm_out(out: Tensor, *args) -> None:
    """The forward written into ``out`` (x's shape, dtype and layout; checked by ``fastvdm.ops.group_norm``
    and again by the kernel binding): no output allocation. Not differentiable."""
    a = Args(*args)
    x3 = as_bcs(a.x)
    _C.group_norm_forward(x3, *_kernel_args(a), out.view(x3.shape))


def supports(x, num_groups, *_) -> Optional[str]:
    if x.device.type != "cpu":
        return f"the cpu backend runs on CPU tensors, got a tensor on {x.device}"
    if x.dtype not in _DTYPES:
        return f"dtype {x.dtype} is not supported (float32, bfloat16, float16)"
    return None


# auto on CPU: bench/bench_group_norm.py measured forward and forward+backward faster than the reference
# (eager) on the U-Net shapes on this machine (bench/RESULTS.md).
_dispatch.register("group_norm", "cpu", group_norm, supports=supports, auto={"cpu": 10}, out_fn=group_norm_out)
