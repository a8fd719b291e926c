"""Diffusion: the v-prediction zero-terminal-SNR schedule and the samplers, plain functions over a denoiser.

    from fastvdm.diffusion import VSchedule, sample_ddim, sample_few_step, guided, count_nfe, paste_inputs
    x0 = sample_ddim(guided(model, 3.0, drop_condition), noise, trailing_timesteps(50), generator, cond)  # teacher
    x0 = sample_few_step(model, noise, (999, 749, 499, 249), generator, cond)            # student
    x_k, t_k = few_step_states(model, noise, (999, 749, 499, 249), k, generator, cond)     # backward simulation

A denoiser is any callable ``(x_t, t, cond) -> v``; samplers know nothing about distillation.
:class:`DDIMSampler` / :class:`FewStepSampler` bundle a schedule and a step grid (see
:mod:`fastvdm.diffusion.sampling`). A network becomes a denoiser through a wrapper of
:mod:`fastvdm.diffusion.denoisers`, e.g. ``PosteriorDenoiser(VideoUNet(cfg))`` (EDM-style preconditioning around
the hole-filled render prior of :mod:`fastvdm.diffusion.hole_fill`) or ``VDenoiser(net)`` (net predicts v).
"""

from fastvdm.diffusion.denoisers import PosteriorDenoiser, VDenoiser, build_denoiser, preset_denoiser, wrap
from fastvdm.diffusion.sampling import (STUDENT_TIMESTEPS, DDIMSampler, Denoiser, FewStepSampler, count_nfe, few_step,
                                        few_step_states, guided, initial_state, paste_inputs, sample_ddim,
                                        sample_few_step, trailing_timesteps)
from fastvdm.diffusion.schedule import NUM_TRAIN_TIMESTEPS, VSchedule, zero_snr_alpha_bar

__all__ = ["VSchedule", "sample_ddim", "sample_few_step", "few_step", "few_step_states", "initial_state", "guided",
           "count_nfe", "paste_inputs", "trailing_timesteps", "Denoiser", "DDIMSampler", "FewStepSampler",
           "STUDENT_TIMESTEPS", "zero_snr_alpha_bar", "NUM_TRAIN_TIMESTEPS", "PosteriorDenoiser", "VDenoiser",
           "build_denoiser", "preset_denoiser", "wrap"]
