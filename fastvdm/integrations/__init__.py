"""fastvdm.integrations: fastvdm's kernels inside models from other libraries.

- :mod:`fastvdm.integrations.diffusers`: ``apply_fastvdm(unet)`` / ``remove_fastvdm(unet)`` for diffusers' video
  U-Nets (``pip install fastvdm[diffusers]``).
- :mod:`fastvdm.integrations.diffusers_distill`: a diffusers video U-Net as the teacher, student and
  discriminator of fastvdm's FVGen distillation (GAN stage, softened reverse-KL stage).

Each submodule imports its library when it is imported, never before.
"""
