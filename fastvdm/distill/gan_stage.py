"""Stage 1 of FVGen: adversarial initialization of the few-step student.

The student (initialized from the teacher) generates a clip by backward simulation: it runs its own first k
of the sampler's steps (k uniform in [0, num_steps - 1], no gradient) and then predicts x0 at t_k with
gradient, so training sees the inputs that inference sees. Real clips and student clips are noised to one
random t per sample (independent noise) and judged by the discriminator (the frozen teacher's encoder plus a
trainable head, :class:`fastvdm.models.Discriminator`; any ``disc(x_t, t, cond) -> (B,) logits`` works).
Losses are the non-saturating GAN losses (or hinge); the head is updated ``disc_steps`` times per student
update (two time-scale updates) with its own learning rate, optionally with an R1 penalty on real inputs.

    stage = GANStage(student, disc, FewStepSampler(VSchedule()), GANConfig())
    for x0, cond in loader:
        logs = stage.step(x0, cond)         # {"loss_g": ..., "loss_d": ..., "d_real": ..., "d_fake": ...}

Data parallel (inside :func:`fastvdm.train.train`, ``build_stage`` + ``stage_step_fn``): every forward whose
backward updates a model runs through that model's ``DistributedDataParallel`` wrapper (``ctx.wrap``): the
student's differentiable generation step, and the discriminator HEAD in its updates (``Discriminator(...,
head=wrapper)``: the frozen teacher encoder is never wrapped). A head update runs two forwards (real, fake) and one
backward: one autograd graph, in which each head parameter's gradient is ready once, so DDP's default mode (no
``find_unused_parameters``, no ``no_sync``) fits. Forwards without gradient (the no-grad sampler steps, regenerated
clips) and the head under the generator's loss (whose gradients are discarded) call the plain modules. A
discriminator that is not a :class:`fastvdm.models.Discriminator` (any callable) keeps the loop's one-all-reduce
fallback. Under ``RunConfig(parallel="fsdp")`` the same calls run the FSDP2-sharded modules (``ctx.wrap`` returns
them as they are). Randomness comes from :class:`fastvdm.distill.simulate.StepRng` (per-sample generators), so a
2-process step equals the 1-process step on the summed batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from fastvdm.distill.losses import gan_discriminator_loss, gan_generator_loss, r1_penalty
from fastvdm.distill.simulate import backward_simulation, randn_like, sample_t
from fastvdm.distill.simulate import StepRng
from fastvdm.diffusion import FewStepSampler
from fastvdm.models.discriminator import Discriminator


@dataclass
class GANConfig:
    """Hyper-parameters of the GAN stage (defaults: FVGen / DMD2-like two time-scale updates)."""

    lr_g: float = 5e-6                    # student learning rate
    lr_d: float = 2e-5                    # discriminator-head learning rate
    betas: tuple = (0.0, 0.99)            # Adam betas of both optimizers
    weight_decay: float = 0.0
    disc_steps: int = 2                   # head updates per student update
    t_range: tuple = (0.0, 999.0)         # noise levels at which the discriminator judges clips
    gan_kind: str = "non_saturating"      # or "hinge"
    r1_gamma: float = 0.0                 # R1 penalty weight on real inputs (0: off)
    grad_clip: float = 0.0                # max grad norm per optimizer without a training loop (0: off)


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def adam(params, lr: float, cfg) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def disc_logits(disc: Callable, schedule, x0: Tensor, cond: Any, t_range, generator=None) -> Tensor:
    """Discriminator logits (B,) of clean clips x0, noised (fresh noise) to t uniform in ``t_range``.
    generator: see :mod:`fastvdm.distill.simulate` (None, one, or one per sample)."""
    t = sample_t(x0.shape[0], t_range, x0.device, generator)
    return disc(schedule.add_noise(x0, randn_like(x0, generator), t), t, cond).reshape(x0.shape[0])


def trained_disc(disc: Callable, ctx=None) -> Callable:
    """``disc`` for a forward whose backward updates its head: a :class:`Discriminator` whose head is a
    registered model of the loop runs that head through its DistributedDataParallel wrapper (under
    torch.distributed); anything else is ``disc`` itself."""
    if ctx is None or not isinstance(disc, Discriminator):
        return disc
    head = ctx.wrap(disc.head)
    return disc if head is disc.head else (lambda x_t, t, cond: disc(x_t, t, cond, head=head))


def disc_update(stage, x0_real: Tensor, x0_fake: Tensor, cond: Any, cfg, ctx=None, rng: StepRng = None) -> dict:
    """One head update of ``stage.disc`` (optimizer "disc") on real and detached generated clips, both noised
    to the same t per sample. cfg: anything with ``t_range``, ``gan_kind`` and ``r1_gamma``; ctx: the training
    loop's StepContext or None; rng: the step's per-sample generators or None (the global generator)."""
    disc, schedule = trained_disc(stage.disc, ctx), stage.schedule
    gens = rng.samples if rng is not None else None
    t = sample_t(x0_real.shape[0], cfg.t_range, x0_real.device, gens)
    x_real = schedule.add_noise(x0_real, randn_like(x0_real, gens), t)
    x_fake = schedule.add_noise(x0_fake.detach(), randn_like(x0_real, gens), t)
    if cfg.r1_gamma > 0:
        x_real.requires_grad_(True)
    real, fake = disc(x_real, t, cond).flatten(), disc(x_fake, t, cond).flatten()
    loss = gan_discriminator_loss(real, fake, cfg.gan_kind)
    logs = {"loss_d": loss.item(), "d_real": real.mean().item(), "d_fake": fake.mean().item()}
    if cfg.r1_gamma > 0:
        r1 = r1_penalty(real, x_real, cfg.r1_gamma)
        loss = loss + r1
        logs["r1"] = r1.item()
    logs["grad_norm_d"] = stage.update("disc", loss, ctx)
    return logs


class Stage:
    """What both stages share: named models and optimizers, and one update rule for either way of running.

    ``update(name, loss, ctx)`` clears the gradients that earlier losses of this step left in optimizer
    ``name``'s parameters (e.g. the generator's GAN loss reaching the head), then either hands over to the
    training loop (``ctx.backward_step``: gradient all-reduce over ranks, clipping, warmup, step) or, without a
    loop, backpropagates into those parameters only, clips to ``cfg.grad_clip`` and steps.
    """

    models: dict
    optimizers: dict

    def update(self, name: str, loss: Tensor, ctx=None) -> float:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        if ctx is not None:
            return ctx.backward_step(name, loss)
        params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
        loss.backward(inputs=params)
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        opt.step()
        opt.zero_grad(set_to_none=True)
        return norm


class GANStage(Stage):
    """One training step of the GAN stage: one student update, then ``disc_steps`` head updates.

    student: the v-prediction student (trainable, initialized from the teacher); disc: a module whose
    trainable parameters are the head only, callable ``disc(x_t, t, cond) -> (B,) logits``; sampler: the
    student's :class:`FewStepSampler` (its schedule noises the discriminator's inputs too).
    ``models`` and ``optimizers`` list what a training loop checkpoints.
    """

    def __init__(self, student: nn.Module, disc: nn.Module, sampler: FewStepSampler, config: GANConfig = GANConfig()):
        self.student, self.disc, self.sampler, self.cfg = student, disc, sampler, config
        self.schedule = sampler.schedule
        self.opt_g = adam(trainable(student), config.lr_g, config)
        self.opt_d = adam(trainable(disc), config.lr_d, config)
        self.models = {"student": student, "disc": disc}
        self.optimizers = {"student": self.opt_g, "disc": self.opt_d}

    def generate(self, x0_real: Tensor, cond: Any, rng: StepRng = None) -> Tensor:
        """A student clip by backward simulation from a random number k of simulated steps; (B, ...)."""
        return generate(self.student, self.sampler, x0_real, cond, rng)

    def step(self, x0_real: Tensor, cond: Any = None, ctx=None, rng: StepRng = None) -> dict:
        """One student update, then ``disc_steps`` head updates (the first on the student's own clip).
        x0_real: (B, ...) real clips; ctx: the training loop's :class:`fastvdm.train.StepContext` or None;
        rng: the step's generators (``StepRng.of(ctx, batch)``) or None (the global generator)."""
        cfg = self.cfg
        gens = rng.samples if rng is not None else None
        student = ctx.wrap(self.student) if ctx is not None else self.student
        x0_fake = generate(student, self.sampler, x0_real, cond, rng)
        logits = disc_logits(self.disc, self.schedule, x0_fake, cond, cfg.t_range, gens)
        loss = gan_generator_loss(logits, cfg.gan_kind)
        logs = {"loss_g": loss.item(), "grad_norm_g": self.update("student", loss, ctx)}
        x0_fake = x0_fake.detach()
        for i in range(cfg.disc_steps):
            if i > 0:
                with torch.no_grad():
                    x0_fake = self.generate(x0_real, cond, rng)
            logs.update(disc_update(self, x0_real, x0_fake, cond, cfg, ctx, rng))
        return logs


def generate(student: nn.Module, sampler: FewStepSampler, like: Tensor, cond: Any, rng: StepRng = None) -> Tensor:
    """Backward simulation from fresh noise shaped like ``like`` with k uniform in [0, num_steps - 1] (k from
    ``rng.shared``, noise from ``rng.samples``; the global generator without ``rng``)."""
    k = int(torch.randint(len(sampler.timesteps), (), generator=rng.shared if rng is not None else None).item())
    gens = rng.samples if rng is not None else None
    x0, _ = backward_simulation(student, sampler, randn_like(like, gens), cond, k, gens)
    return x0
