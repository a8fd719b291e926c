"""Schedule, parameterization conversions and samplers, against closed forms and exact oracle denoisers."""

import math

import pytest
import torch

from fastvdm.diffusion import (DDIMSampler, FewStepSampler, VSchedule, count_nfe, guided, initial_state, paste_inputs,
                               sample_ddim, sample_few_step, trailing_timesteps)
from fastvdm.diffusion import noise
from fastvdm.diffusion.schedule import zero_snr_alpha_bar


def test_schedule_zero_terminal_snr_and_unit_variance():
    sch = VSchedule()
    t = torch.arange(1000).float()
    a, s = sch.alpha(t).double(), sch.sigma(t).double()
    torch.testing.assert_close(a * a + s * s, torch.ones(1000, dtype=torch.float64), atol=1e-6, rtol=0)
    assert a[-1].item() == 0.0 and s[-1].item() == 1.0 and sch.snr(torch.tensor([999.0])).item() == 0.0
    assert bool((a[1:] < a[:-1]).all()), "alpha must decrease strictly"
    # alpha_0 is the unrescaled scaled-linear value sqrt(1 - beta_0)
    assert a[0].item() == pytest.approx(math.sqrt(1 - 0.00085), abs=1e-7)
    # rescaling is affine in sqrt(alpha_bar): check one interior point against the closed form
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ab = torch.cumprod(1 - betas, 0).sqrt()
    expect = (ab[500] - ab[-1]) * ab[0] / (ab[0] - ab[-1])
    assert zero_snr_alpha_bar()[500].sqrt().item() == pytest.approx(expect.item(), rel=1e-12)


def test_fractional_timesteps_interpolate_alpha_bar():
    sch = VSchedule()
    ab = sch.alpha_bar
    a = sch.alpha(torch.tensor([10.25]))
    assert a.item() == pytest.approx(math.sqrt(0.75 * ab[10].item() + 0.25 * ab[11].item()), rel=1e-6)
    with pytest.raises(ValueError, match="timesteps"):
        sch.alpha(torch.tensor([1000.0]))


def test_conversions_round_trip():
    sch = VSchedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, 2, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 3, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 500, 998, 999])
    x_t = sch.add_noise(x0, eps, t)
    v = sch.v_target(x0, eps, t)
    torch.testing.assert_close(sch.v_to_x0(x_t, v, t), x0, atol=2e-6, rtol=0)  # alpha/sigma are fp32
    torch.testing.assert_close(sch.v_to_eps(x_t, v, t), eps, atol=2e-6, rtol=0)
    torch.testing.assert_close(sch.x0_eps_to_v(x0, eps, t), v)
    torch.testing.assert_close(sch.x0_to_v(x_t, x0, t), v, atol=1e-4, rtol=0)
    torch.testing.assert_close(sch.x0_to_eps(x_t, x0, t), eps, atol=1e-4, rtol=0)
    # at t = 999: pure noise, v = -x0
    torch.testing.assert_close(x_t[4], eps[4])
    torch.testing.assert_close(v[4], -x0[4])


def test_trailing_timesteps():
    assert trailing_timesteps(4) == [999, 749, 499, 249]
    assert trailing_timesteps(2) == [999, 499]
    assert trailing_timesteps(1) == [999]
    ts = trailing_timesteps(50)
    assert ts[:3] == [999, 979, 959] and ts[-1] == 19 and len(ts) == 50
    assert trailing_timesteps(3) == [999, 666, 332]  # round(666.67) - 1, round(333.33) - 1
    with pytest.raises(ValueError):
        trailing_timesteps(0)


class PointMass:
    """The exact v-denoiser of the data distribution delta(x*): x0_hat = x*; counts calls."""

    def __init__(self, sch, target):
        self.sch, self.target, self.calls = sch, target, 0

    def __call__(self, x_t, t, cond):
        self.calls += 1
        return self.sch.x0_to_v(x_t, self.target.expand_as(x_t), t)


class Gaussian:
    """The exact v-denoiser of N(0, s^2 I): x0_hat = alpha s^2 x_t / (alpha^2 s^2 + sigma^2)."""

    def __init__(self, sch, s):
        self.sch, self.s = sch, s

    def __call__(self, x_t, t, cond):
        a, sg = self.sch._coefs(t, x_t)
        x0 = a * self.s ** 2 * x_t / (a * a * self.s ** 2 + sg * sg)
        return a * (x_t - a * x0) / sg - sg * x0  # v = alpha eps - sigma x0


def _cond(B=2, T=3, H=4):
    return {"is_input": torch.zeros(B, T, dtype=torch.bool), "input_frames": torch.zeros(B, 3, T, H, H)}


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_point_mass_is_exact(eta):
    sch = VSchedule()
    target = torch.randn(1, 3, 3, 4, 4)
    model = PointMass(sch, target)
    sampler = DDIMSampler(sch, num_steps=10, eta=eta)
    net = count_nfe(model)
    out = sampler(net, _cond(), (2, 3, 3, 4, 4), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, target.expand(2, -1, -1, -1, -1), atol=1e-5, rtol=0)
    assert model.calls == 10 and net.calls == 10


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_samples_gaussian_with_the_right_std(eta):
    """DDIM (ODE at eta 0, ancestral at eta 1) with the exact denoiser of N(0, s^2): the output is the posterior
    mean at the last grid point t_L, of std a s^2 / sqrt(a^2 s^2 + sigma^2) when x_{t_L} has the exact marginal;
    the discretization error shrinks with the step count (1000 steps: t_L = 0)."""
    sch = VSchedule()
    errs = []
    for n in (100, 1000):
        sampler = DDIMSampler(sch, num_steps=n, eta=eta)
        out = sampler(Gaussian(sch, 0.5), _cond(B=4, T=4, H=16), (4, 3, 4, 16, 16),
                      generator=torch.Generator().manual_seed(0))
        t_last = torch.tensor([float(sampler.timesteps[-1])])
        a, sg = sch.alpha(t_last).item(), sch.sigma(t_last).item()
        expect = a * 0.25 / math.sqrt(a * a * 0.25 + sg * sg)
        errs.append(abs(out.std().item() / expect - 1))
        assert abs(out.mean().item()) < 0.02
    assert errs[1] < (0.01 if eta == 0 else 0.025) and errs[1] < errs[0], errs  # ancestral: coarser


def test_ddim_seeded_and_guidance_counts_two_evaluations():
    sch = VSchedule()
    calls = []

    def model(x_t, t, cond):
        calls.append(cond["cond_mask"].sum().item())
        return torch.full_like(x_t, 0.1) * (1 + cond["cond_mask"].mean())

    cond = {"cond_rgb": torch.ones(1, 3, 2, 4, 4), "cond_mask": torch.ones(1, 1, 2, 4, 4),
            "plucker": torch.zeros(1, 6, 2, 4, 4), "is_input": torch.zeros(1, 2, dtype=torch.bool),
            "input_frames": torch.zeros(1, 3, 2, 4, 4)}
    from fastvdm.models import drop_condition

    s = DDIMSampler(sch, num_steps=5, guidance=3.0, uncond=drop_condition)
    net = count_nfe(model)
    a = s(net, cond, (1, 3, 2, 4, 4), generator=torch.Generator().manual_seed(3))
    assert net.calls == 10 and calls.count(0.0) == 5  # the unconditional branch sees no render mask
    b = s(model, cond, (1, 3, 2, 4, 4), generator=torch.Generator().manual_seed(3))
    c = s(model, cond, (1, 3, 2, 4, 4), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # guided v at the first step: v_u + 3 (v_c - v_u) = 0.1 + 3 * 0.1 = 0.4; one step: x0 = -v at t = 999
    one = DDIMSampler(sch, num_steps=1, guidance=3.0, uncond=drop_condition)(model, cond, (1, 3, 2, 4, 4),
                                                     generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(one, torch.full_like(one, -0.4))


def test_few_step_point_mass_and_run_matches_manual_steps():
    sch = VSchedule()
    target = torch.randn(1, 3, 3, 4, 4)
    fs = FewStepSampler(sch)
    assert fs.timesteps == [999, 749, 499, 249]
    net = count_nfe(PointMass(sch, target))
    out = fs(net, _cond(), (2, 3, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, target.expand(2, -1, -1, -1, -1), atol=1e-5, rtol=0)
    assert net.calls == 4
    net = count_nfe(PointMass(sch, target))
    fs(net, _cond(), (2, 3, 3, 4, 4), num_steps=2)
    assert net.calls == 2

    model = Gaussian(sch, 0.7)
    x_T = torch.randn(2, 3, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    x2, t2 = fs.run(model, _cond(), x_T, steps=2, generator=torch.Generator().manual_seed(9))
    assert t2.tolist() == [499.0, 499.0]
    g = torch.Generator().manual_seed(9)  # manual: x0 at 999, re-noise to 749, x0 at 749, re-noise to 499
    x = x_T
    for t, tn in ((999, 749), (749, 499)):
        tt = torch.full((2,), float(t))
        x0 = sch.v_to_x0(x, model(x, tt, None), tt)
        z = noise.randn(x.shape, g)  # the samplers draw per-sample noise on the device (fastvdm.diffusion.noise)
        x = sch.add_noise(x0, z, torch.full((2,), float(tn)))
    torch.testing.assert_close(x2, x)
    x0_run, t0 = fs.run(model, _cond(), x_T, steps=0)
    assert x0_run is x_T and t0.tolist() == [999.0, 999.0]
    with pytest.raises(ValueError):
        fs.run(model, _cond(), x_T, steps=4)
    with pytest.raises(ValueError):
        FewStepSampler(sch, timesteps=(500, 700))


def test_samplers_paste_clean_input_frames():
    sch = VSchedule()
    cond = _cond(B=1, T=3)
    cond["is_input"][0, 1] = True
    cond["input_frames"] = torch.randn(1, 3, 3, 4, 4)
    out = FewStepSampler(sch)(PointMass(sch, torch.zeros(1, 3, 3, 4, 4)), cond, (1, 3, 3, 4, 4))
    assert torch.equal(out[:, :, 1], cond["input_frames"][:, :, 1])
    assert out[:, :, 0].abs().max().item() < 1e-5
    assert torch.equal(paste_inputs(out, {}), out)


def test_sampler_functions_take_any_denoiser_and_equal_the_bundles():
    """The plain functions over a user's own denoiser (no class, no condition dict) give the bundles' output
    draw for draw; guidance composes as a wrapper (two counted evaluations per step)."""
    sch = VSchedule()
    model = Gaussian(sch, 0.6)
    shape = (2, 3, 3, 4, 4)
    ts = trailing_timesteps(7)
    g = torch.Generator().manual_seed(11)
    x = initial_state(shape, ts[0], g)
    own = sample_ddim(lambda x_t, t, c: model(x_t, t, c), x, ts, g, None, sch, eta=0.5)
    ref = DDIMSampler(sch, num_steps=7, eta=0.5)(model, _cond(B=2, T=3), shape, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(own, ref)  # _cond has no input frame: nothing pasted
    g = torch.Generator().manual_seed(5)
    x = initial_state(shape, 999, g)
    few = sample_few_step(model, x, (999, 749, 499, 249), g)
    ref = FewStepSampler(sch)(model, _cond(B=2, T=3), shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(few, ref)
    # starting below 999, the initial state is sigma_t * noise (x0 unknown: 0)
    n = noise.randn(shape, torch.Generator().manual_seed(2))
    s0 = initial_state(shape, 499, torch.Generator().manual_seed(2), sch)
    torch.testing.assert_close(s0, sch.sigma(torch.tensor([499.0])).item() * n)

    net = count_nfe(lambda x_t, t, c: torch.full_like(x_t, 0.1) * (2.0 if c == "c" else 1.0))
    out = sample_ddim(guided(net, 3.0, uncond="u"), initial_state(shape), [999], cond="c")
    torch.testing.assert_close(out, torch.full(shape, -0.4))  # x0 = -v at t = 999; v = 0.1 + 3 (0.2 - 0.1)
    assert net.calls == 2 and guided(net, 1.0) is net
    with pytest.raises(ValueError, match="uncond"):
        guided(net, 2.0)
    with pytest.raises(ValueError, match="decreasing"):
        sample_few_step(model, x, (249, 499))
