"""The v-prediction noise schedule: 1000 discrete steps, alpha_t^2 + sigma_t^2 = 1, zero terminal SNR.

    x_t = alpha_t x0 + sigma_t eps,     v = alpha_t eps - sigma_t x0
    x0  = alpha_t x_t - sigma_t v,      eps = sigma_t x_t + alpha_t v

Betas follow the "scaled linear" schedule (sqrt(beta) linear from sqrt(0.00085) to sqrt(0.012)); alpha_t =
sqrt(prod_{s<=t} (1 - beta_s)) is then shifted and rescaled so that alpha_999 = 0 exactly while alpha_0 is
unchanged (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed", Algorithm 1).
At t = 999 the input is pure noise and v = -x0, which v-prediction handles without any singularity.

Timesteps are floats in [0, 999] (tensors of shape (B,)); between integers alpha^2 (= 1 / (1 + 1/SNR))
is interpolated linearly, so integer timesteps give the discrete schedule exactly.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

NUM_TRAIN_TIMESTEPS = 1000


def zero_snr_alpha_bar(num_steps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = 0.00085,
                       beta_end: float = 0.012) -> Tensor:
    """alpha_bar_t = alpha_t^2 for t = 0..num_steps-1 (float64), with alpha_bar of the last step exactly 0."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_steps, dtype=torch.float64) ** 2
    a = torch.cumprod(1.0 - betas, 0).sqrt()
    a0, aT = a[0].clone(), a[-1].clone()
    a = (a - aT) * a0 / (a0 - aT)  # shift so the last is 0, scale so the first is unchanged
    return a * a


class VSchedule:
    """Noise schedule and parameterization conversions (see the module docstring).

    All methods take ``t`` as a (B,) tensor (or a Python number) of timesteps in [0, num_steps - 1] and
    broadcast per-sample coefficients against video tensors (B, C, T, H, W) (any (B, ...) works).
    """

    def __init__(self, num_steps: int = NUM_TRAIN_TIMESTEPS):
        self.num_steps = int(num_steps)
        self.alpha_bar = zero_snr_alpha_bar(self.num_steps)  # (num_steps,) float64, on the CPU
        self._tables: dict[torch.device, Tensor] = {}  # alpha_bar copied once per device

    # ------------------------------------------------------------------ coefficients
    # GPU-first: coefficients are computed where t lives, from a per-device copy of the table, with no host
    # synchronization (no .item()/.cpu()/bool of a tensor): a forward pass never waits for the GPU, and
    # torch.compile traces it as one graph. Out-of-range timesteps raise a ValueError for Python numbers and
    # CPU tensors (eager); elsewhere (GPU, compiled) torch._assert_async checks them without a sync.
    def _table(self, device: torch.device) -> Tensor:
        table = self._tables.get(device)
        if table is None:
            table = self._tables[device] = self.alpha_bar.to(device)
        return table

    def _timesteps(self, t, device: Optional[torch.device] = None) -> Tensor:
        """t as a float64 tensor on its own device (or ``device`` for a Python number), range-checked."""
        last = self.num_steps - 1
        if not isinstance(t, Tensor):
            values = [float(v) for v in (t if isinstance(t, (list, tuple)) else [t])]
            if not all(0 <= v <= last for v in values):
                raise ValueError(f"timesteps must lie in [0, {last}], got {t}")
            if isinstance(t, (list, tuple)):
                return torch.tensor(values, dtype=torch.float64, device=device)
            return torch.full((), values[0], dtype=torch.float64, device=device)
        t = t.detach()
        if device is not None and t.device != device:
            t = t.to(device, non_blocking=True)
        t = t.to(torch.float64)
        ok = ((t >= 0) & (t <= last)).all()
        if t.device.type == "cpu" and not torch.compiler.is_compiling():
            if not bool(ok):  # reading a CPU tensor waits for nothing
                raise ValueError(f"timesteps must lie in [0, {last}], got {t.tolist()}")
        else:
            torch._assert_async(ok, f"timesteps must lie in [0, {last}]")
        return t

    def _alpha_bar_at(self, t) -> Tensor:
        t = self._timesteps(t)
        lo = t.floor().long().clamp(0, self.num_steps - 1)
        hi = (lo + 1).clamp(max=self.num_steps - 1)
        w = t - lo
        ab = self._table(t.device)
        return ab[lo] * (1 - w) + ab[hi] * w

    def alpha(self, t) -> Tensor:
        """alpha_t (signal scale), float32, the shape and device of ``t`` (a Python number: a CPU scalar)."""
        return self._alpha_bar_at(t).sqrt().float()

    def sigma(self, t) -> Tensor:
        """sigma_t = sqrt(1 - alpha_t^2) (noise scale), float32, the shape and device of ``t``."""
        return (1 - self._alpha_bar_at(t)).clamp_min(0).sqrt().float()

    def snr(self, t) -> Tensor:
        """alpha_t^2 / sigma_t^2 (inf at t = 0 only if alpha_bar_0 = 1; 0 at t = 999)."""
        ab = self._alpha_bar_at(t)
        return (ab / (1 - ab)).float()

    def _coefs(self, t, like: Tensor) -> tuple[Tensor, Tensor]:
        t = self._timesteps(t, like.device)
        if t.dim() == 0:
            t = t.expand(like.shape[0])
        if t.shape != (like.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({like.shape[0]},), got {tuple(t.shape)}")
        shape = (like.shape[0],) + (1,) * (like.dim() - 1)
        ab = self._alpha_bar_at(t)
        a = ab.sqrt().to(like.dtype).reshape(shape)
        s = (1 - ab).clamp_min(0).sqrt().to(like.dtype).reshape(shape)
        return a, s

    # ------------------------------------------------------------------ conversions
    def add_noise(self, x0: Tensor, noise: Tensor, t) -> Tensor:
        """x_t = alpha_t x0 + sigma_t noise."""
        a, s = self._coefs(t, x0)
        return a * x0 + s * noise

    def v_target(self, x0: Tensor, noise: Tensor, t) -> Tensor:
        """v = alpha_t noise - sigma_t x0 (the training target)."""
        a, s = self._coefs(t, x0)
        return a * noise - s * x0

    def v_to_x0(self, x_t: Tensor, v: Tensor, t) -> Tensor:
        a, s = self._coefs(t, x_t)
        return a * x_t - s * v

    def v_to_eps(self, x_t: Tensor, v: Tensor, t) -> Tensor:
        a, s = self._coefs(t, x_t)
        return s * x_t + a * v

    def x0_eps_to_v(self, x0: Tensor, eps: Tensor, t) -> Tensor:
        return self.v_target(x0, eps, t)

    def x0_to_eps(self, x_t: Tensor, x0: Tensor, t) -> Tensor:
        """eps = (x_t - alpha_t x0) / sigma_t (undefined at sigma = 0, i.e. never for t >= 1 here)."""
        a, s = self._coefs(t, x_t)
        return (x_t - a * x0) / s

    def x0_to_v(self, x_t: Tensor, x0: Tensor, t) -> Tensor:
        """v from x_t and x0: v = (alpha_t x_t - x0) / sigma_t."""
        a, s = self._coefs(t, x_t)
        return (a * x_t - x0) / s
