"""Autograd glue shared by every kernel backend (triton, cpu, cuda) of ``denoising_loss`` and ``dmd_loss``.

:func:`backend_ops` wraps a backend's four launchers (``<ns>.denoising_loss_forward/backward``,
``<ns>.dmd_loss_forward/backward``) in ``torch.library.custom_op`` s (with fakes) or, for Triton,
``torch.library.triton_op`` s, with autograd:

- ``fastvdm::denoising_loss_<backend>(pred, x0, noise, alpha, sigma, weight, target) -> loss``; backward
  ``fastvdm::denoising_loss_backward_<backend>`` -> d loss / d pred = 2 * weight_b * (pred - target) * grad / numel.
- ``fastvdm::dmd_loss_<backend>(x, x0_real, x0_fake, weight) -> (loss, norm)``, norm the (B,) clamped normalizers
  max(mean_b |x - x0_real|, reference.DMD_NORM_EPS) saved for the backward; backward
  ``fastvdm::dmd_loss_backward_<backend>`` -> d loss / d x = g * (grad / numel) (never through x - (x - g)).
Losses are 0-dim float32 tensors; gradients are contiguous, in the input dtype.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from fastvdm.ops import reference

TARGETS = {"eps": 0, "x0": 1, "v": 2}


def backend_ops(backend: str, kernels, op_decorator: Optional[Callable] = None):
    """Returns the differentiable ``(denoising_loss, dmd_loss_with_norm, dmd_loss)`` ops of this backend;
    ``denoising_loss`` and ``dmd_loss`` have the public signatures, ``dmd_loss_with_norm`` is the custom op.
    kernels: the four launchers (``torch.ops.fastvdm_cpu``, ``torch.ops.fastvdm_cuda`` or
    :mod:`fastvdm.kernels.losses`); ``op_decorator``: ``torch.library.custom_op`` (default; fakes are
    registered) or ``torch.library.triton_op`` (which traces the launchers for its fakes)."""
    custom = op_decorator is None
    op_decorator = op_decorator or torch.library.custom_op
    register_fake = (lambda op: op.register_fake) if custom else (lambda op: (lambda fn: fn))

    @op_decorator(f"fastvdm::denoising_loss_{backend}", mutates_args=())
    def denoising_loss(
        pred: Tensor, x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor, weight: Optional[Tensor], target: str
    ) -> Tensor:
        return kernels.denoising_loss_forward(pred, x0, noise, alpha, sigma, weight, TARGETS[target])

    @register_fake(denoising_loss)
    def _(pred, x0, noise, alpha, sigma, weight, target):
        return pred.new_empty((), dtype=torch.float32)

    @op_decorator(f"fastvdm::denoising_loss_backward_{backend}", mutates_args=())
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
        return kernels.denoising_loss_backward(grad, pred, x0, noise, alpha, sigma, weight, TARGETS[target])

    @register_fake(denoising_loss_backward)
    def _(grad, pred, x0, noise, alpha, sigma, weight, target):
        return torch.empty_like(pred, memory_format=torch.contiguous_format)

    def denoising_setup(ctx, inputs, output):
        pred, x0, noise, alpha, sigma, weight, ctx.target = inputs
        ctx.save_for_backward(pred, x0, noise, alpha, sigma, weight)

    def denoising_backward(ctx, grad):
        pred, x0, noise, alpha, sigma, weight = ctx.saved_tensors
        dpred = None
        if ctx.needs_input_grad[0]:
            dpred = denoising_loss_backward(grad, pred, x0, noise, alpha, sigma, weight, ctx.target)
        return dpred, None, None, None, None, None, None

    denoising_loss.register_autograd(denoising_backward, setup_context=denoising_setup)

    @op_decorator(f"fastvdm::dmd_loss_{backend}", mutates_args=())
    def dmd_loss_with_norm(
        x: Tensor, x0_real: Tensor, x0_fake: Tensor, weight: Optional[Tensor]
    ) -> tuple[Tensor, Tensor]:
        return kernels.dmd_loss_forward(x, x0_real, x0_fake, weight, reference.DMD_NORM_EPS)

    @register_fake(dmd_loss_with_norm)
    def _(x, x0_real, x0_fake, weight):
        return x.new_empty((), dtype=torch.float32), x.new_empty((x.shape[0],), dtype=torch.float32)

    @op_decorator(f"fastvdm::dmd_loss_backward_{backend}", mutates_args=())
    def dmd_loss_backward(
        grad: Tensor, x0_real: Tensor, x0_fake: Tensor, norm: Tensor, weight: Optional[Tensor]
    ) -> Tensor:
        return kernels.dmd_loss_backward(grad, x0_real, x0_fake, norm, weight)

    @register_fake(dmd_loss_backward)
    def _(grad, x0_real, x0_fake, norm, weight):
        return torch.empty_like(x0_real, memory_format=torch.contiguous_format)

    def dmd_setup(ctx, inputs, output):
        x, x0_real, x0_fake, weight = inputs
        ctx.save_for_backward(x0_real, x0_fake, output[1], weight)
        ctx.mark_non_differentiable(output[1])

    def dmd_backward(ctx, grad, grad_norm):
        x0_real, x0_fake, norm, weight = ctx.saved_tensors
        dx = dmd_loss_backward(grad, x0_real, x0_fake, norm, weight) if ctx.needs_input_grad[0] else None
        return dx, None, None, None

    dmd_loss_with_norm.register_autograd(dmd_backward, setup_context=dmd_setup)

    def dmd_loss(x: Tensor, x0_real: Tensor, x0_fake: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """The public ``dmd_loss`` on this backend: the loss output of ``fastvdm::dmd_loss_<backend>``."""
        return dmd_loss_with_norm(x, x0_real, x0_fake, weight)[0]

    return denoising_loss, dmd_loss_with_norm, dmd_loss


def device_supports(backend: str, device_type: str, dtypes: tuple) -> Callable:
    """``supports(x, *args)`` for both losses of a backend that serves ``dtypes`` on ``device_type`` tensors: why
    the first tensor argument cannot be served, or None."""
    names = ", ".join(str(d).replace("torch.", "") for d in dtypes)

    def supports(x: Tensor, *_) -> Optional[str]:
        if x.device.type != device_type:
            return f"the {backend} backend needs {device_type.upper()} tensors, got {x.device}"
        if x.dtype not in dtypes:
            return f"the {backend} backend supports {names}, got {x.dtype}"
        return None

    return supports
