"""Gaussian noise drawn on the model's device, per sample, the same on every device for a seed.

``torch.randn(generator=g)`` gives different numbers on the CPU and on a GPU (different generators), and
drawing on the CPU then copying costs a host-to-device copy per step. Here each sample b gets a 64-bit seed
(from the caller's ``torch.Generator``, or from its own generator when a list of B generators is given), and
its noise is a pure function of (seed_b, element index): a counter-based hash (32-bit mixing rounds computed in
int64 without overflow) gives two 24-bit uniforms per pair of elements and the Box-Muller transform turns
them into two standard normals, all with ordinary tensor ops on the target device. So:

- the samples are the same on the CPU and on a GPU for a seed (up to the last float32 bits of log/cos/sin),
- sample b's noise does not depend on the batch it is in (seed it the same and it draws the same),
- nothing synchronizes with the host, and ``torch.compile`` traces it (pass a (B,) int64 seed tensor instead of
  a generator inside a compiled function: generators are host objects).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

GeneratorArg = Union[None, torch.Generator, Sequence[torch.Generator], Tensor]

_M32 = 0xFFFFFFFF


def _mul32(h: Tensor, c: int) -> Tensor:
    """(h * c) mod 2^32 for int64 h in [0, 2^32) and a 32-bit constant c, with no int64 overflow."""
    hi = (h * (c >> 16)) & 0xFFFF
    return ((hi << 16) + h * (c & 0xFFFF)) & _M32


def _fmix32(h: Tensor) -> Tensor:
    """MurmurHash3's 32-bit finalizer (a bijection of [0, 2^32) with full avalanche)."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _hash(counter: Tensor, k0: Tensor, k1: Tensor) -> Tensor:
    """32-bit hash of a counter (int64 in [0, 2^32)) under the 64-bit key (k0, k1): three keyed rounds."""
    h = _fmix32(counter ^ k0)
    h = _fmix32((h + k1) & _M32)
    return _fmix32(h ^ _mul32(counter, 0x9E3779B1) ^ k1)


def seeds_from(generator: GeneratorArg, batch: int, device: torch.device) -> Tensor:
    """(batch,) int64 seeds in [0, 2^63) on ``device``, drawn from ``generator`` (advancing it), or one from each
    generator of a list of ``batch`` generators, or from the global generator when None; a (batch,) int64
    tensor is taken as the seeds themselves (the form a ``torch.compile``-d sampling step takes)."""
    if isinstance(generator, Tensor):
        if generator.dtype != torch.int64 or generator.shape != (batch,):
            raise ValueError(f"seeds must be a ({batch},) int64 tensor, got {generator.dtype} {tuple(generator.shape)}")
        return generator.to(device)
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch}: pass one per sample")
        seeds = [torch.randint(0, 2**63 - 1, (1,), generator=g, device=g.device).to(device) for g in generator]
        return torch.cat(seeds)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, 2**63 - 1, (batch,), generator=generator, device=gen_device).to(device, non_blocking=True)


def randn_from_seeds(seeds: Tensor, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise of ``shape`` (B, ...) on ``seeds.device``; row b is a function of seeds[b] only."""
    shape = tuple(int(s) for s in shape)
    B = shape[0]
    if seeds.shape != (B,):
        raise ValueError(f"seeds must have shape ({B},), got {tuple(seeds.shape)}")
    n = math.prod(shape[1:])
    pairs = (n + 1) // 2
    device = seeds.device
    k0 = (seeds & _M32)[:, None]
    k1 = ((seeds >> 32) & _M32)[:, None]
    idx = torch.arange(pairs, device=device, dtype=torch.int64)[None, :]
    u1 = _hash(2 * idx, k0, k1)
    u2 = _hash(2 * idx + 1, k0, k1)
    scale = 2.0**-24
    u1 = ((u1 >> 8).to(torch.float32) + 0.5) * scale  # (0, 1): never log(0)
    u2 = ((u2 >> 8).to(torch.float32) + 0.5) * scale
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = (2.0 * math.pi) * u2
    z = torch.stack((r * torch.cos(theta), r * torch.sin(theta)), dim=-1).reshape(B, 2 * pairs)[:, :n]
    return z.reshape(shape).to(dtype)


def randn(shape: Sequence[int], generator: GeneratorArg = None, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Noise of ``shape`` (B, ...) drawn on ``device`` with per-sample seeds from ``generator`` (see the module
    docstring): the same numbers on the CPU and a GPU for the same generator state."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    return randn_from_seeds(seeds_from(generator, int(shape[0]), device), shape, dtype)
