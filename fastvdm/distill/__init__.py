"""Distillation stages of fastvdm (GAN initialization, softened reverse-KL distribution matching).

The loss helpers of :mod:`fastvdm.distill.losses` are re-exported here: ``softened_kl_weight``,
``gan_generator_loss``, ``gan_discriminator_loss``, ``r1_penalty``.
"""

from fastvdm.distill.losses import *  # noqa: F401,F403
