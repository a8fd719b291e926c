"""``denoising_loss`` and ``dmd_loss`` on the ``triton`` backend: the launchers of :mod:`fastvdm.kernels.losses`
as ``fastvdm::{denoising,dmd}_loss[_backward]_triton`` triton ops, with the autograd glue every backend shares
(:func:`fastvdm.ops.losses_common.backend_ops`).

Inputs: (B, ...) tensors of one shape, float32, bfloat16 or float16, on a CUDA device (or the CPU under
``TRITON_INTERPRET=1``, for tests).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.library import triton_op

from fastvdm.kernels import losses as kernels
from fastvdm.ops import _dispatch
from fastvdm.ops.losses_common import backend_ops

DTYPES = (torch.float32, torch.bfloat16, torch.float16)

denoising_loss, dmd_loss_with_norm, dmd_loss = backend_ops("triton", kernels, op_decorator=triton_op)


def _why_not(t: Tensor) -> Optional[str]:
    if t.dtype not in DTYPES:
        return f"the triton backend supports float32, bfloat16 and float16, got {t.dtype}"
    if t.device.type == "cuda":
        return None
    if t.device.type == "cpu" and not torch.cuda.is_available():
        return None  # the interpreter (TRITON_INTERPRET=1, checked by the dispatcher) runs CPU tensors
    return f"the triton backend needs CUDA tensors, got {t.device}"


def _supports(x, *_) -> Optional[str]:
    return _why_not(x)


_dispatch.register("denoising_loss", "triton", denoising_loss, supports=_supports, auto={"cuda": 20})
_dispatch.register("dmd_loss", "triton", dmd_loss, supports=_supports, auto={"cuda": 20})
