"""``cpu`` backend of ``denoising_loss`` and ``dmd_loss``: the OpenMP kernels of csrc/cpu/losses.cpp.

Each loss is one reduction pass over its inputs (forward: per-sample sums, fp32 accumulation, combined in
double in a fixed order) and one elementwise pass (backward: writes the gradient directly; nothing but the
gradient is allocated at full size). The C++ ops (``torch.ops.fastvdm_cpu.*``, csrc/torch/cpu_losses.cpp)
are wrapped here in ``torch.library.custom_op`` s with autograd and fake (meta) implementations:

- ``fastvdm::denoising_loss_cpu(pred, x0, noise, alpha, sigma, weight, target) -> loss``
  backward: ``fastvdm::denoising_loss_backward_cpu`` -> d loss / d pred = 2 * weight_b * (pred - target) / numel.
- ``fastvdm::dmd_loss_cpu(x, x0_real, x0_fake, weight) -> (loss, norm)``, norm the (B,) clamped normalizers
  max(mean_b |x - x0_real|, reference.DMD_NORM_EPS) saved for the backward;
  backward: ``fastvdm::dmd_loss_backward_cpu`` -> d loss / d x = g / numel (never through x - (x - g)).

Inputs: (B, ...) tensors of one shape, float32 or bfloat16, on the CPU; alpha, sigma, weight (B,) of any float
dtype (used in float32). Losses are 0-dim float32 tensors. Non-contiguous inputs are copied to contiguous
first (the only case with extra full-size allocations).
"""

from __future__ import annotations


import torch

from fastvdm.ops import _dispatch
from fastvdm.ops.losses_common import backend_ops, device_supports
from fastvdm.ops.extensions import cpu_extension

cpu_extension()  # registers torch.ops.fastvdm_cpu.*
_C = torch.ops.fastvdm_cpu

DTYPES = (torch.float32, torch.bfloat16)


denoising_loss, dmd_loss_with_norm, dmd_loss = backend_ops("cpu", _C)


# ---------------------------------------------------------------------------------------------- registration
_supports = device_supports("cpu", "cpu", DTYPES)


# auto on "cpu": bench/bench_losses.py measures loss+gradient 4-10x faster than eager PyTorch (and faster than the
# reference) on video-sized inputs. On tiny inputs (thousands of elements) the custom-op and autograd overhead
# (~0.1 ms per call) makes it about as fast as eager.
_dispatch.register("denoising_loss", "cpu", denoising_loss, supports=_supports, auto={"cpu": 10})
_dispatch.register("dmd_loss", "cpu", dmd_loss, supports=_supports, auto={"cpu": 10})
