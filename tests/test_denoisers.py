"""Denoiser wrappers (fastvdm.diffusion.denoisers) and the render prior (fastvdm.diffusion.hole_fill): the
posterior preconditioning against a hand computation, the hole fill, the memo, the shipped v1 weights'
outputs through the wrapper, config round trips and the loss weight."""

import os

import pytest
import torch

from fastvdm.diffusion import VSchedule
from fastvdm.diffusion import hole_fill
from fastvdm.diffusion.denoisers import (PosteriorDenoiser, VDenoiser, adapt_state_dict, build_denoiser,
                                         preset_denoiser, split_config, wrap)
from fastvdm.diffusion.hole_fill import compute_render_prior, pull_push_fill, render_prior
from fastvdm.models import VideoUNet, VideoUNetConfig

SMALL = dict(channels=(8, 16), num_res_blocks=1, attention_levels=(1,), head_dim=8, groups=4, temporal_kernel=3)
DATA = os.path.join(os.path.dirname(__file__), "data", "shipped_outputs_v1.safetensors")


def _inputs(B=2, T=4, H=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    is_input = torch.zeros(B, T, dtype=torch.bool)
    is_input[:, 0] = True
    cond = {"cond_rgb": r(B, 3, T, H, H), "cond_mask": (r(B, 1, T, H, H) > 0).float(), "plucker": r(B, 6, T, H, H),
            "is_input": is_input, "input_frames": r(B, 3, T, H, H)}
    return r(B, 3, T, H, H), torch.tensor([999.0, 3.5])[:B], cond


def _net(seed=0):
    torch.manual_seed(seed)
    return VideoUNet(VideoUNetConfig(**SMALL))


def test_posterior_denoiser_is_the_gaussian_posterior_mean_plus_scaled_output():
    """x0 = g + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha g) + c_out F, computed here from the schedule by
    hand, with s per pixel (rendered / hole / input frame) and F the network's output (its output conv)."""
    net = _net()
    m = PosteriorDenoiser(net, prior_std=(0.07, 0.3), fill_holes=False)
    x, _, cond = _inputs()
    t = torch.tensor([999.0, 312.0])
    sch = VSchedule()
    flag = cond["is_input"][:, None, :, None, None]
    g = torch.where(flag, cond["input_frames"], cond["cond_rgb"] * cond["cond_mask"])
    s = torch.where(flag | (cond["cond_mask"] > 0.5), torch.tensor(0.07), torch.tensor(0.3)).expand_as(g)
    a = sch.alpha(t).view(2, 1, 1, 1, 1).double()
    sg = sch.sigma(t).view(2, 1, 1, 1, 1).double()
    s, g, xd = s.double(), g.double(), x.double()
    post = g + a * s ** 2 / (a ** 2 * s ** 2 + sg ** 2) * (xd - a * g)
    c_out = sg * s / (a ** 2 * s ** 2 + sg ** 2).sqrt()
    for bias in (0.0, 0.37):
        with torch.no_grad():
            net.conv_out.bias.fill_(bias)  # weight is zero-initialized: F = bias everywhere
            x0 = sch.v_to_x0(x, m(x, t, cond), t).double()
        torch.testing.assert_close(x0, post + c_out * bias, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x0[0], g[0] + 0.37 * s[0], rtol=1e-4, atol=1e-5)  # t = 999: the render, + s F
    # the network sees E[x0 | x_t]: at t = 999 the x0 prediction does not depend on the noise, below it does
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    x2 = torch.randn_like(x)
    with torch.no_grad():
        t999 = torch.tensor([999.0, 999.0])
        torch.testing.assert_close(sch.v_to_x0(x, m(x, t999, cond), t999), sch.v_to_x0(x2, m(x2, t999, cond), t999))
        t500 = torch.tensor([500.0, 500.0])
        assert (sch.v_to_x0(x, m(x, t500, cond), t500) - sch.v_to_x0(x2, m(x2, t500, cond), t500)).abs().max() > 1e-3
        # encode runs the network's encoder on that same input
        torch.testing.assert_close(m.encode(x, t500, cond), net.encode(m.network_input(x, t500, cond), t500, cond))
    with pytest.raises(ValueError, match="prior_std"):
        PosteriorDenoiser(net, prior_std=(0.1, -1.0))


def test_any_network_can_be_wrapped():
    """A user's network (any module net(x, t, cond)) gets the same preconditioning; VDenoiser is the identity."""

    class Const(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Parameter(torch.tensor(0.5))

        def forward(self, x, t, cond):
            return torch.zeros_like(x) + self.c

    x, _, cond = _inputs()
    t = torch.tensor([999.0, 999.0])
    v = PosteriorDenoiser(Const(), prior_std=(0.1, 0.2))(x, t, cond)
    g, mask, flag = compute_render_prior(cond, x)
    s = torch.where(flag | (mask > 0.5), torch.tensor(0.1), torch.tensor(0.2))
    torch.testing.assert_close(VSchedule().v_to_x0(x, v, t), g + 0.5 * s, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(VDenoiser(Const())(x, t, cond), torch.full_like(x, 0.5))


def test_harmonic_fill_solves_laplace_in_the_holes():
    """smooth_iters > 0: the holes converge to the discrete harmonic interpolant of the valid pixels. A linear
    ramp is harmonic, so an interior hole of a ramp is restored; plain pull-push is not exact there."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    ramp = (0.05 * xx - 0.03 * yy - 0.2).expand(1, 3, 2, 16, 16).clone()
    ramp[:, 1] *= -1
    mask = torch.ones(1, 1, 2, 16, 16)
    mask[..., 4:11, 3:12] = 0
    mask[:, :, 1, 6:9, 2:14] = 0
    errs = [(pull_push_fill(ramp * mask, mask, k) - ramp).abs().max().item() for k in (0, 5, 60)]
    assert errs[0] > 0.02 and errs[1] < errs[0] and errs[2] < 1e-3, errs
    out = pull_push_fill(ramp * mask, mask, 5)
    assert torch.equal(out * mask, ramp * mask)  # valid pixels are kept exactly


def test_pull_push_fill_and_the_prior_at_t999():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 2, 7, 9, generator=g) * 2 - 1
    mask = (torch.rand(2, 1, 2, 7, 9, generator=g) > 0.4).float()
    out = pull_push_fill(rgb * mask, mask)
    assert torch.equal(out * mask, rgb * mask)  # valid pixels are kept exactly
    const = torch.full((1, 3, 1, 8, 8), 0.3)
    hole = torch.ones(1, 1, 1, 8, 8)
    hole[..., 2:6, 1:7] = 0
    torch.testing.assert_close(pull_push_fill(const * hole, hole), const)  # a constant image is restored
    assert pull_push_fill(const, torch.zeros_like(hole)).abs().max() == 0  # nothing valid: 0
    m = PosteriorDenoiser(_net(), fill_holes=True, fill_smooth_iters=0)  # zero output layer: x0 = the prior
    x, _, cond = _inputs()
    t = torch.tensor([999.0, 999.0])
    filled = pull_push_fill(cond["cond_rgb"] * cond["cond_mask"], cond["cond_mask"])
    expect = torch.where(cond["is_input"][:, None, :, None, None], cond["input_frames"], filled)
    torch.testing.assert_close(VSchedule().v_to_x0(x, m(x, t, cond), t), expect, rtol=1e-5, atol=1e-6)


def test_output_weight_gives_the_output_uniform_weight_and_the_teacher_step_uses_it():
    """output_weight(t) * (v error)^2 == (F error)^2 in the holes; TeacherStep's loss per weighting."""
    from fastvdm.train.teacher import TeacherStep

    m = PosteriorDenoiser(_net(), prior_std=(0.1, 0.25))
    t = torch.tensor([0.0, 400.0, 999.0])
    sch = VSchedule()
    a, s = sch.alpha(t).double(), sch.sigma(t).double()
    c_out_over_sigma = 0.25 / (a ** 2 * 0.25 ** 2 + s ** 2).sqrt()  # dv / dF in a hole
    torch.testing.assert_close(m.output_weight(t).double(), 1 / c_out_over_sigma ** 2, rtol=1e-5, atol=0)
    assert torch.equal(VDenoiser(_net()).output_weight(t), torch.ones(3))
    x, _, cond = _inputs(B=2)
    torch.nn.init.normal_(m.net.conv_out.weight, std=0.1)
    batch = {"frames": cond["input_frames"], "cond_rgb": cond["cond_rgb"], "cond_mask": cond["cond_mask"],
             "plucker": cond["plucker"], "is_input": cond["is_input"]}
    tt, noise = torch.tensor([100, 900]), torch.randn_like(x)
    v = m(sch.add_noise(batch["frames"], noise, tt), tt.float(), cond)
    target = sch.v_target(batch["frames"], noise, tt)
    err = torch.where(cond["is_input"][:, None, :, None, None], torch.zeros_like(v), v - target) ** 2
    per_sample = err.flatten(1).mean(1)
    for weighting, w in (("output", m.output_weight(tt.float())), ("edm", m.output_weight(tt.float())),
                         ("v", torch.ones(2))):
        loss = TeacherStep(sch, weighting=weighting).loss(m, batch, tt, noise, torch.zeros(2, dtype=torch.bool), "cpu")
        torch.testing.assert_close(loss, (per_sample * w).mean(), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="weighting"):
        TeacherStep(sch, weighting="snr")


def test_edm_timesteps_follow_the_log_normal_noise_levels():
    """edm_timestep maps z to the step whose sigma/alpha first reaches exp(P_MEAN + P_STD z): checked against a
    direct scan of the schedule, and the median level of many draws is exp(P_MEAN)."""
    from fastvdm.train.teacher import EDM_P_MEAN, EDM_P_STD, edm_timestep

    sch = VSchedule()
    z = torch.tensor([-2.0, 0.0, 0.7, 3.0])
    t = edm_timestep(sch, z)
    level = (1 / sch.alpha_bar - 1).sqrt()  # sigma / alpha per step, increasing
    for zi, ti in zip(z.tolist(), t.tolist()):
        want = torch.exp(torch.tensor(EDM_P_MEAN + EDM_P_STD * zi, dtype=torch.float64))
        first = int((level < want).sum())
        assert ti == min(first, 999)
    draws = edm_timestep(sch, torch.randn(20000, generator=torch.Generator().manual_seed(0)))
    med = level[draws.median()].item()
    assert abs(torch.log(torch.tensor(med)).item() - EDM_P_MEAN) < 0.05


def test_render_cache_reuses_only_the_same_unmodified_condition():
    """The fill is memoized per condition: a repeated call with the same tensors returns the same result objects;
    an in-place edit, new tensors, other fill settings or a condition that requires grad all recompute."""
    hole_fill.render_cache.clear()
    x, _, cond = _inputs()
    first = render_prior(cond, x, True, 3)
    again = render_prior(cond, x, True, 3)
    assert all(a is b for a, b in zip(first, again))
    for a, b in zip(first, compute_render_prior(cond, x, True, 3)):
        assert torch.equal(a, b)
    cond["cond_rgb"].mul_(0.5)  # in place: the cached fill is stale
    edited = render_prior(cond, x, True, 3)
    assert not torch.equal(edited[0], first[0])
    assert torch.equal(edited[0], compute_render_prior(cond, x, True, 3)[0])
    copy = {k: v.clone() for k, v in cond.items()}  # equal values, new objects: recomputed, same numbers
    other = render_prior(copy, x, True, 3)
    assert other[0] is not edited[0] and torch.equal(other[0], edited[0])
    assert not torch.equal(render_prior(copy, x, True, 0)[0], other[0])  # other settings: not served
    grad_cond = dict(copy, cond_rgb=copy["cond_rgb"].requires_grad_())
    assert render_prior(grad_cond, x, True, 3)[0] is not render_prior(grad_cond, x, True, 3)[0]
    m = PosteriorDenoiser(_net(), fill_smooth_iters=3)
    torch.nn.init.normal_(m.net.conv_out.weight, std=0.1)
    hole_fill.render_cache.clear()
    with torch.no_grad():
        t = torch.tensor([500.0, 20.0])
        y1, y2 = m(x, t, cond), m(x, t, cond)
        hole_fill.render_cache.clear()
        y3 = m(x, t, cond)
    assert torch.equal(y1, y2) and torch.equal(y1, y3)


def test_config_round_trip_and_legacy_configs():
    m = wrap(_net(), {"kind": "posterior", "prior_std": [0.05, 0.3], "fill_holes": True, "fill_smooth_iters": 2})
    d = m.config.to_dict()
    assert d["denoiser"] == {"kind": "posterior", "prior_std": [0.05, 0.3], "fill_holes": True, "fill_smooth_iters": 2}
    assert m.config.channels == (8, 16)  # reads go to the network's config
    m2 = build_denoiser(d)
    assert isinstance(m2, PosteriorDenoiser) and m2.prior_std == (0.05, 0.3) and m2.fill_smooth_iters == 2
    m2.load_state_dict(m.state_dict())
    assert all(k.startswith("net.") for k in m.state_dict())
    legacy = {**VideoUNetConfig(**SMALL).to_dict(), "posterior_skip": True, "fill_holes": True,
              "fill_smooth_iters": 5, "prior_std": [0.1, 0.2], "render_skip": False}
    net_cfg, den = split_config(legacy)
    assert den == {"kind": "posterior", "prior_std": [0.1, 0.2], "fill_holes": True, "fill_smooth_iters": 5}
    assert "posterior_skip" not in net_cfg
    assert isinstance(build_denoiser(VideoUNetConfig(**SMALL).to_dict()), VDenoiser)
    with pytest.raises(ValueError, match="render_skip"):
        split_config({**legacy, "posterior_skip": False, "render_skip": True})
    with pytest.raises(ValueError, match="denoiser kind"):
        wrap(_net(), {"kind": "edm2"})
    bare = _net().state_dict()
    assert set(adapt_state_dict(m, bare)) == set(m.state_dict())
    assert isinstance(preset_denoiser("tiny"), PosteriorDenoiser)


@pytest.mark.parametrize("name", ["teacher", "student"])
def test_shipped_v1_weights_give_the_same_outputs_through_the_wrapper(name):
    """The shipped tiny models (bare-network checkpoints with the session-2 config) load as PosteriorDenoiser and
    reproduce the outputs recorded with the pre-refactor code (commit 7ffe800): v, encode and the loss weight."""
    from safetensors.torch import load_file

    from fastvdm.train import load_model

    ref = load_file(DATA)
    cond = {k: ref[k] for k in ("cond_rgb", "cond_mask", "plucker", "input_frames")}
    cond["is_input"] = ref["is_input"].bool()
    from fastvdm.diffusion.denoisers import load_denoiser

    folder = os.path.join(os.path.dirname(__file__), "..", "fastvdm", "weights", f"{name}_tiny")
    model, _ = load_model(folder)
    assert isinstance(model, PosteriorDenoiser) and isinstance(load_denoiser(folder)[0], PosteriorDenoiser)
    x = ref["x_t"]
    with torch.no_grad():
        for t in (999, 600, 25):
            tt = torch.full((x.shape[0],), float(t))
            torch.testing.assert_close(model(x, tt, cond), ref[f"{name}_v_t{t}"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(model.encode(x, tt, cond), ref[f"{name}_enc_t{t}"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.output_weight(torch.tensor([0.0, 250.0, 999.0])), ref[f"{name}_lw"])


def test_pretrained_folder_round_trip_of_a_denoiser(tmp_path):
    """save_denoiser stores the bare network + a "denoiser" entry; load_denoiser wraps it back (same outputs),
    VideoUNet.from_pretrained (and models.pretrained.load_network) return the bare network."""
    from fastvdm.diffusion.denoisers import load_denoiser, save_denoiser
    from fastvdm.models.pretrained import load_network, read_config

    m = PosteriorDenoiser(_net(), prior_std=(0.05, 0.3), fill_smooth_iters=2)
    torch.nn.init.normal_(m.net.conv_out.weight, std=0.1)
    folder = save_denoiser(m, str(tmp_path / "p"), frames=4, size=8)
    cfg = read_config(folder)
    assert cfg["denoiser"] == {"kind": "posterior", "prior_std": [0.05, 0.3], "fill_holes": True, "fill_smooth_iters": 2}
    assert "posterior_skip" not in cfg["model_config"]
    back, _ = load_denoiser(folder)
    x, t, cond = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(back(x, t, cond), m(x, t, cond))
    assert isinstance(VideoUNet.from_pretrained(folder), VideoUNet)
    net, _ = load_network(folder)
    assert isinstance(net, VideoUNet) and all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                                                   m.net.state_dict().values()))
