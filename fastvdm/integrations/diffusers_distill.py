"""FVGen distillation for diffusers video U-Nets: a U-Net as a fastvdm ``model(x_t, t, cond) -> v``.

    from fastvdm.integrations.diffusers_distill import DiffusersVModel
    teacher = DiffusersVModel(unet, scheduler).requires_grad_(False)      # frozen
    student = DiffusersVModel(copy.deepcopy(unet), scheduler)            # trainable copies
    fake = DiffusersVModel(copy.deepcopy(unet), scheduler)
    disc = Discriminator(teacher)                     # frozen down + middle blocks, trainable 3D-CNN head
    GANStage(student, disc, FewStepSampler(VSchedule())).step(x0, cond)
    KLStage(student, teacher, fake, FewStepSampler(VSchedule()), disc).step(x0, cond)

fastvdm's stages speak one parameterization: :class:`fastvdm.diffusion.VSchedule` (variance preserving,
x_t = alpha_t x0 + sigma_t eps, fastvdm timesteps t in [0, 999], v = alpha_t eps - sigma_t x0). The adapter
evaluates the diffusers U-Net at the noise level of fastvdm's t in the U-Net's own parameterization, read from
its scheduler's config, and returns fastvdm's v:

- ``"edm"`` (SVD: ``EulerDiscreteScheduler`` with ``timestep_type="continuous"``, v-prediction): the U-Net sees
  c_in * (x_t / alpha) = x_t (for a VP x_t, c_in = 1 / sqrt(sigma_ve^2 + 1) = alpha) at the conditioning
  c_noise = 0.25 * log(sigma_ve), sigma_ve = sigma_t / alpha_t clamped to the scheduler's [sigma_min, sigma_max];
  its output F satisfies x0 = alpha x_t - sigma F, so F is fastvdm's v as is.
- ``"discrete"`` (DDPM-style ``alphas_cumprod``: ModelScope/Zeroscope, AnimateDiff, I2VGen-XL): the U-Net gets
  x_t at the (fractional) training timestep whose alpha_bar equals alpha_t^2, clamped to the range it was
  trained on; an "epsilon" output is turned into v = (eps - sigma x_t) / alpha (alpha clamped at the U-Net's
  smallest, so fastvdm's zero-SNR t = 999 stays finite), "v_prediction" is used as is.

``cond``: a dict with the U-Net's conditioning keyword arguments (e.g. ``encoder_hidden_states``,
``added_time_ids`` for SVD, ``fps``/``image_latents``/``image_embeddings`` for I2VGen-XL) plus, for SVD,
``image_latents`` (B, C_img, T or 1, H, W): the conditioning frame latents SVD concatenates to its input
channels. Clips x_t are fastvdm's (B, C, T, H, W); SVD's (B, T, C, H, W) layout is handled here.

``encode(x_t, t, cond, multiscale=False)`` runs the U-Net only up to its middle block (a hook stops the
forward there) and returns the middle block's features (B, C, T, h, w) (with ``multiscale``: every down block's
output, then the middle block's): what :class:`fastvdm.models.Discriminator` needs from a frozen teacher.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from fastvdm.diffusion import VSchedule

__all__ = ["DiffusersVModel", "parameterization"]

_SVD = "UNetSpatioTemporalConditionModel"
_CONTROL_KEYS = ("image_latents",)  # consumed by the adapter for SVD (concatenated), passed through otherwise


def parameterization(scheduler) -> dict:
    """The U-Net parameterization described by a diffusers scheduler's config (see the module docstring)."""
    cfg = scheduler.config
    pred = cfg.get("prediction_type", "epsilon")
    if cfg.get("timestep_type", "discrete") == "continuous":
        if pred != "v_prediction":
            raise ValueError(f"continuous-time (EDM) schedulers are supported with v_prediction, got {pred!r}")
        return dict(kind="edm", sigma_min=float(cfg.get("sigma_min") or 0.002),
                    sigma_max=float(cfg.get("sigma_max") or 700.0))
    if pred not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type {pred!r} is not supported (epsilon or v_prediction)")
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if alphas_cumprod is None:
        raise ValueError(f"{type(scheduler).__name__} has no alphas_cumprod: not a discrete DDPM-style scheduler")
    return dict(kind="discrete", prediction=pred, alphas_cumprod=torch.as_tensor(alphas_cumprod, dtype=torch.float64))


class _Stop(Exception):
    """Raised by a forward hook to end the U-Net's forward after the middle block (encode)."""


class DiffusersVModel(nn.Module):
    """A diffusers video U-Net as a fastvdm v-prediction model ``forward(x_t, t, cond) -> v`` (B, C, T, H, W).

    unet: one of the four supported diffusers video U-Nets; scheduler: the diffusers scheduler it was trained
    with (only its config / alphas_cumprod are read); schedule: fastvdm's schedule of x_t and t (default
    :class:`VSchedule`). The U-Net is a submodule: ``requires_grad_``, ``parameters`` and state dicts are its.
    """

    def __init__(self, unet: nn.Module, scheduler, schedule: Optional[VSchedule] = None):
        super().__init__()
        self.unet = unet
        self.param = parameterization(scheduler)
        self.schedule = schedule or VSchedule()
        self.is_svd = type(unet).__name__ == _SVD
        channels = list(unet.config.block_out_channels)
        self.feature_channels = channels[-1]
        self.multiscale_channels = channels + [channels[-1]]

    # ------------------------------------------------------------------ parameterization
    def _timestep_and_alpha(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(U-Net timestep (B,), alpha (B,), sigma (B,)) for fastvdm timesteps t, in float32 on like's device."""
        alpha = self.schedule.alpha(t).to(like.device, torch.float32)
        sigma = self.schedule.sigma(t).to(like.device, torch.float32)
        if self.param["kind"] == "edm":
            sigma_ve = (sigma.double() / alpha.double().clamp_min(1e-12)).clamp(self.param["sigma_min"],
                                                                                self.param["sigma_max"])
            return (0.25 * sigma_ve.log()).float(), alpha, sigma
        ab = self.param["alphas_cumprod"]  # decreasing in the training timestep
        target = (alpha.double() ** 2).cpu().clamp(float(ab[-1]), float(ab[0]))
        # fractional training timestep with alpha_bar(tau) = target, linear in log alpha_bar between steps
        log_ab, log_t = ab.log(), target.log()
        idx = torch.searchsorted(-log_ab, -log_t).clamp(1, len(ab) - 1)
        lo, hi = log_ab[idx - 1], log_ab[idx]
        frac = ((lo - log_t) / (lo - hi).clamp_min(1e-30)).clamp(0, 1)
        tau = (idx - 1).double() + frac
        return tau.float().to(like.device), alpha, sigma

    def _to_v(self, out: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        if self.param["kind"] == "edm" or self.param["prediction"] == "v_prediction":
            return out
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        a_min = float(self.param["alphas_cumprod"][-1]) ** 0.5
        a = alpha.clamp_min(a_min).reshape(shape).to(out.dtype)
        return (out - sigma.reshape(shape).to(out.dtype) * x_t) / a

    # ------------------------------------------------------------------ calls
    def _unet_call(self, x_t: Tensor, t: Tensor, cond: Optional[dict]) -> tuple[Any, Tensor, Tensor]:
        cond = dict(cond or {})
        timestep, alpha, sigma = self._timestep_and_alpha(t, x_t)
        sample = x_t
        if self.is_svd:
            image = cond.pop("image_latents", None)
            if image is not None:
                if image.shape[2] != x_t.shape[2]:
                    image = image.expand(-1, -1, x_t.shape[2], -1, -1)
                sample = torch.cat([x_t, image.to(x_t.dtype)], dim=1)
            sample = sample.permute(0, 2, 1, 3, 4)  # (B, T, C, H, W)
        out = self.unet(sample, timestep, **cond, return_dict=False)[0]
        return out, alpha, sigma

    def forward(self, x_t: Tensor, t: Tensor, cond: Optional[dict] = None) -> Tensor:
        """v (B, C, T, H, W) of fastvdm's VSchedule for x_t (B, C, T, H, W) at fastvdm timesteps t (B,)."""
        out, alpha, sigma = self._unet_call(x_t, t, cond)
        if self.is_svd:
            out = out.permute(0, 2, 1, 3, 4)
        return self._to_v(out, x_t, alpha, sigma)

    def encode(self, x_t: Tensor, t: Tensor, cond: Optional[dict] = None, multiscale: bool = False):
        """Features of the U-Net's down blocks + middle block at (x_t, t): the middle block's output
        (B, C, T, h, w), or with ``multiscale`` the list [down block outputs..., middle block output]."""
        frames = x_t.shape[2]
        captured: list = []

        def keep(_module, _args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)

        def stop(_module, _args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _Stop

        hooks = [b.register_forward_hook(keep) for b in self.unet.down_blocks] if multiscale else []
        hooks.append(self.unet.mid_block.register_forward_hook(stop))
        try:
            self._unet_call(x_t, t, cond)
        except _Stop:
            pass
        finally:
            for h in hooks:
                h.remove()
        if not captured:
            raise RuntimeError("the U-Net's forward did not reach its middle block")

        def video(h: Tensor) -> Tensor:  # (B * T, C, h, w) -> (B, C, T, h, w)
            return h.reshape(-1, frames, *h.shape[1:]).permute(0, 2, 1, 3, 4)

        feats = [video(h) for h in captured]
        return feats if multiscale else feats[-1]

