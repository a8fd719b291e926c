"""FVGen distillation of a diffusers video U-Net (fastvdm.integrations.diffusers_distill) on tiny random U-Nets.

- the adapter's parameterization: for SVD's EDM v-prediction the U-Net output is fastvdm's v as is and its
  input is x_t (checked against diffusers' own EulerDiscreteScheduler preconditioning); for DDPM-style
  epsilon U-Nets, v from eps and the timestep of equal alpha_bar;
- one GANStage step and one KLStage step on a tiny SVD-style U-Net (teacher frozen and unchanged, student and
  head changed, losses finite), with the fastvdm patch applied to all three U-Nets.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import DDPMScheduler, EulerDiscreteScheduler  # noqa: E402

from diffusers_models import build, inputs  # noqa: E402
from fastvdm.diffusion import FewStepSampler, VSchedule  # noqa: E402
from fastvdm.distill import GANConfig, GANStage, KLConfig, KLStage  # noqa: E402
from fastvdm.integrations.diffusers import apply_fastvdm  # noqa: E402
from fastvdm.integrations.diffusers_distill import DiffusersVModel  # noqa: E402
from fastvdm.models import Discriminator  # noqa: E402


def svd_scheduler():
    """Stable Video Diffusion's scheduler config (EDM, v-prediction, continuous timesteps)."""
    return EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", interpolation_type="linear", use_karras_sigmas=True,
        sigma_min=0.002, sigma_max=700.0, timestep_spacing="leading", timestep_type="continuous",
    )


def svd_cond(batch: int, frames: int, size: int, seed: int = 5) -> dict:
    inp = inputs("svd", batch=batch, frames=frames, size=size, seed=seed)
    image = inp["sample"][:, :1, 4:].permute(0, 2, 1, 3, 4)  # (B, 4, 1, H, W): the conditioning frame latents
    return dict(image_latents=image, encoder_hidden_states=inp["encoder_hidden_states"],
                added_time_ids=inp["added_time_ids"])


def test_edm_adapter_matches_diffusers_preconditioning():
    """x0 from the adapter's v equals x0 from diffusers' EDM step (scale_model_input + v-prediction output)."""
    unet = build("svd")
    sched = svd_scheduler()
    model = DiffusersVModel(unet, sched)
    B, T, H = 2, 3, 8
    cond = svd_cond(B, T, H)
    x0 = torch.randn(B, 4, T, H, H)
    t = torch.tensor([300.0, 800.0])
    vs = VSchedule()
    x_t = vs.add_noise(x0, torch.randn_like(x0), t)
    with torch.no_grad():
        x0_adapter = vs.v_to_x0(x_t, model(x_t, t, cond), t)
        # diffusers: sample = x0 + sigma_ve * eps = x_t / alpha, unet(sample / sqrt(sigma^2 + 1), 0.25 log sigma)
        alpha, sigma = vs.alpha(t), vs.sigma(t)
        sigma_ve = (sigma / alpha).reshape(B, 1, 1, 1, 1)
        sample = x_t / alpha.reshape(B, 1, 1, 1, 1)
        unet_in = torch.cat([sample / (sigma_ve ** 2 + 1) ** 0.5, cond["image_latents"].expand(-1, -1, T, -1, -1)], 1)
        out = unet(unet_in.permute(0, 2, 1, 3, 4), 0.25 * sigma_ve.flatten().log(),
                   cond["encoder_hidden_states"], cond["added_time_ids"]).sample.permute(0, 2, 1, 3, 4)
        x0_diffusers = out * (-sigma_ve / (sigma_ve ** 2 + 1) ** 0.5) + sample / (sigma_ve ** 2 + 1)
    err = ((x0_adapter - x0_diffusers).norm() / x0_diffusers.norm()).item()
    assert err < 1e-4, err


def test_discrete_epsilon_adapter():
    """A DDPM epsilon U-Net: the timestep of equal alpha_bar and v = (eps - sigma x_t) / alpha."""
    unet = build("unet3d")
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="epsilon")
    model = DiffusersVModel(unet, sched)
    vs = VSchedule()
    t = torch.tensor([100.0, 700.0])
    tau, alpha, sigma = model._timestep_and_alpha(t, torch.zeros(1))
    ab = sched.alphas_cumprod.double()
    ab_tau = torch.exp(torch.lerp(ab.log()[tau.long()], ab.log()[tau.long() + 1], (tau - tau.floor()).double()))
    assert torch.allclose(ab_tau, alpha.double() ** 2, rtol=1e-5)
    inp = inputs("unet3d", batch=2, frames=2, size=8)
    x_t = vs.add_noise(torch.randn_like(inp["sample"]), inp["sample"], t)
    cond = {"encoder_hidden_states": inp["encoder_hidden_states"]}
    with torch.no_grad():
        eps = unet(x_t, tau, **cond).sample
        v = model(x_t, t, cond)
    a, s = alpha.reshape(2, 1, 1, 1, 1), sigma.reshape(2, 1, 1, 1, 1)
    assert torch.allclose(v, (eps - s * x_t) / a, rtol=1e-4, atol=1e-5)
    # fastvdm's zero-SNR t = 999 (alpha = 0) stays finite
    with torch.no_grad():
        assert torch.isfinite(model(x_t, torch.tensor([999.0, 999.0]), cond)).all()


def _params(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed(before, module):
    return [n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())]


@pytest.mark.parametrize("patched", [False, True], ids=["stock", "fastvdm"])
def test_gan_and_kl_steps_on_a_tiny_svd_unet(patched):
    torch.manual_seed(0)
    sched = svd_scheduler()
    teacher_unet = build("svd")
    unets = [teacher_unet, copy.deepcopy(teacher_unet), copy.deepcopy(teacher_unet)]
    if patched:
        for u in unets:
            apply_fastvdm(u)
    teacher, student, fake = (DiffusersVModel(u, sched) for u in unets)
    teacher.requires_grad_(False)
    disc = Discriminator(teacher, width=16, depth=2, groups=4)
    sampler = FewStepSampler(VSchedule())
    B, T, H = 2, 2, 8
    cond = svd_cond(B, T, H)
    x0 = torch.randn(B, 4, T, H, H)
    teacher_before, student_before, head_before = _params(teacher), _params(student), _params(disc.head)

    gan = GANStage(student, disc, sampler, GANConfig(lr_g=1e-4, lr_d=1e-3, disc_steps=1))
    logs = gan.step(x0, cond)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values()), logs
    assert _changed(student_before, student), "the GAN step did not update the student"
    assert _changed(head_before, disc.head), "the GAN step did not update the discriminator head"

    kl = KLStage(student, teacher, fake, sampler, disc, KLConfig(lr_g=1e-4, lr_fake=1e-4, fake_steps=1))
    fake_before = _params(fake)
    logs = kl.step(x0, cond)  # fake == teacher here: a zero DMD direction, the fake model moves
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values()), logs
    assert _changed(fake_before, fake), "the KL step did not update the fake-score model"
    student_mid = _params(student)
    logs = kl.step(x0, cond)  # now x0_fake != x0_real: the student moves
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values()), logs
    assert logs["loss_dmd"] > 0 and 0.0 < logs["kl_weight"] < 1.0
    assert _changed(student_mid, student), "the KL step did not update the student"

    assert not _changed(teacher_before, teacher), "the teacher changed"
    assert all(p.grad is None for p in teacher.parameters()), "the teacher got gradients"
