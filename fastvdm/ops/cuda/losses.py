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


import torch

import fastvdm._C_cuda  # noqa: F401  (registers torch.ops.fastvdm_cuda.*)
from fastvdm.ops import _dispatch
from fastvdm.ops.losses_common import backend_ops, device_supports

_C = torch.ops.fastvdm_cuda

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


denoising_loss, dmd_loss_with_norm, dmd_loss = backend_ops("cuda", _C)


# ---------------------------------------------------------------------------------------------- registration
_supports = device_supports("cuda", "cuda", DTYPES)


# No auto priority: these kernels have not yet run on a GPU (bench/RESULTS.md). Forced with use_backend("cuda").
_dispatch.register("denoising_loss", "cuda", denoising_loss, supports=_supports)
_dispatch.register("dmd_loss", "cuda", dmd_loss, supports=_supports)
