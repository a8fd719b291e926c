"""Samplers: DDIM (the teacher, N steps, eta, classifier-free guidance) and the few-step student sampler.

A model is any callable ``model(x_t, t, cond) -> v`` with x_t (B, C, T, H, W), t (B,) float timesteps and
``cond`` a dict (see :class:`fastvdm.models.VideoUNet`). Both samplers start from pure noise at t = 999
(zero terminal SNR: x_999 = noise exactly), take a ``torch.Generator`` for every random draw (so a sample
is a function of the generator's seed), return x0 in the model's data space, and paste the clean input
frames back at the input frames when ``cond`` has ``is_input`` and ``input_frames``.

Trailing timestep spacing (DESIGN.md): t_i = round(1000 - i * 1000 / N) - 1 for i = 0..N-1, so every grid
starts at 999; N = 4 gives [999, 749, 499, 249].
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from fastvdm.diffusion import noise as noise_lib
from fastvdm.diffusion.schedule import VSchedule


def trailing_timesteps(num_steps: int, num_train_steps: int = 1000) -> list[int]:
    """[round(T - i * T / N) - 1 for i in range(N)] with T = num_train_steps (strictly decreasing)."""
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"num_steps must be in [1, {num_train_steps}], got {num_steps}")
    return [int(round(num_train_steps - i * num_train_steps / num_steps)) - 1 for i in range(num_steps)]


def _randn(shape, generator, device, dtype) -> Tensor:
    """Noise drawn on ``device`` with per-sample seeds from ``generator`` (a Generator or one per sample): the
    same samples on the CPU and a GPU for a seed (:mod:`fastvdm.diffusion.noise`)."""
    return noise_lib.randn(shape, generator, device, dtype)


def autocast_enabled(device, enabled: Optional[bool] = None) -> bool:
    """Whether the network runs under bf16 autocast while sampling: ``enabled``, or by default on for CUDA only."""
    return torch.device(device).type == "cuda" if enabled is None else bool(enabled)


def autocast(device, enabled: Optional[bool] = None):
    """The context the network runs in while sampling: bf16 autocast where :func:`autocast_enabled`. The
    schedule arithmetic and the sample itself stay in the caller's dtype (fp32)."""
    device = torch.device(device)
    on = autocast_enabled(device, enabled)
    if not on and not torch.amp.is_autocast_available(device.type):
        return contextlib.nullcontext()  # e.g. the meta device
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def paste_inputs(x0: Tensor, cond: dict) -> Tensor:
    """x0 with the clean ``cond["input_frames"]`` at the frames where ``cond["is_input"]`` (B, T) is True."""
    if "is_input" not in cond or "input_frames" not in cond:
        return x0
    m = cond["is_input"].to(x0.device)[:, None, :, None, None]
    return torch.where(m, cond["input_frames"].to(x0.dtype), x0)


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False)


class DDIMSampler:
    """Deterministic (eta = 0) or stochastic DDIM for a v-prediction model, trailing spacing.

    Step t -> s (s the next grid point, or "data" after the last one):
        x0 = alpha_t x_t - sigma_t v,  eps = sigma_t x_t + alpha_t v,
        c = eta * sqrt((sigma_s^2 / sigma_t^2) * (1 - alpha_t^2 / alpha_s^2)),
        x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z.
    The last step returns x0. guidance w != 1: v = v_uncond + w (v_cond - v_uncond) (2 evaluations per step);
    the unconditional branch uses ``uncond`` or :func:`fastvdm.models.drop_condition` (cond).
    ``last_nfe`` holds the number of network evaluations of the latest call.
    """

    def __init__(self, schedule: VSchedule, num_steps: int = 50, eta: float = 0.0, guidance: float = 1.0):
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.schedule, self.num_steps, self.eta, self.guidance = schedule, int(num_steps), float(eta), float(guidance)
        self.timesteps = trailing_timesteps(self.num_steps, schedule.num_steps)
        self.last_nfe = 0

    def predict_v(self, model: Callable, x_t: Tensor, t: Tensor, cond: dict, uncond: Optional[dict]) -> Tensor:
        v = model(x_t, t, cond)
        self.last_nfe += 1
        if self.guidance != 1.0:
            if uncond is None:
                from fastvdm.models import drop_condition

                uncond = drop_condition(cond)
            v_u = model(x_t, t, uncond)
            self.last_nfe += 1
            v = v_u + self.guidance * (v - v_u)
        return v

    @torch.no_grad()
    def __call__(self, model: Callable, cond: dict, shape: Sequence[int], generator: Optional[torch.Generator] = None,
                 progress: bool = False, num_steps: Optional[int] = None, uncond: Optional[dict] = None,
                 device=None, dtype: torch.dtype = torch.float32, autocast_bf16: Optional[bool] = None) -> Tensor:
        """Sample x0 of ``shape`` (B, C, T, H, W). ``num_steps`` overrides the sampler's step count.
        ``autocast_bf16``: run the network under bf16 autocast (None: on for CUDA)."""
        timesteps = self.timesteps if num_steps is None else trailing_timesteps(num_steps, self.schedule.num_steps)
        device = device or _cond_device(cond)
        self.last_nfe = 0
        x = _randn(tuple(shape), generator, device, dtype)  # x_999 = noise (alpha_999 = 0)
        sch, B = self.schedule, shape[0]
        x0 = x
        for i in _progress(range(len(timesteps)), progress, "ddim"):
            t = torch.full((B,), float(timesteps[i]), device=device)
            with autocast(device, autocast_bf16):
                v = self.predict_v(model, x, t, cond, uncond)
            v = v.to(x.dtype)
            x0 = sch.v_to_x0(x, v, t)
            if i + 1 == len(timesteps):
                break
            eps = sch.v_to_eps(x, v, t)
            s = torch.full((B,), float(timesteps[i + 1]), device=device)
            a_t, s_t = sch._coefs(t, x)
            a_s, s_s = sch._coefs(s, x)
            c = self.eta * ((s_s ** 2 / s_t ** 2) * (1 - a_t ** 2 / a_s ** 2)).clamp_min(0).sqrt()
            x = a_s * x0 + (s_s ** 2 - c ** 2).clamp_min(0).sqrt() * eps
            if self.eta > 0:
                x = x + c * _randn(x.shape, generator, device, dtype)
        return paste_inputs(x0, cond)


class FewStepSampler:
    """The student's sampler: at each t_i predict x0, then re-noise it to t_{i+1} with fresh noise.

    timesteps: decreasing ints, default (999, 749, 499, 249) (use ``trailing_timesteps(N)`` for N = 1, 2).
    ``run`` exposes the intermediate states for backward simulation (DMD2-style training of the student on
    its own trajectories). ``last_nfe`` holds the network evaluations of the latest call.
    """

    def __init__(self, schedule: VSchedule, timesteps: Sequence[int] = (999, 749, 499, 249)):
        ts = [int(t) for t in timesteps]
        if not ts or any(b >= a for a, b in zip(ts, ts[1:])) or ts[0] >= schedule.num_steps or ts[-1] < 0:
            raise ValueError(f"timesteps must be strictly decreasing in [0, {schedule.num_steps - 1}], got {ts}")
        self.schedule, self.timesteps = schedule, ts
        self.last_nfe = 0

    def step(self, model: Callable, x_t: Tensor, t: int, cond: dict, t_next: Optional[int] = None,
             generator: Optional[torch.Generator] = None, autocast_bf16: Optional[bool] = False) -> Tensor:
        """One step from x_t at ``t``: x0 prediction, re-noised to ``t_next`` (returns x0 when t_next is None).
        ``autocast_bf16``: the network under bf16 autocast (None: on for CUDA; default off, for training)."""
        B = x_t.shape[0]
        tt = torch.full((B,), float(t), device=x_t.device)
        with autocast(x_t.device, autocast_bf16):
            v = model(x_t, tt, cond)
        x0 = self.schedule.v_to_x0(x_t, v.to(x_t.dtype), tt)
        self.last_nfe += 1
        if t_next is None:
            return x0
        noise = _randn(x_t.shape, generator, x_t.device, x_t.dtype)
        return self.schedule.add_noise(x0, noise, torch.full((B,), float(t_next), device=x_t.device))

    def run(self, model: Callable, cond: dict, x_T: Tensor, steps: int, generator: Optional[torch.Generator] = None,
            timesteps: Optional[Sequence[int]] = None) -> tuple[Tensor, Tensor]:
        """Run the first ``steps`` steps from x_T (the noise at timesteps[0]).

        Returns (x, t): the state at timesteps[steps] and that timestep as a (B,) float tensor, for
        0 <= steps < len(timesteps) (steps = 0 returns x_T itself). Gradients flow unless the caller
        wraps it in ``torch.no_grad()``.
        """
        ts = self.timesteps if timesteps is None else [int(t) for t in timesteps]
        if not 0 <= steps < len(ts):
            raise ValueError(f"steps must be in [0, {len(ts) - 1}], got {steps}")
        x = x_T
        for i in range(steps):
            x = self.step(model, x, ts[i], cond, ts[i + 1], generator)
        return x, torch.full((x_T.shape[0],), float(ts[steps]), device=x_T.device)

    @torch.no_grad()
    def __call__(self, model: Callable, cond: dict, shape: Sequence[int], generator: Optional[torch.Generator] = None,
                 progress: bool = False, num_steps: Optional[int] = None, device=None,
                 dtype: torch.dtype = torch.float32, autocast_bf16: Optional[bool] = None) -> Tensor:
        """Sample x0 of ``shape``; ``num_steps`` (e.g. 1 or 2) uses ``trailing_timesteps(num_steps)`` instead.
        ``autocast_bf16``: run the network under bf16 autocast (None: on for CUDA)."""
        ts = self.timesteps if num_steps is None else trailing_timesteps(num_steps, self.schedule.num_steps)
        device = device or _cond_device(cond)
        self.last_nfe = 0
        x = _randn(tuple(shape), generator, device, dtype)
        if ts[0] != self.schedule.num_steps - 1:  # start from the forward process at ts[0] (x0 unknown: 0)
            x = self.schedule.add_noise(torch.zeros_like(x), x, torch.full((shape[0],), float(ts[0]), device=device))
        for i in _progress(range(len(ts)), progress, "few-step"):
            x = self.step(model, x, ts[i], cond, ts[i + 1] if i + 1 < len(ts) else None, generator, autocast_bf16)
        return paste_inputs(x, cond)


def _cond_device(cond: dict) -> torch.device:
    for v in cond.values():
        if isinstance(v, Tensor):
            return v.device
    return torch.device("cpu")
