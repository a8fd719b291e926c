"""VideoUNet: shapes, conditioning semantics, config round trip, and every backend against the reference."""

import pytest
import torch

import fastvdm.ops as ops
from fastvdm.models import VideoUNet, VideoUNetConfig, drop_condition, make_cond
from oracle import assert_rel_close

SMALL = dict(channels=(8, 16), num_res_blocks=1, attention_levels=(1,), head_dim=8, groups=4, temporal_kernel=3)


def _inputs(B=2, T=4, H=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    is_input = torch.zeros(B, T, dtype=torch.bool)
    is_input[:, 0] = True
    cond = {"cond_rgb": r(B, 3, T, H, H), "cond_mask": (r(B, 1, T, H, H) > 0).float(), "plucker": r(B, 6, T, H, H),
            "is_input": is_input, "input_frames": r(B, 3, T, H, H)}
    return r(B, 3, T, H, H), torch.tensor([999.0, 3.5])[:B], cond


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    m = VideoUNet(VideoUNetConfig(**{**SMALL, **kw}))
    with torch.no_grad():  # the zero-initialized output layers would make every output 0: randomize them
        for p in m.parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                p.normal_(0, 0.1)
    return m


def test_shapes_and_encode():
    m = _model()
    x, t, cond = _inputs()
    v = m(x, t, cond)
    assert v.shape == x.shape and torch.isfinite(v).all() and v.abs().max() > 0
    f = m.encode(x, t, cond)
    assert f.shape == (2, m.feature_channels, 4, 4, 4)


def test_input_frames_replace_x_t_and_condition_matters():
    m = _model()
    x, t, cond = _inputs()
    v = m(x, t, cond)
    x2 = x.clone()
    x2[:, :, 0] = torch.randn_like(x2[:, :, 0])  # frame 0 is an input view: x_t is ignored there
    assert torch.equal(m(x2, t, cond), v)
    cond2 = dict(cond, input_frames=cond["input_frames"].clone())
    cond2["input_frames"][:, :, 1] += 1  # not an input frame: ignored
    assert torch.equal(m(x, t, cond2), v)
    cond3 = dict(cond, input_frames=cond["input_frames"] + 1)  # the input frame itself: used
    assert not torch.allclose(m(x, t, cond3), v)
    assert not torch.allclose(m(x, t, dict(cond, cond_rgb=cond["cond_rgb"] + 1)), v)
    assert not torch.allclose(m(x, t, dict(cond, plucker=cond["plucker"] + 1)), v)
    assert not torch.allclose(m(x, t + 100, cond), v)


def test_frames_interact_but_samples_do_not():
    """Changing frame 1 of sample 0 changes frame 3 of sample 0 (temporal attention / convs) and nothing of sample 1."""
    for kw in (dict(), dict(temporal_kernel=1, attention_levels=())):  # the middle block always attends over T
        m = _model(**kw)
        x, t, cond = _inputs()
        v = m(x, t, cond)
        x2 = x.clone()
        x2[0, :, 1] += 1
        v2 = m(x2, t, cond)
        assert (v2[0, :, 3] - v[0, :, 3]).abs().max().item() > 1e-6
        assert torch.equal(v2[1], v[1])


def test_drop_condition_and_make_cond():
    x, t, cond = _inputs()
    d = drop_condition(cond, torch.tensor([True, False]))
    assert d["cond_rgb"][0].abs().sum() == 0 and torch.equal(d["cond_rgb"][1], cond["cond_rgb"][1])
    assert d["cond_mask"][0].sum() == 0 and not d["is_input"][0].any() and torch.equal(d["is_input"][1], cond["is_input"][1])
    assert torch.equal(d["plucker"], cond["plucker"])
    batch = {"frames": x, "cond_rgb": cond["cond_rgb"], "cond_mask": cond["cond_mask"], "plucker": cond["plucker"],
             "is_input": cond["is_input"]}
    x0, c = make_cond(batch)
    assert torch.equal(x0, x) and torch.equal(c["input_frames"], x) and c["is_input"].dtype == torch.bool
    with pytest.raises(ValueError, match="missing"):
        make_cond({"frames": x})


def test_config_round_trip_presets_and_errors():
    for name in ("tiny", "base"):
        cfg = VideoUNetConfig.preset(name)
        assert VideoUNetConfig.from_dict(cfg.to_dict()) == cfg
    tiny = VideoUNet(VideoUNetConfig.preset("tiny"))
    assert sum(p.numel() for p in tiny.parameters()) < 2_000_000  # a few-MB checkpoint
    with pytest.raises(ValueError, match="preset"):
        VideoUNetConfig.preset("huge")
    with pytest.raises(ValueError, match="divisible"):
        VideoUNetConfig(channels=(10, 16), groups=4)
    with pytest.raises(ValueError, match="unknown fields"):
        VideoUNetConfig.from_dict({"chanels": [8]})
    m = _model()
    x, t, cond = _inputs(H=7)
    with pytest.raises(ValueError, match="divisible"):
        m(x, t, cond)
    x, t, cond = _inputs()
    with pytest.raises(ValueError, match="missing"):
        m(x, t, {k: v for k, v in cond.items() if k != "plucker"})


def _backends():
    names = set(ops.available_backends("group_norm")) | set(ops.available_backends("video_attention"))
    return [b for b in ops.BACKENDS if b in names and b != "reference"]


@pytest.mark.parametrize("backend", _backends())
def test_backend_matches_reference(backend):
    """Forward, encode and parameter gradients with every op forced to ``backend`` (where it serves the op;
    others stay on the reference) match the all-reference model within the fp32 tolerance."""
    m = _model(channels=(8, 8), attention_levels=())  # the middle block still has both attentions
    x, t, cond = _inputs(B=1, T=2, H=4)
    t = t[:1]
    served = [op for op in ("group_norm", "video_attention") if backend in ops.available_backends(op)]

    def run(b, op_list):
        m.zero_grad(set_to_none=True)
        with ops.use_backend(b, ops=op_list):
            v = m(x, t, cond)
            (v * torch.linspace(-1, 1, v.numel()).view_as(v)).sum().backward()
            f = m.encode(x, t, cond)
        return v.detach(), f.detach(), [p.grad.clone() for p in m.parameters()]

    v_ref, f_ref, g_ref = run("reference", None)
    v, f, g = run(backend, served)
    assert_rel_close(v, v_ref, 2e-4, f"{backend} forward")
    assert_rel_close(f, f_ref, 2e-4, f"{backend} encode")
    flat, flat_ref = torch.cat([x.flatten() for x in g]), torch.cat([x.flatten() for x in g_ref])
    assert_rel_close(flat, flat_ref, 5e-4, f"{backend} parameter gradients")


def test_render_skip_starts_from_the_render():
    """render_skip: v = F - sigma_t g; with F = 0 (the zero-initialized output conv) the one-step x0 = -v at
    t = 999 is the render, with the clean view at input frames."""
    from fastvdm.diffusion import VSchedule

    torch.manual_seed(0)
    m = VideoUNet(VideoUNetConfig(**{**SMALL, "render_skip": True}))
    x, _, cond = _inputs()
    t = torch.tensor([999.0, 500.0])
    v = m(x, t, cond)
    g = torch.where(cond["is_input"][:, None, :, None, None], cond["input_frames"], cond["cond_rgb"] * cond["cond_mask"])
    sigma = VSchedule().sigma(t).view(2, 1, 1, 1, 1)
    torch.testing.assert_close(v, -sigma * g)


def test_posterior_skip_is_the_gaussian_posterior_mean_plus_scaled_output():
    """posterior_skip: x0 = g + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha g) + c_out F, computed here
    from the schedule by hand, with s per pixel (rendered / hole / input frame) and F the output conv."""
    from fastvdm.diffusion import VSchedule

    torch.manual_seed(0)
    cfg = VideoUNetConfig(**{**SMALL, "posterior_skip": True, "prior_std": (0.07, 0.3)})
    m = VideoUNet(cfg)
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
            m.conv_out.bias.fill_(bias)  # weight is zero-initialized: F = bias everywhere
            x0 = sch.v_to_x0(x, m(x, t, cond), t).double()
        torch.testing.assert_close(x0, post + c_out * bias, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x0[0], g[0] + 0.37 * s[0], rtol=1e-4, atol=1e-5)  # t = 999: the render, + s F
    # the network sees E[x0 | x_t], not x_t: at t = 999 its x0 prediction does not depend on the noise at all,
    # even with a non-zero output layer; below 999 it does
    torch.nn.init.normal_(m.conv_out.weight, std=0.1)
    x2 = torch.randn_like(x)
    with torch.no_grad():
        t999 = torch.tensor([999.0, 999.0])
        torch.testing.assert_close(sch.v_to_x0(x, m(x, t999, cond), t999), sch.v_to_x0(x2, m(x2, t999, cond), t999))
        t500 = torch.tensor([500.0, 500.0])
        assert (sch.v_to_x0(x, m(x, t500, cond), t500) - sch.v_to_x0(x2, m(x2, t500, cond), t500)).abs().max() > 1e-3
    assert VideoUNetConfig.preset("tiny").posterior_skip
    with pytest.raises(ValueError, match="alternatives"):
        VideoUNetConfig(**{**SMALL, "posterior_skip": True, "render_skip": True})
    with pytest.raises(ValueError, match="prior_std"):
        VideoUNetConfig(**{**SMALL, "prior_std": (0.1, -1.0)})


def test_harmonic_fill_solves_laplace_in_the_holes():
    """smooth_iters > 0: the holes converge to the discrete harmonic interpolant of the valid pixels. A linear
    ramp is harmonic, so an interior hole of a ramp is restored; plain pull-push is not exact there."""
    from fastvdm.models.unet import pull_push_fill

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


def test_pull_push_fill():
    from fastvdm.models.unet import pull_push_fill

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
    m = VideoUNet(VideoUNetConfig(**{**SMALL, "render_skip": True, "fill_holes": True}))
    x, _, cond = _inputs()
    t = torch.tensor([999.0, 999.0])
    filled = pull_push_fill(cond["cond_rgb"] * cond["cond_mask"], cond["cond_mask"])
    expect = torch.where(cond["is_input"][:, None, :, None, None], cond["input_frames"], filled)
    torch.testing.assert_close(m(x, t, cond), -expect)  # zero-initialized F: x0 = -v = the filled render
    assert VideoUNetConfig.preset("tiny").fill_holes and VideoUNetConfig.preset("tiny").fill_smooth_iters > 0


def test_loss_weight_gives_the_output_uniform_weight():
    """loss_weight(t) * (v error)^2 == (F error)^2 in the holes: the teacher loss weighs F alike at every t."""
    from fastvdm.diffusion import VSchedule
    from fastvdm.train.teacher import TeacherStep

    cfg = VideoUNetConfig(**{**SMALL, "posterior_skip": True, "prior_std": (0.1, 0.25)})
    m = VideoUNet(cfg)
    t = torch.tensor([0.0, 400.0, 999.0])
    sch = VSchedule()
    a, s = sch.alpha(t).double(), sch.sigma(t).double()
    c_out_over_sigma = 0.25 / (a ** 2 * 0.25 ** 2 + s ** 2).sqrt()  # dv / dF in a hole
    torch.testing.assert_close(m.loss_weight(t).double(), 1 / c_out_over_sigma ** 2, rtol=1e-5, atol=0)
    assert torch.equal(VideoUNet(VideoUNetConfig(**SMALL)).loss_weight(t), torch.ones(3))
    # TeacherStep uses it: its loss equals the hand-weighted mean over the non-input frames
    x, _, cond = _inputs(B=2)
    batch = {"frames": cond["input_frames"], "cond_rgb": cond["cond_rgb"], "cond_mask": cond["cond_mask"],
             "plucker": cond["plucker"], "is_input": cond["is_input"]}
    tt, noise = torch.tensor([100, 900]), torch.randn_like(x)
    loss = TeacherStep(sch).loss(m, batch, tt, noise, torch.zeros(2, dtype=torch.bool), "cpu")
    v = m(sch.add_noise(batch["frames"], noise, tt), tt.float(), cond)
    target = sch.v_target(batch["frames"], noise, tt)
    err = torch.where(cond["is_input"][:, None, :, None, None], torch.zeros_like(v), v - target) ** 2
    want = (err.flatten(1).mean(1) * m.loss_weight(tt.float())).mean()
    torch.testing.assert_close(loss, want, rtol=1e-4, atol=1e-7)


def test_render_cache_reuses_only_the_same_unmodified_condition():
    """The fill is memoized per condition: a repeated call with the same tensors returns the same result objects;
    an in-place edit, new tensors, other fill settings or a condition that requires grad all recompute."""
    from fastvdm.models import unet

    unet._render_cache.clear()
    m = _model(fill_holes=True, fill_smooth_iters=3, posterior_skip=True)
    x, _, cond = _inputs()
    first = m._render(cond, x)
    again = m._render(cond, x)
    assert all(a is b for a, b in zip(first, again))
    fresh = m._compute_render(cond, x)
    for a, b in zip(first, fresh):
        assert torch.equal(a, b)
    cond["cond_rgb"].mul_(0.5)  # in place: the cached fill is stale
    edited = m._render(cond, x)
    assert not torch.equal(edited[0], first[0])
    assert torch.equal(edited[0], m._compute_render(cond, x)[0])
    copy = {k: v.clone() for k, v in cond.items()}  # equal values, new objects: recomputed, same numbers
    other = m._render(copy, x)
    assert other[0] is not edited[0] and torch.equal(other[0], edited[0])
    m2 = _model(fill_holes=True, fill_smooth_iters=0, posterior_skip=True)  # other settings: not served from m's entry
    assert not torch.equal(m2._render(copy, x)[0], other[0])
    grad_cond = dict(copy, cond_rgb=copy["cond_rgb"].requires_grad_())
    assert m._render(grad_cond, x)[0] is not m._render(grad_cond, x)[0]
    # the model's output (posterior preconditioning around the fill) is unchanged by the cache
    unet._render_cache.clear()
    with torch.no_grad():
        t = torch.tensor([500.0, 20.0])
        y1, y2 = m(x, t, cond), m(x, t, cond)
        unet._render_cache.clear()
        y3 = m(x, t, cond)
    assert torch.equal(y1, y2) and torch.equal(y1, y3)
