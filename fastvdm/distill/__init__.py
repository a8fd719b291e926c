"""Distillation stages of fastvdm (FVGen): GAN initialization, then softened reverse-KL distribution matching.

    from fastvdm.distill import GANStage, GANConfig, KLStage, KLConfig
    stage = GANStage(student, Discriminator(teacher), FewStepSampler(VSchedule()), GANConfig())
    logs = stage.step(x0, cond)                         # or stage.step(x0, cond, ctx) inside fastvdm.train

- :mod:`fastvdm.distill.gan_stage`: stage 1 (backward simulation, non-saturating GAN, two time-scale updates).
- :mod:`fastvdm.distill.kl_stage`: stage 2 (online fake score, DMD / softened-KL weighting, optional GAN term).
- :mod:`fastvdm.distill.simulate`: x0 predictions, guidance, backward simulation on the student's sampler.
- :mod:`fastvdm.distill.build`: ``build_stage`` (a stage + the training state it checkpoints), ``stage_step_fn``.

The loss helpers of :mod:`fastvdm.distill.losses` are re-exported here: ``softened_kl_weight``,
``gan_generator_loss``, ``gan_discriminator_loss``, ``r1_penalty``.
"""

from fastvdm.distill.losses import *  # noqa: F401,F403
from fastvdm.distill.gan_stage import GANConfig, GANStage  # noqa: E402
from fastvdm.distill.kl_stage import KLConfig, KLStage  # noqa: E402
from fastvdm.distill.simulate import backward_simulation  # noqa: E402
from fastvdm.distill.build import build_stage, load_disc_head, stage_step_fn  # noqa: E402
