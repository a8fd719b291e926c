"""``group_norm`` on the ``cuda`` backend: autograd around the kernels of csrc/cuda/group_norm.cu.

Forward: one call computes the (B, G) statistics (split partial sums, fp32 arithmetic, double combination) and
writes act(GN(u) * (1 + scale) + shift), u = x + input_bias formed in registers; it returns mean and rstd (fp32,
of u) for the backward. Backward: one call writes dx and the per-(n, c) sums sum_s dz and sum_s dz * xhat
(dz = dy * act'(z)), from which the parameter gradients are O(B * C) torch arithmetic
(:func:`fastvdm.ops.group_norm_common.param_grads`, shared with the cpu and triton backends; d input_bias is the
sum of dx over positions).

Layouts: x is seen as (B, C, S) through a view; contiguous and channels-last (channels_last / channels_last_3d)
inputs are read in place, any other layout is copied to contiguous first. y and dx have x's layout (the copy's,
for other layouts). Dtypes: fp32, bf16, fp16 (fp32 statistics and arithmetic). At most 3072 channels per group.

Status: compiled, not yet run on a GPU (no GPU was available when this was written); not an ``auto`` choice
until it has been verified and measured on one.
"""

from __future__ import annotations

from typing import Optional

import torch

import fastvdm._C_cuda  # noqa: F401  (registers torch.ops.fastvdm_cuda.group_norm_{forward,backward})
from fastvdm.ops import _dispatch
from fastvdm.ops.group_norm_common import backend_ops, public_function

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_CHANNELS_PER_GROUP = 3072  # per-channel coefficients live in shared memory (csrc/cuda/group_norm_launch.h)


_forward = backend_ops("cuda", torch.ops.fastvdm_cuda)
group_norm = public_function(_forward, "cuda")


def supports(x, num_groups, *_) -> Optional[str]:
    if x.device.type != "cuda":
        return f"the cuda backend runs on CUDA tensors, got a tensor on {x.device}"
    if x.dtype not in _DTYPES:
        return f"dtype {x.dtype} is not supported (float32, bfloat16, float16)"
    if x.shape[1] // num_groups > MAX_CHANNELS_PER_GROUP:
        return f"more than {MAX_CHANNELS_PER_GROUP} channels per group"
    return None


# No auto priority: these kernels have not yet run on a GPU (bench/RESULTS.md). Forced with use_backend("cuda").
_dispatch.register("group_norm", "cuda", group_norm, supports=supports)
