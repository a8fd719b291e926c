"""Teacher training: the v-prediction denoising step plugged into :func:`fastvdm.train.train`.

Per sample (from ``ctx.generator(sample_id)``, so the global batch's randomness is independent of the number
of ranks): t, noise ~ N(0, I), condition dropped with probability ``p_uncond`` (for classifier-free
guidance). Loss: mean of (v_pred - v)^2 over the frames that are not clean input views (the model is given
those, so its output there is replaced by the target and contributes 0), via :func:`fastvdm.ops.denoising_loss`,
weighted per sample according to ``weighting`` (:data:`WEIGHTINGS`):

- ``"output"``: t ~ U{0..999}, weight = the denoiser's ``output_weight(t)`` (EDM's lambda = 1 / c_out^2: the
  network's own output error weighs the same at every t; 1 for a bare v network). Session 2's teacher.
- ``"v"``: t ~ U{0..999}, weight 1 (the plain v loss). For a ``PosteriorDenoiser`` with hole prior std s this
  weighs the network's output error by s^2 / (alpha^2 s^2 + sigma^2): 1 at t = 0 down to s^2 at t = 999.
- ``"edm"``: EDM's noise-level distribution with its lambda: with probability 1 - ``EDM_P_UNIFORM`` the EDM
  noise level sigma/alpha is log-normal (``EDM_P_MEAN``, ``EDM_P_STD``, Karras et al. 2022) and t is the
  timestep of that level, else t ~ U{0..999} (so t = 999, the one-step prediction, stays trained); weight =
  ``output_weight(t)``. It spends most samples on the low and middle noise levels that the last DDIM steps use.
"""

from __future__ import annotations

import torch

from fastvdm import ops
from fastvdm.diffusion import VSchedule
from fastvdm.models import drop_condition, make_cond


WEIGHTINGS = ("output", "v", "edm")
EDM_P_MEAN, EDM_P_STD, EDM_P_UNIFORM = -1.2, 1.2, 0.5


def edm_timestep(schedule: VSchedule, z: torch.Tensor) -> torch.Tensor:
    """(B,) long: the timestep whose noise level sigma/alpha is closest from above to exp(P_MEAN + P_STD z), i.e.
    the number of steps with alpha_bar > 1 / (1 + level^2), clamped to [0, num_steps - 1]."""
    level2 = torch.exp(2 * (EDM_P_MEAN + EDM_P_STD * z.double()))
    target = 1.0 / (1.0 + level2)
    t = (schedule.alpha_bar[None, :] > target[:, None]).sum(1)
    return t.clamp(0, schedule.num_steps - 1).long()


def draw_noise(ctx, batch: dict, shape, p_uncond: float, num_steps: int = 1000, weighting: str = "output",
               schedule: VSchedule | None = None):
    """(t (B,) long, noise (B, *shape), drop (B,) bool), each sample from its own generator (t per
    ``weighting``: uniform, or the EDM mixture, which draws two more numbers after the noise)."""
    ts, noises, drops = [], [], []
    for sid in batch["sample_id"].tolist():
        g = ctx.generator(sid)
        t = torch.randint(0, num_steps, (1,), generator=g)
        drops.append(torch.rand(1, generator=g) < p_uncond)
        noises.append(torch.randn(tuple(shape), generator=g))
        if weighting == "edm":
            z, u = torch.randn(1, generator=g), torch.rand(1, generator=g)
            if float(u) >= EDM_P_UNIFORM:
                t = edm_timestep(schedule or VSchedule(num_steps), z)
        ts.append(t)
    return torch.cat(ts), torch.stack(noises), torch.cat(drops)


class TeacherStep:
    """``step_fn`` for teacher training: model "unet", optimizer "unet"."""

    def __init__(self, schedule: VSchedule | None = None, p_uncond: float = 0.1, model: str = "unet",
                 weighting: str = "output"):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.schedule = schedule or VSchedule()
        self.p_uncond, self.model, self.weighting = float(p_uncond), model, weighting

    def loss(self, model, batch: dict, t: torch.Tensor, noise: torch.Tensor, drop: torch.Tensor, device) -> torch.Tensor:
        x0, cond = make_cond(batch, device)
        t, noise = t.to(device), noise.to(device)
        cond = drop_condition(cond, drop)
        x_t = self.schedule.add_noise(x0, noise, t)
        v = model(x_t, t.float(), cond)
        given = cond["is_input"][:, None, :, None, None]
        v = torch.where(given, self.schedule.v_target(x0, noise, t).to(v.dtype), v)
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        unwrapped = getattr(model, "module", model)
        weight = None
        if self.weighting != "v" and hasattr(unwrapped, "output_weight"):
            weight = unwrapped.output_weight(t.float()).to(v.device)
        return ops.denoising_loss(v.float(), x0, noise, alpha, sigma, weight=weight, target="v")

    def __call__(self, ctx, batch: dict) -> dict:
        model = ctx.model(self.model)  # under torchrun: DistributedDataParallel
        t, noise, drop = draw_noise(ctx, batch, batch["frames"].shape[1:], self.p_uncond, self.schedule.num_steps,
                                    self.weighting, self.schedule)
        loss = self.loss(model, batch, t, noise, drop, ctx.device)
        grad_norm = ctx.backward_step(self.model, loss)
        return {"loss": float(loss.detach()), "grad_norm": grad_norm}
