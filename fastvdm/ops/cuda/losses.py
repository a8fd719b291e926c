"""``cuda`` backend of ``denoising_loss`` and ``dmd_loss``: the kernels of csrc/cuda/losses.cu.

Each loss is one reduction pass over its inputs (per-sample partial sums in double, combined in a fixed order on
the device: deterministic) and one elementwise pass for the gradient. The C++ ops (``torch.ops.fastvdm_cuda.*``,
csrc/torch/cuda_losses.cpp) are wrapped here in ``torch.library.custom_op`` s with autograd and fake
implementations, mirroring :mod:`fastvdm.ops.cpu.losses`:

- ``fastvdm::denoising_loss_cuda(pred, x0, noise, alpha, sigma, weight, target) -> loss``;
  backward ``fastvdm::denoising_loss_backward_cuda`` -> 2 * weight_b * (pred - target) * grad / numel.
- ``fastvdm::dmd_loss_cuda(x, x0_real, x0_fake, weight) -> (loss, norm)``, norm the (B,) clamped normalizers;
  backward ``fastvdm::dmd_loss_backward_cuda`` -> g * grad / numel.
The incoming gradient stays on the device (no host synchronization).

Inputs: (B, ...) CUDA tensors of one shape, float32, bfloat16 or float16; alpha, sigma, weight (B,) of any float
dtype (used in float32). Losses are 0-dim float32 tensors.

Status: compiled, not yet run on a GPU (no GPU was available when this was written); not an ``auto`` choice
until it has been verified and measured on one.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

import fastvdm._C_cuda  # noqa: F401  (registers torch.ops.fastvdm_cuda.*)
from fastvdm.ops import _dispatch, reference

_C = torch.ops.fastvdm_cuda

TARGETS = {"eps": 0, "x0": 1, "v": 2}
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# ---------------------------------------------------------------------------------------------- denoising loss
@torch.library.custom_op("fastvdm::denoising_loss_cuda", mutates_args=())
def denoising_loss(
    pred: Tensor, x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor, weight: Optional[Tensor], target: str
) -> Tensor:
    """mean of weight_b * (pred - target)^2; pred, x0, noise (B, ...); alpha, sigma, weight (B,). -> 0-dim fp32."""
    return _C.denoising_loss_forward(pred, x0, noise, alpha, sigma, weight, TARGETS[target])


@denoising_loss.register_fake
def _(pred, x0, noise, alpha, sigma, weight, target):
    return pred.new_empty((), dtype=torch.float32)


@torch.library.custom_op("fastvdm::denoising_loss_backward_cuda", mutates_args=())
def denoising_loss_backward(
    grad: Tensor,
    pred: Tensor,
    x0: Tensor,
    noise: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    weight: Optional[Tensor],
    target: str,
) -> Tensor:
    """d loss / d pred = (2 * grad / numel) * weight_b * (pred - target); (B, ...) in pred's dtype, contiguous."""
    return _C.denoising_loss_backward(grad, pred, x0, noise, alpha, sigma, weight, TARGETS[target])


@denoising_loss_backward.register_fake
def _(grad, pred, x0, noise, alpha, sigma, weight, target):
    return torch.empty_like(pred, memory_format=torch.contiguous_format)


def _denoising_setup(ctx, inputs, output):
    pred, x0, noise, alpha, sigma, weight, ctx.target = inputs
    ctx.save_for_backward(pred, x0, noise, alpha, sigma, weight)


def _denoising_backward(ctx, grad):
    pred, x0, noise, alpha, sigma, weight = ctx.saved_tensors
    dpred = None
    if ctx.needs_input_grad[0]:
        dpred = denoising_loss_backward(grad, pred, x0, noise, alpha, sigma, weight, ctx.target)
    return dpred, None, None, None, None, None, None


denoising_loss.register_autograd(_denoising_backward, setup_context=_denoising_setup)


# ---------------------------------------------------------------------------------------------- DMD loss
@torch.library.custom_op("fastvdm::dmd_loss_cuda", mutates_args=())
def dmd_loss_with_norm(x: Tensor, x0_real: Tensor, x0_fake: Tensor, weight: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """(loss, norm): loss = 0.5 * mean(g^2) (0-dim fp32), norm = (B,) fp32 clamped mean |x - x0_real|."""
    return _C.dmd_loss_forward(x, x0_real, x0_fake, weight, reference.DMD_NORM_EPS)


@dmd_loss_with_norm.register_fake
def _(x, x0_real, x0_fake, weight):
    return x.new_empty((), dtype=torch.float32), x.new_empty((x.shape[0],), dtype=torch.float32)


@torch.library.custom_op("fastvdm::dmd_loss_backward_cuda", mutates_args=())
def dmd_loss_backward(
    grad: Tensor, x0_real: Tensor, x0_fake: Tensor, norm: Tensor, weight: Optional[Tensor]
) -> Tensor:
    """d loss / d x = ((x0_fake - x0_real) / norm_b * weight_b) * (grad / numel); (B, ...) in the input dtype."""
    return _C.dmd_loss_backward(grad, x0_real, x0_fake, norm, weight)


@dmd_loss_backward.register_fake
def _(grad, x0_real, x0_fake, norm, weight):
    return torch.empty_like(x0_real, memory_format=torch.contiguous_format)


def _dmd_setup(ctx, inputs, output):
    x, x0_real, x0_fake, weight = inputs
    ctx.save_for_backward(x0_real, x0_fake, output[1], weight)
    ctx.mark_non_differentiable(output[1])


def _dmd_backward(ctx, grad, grad_norm):
    x0_real, x0_fake, norm, weight = ctx.saved_tensors
    dx = dmd_loss_backward(grad, x0_real, x0_fake, norm, weight) if ctx.needs_input_grad[0] else None
    return dx, None, None, None


dmd_loss_with_norm.register_autograd(_dmd_backward, setup_context=_dmd_setup)


def dmd_loss(x: Tensor, x0_real: Tensor, x0_fake: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """The public ``dmd_loss`` on this backend: the loss output of ``fastvdm::dmd_loss_cuda``."""
    return dmd_loss_with_norm(x, x0_real, x0_fake, weight)[0]


# ---------------------------------------------------------------------------------------------- registration
def _why_not(t: Tensor) -> Optional[str]:
    if t.device.type != "cuda":
        return f"the cuda backend needs CUDA tensors, got {t.device}"
    if t.dtype not in DTYPES:
        return f"the cuda backend supports float32, bfloat16 and float16, got {t.dtype}"
    return None


def _supports_denoising(pred, x0, noise, alpha, sigma, weight, target) -> Optional[str]:
    return _why_not(pred)


def _supports_dmd(x, x0_real, x0_fake, weight) -> Optional[str]:
    return _why_not(x)


# No auto priority: these kernels have not yet run on a GPU (bench/RESULTS.md). Forced with use_backend("cuda").
_dispatch.register("denoising_loss", "cuda", denoising_loss, supports=_supports_denoising)
_dispatch.register("dmd_loss", "cuda", dmd_loss, supports=_supports_dmd)
