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
on CPU tensors; it is cheap (dtype and size tests) and traceable by ``torch.compile``.
"""

from __future__ import annotations

from typing import Optional

import torch

from fastvdm.ops import _dispatch

_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# ---------------------------------------------------------------------------------------------- the rules
def _video_attention(q, k, v, axis, scale) -> Optional[str]:
    # cpu: faster than SDPA flash, SDPA math and torch.compile of permute + SDPA at every benchmarked shape,
    # forward and forward+backward, 1 and 2 threads: spatial S = 64 (the tiny model) to 4096, temporal T = 8
    # and 16 (bench_attention.py; RESULTS "cpu attention on GEMM micro-kernels").
    return "cpu" if q.dtype in _KERNEL_DTYPES else None


def _group_norm(x, num_groups, *rest) -> Optional[str]:
    # cpu: faster than eager and inductor on the U-Net shapes, from the tiny model's 1x32x8x32x32 up
    # (bench_group_norm.py; RESULTS "group_norm and losses against inductor").
    return "cpu" if x.dtype in _KERNEL_DTYPES else None


def _loss(pred, *rest) -> Optional[str]:
    # cpu: faster than eager and inductor at every benchmarked size, loss + gradient (bench_losses.py).
    return "cpu" if pred.dtype in (torch.float32, torch.bfloat16) else None


_RULES = {
    "video_attention": _video_attention,
    "group_norm": _group_norm,
    "denoising_loss": _loss,
    "dmd_loss": _loss,
}


# ---------------------------------------------------------------------------------------------- "torch" options
def _torch_implementation(op: str) -> _dispatch.Implementation:
    """The op's reference definition called directly (PyTorch's eager path with its own autograd)."""
    from fastvdm.ops import reference

    return _dispatch.Implementation(op, "reference", getattr(reference, op))


_TORCH: dict[str, _dispatch.Implementation] = {}


def choose(op: str, *args) -> Optional[_dispatch.Implementation]:
    """The implementation the CPU rules pick for ``op(*args)`` on CPU tensors, or None (use the priorities)."""
    rule = _RULES.get(op)
    name = rule(*args) if rule is not None else None
    if name is None:
        return None
    if name == "torch":
        if op not in _TORCH:
            _TORCH[op] = _torch_implementation(op)
        return _TORCH[op]
    if _dispatch.backend_status(name) is not None:
        return None
    _dispatch._load(name)
    impl = _dispatch._registry[op].get(name)
    if impl is None or impl.supports(*args) is not None:
        return None
    return impl
