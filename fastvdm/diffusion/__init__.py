"""Diffusion: the v-prediction zero-terminal-SNR schedule and the samplers (DDIM teacher, few-step student).

    from fastvdm.diffusion import VSchedule, DDIMSampler, FewStepSampler
    sch = VSchedule()                                   # 1000 steps, alpha_999 = 0
    x0 = DDIMSampler(sch, num_steps=50)(model, cond, (B, 3, T, H, W), generator=g, progress=True)
    x0 = FewStepSampler(sch)(model, cond, shape, generator=g)          # t = 999, 749, 499, 249
    x_k, t_k = FewStepSampler(sch).run(model, cond, x_T, steps=k)     # backward simulation

Samplers know nothing about distillation; the model is any ``model(x_t, t, cond) -> v``: a denoiser
(:mod:`fastvdm.diffusion.denoisers`) wrapping a network, e.g. ``PosteriorDenoiser(VideoUNet(cfg))`` (EDM-style
preconditioning around the hole-filled render prior of :mod:`fastvdm.diffusion.hole_fill`).
"""

from fastvdm.diffusion.denoisers import PosteriorDenoiser, VDenoiser, build_denoiser, preset_denoiser, wrap
from fastvdm.diffusion.sampling import DDIMSampler, FewStepSampler, paste_inputs, trailing_timesteps
from fastvdm.diffusion.schedule import NUM_TRAIN_TIMESTEPS, VSchedule, zero_snr_alpha_bar

__all__ = ["VSchedule", "DDIMSampler", "FewStepSampler", "trailing_timesteps", "paste_inputs",
           "zero_snr_alpha_bar", "NUM_TRAIN_TIMESTEPS", "PosteriorDenoiser", "VDenoiser", "build_denoiser",
           "preset_denoiser", "wrap"]
