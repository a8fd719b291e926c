"""``group_norm`` on the ``triton`` backend: the launchers of :mod:`fastvdm.kernels.group_norm` as
``fastvdm::group_norm_triton_{forward,backward}`` triton ops, with the autograd every backend shares
(:mod:`fastvdm.ops.group_norm_common`).

Supported: fp32, bf16, fp16 inputs; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1`` (tests).
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch.library import triton_op

from fastvdm.kernels import group_norm as kernels
from fastvdm.ops import _dispatch
from fastvdm.ops.group_norm_common import backend_ops, public_function

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_forward = backend_ops("triton", kernels, op_decorator=triton_op)
group_norm = public_function(_forward, "triton")


def supports(x, *_) -> Optional[str]:
    if x.dtype not in _DTYPES:
        return f"dtype {x.dtype} is not supported (float32, bfloat16, float16)"
    if x.device.type != "cuda" and not (x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
        return f"Triton kernels need a CUDA tensor (or TRITON_INTERPRET=1 with CPU tensors), got {x.device}"
    return None


_dispatch.register("group_norm", "triton", group_norm, supports=supports, auto={"cuda": 20})
