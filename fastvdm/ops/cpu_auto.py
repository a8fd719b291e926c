"""What ``auto`` runs for each op on CPU tensors: the per-op, per-shape-class rules, all in this one module.

Every rule names the option that the CPU benchmarks measured fastest for that class of calls
(bench/RESULTS.md, section "CPU `auto` rules", which quotes the tables and commands behind each line), one of:

- ``"cpu"``: fastvdm's C++ kernels (csrc/cpu);
- ``"torch"``: PyTorch's own eager path, i.e. the op's definition in :mod:`fastvdm.ops.reference` called
  directly with PyTorch's autograd (for attention: permute + ``scaled_dot_product_attention``, whose CPU
  backend is the flash kernel, + permute; no custom op and no ``torch.func.vjp`` re-run of the forward);
- ``None``: no CPU rule; the priorities the backends declared at registration decide, as on other devices
  (fp64 inputs, for example, go to the reference).

A rule is only followed when its option can serve the call (the ``cpu`` extension is built and accepts the
inputs); otherwise the priorities decide. Forcing a backend (``use_backend``, ``FASTVDM_BACKEND``) bypasses the
rules entirely. :func:`choose` is called by :func:`fastvdm.ops._dispatch.resolve` for every automatic selection
on CPU tensors, which hands it the registry (this module imports nothing of the dispatcher: no import cycle);
it is cheap (dtype and size tests) and traceable by ``torch.compile``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# ---------------------------------------------------------------------------------------------- the rules
def _video_attention(q, k, v, axis, scale) -> Optional[str]:
    # cpu: ahead of or level with the best of SDPA flash, SDPA math and inductor on every benchmarked shape,
    # forward and forward+backward, at 1 and 2 threads (session 7: 0.98-2.4x; RESULTS "Session 7: CPU
    # attention"). Session 6's rule sending forward-only calls of >= 100 MFLOP to SDPA flash (ahead then) is gone.
    return "cpu" if q.dtype in _KERNEL_DTYPES else None


def _group_norm(x, num_groups, *rest) -> Optional[str]:
    # cpu: ahead of inductor (torch.compile of GroupNorm + modulation + SiLU) and of eager on every benchmarked
    # shape, forward and forward+backward, at 1 and 2 threads (U-Net shapes 1.3-2.4x inductor, the tiny model's
    # 1.2-2.9x; bench_group_norm.py, RESULTS "group_norm and the losses against inductor", 2026-11-30).
    # torch: rows of fewer than 32 values per (sample, channel) (the 2x2 / 4x4 latents of SVD's 1280-channel
    # blocks): the kernel's per-channel bookkeeping outweighs the row's work there, and PyTorch's eager
    # GroupNorm + SiLU was 1.7-2.9x faster at S = 1-16 (4 x 320 / 1280 channels), level at S = 64
    # (RESULTS "group_norm on short rows", 2026-11-30).
    if x.dtype not in _KERNEL_DTYPES:
        return None
    return "torch" if x.dim() > 2 and math.prod(x.shape[2:]) < 32 else "cpu"


def _loss(pred, *rest) -> Optional[str]:
    # cpu: loss + gradient ahead of eager (1.2-14x) and of inductor (1.06-4.8x) on every benchmarked shape at 1
    # and 2 threads (bench_losses.py; RESULTS "group_norm and the losses against inductor", 2026-11-30).
    return "cpu" if pred.dtype in (torch.float32, torch.bfloat16) else None


_RULES = {
    "video_attention": _video_attention,
    "group_norm": _group_norm,
    "denoising_loss": _loss,
    "dmd_loss": _loss,
}


# ---------------------------------------------------------------------------------------------- choice
_TORCH: dict = {}  # op -> Implementation of the "torch" option, made on first use


def choose(op: str, args: tuple, registry: dict, backend_status, load):
    """The implementation the CPU rules pick for ``op(*args)`` on CPU tensors, or None (use the priorities).

    registry: the dispatcher's op -> backend -> Implementation; backend_status(name) -> why unavailable or None;
    load(name) imports a backend's registrations."""
    rule = _RULES.get(op)
    name = rule(*args) if rule is not None else None
    if name is None:
        return None
    if name == "torch":  # the reference definition called directly: PyTorch's eager path and its autograd
        if op not in _TORCH:
            from fastvdm.ops import reference

            _TORCH[op] = dataclasses.replace(registry[op]["reference"], fn=getattr(reference, op), auto={})
        return _TORCH[op]
    if backend_status(name) is not None:
        return None
    load(name)
    impl = registry[op].get(name)
    if impl is None or impl.supports(*args) is not None:
        return None
    return impl
