"""``group_norm`` on the ``cpu`` backend: autograd around the OpenMP kernels of csrc/cpu/group_norm.cpp.

Forward: one kernel call computes the (B, G) statistics and writes act(GN(x) * (1 + scale) + shift); it
returns mean and rstd (fp32) for the backward. Backward: one kernel call writes dx and the per-(n, c) sums
sum_s dz and sum_s dz * xhat (dz = dy * act'(z)), from which the parameter gradients are O(B * C) torch
arithmetic (:func:`fastvdm.ops.group_norm_common.param_grads`).

Layouts: x is seen as (B, C, S) through a view; contiguous and channels-last (channels_last /
channels_last_3d) inputs are read in place, any other layout is copied to contiguous first. y and dx have
x's layout (the copy's, for other layouts). Dtypes: fp32, bf16, fp16 (fp32 statistics and arithmetic).
"""

from __future__ import annotations

from typing import Optional

import torch

from fastvdm.ops import _dispatch, extensions
from fastvdm.ops.group_norm_common import backend_ops, public_function

extensions.cpu_extension()  # registers torch.ops.fastvdm_cpu.group_norm_{forward,backward}

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


_forward = backend_ops("cpu", torch.ops.fastvdm_cpu)
group_norm = public_function(_forward, "cpu")


def supports(x, num_groups, *_) -> Optional[str]:
    if x.device.type != "cpu":
        return f"the cpu backend runs on CPU tensors, got a tensor on {x.device}"
    if x.dtype not in _DTYPES:
        return f"dtype {x.dtype} is not supported (float32, bfloat16, float16)"
    return None


# auto on CPU: bench/bench_group_norm.py measured forward and forward+backward faster than the reference
# (eager) on the U-Net shapes on this machine (bench/RESULTS.md).
_dispatch.register("group_norm", "cpu", group_norm, supports=supports, auto={"cpu": 10})
