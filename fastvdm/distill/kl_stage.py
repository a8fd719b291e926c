"""Stage 2 of FVGen: softened reverse-KL distribution matching (DMD-style score difference).

Per student update, the student generates x by backward simulation (as in the GAN stage); x is noised to a
random t, and at that one noisy input

    x0_real = teacher's x0 prediction (optionally classifier-free guided),
    x0_fake = the fake-score model's x0 prediction,

and the student descends ``dmd_loss(x, x0_real, x0_fake, weight)``, whose gradient in x is
weight_b (x0_fake - x0_real) / mean|x - x0_real|: the reverse-KL gradient s_fake - s_real up to a positive
per-sample scale. ``weighting="softened"`` uses weight_b = sigmoid(-D(x_t, t)) with the stage-1
discriminator D evaluated at the same noisy input: p_fake,t / (p_real,t + p_fake,t), the gradient of
KL((p_real,t + p_fake,t) / 2 || p_real,t) (see :func:`fastvdm.distill.softened_kl_weight`); ``"plain"`` is
DMD (weight 1). The fake-score model (initialized from the teacher) is trained online with
``denoising_loss`` on the student's (detached) outputs, ``fake_steps`` times per student update. Optional:
an extra non-saturating GAN term ``gan_weight * L_G`` and ``disc_steps`` head updates per student update
(to keep the discriminator, and so the softened weight, current as the student moves).

    stage = KLStage(student, teacher, fake, sampler, disc, KLConfig(weighting="softened"))
    logs = stage.step(x0, cond)

Data parallel (inside :func:`fastvdm.train.train`): as the GAN stage (see :mod:`fastvdm.distill.gan_stage`),
every forward whose backward updates a model runs through its DistributedDataParallel wrapper: the student's
differentiable generation step, each fake-score update's one forward (one forward, one backward), the head in
its updates. The teacher (frozen), and the fake model and discriminator where they only score the student's
clip (no gradient), run as plain modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from fastvdm.distill.gan_stage import Stage, adam, disc_logits, disc_update, generate, trainable
from fastvdm.distill.losses import gan_generator_loss, softened_kl_weight
from fastvdm.distill.simulate import StepRng, guided_x0, predict_x0, randn_like, sample_t
from fastvdm.diffusion import FewStepSampler
from fastvdm.ops import denoising_loss, dmd_loss

WEIGHTINGS = ("softened", "plain")


@dataclass
class KLConfig:
    """Hyper-parameters of the KL stage."""

    weighting: str = "softened"          # "softened" (sigmoid(-logit) of the discriminator) or "plain" (DMD)
    lr_g: float = 3e-6                   # student learning rate
    lr_fake: float = 1e-5                # fake-score model learning rate
    betas: tuple = (0.0, 0.99)           # Adam betas of every optimizer here
    weight_decay: float = 0.0
    fake_steps: int = 5                  # fake-score updates per student update
    t_range: tuple = (20.0, 979.0)       # noise levels of the score difference (DMD)
    fake_t_range: tuple = (0.0, 999.0)   # noise levels of the fake model's denoising loss
    guidance: float = 1.0                # classifier-free guidance of the teacher's x0 (1: none)
    gan_weight: float = 0.0              # extra GAN generator term (0: off)
    disc_steps: int = 0                  # head updates per student update (0: frozen stage-1 discriminator)
    lr_d: float = 2e-5
    disc_t_range: tuple = (0.0, 999.0)   # noise levels of the GAN term and head updates
    gan_kind: str = "non_saturating"
    r1_gamma: float = 0.0
    grad_clip: float = 0.0               # max grad norm per optimizer without a training loop (0: off)


class _DiscCfg:
    """The head-update view of a :class:`KLConfig` (what :func:`disc_update` reads)."""

    def __init__(self, cfg: KLConfig):
        self.t_range, self.gan_kind, self.r1_gamma = cfg.disc_t_range, cfg.gan_kind, cfg.r1_gamma


class KLStage(Stage):
    """One training step of the KL stage: a student update, then fake-score (and optional head) updates.

    teacher: the frozen v-prediction teacher; fake: the fake-score v-model (trainable, initialized from the
    teacher); student: trainable v-model; disc: the stage-1 discriminator (needed for ``weighting="softened"``,
    ``gan_weight > 0`` or ``disc_steps > 0``); sampler: the student's :class:`FewStepSampler`. ``uncond``:
    optional function cond -> unconditional cond for guidance (default :func:`fastvdm.models.drop_condition`).
    """

    def __init__(self, student: nn.Module, teacher, fake: nn.Module, sampler: FewStepSampler,
                 disc: Optional[nn.Module] = None, config: KLConfig = KLConfig(), uncond=None):
        if config.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {config.weighting!r}")
        needs_disc = config.weighting == "softened" or config.gan_weight > 0 or config.disc_steps > 0
        if needs_disc and disc is None:
            raise ValueError("softened weighting, a GAN term or head updates need the stage-1 discriminator")
        self.student, self.teacher, self.fake, self.disc = student, teacher, fake, disc
        self.sampler, self.schedule, self.cfg, self.uncond = sampler, sampler.schedule, config, uncond
        self.opt_g = adam(trainable(student), config.lr_g, config)
        self.opt_fake = adam(trainable(fake), config.lr_fake, config)
        self.models = {"student": student, "fake": fake}
        self.optimizers = {"student": self.opt_g, "fake": self.opt_fake}
        if disc is not None:
            self.models["disc"] = disc
            if config.disc_steps == 0:
                disc.requires_grad_(False)  # the stage-1 discriminator stays as it is
            else:
                self.opt_d = adam(trainable(disc), config.lr_d, config)
                self.optimizers["disc"] = self.opt_d

    def student_loss(self, x: Tensor, cond: Any, generator=None) -> tuple[Tensor, dict]:
        """The student's loss on its generated clips x (B, ...) (with autograd history) and its logs.
        generator: None, one, or one per sample (:mod:`fastvdm.distill.simulate`)."""
        cfg, sched = self.cfg, self.schedule
        t = sample_t(x.shape[0], cfg.t_range, x.device, generator)
        x_t = sched.add_noise(x.detach(), randn_like(x, generator), t)
        with torch.no_grad():
            uncond = self.uncond(cond) if (self.uncond is not None and cfg.guidance != 1.0) else None
            x0_real = guided_x0(self.teacher, sched, x_t, t, cond, cfg.guidance, uncond)
            x0_fake = predict_x0(self.fake, sched, x_t, t, cond)
            weight = None
            if cfg.weighting == "softened":
                weight = softened_kl_weight(self.disc(x_t, t, cond).reshape(x.shape[0]))
        loss = dmd_loss(x, x0_real.to(x.dtype), x0_fake.to(x.dtype), weight)
        logs = {"loss_dmd": loss.item()}
        if weight is not None:
            logs["kl_weight"] = weight.mean().item()
        if cfg.gan_weight > 0:
            logits = disc_logits(self.disc, sched, x, cond, cfg.disc_t_range, generator)
            loss_gan = gan_generator_loss(logits, cfg.gan_kind)
            loss = loss + cfg.gan_weight * loss_gan
            logs["loss_g"] = loss_gan.item()
        return loss, logs

    def fake_loss(self, x0: Tensor, cond: Any, generator=None, ctx=None) -> Tensor:
        """Denoising (v) loss of the fake-score model on student clips x0 (detached) at random t (the fake model
        through its DistributedDataParallel wrapper under the training loop's torch.distributed)."""
        t = sample_t(x0.shape[0], self.cfg.fake_t_range, x0.device, generator)
        noise = randn_like(x0, generator)
        x_t = self.schedule.add_noise(x0, noise, t)
        pred = (ctx.wrap(self.fake) if ctx is not None else self.fake)(x_t, t, cond)
        if isinstance(cond, dict) and "is_input" in cond:  # clean input frames: given, not predicted (as the teacher)
            given = cond["is_input"].to(pred.device)[:, None, :, None, None]
            pred = torch.where(given, self.schedule.v_target(x0, noise, t).to(pred.dtype), pred)
        return denoising_loss(pred, x0.to(pred.dtype), noise.to(pred.dtype), self.schedule.alpha(t),
                              self.schedule.sigma(t), target="v")

    def step(self, x0_real: Tensor, cond: Any = None, ctx=None, rng: StepRng = None) -> dict:
        """One student update, ``fake_steps`` fake-score updates (the first on the student's clip, the others
        on fresh ones) and ``disc_steps`` head updates. x0_real (B, ...) is only used by the head updates
        and for the shape of the generated clips; ctx: the training loop's StepContext or None; rng: the step's
        generators (``StepRng.of(ctx, batch)``) or None (the global generator)."""
        cfg = self.cfg
        gens = rng.samples if rng is not None else None
        x = generate(ctx.wrap(self.student) if ctx is not None else self.student, self.sampler, x0_real, cond, rng)
        loss, logs = self.student_loss(x, cond, gens)
        logs["grad_norm_g"] = self.update("student", loss, ctx)
        x = x.detach()
        for i in range(cfg.fake_steps):
            x_i = x if i == 0 else self._sample(x0_real, cond, rng)
            loss_fake = self.fake_loss(x_i, cond, gens, ctx)
            logs["grad_norm_fake"] = self.update("fake", loss_fake, ctx)
            logs["loss_fake"] = loss_fake.item()
        for i in range(cfg.disc_steps):
            x_i = x if i == 0 else self._sample(x0_real, cond, rng)
            logs.update(disc_update(self, x0_real, x_i, cond, _DiscCfg(cfg), ctx, rng))
        return logs

    @torch.no_grad()
    def _sample(self, like: Tensor, cond: Any, rng: StepRng = None) -> Tensor:
        return generate(self.student, self.sampler, like, cond, rng)
