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
