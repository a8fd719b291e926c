"""What both distillation stages share: x0 predictions of v-prediction models, timestep draws, backward simulation.

A *v-prediction model* is any callable ``model(x_t, t, cond) -> v`` with x_t of shape (B, ...), t (B,) float
timesteps in [0, 999] and v the shape of x_t; the schedule is :class:`fastvdm.diffusion.VSchedule`
(x_t = alpha x0 + sigma noise, x0 = alpha x_t - sigma v) and the student's sampler
:class:`fastvdm.diffusion.FewStepSampler`.

Randomness: a ``generator`` argument is None (the global generator), one ``torch.Generator``, or a list of one
generator per sample (each sample's draws come from its own generator, so they do not depend on the batch the
sample is in: the training loop's per-sample generators, see :class:`StepRng`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import torch
from torch import Tensor

from fastvdm.diffusion import FewStepSampler, paste_inputs
from fastvdm.diffusion import noise as noise_lib

VModel = Callable[[Tensor, Tensor, Any], Tensor]
Generators = Union[None, torch.Generator, Sequence[torch.Generator]]


@dataclass
class StepRng:
    """The randomness of one training step, independent of how the global batch is split over ranks.

    samples: one CPU generator per sample of this rank's batch (noise, timesteps); shared: one generator seeded
    alike on every rank, for what the whole global batch shares (the number of simulated sampler steps).
    From the training loop: ``StepRng.of(ctx, batch)``."""

    samples: list
    shared: torch.Generator

    @classmethod
    def of(cls, ctx, batch: dict) -> "StepRng":
        return cls([ctx.generator(int(s)) for s in batch["sample_id"].tolist()], ctx.step_generator())


def predict_x0(model: VModel, schedule, x_t: Tensor, t: Tensor, cond: Any) -> Tensor:
    """x0 = alpha_t x_t - sigma_t model(x_t, t, cond); (B, ...)."""
    return schedule.v_to_x0(x_t, model(x_t, t, cond), t)


def guided_x0(model: VModel, schedule, x_t: Tensor, t: Tensor, cond: Any, guidance: float = 1.0,
              uncond: Any = None) -> Tensor:
    """Classifier-free-guided x0 = x0_u + guidance (x0_c - x0_u); ``guidance == 1`` is one plain evaluation.

    uncond: the unconditional counterpart of ``cond``; None uses :func:`fastvdm.models.drop_condition`.
    Guidance is linear in the prediction, so guiding x0 equals guiding v (as :class:`DDIMSampler` does).
    """
    x0_c = predict_x0(model, schedule, x_t, t, cond)
    if guidance == 1.0:
        return x0_c
    if uncond is None:
        from fastvdm.models import drop_condition

        uncond = drop_condition(cond)
    x0_u = predict_x0(model, schedule, x_t, t, uncond)
    return x0_u + guidance * (x0_c - x0_u)


def sample_t(batch: int, t_range: Sequence[float], device, generator: Generators = None) -> Tensor:
    """(B,) float timesteps uniform in [t_range[0], t_range[1]] (drawn on the generator's device; from a list of
    B generators, one draw from each)."""
    lo, hi = float(t_range[0]), float(t_range[1])
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch}: pass one per sample")
        u = torch.cat([torch.rand(1, generator=g, device=g.device).to(device) for g in generator])
        return lo + (hi - lo) * u
    gen_device = generator.device if generator is not None else "cpu"
    return (lo + (hi - lo) * torch.rand(batch, generator=generator, device=gen_device)).to(device)


def randn_like(x: Tensor, generator: Generators = None) -> Tensor:
    """Standard normal noise shaped like x (B, ...); from a list of B generators, drawn on x's device per sample
    (:func:`fastvdm.diffusion.noise.randn`)."""
    if isinstance(generator, (list, tuple)):
        return noise_lib.randn(x.shape, list(generator), x.device, x.dtype)
    gen_device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)


def maybe_paste_inputs(x0: Tensor, cond: Any) -> Tensor:
    """x0 with the clean input frames pasted back where ``cond`` is a dict that has them (as the samplers do)."""
    return paste_inputs(x0, cond) if isinstance(cond, dict) else x0


def backward_simulation(model: VModel, sampler: FewStepSampler, noise: Tensor, cond: Any, k: int,
                        generator: Generators = None) -> tuple[Tensor, Tensor]:
    """Few-step generation as at inference, with gradient through the last step only (DMD2's backward simulation).

    Runs the sampler's first ``k`` steps without gradient (x0 prediction at ``sampler.timesteps[i]``, re-noised
    with fresh noise to ``sampler.timesteps[i + 1]``), then the model's x0 prediction at ``sampler.timesteps[k]``
    with gradient. ``k = 0`` is one-step generation from pure noise; ``k = len(sampler.timesteps) - 1`` runs the
    whole sampler, so the returned x0 is then exactly the sampler's output (same noise and generator state).

    noise: (B, ...) the state at ``timesteps[0]`` (pure noise under zero terminal SNR). Returns (x0 (B, ...)
    with autograd history into ``model``, clean input frames pasted back if ``cond`` has them; t (B,) the
    timestep of the differentiable step).
    """
    with torch.no_grad():
        x, t = sampler.run(model, cond, noise, k, generator)
    x0 = predict_x0(model, sampler.schedule, x, t, cond)
    return maybe_paste_inputs(x0, cond), t
