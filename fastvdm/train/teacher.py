"""Teacher training: the v-prediction denoising step plugged into :func:`fastvdm.train.train`.

Per sample (from ``ctx.generator(sample_id)``, so the global batch's randomness is independent of the number
of ranks): t ~ U{0..999}, noise ~ N(0, I), condition dropped with probability ``p_uncond`` (for classifier-free
guidance). Loss: mean of (v_pred - v)^2 over the frames that are not clean input views (the model is given
those, so its output there is replaced by the target and contributes 0), via :func:`fastvdm.ops.denoising_loss`,
weighted per sample by the model's ``loss_weight(t)`` when it has one (``VideoUNet``: uniform weight on its
preconditioned output at every noise level).
"""

from __future__ import annotations

import torch

from fastvdm import ops
from fastvdm.diffusion import VSchedule
from fastvdm.models import drop_condition, make_cond


def draw_noise(ctx, batch: dict, shape, p_uncond: float, num_steps: int = 1000):
    """(t (B,) long, noise (B, *shape), drop (B,) bool), each sample from its own generator."""
    ts, noises, drops = [], [], []
    for sid in batch["sample_id"].tolist():
        g = ctx.generator(sid)
        ts.append(torch.randint(0, num_steps, (1,), generator=g))
        drops.append(torch.rand(1, generator=g) < p_uncond)
        noises.append(torch.randn(tuple(shape), generator=g))
    return torch.cat(ts), torch.stack(noises), torch.cat(drops)


class TeacherStep:
    """``step_fn`` for teacher training: model "unet", optimizer "unet"."""

    def __init__(self, schedule: VSchedule | None = None, p_uncond: float = 0.1, model: str = "unet"):
        self.schedule = schedule or VSchedule()
        self.p_uncond, self.model = float(p_uncond), model

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
        weight = unwrapped.loss_weight(t.float()).to(v.device) if hasattr(unwrapped, "loss_weight") else None
        return ops.denoising_loss(v.float(), x0, noise, alpha, sigma, weight=weight, target="v")

    def __call__(self, ctx, batch: dict) -> dict:
        model = ctx.model(self.model)  # under torchrun: DistributedDataParallel
        t, noise, drop = draw_noise(ctx, batch, batch["frames"].shape[1:], self.p_uncond, self.schedule.num_steps)
        loss = self.loss(model, batch, t, noise, drop, ctx.device)
        grad_norm = ctx.backward_step(self.model, loss)
        return {"loss": float(loss.detach()), "grad_norm": grad_norm}
