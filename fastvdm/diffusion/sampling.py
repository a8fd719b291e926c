"""Samplers as plain functions over a denoiser (k-diffusion style), and the small denoiser wrappers they compose with.

A *denoiser* is any callable ``denoiser(x_t, t, cond) -> v``: x_t (B, C, T, H, W) (any (B, ...) works), t (B,)
float timesteps in [0, 999], ``cond`` anything the denoiser understands (a :class:`fastvdm.models.VideoUNet`
takes the dict of :func:`fastvdm.models.make_cond`), v the v-prediction of x_t's shape. The schedule is
:class:`VSchedule` (x_t = alpha_t x0 + sigma_t noise, zero terminal SNR: x_999 = noise exactly).

    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)                               # the state at t = 999: pure noise
    nfe = count_nfe(model)                                            # counts its calls
    x0 = sample_ddim(guided(nfe, 3.0, drop_condition), x, trailing_timesteps(50), g, cond)   # teacher, CFG 3
    x0 = sample_few_step(model, x, (999, 749, 499, 249), g, cond)    # student: 4 steps
    x0 = paste_inputs(x0, cond)                                       # clean input views at their frames
    print(nfe.calls)                                                  # 100 (two evaluations per guided step)

Samplers know nothing of distillation or of the network; guidance and NFE counting are denoiser wrappers
(:func:`guided`, :func:`count_nfe`), pasting the clean input frames is :func:`paste_inputs` on the result.
:class:`DDIMSampler` and :class:`FewStepSampler` bundle a schedule and a step grid for the pipeline and the
distillation stages; they hold no per-call state.

Trailing timestep spacing (DESIGN.md): t_i = round(1000 - i * 1000 / N) - 1 for i = 0..N-1, so every grid
starts at 999; N = 4 gives [999, 749, 499, 249].
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from fastvdm.diffusion import noise as noise_lib
from fastvdm.diffusion.schedule import VSchedule

Denoiser = Callable[[Tensor, Tensor, Any], Tensor]
STUDENT_TIMESTEPS = (999, 749, 499, 249)


def trailing_timesteps(num_steps: int, num_train_steps: int = 1000) -> list[int]:
    """[round(T - i * T / N) - 1 for i in range(N)] with T = num_train_steps (strictly decreasing)."""
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"num_steps must be in [1, {num_train_steps}], got {num_steps}")
    return [int(round(num_train_steps - i * num_train_steps / num_steps)) - 1 for i in range(num_steps)]


def _check_timesteps(timesteps: Sequence[int], schedule: VSchedule) -> list[int]:
    ts = [int(t) for t in timesteps]
    if not ts or any(b >= a for a, b in zip(ts, ts[1:])) or ts[0] >= schedule.num_steps or ts[-1] < 0:
        raise ValueError(f"timesteps must be strictly decreasing in [0, {schedule.num_steps - 1}], got {ts}")
    return ts


def _randn(shape, generator, device, dtype) -> Tensor:
    """Noise drawn on ``device`` with per-sample seeds from ``generator`` (a Generator, or one per sample): the
    same samples on the CPU and a GPU for a seed, whatever the batch (:mod:`fastvdm.diffusion.noise`)."""
    return noise_lib.randn(shape, generator, device, dtype)


def autocast_enabled(device, enabled: Optional[bool] = None) -> bool:
    """Whether the denoiser runs under bf16 autocast while sampling: ``enabled``, or by default on for CUDA only."""
    return torch.device(device).type == "cuda" if enabled is None else bool(enabled)


def autocast(device, enabled: Optional[bool] = None):
    """The context the denoiser runs in while sampling: bf16 autocast where :func:`autocast_enabled`."""
    device = torch.device(device)
    on = autocast_enabled(device, enabled)
    if not on and not torch.amp.is_autocast_available(device.type):
        return contextlib.nullcontext()  # e.g. the meta device
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def _denoise(denoiser: Denoiser, x: Tensor, t: Tensor, cond: Any, autocast_bf16: Optional[bool]) -> Tensor:
    """v = denoiser(x, t, cond), under bf16 autocast if asked, returned in x's dtype (the schedule arithmetic
    and the state stay in fp32)."""
    with autocast(x.device, autocast_bf16):
        v = denoiser(x, t, cond)
    return v.to(x.dtype)


def initial_state(shape: Sequence[int], t: int = 999, generator: Optional[torch.Generator] = None,
                  schedule: Optional[VSchedule] = None, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The sampler's starting state at timestep ``t``: noise of ``shape`` drawn from ``generator``, times sigma_t
    (x0 unknown: 0); at t = 999 (zero terminal SNR) exactly the noise."""
    schedule = schedule or VSchedule()
    x = _randn(tuple(shape), generator, device or "cpu", dtype)
    if int(t) != schedule.num_steps - 1:
        x = schedule.add_noise(torch.zeros_like(x), x, torch.full((x.shape[0],), float(t), device=x.device))
    return x


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False)


def _t(x: Tensor, t) -> Tensor:
    return torch.full((x.shape[0],), float(t), device=x.device)


# ------------------------------------------------------------------------------------------------ samplers
@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: Tensor, timesteps: Sequence[int], generator: Optional[torch.Generator] = None,
                cond: Any = None, schedule: Optional[VSchedule] = None, eta: float = 0.0,
                progress: bool = False, autocast_bf16: Optional[bool] = None) -> Tensor:
    """DDIM from state ``x`` at ``timesteps[0]`` through the decreasing ``timesteps``; returns x0 (x's shape).

    Step t -> s (s the next grid point; after the last one, x0 is returned):
        x0 = alpha_t x_t - sigma_t v,  eps = sigma_t x_t + alpha_t v,
        c = eta * sqrt((sigma_s^2 / sigma_t^2) * (1 - alpha_t^2 / alpha_s^2)),
        x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z,   z from ``generator`` (eta > 0 only).
    One denoiser call per step. Deterministic for eta = 0. ``autocast_bf16``: the denoiser under bf16 autocast
    (None: on for CUDA); noise is drawn on x's device (:mod:`fastvdm.diffusion.noise`).
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    sch = schedule or VSchedule()
    ts = _check_timesteps(timesteps, sch)
    x0 = x
    for i in _progress(range(len(ts)), progress, "ddim"):
        t = _t(x, ts[i])
        v = _denoise(denoiser, x, t, cond, autocast_bf16)
        x0 = sch.v_to_x0(x, v, t)
        if i + 1 == len(ts):
            break
        eps = sch.v_to_eps(x, v, t)
        a_t, s_t = sch._coefs(t, x)
        a_s, s_s = sch._coefs(_t(x, ts[i + 1]), x)
        c = eta * ((s_s ** 2 / s_t ** 2) * (1 - a_t ** 2 / a_s ** 2)).clamp_min(0).sqrt()
        x = a_s * x0 + (s_s ** 2 - c ** 2).clamp_min(0).sqrt() * eps
        if eta > 0:
            x = x + c * _randn(x.shape, generator, x.device, x.dtype)
    return x0


def few_step(denoiser: Denoiser, x_t: Tensor, t: int, t_next: Optional[int], generator: Optional[torch.Generator] = None,
             cond: Any = None, schedule: Optional[VSchedule] = None,
             autocast_bf16: Optional[bool] = False) -> Tensor:
    """One student step from x_t at ``t``: the x0 prediction, re-noised to ``t_next`` with fresh noise from
    ``generator`` (returns the x0 prediction when ``t_next`` is None). Gradients flow. ``autocast_bf16``: the
    denoiser under bf16 autocast (default off: training decides its own precision; None: on for CUDA)."""
    sch = schedule or VSchedule()
    tt = _t(x_t, t)
    x0 = sch.v_to_x0(x_t, _denoise(denoiser, x_t, tt, cond, autocast_bf16), tt)
    if t_next is None:
        return x0
    noise = _randn(x_t.shape, generator, x_t.device, x_t.dtype)
    return sch.add_noise(x0, noise, _t(x_t, t_next))


def few_step_states(denoiser: Denoiser, x: Tensor, timesteps: Sequence[int], steps: int,
                    generator: Optional[torch.Generator] = None, cond: Any = None,
                    schedule: Optional[VSchedule] = None) -> tuple[Tensor, Tensor]:
    """The first ``steps`` few-step steps from state ``x`` at ``timesteps[0]``: (the state at
    ``timesteps[steps]``, that timestep as a (B,) float tensor), 0 <= steps < len(timesteps) (0 returns x).
    Gradients flow unless the caller wraps it in ``torch.no_grad()`` (backward simulation does)."""
    ts = _check_timesteps(timesteps, schedule or VSchedule())
    if not 0 <= steps < len(ts):
        raise ValueError(f"steps must be in [0, {len(ts) - 1}], got {steps}")
    for i in range(steps):
        x = few_step(denoiser, x, ts[i], ts[i + 1], generator, cond, schedule)
    return x, _t(x, ts[steps])


@torch.no_grad()
def sample_few_step(denoiser: Denoiser, x: Tensor, timesteps: Sequence[int] = STUDENT_TIMESTEPS,
                    generator: Optional[torch.Generator] = None, cond: Any = None,
                    schedule: Optional[VSchedule] = None, progress: bool = False,
                    autocast_bf16: Optional[bool] = None) -> Tensor:
    """The student's sampler from state ``x`` at ``timesteps[0]``: at each t_i predict x0, re-noise it to t_{i+1}
    with fresh noise from ``generator``; returns the last x0 prediction. One denoiser call per step.
    ``autocast_bf16``: the denoiser under bf16 autocast (None: on for CUDA)."""
    ts = _check_timesteps(timesteps, schedule or VSchedule())
    for i in _progress(range(len(ts)), progress, "few-step"):
        x = few_step(denoiser, x, ts[i], ts[i + 1] if i + 1 < len(ts) else None, generator, cond, schedule,
                     autocast_bf16)
    return x


# ------------------------------------------------------------------------------------------------ wrappers
def paste_inputs(x0: Tensor, cond: Any) -> Tensor:
    """x0 with the clean ``cond["input_frames"]`` at the frames where ``cond["is_input"]`` (B, T) is True (x0
    unchanged when ``cond`` is not such a dict)."""
    if not isinstance(cond, dict) or "is_input" not in cond or "input_frames" not in cond:
        return x0
    m = cond["is_input"].to(x0.device)[:, None, :, None, None]
    return torch.where(m, cond["input_frames"].to(x0.dtype), x0)


def guided(denoiser: Denoiser, scale: float, uncond: Any = None) -> Denoiser:
    """Classifier-free guidance: v = v_u + scale (v_c - v_u), two calls per evaluation (one when scale == 1).

    uncond: the unconditional condition, or a callable ``cond -> unconditional cond`` (for the VideoUNet:
    :func:`fastvdm.models.drop_condition`); required when scale != 1 (this module knows no condition format).
    """
    scale = float(scale)
    if scale == 1.0:
        return denoiser
    if uncond is None:
        raise ValueError("guidance != 1 needs uncond: the unconditional condition or a function of the condition "
                         "(e.g. fastvdm.models.drop_condition)")

    def guided_denoiser(x_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        u = uncond(cond) if callable(uncond) else uncond
        v = denoiser(x_t, t, cond)
        v_u = denoiser(x_t, t, u)
        return v_u + scale * (v - v_u)

    return guided_denoiser


class count_nfe:
    """A denoiser that counts the calls it forwards to ``denoiser`` (``calls``: the network evaluations).

    Wrap the network itself (inside :func:`guided`), so a guided step counts two."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        self.calls += 1
        return self.denoiser(x_t, t, cond)


# ------------------------------------------------------------------------------------------------ bundles
def _cond_device(cond: Any) -> torch.device:
    if isinstance(cond, dict):
        for v in cond.values():
            if isinstance(v, Tensor):
                return v.device
    return torch.device("cpu")


class DDIMSampler:
    """A schedule + DDIM settings (num_steps, eta, guidance and its ``uncond``, see :func:`guided`), composed from
    the functions above; no per-call state.

    ``sampler(model, cond, shape, generator)`` = ``paste_inputs(sample_ddim(guided(model, guidance, uncond), noise,
    trailing_timesteps(num_steps), generator, cond, eta=eta), cond)`` with noise drawn from ``generator``.
    """

    def __init__(self, schedule: Optional[VSchedule] = None, num_steps: int = 50, eta: float = 0.0,
                 guidance: float = 1.0, uncond: Any = None):
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.schedule = schedule or VSchedule()
        self.num_steps, self.eta, self.guidance, self.uncond = int(num_steps), float(eta), float(guidance), uncond
        self.timesteps = trailing_timesteps(self.num_steps, self.schedule.num_steps)

    def __call__(self, model: Denoiser, cond: Any, shape: Sequence[int], generator: Optional[torch.Generator] = None,
                 progress: bool = False, num_steps: Optional[int] = None, uncond: Any = None, device=None,
                 dtype: torch.dtype = torch.float32, autocast_bf16: Optional[bool] = None) -> Tensor:
        """x0 of ``shape`` (B, C, T, H, W), input frames pasted; ``num_steps`` overrides the step count."""
        ts = self.timesteps if num_steps is None else trailing_timesteps(num_steps, self.schedule.num_steps)
        x = initial_state(shape, ts[0], generator, self.schedule, device or _cond_device(cond), dtype)
        x0 = sample_ddim(guided(model, self.guidance, self.uncond if uncond is None else uncond), x, ts, generator,
                         cond, self.schedule, self.eta, progress, autocast_bf16)
        return paste_inputs(x0, cond)


class FewStepSampler:
    """A schedule + the student's step grid (default (999, 749, 499, 249); ``trailing_timesteps(N)`` for N = 1, 2),
    composed from the functions above; no per-call state. ``run`` gives the intermediate states for backward
    simulation (DMD2-style training of the student on its own trajectories)."""

    def __init__(self, schedule: Optional[VSchedule] = None, timesteps: Sequence[int] = STUDENT_TIMESTEPS):
        self.schedule = schedule or VSchedule()
        self.timesteps = _check_timesteps(timesteps, self.schedule)

    def step(self, model: Denoiser, x_t: Tensor, t: int, cond: Any, t_next: Optional[int] = None,
             generator: Optional[torch.Generator] = None) -> Tensor:
        """:func:`few_step` on this schedule."""
        return few_step(model, x_t, t, t_next, generator, cond, self.schedule)

    def run(self, model: Denoiser, cond: Any, x_T: Tensor, steps: int, generator: Optional[torch.Generator] = None,
            timesteps: Optional[Sequence[int]] = None) -> tuple[Tensor, Tensor]:
        """:func:`few_step_states` from x_T (the state at timesteps[0]) on this grid (or ``timesteps``)."""
        return few_step_states(model, x_T, self.timesteps if timesteps is None else timesteps, steps, generator,
                               cond, self.schedule)

    def __call__(self, model: Denoiser, cond: Any, shape: Sequence[int], generator: Optional[torch.Generator] = None,
                 progress: bool = False, num_steps: Optional[int] = None, device=None,
                 dtype: torch.dtype = torch.float32, autocast_bf16: Optional[bool] = None) -> Tensor:
        """x0 of ``shape``, input frames pasted; ``num_steps`` (e.g. 1 or 2) uses ``trailing_timesteps(num_steps)``."""
        ts = self.timesteps if num_steps is None else trailing_timesteps(num_steps, self.schedule.num_steps)
        x = initial_state(shape, ts[0], generator, self.schedule, device or _cond_device(cond), dtype)
        return paste_inputs(sample_few_step(model, x, ts, generator, cond, self.schedule, progress, autocast_bf16),
                            cond)


__all__ = ["Denoiser", "trailing_timesteps", "initial_state", "sample_ddim", "sample_few_step", "few_step",
           "few_step_states", "paste_inputs", "guided", "count_nfe", "DDIMSampler", "FewStepSampler",
           "STUDENT_TIMESTEPS", "autocast", "autocast_enabled"]
