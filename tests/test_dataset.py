"""ClipDataset contract, determinism and held-out split, geometric consistency, cache, clip_from_views."""

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from fastvdm.data.cameras import Camera, interpolate_poses, plucker_rays
from fastvdm.data.dataset import CachedClips, ClipDataset, cache_clips, clip_from_views, one_thread
from fastvdm.data.scene_io import View, read_scene, square_view, write_scene
from fastvdm.data.scenes import Scene
from fastvdm.data.warp import unproject
from fastvdm.metrics import psnr

T, S = 6, 24


@pytest.fixture(scope="module")
def items():
    ds = ClipDataset("train", num_frames=T, size=S, num_clips=4, seed=11)
    return [ds[i] for i in range(4)]


def test_item_contract(items):
    for it in items:
        assert it["frames"].shape == (3, T, S, S) and it["cond_rgb"].shape == (3, T, S, S)
        assert it["cond_mask"].shape == (1, T, S, S) and it["plucker"].shape == (6, T, S, S)
        assert it["is_input"].shape == (T,) and it["is_input"].dtype == torch.bool
        for k in ("frames", "cond_rgb", "cond_mask", "plucker"):
            assert it[k].dtype == torch.float32 and torch.isfinite(it[k]).all()
        assert it["frames"].min() >= -1 and it["frames"].max() <= 1 and it["frames"].std() > 0.05
        assert set(it["cond_mask"].unique().tolist()) <= {0.0, 1.0} and it["cond_mask"].mean() > 0.3
        assert (it["cond_rgb"][:, it["cond_mask"][0] == 0] == 0).all()
        assert it["is_input"][0] and 1 <= int(it["is_input"].sum()) <= 3
        assert isinstance(it["scene_seed"], int) and it["scene_seed"] % 2 == 0
        # normalized: the first input view is the identity; Plücker maps are those of the stored cameras
        assert torch.allclose(it["c2w"][0], torch.eye(4), atol=1e-6)
        for t in range(T):
            cam = Camera(it["c2w"][t].double(), *it["intrinsics"][t].tolist(), S, S)
            assert torch.allclose(it["plucker"][:, t], plucker_rays(cam, S, S), atol=1e-6)
    batch = default_collate(items[:3])
    assert batch["frames"].shape == (3, 3, T, S, S) and batch["is_input"].shape == (3, T)
    assert batch["scene_seed"].shape == (3,)


def test_determinism_and_held_out_split(items):
    again = ClipDataset("train", num_frames=T, size=S, num_clips=4, seed=11)[1]
    for k, v in items[1].items():
        assert torch.equal(v, again[k]) if torch.is_tensor(v) else v == again[k]
    assert not torch.equal(items[0]["frames"], items[1]["frames"])
    other = ClipDataset("train", num_frames=T, size=S, num_clips=4, seed=12)
    assert other.scene_seed(1) != items[1]["scene_seed"]
    test_a, test_b = ClipDataset("test", num_clips=5), ClipDataset("test", num_clips=5, seed=99)
    seeds = [test_a.scene_seed(i) for i in range(5)]
    assert seeds == [test_b.scene_seed(i) for i in range(5)] and all(s % 2 == 1 for s in seeds)
    assert len(set(seeds)) == 5 and len(ClipDataset("test")) == 100


def test_condition_renders_agree_with_frames(items):
    for i, it in enumerate(items):
        f, c, m = (it[k].transpose(0, 1) for k in ("frames", "cond_rgb", "cond_mask"))
        inp = it["is_input"]
        # at an input frame the render reproduces the input (except where a nearer splat covers a pixel)
        same = ((c == f).all(1, keepdim=True) & (m > 0)).sum((1, 2, 3)) / m.sum((1, 2, 3))
        assert (same[inp] > 0.85).all(), same
        # elsewhere the warped pixels match the ground truth far better than another clip's frames
        good = psnr(c, f, data_range=2.0, mask=m)[~inp]
        bad = psnr(c, items[(i + 1) % 4]["frames"].transpose(0, 1), data_range=2.0, mask=m)[~inp]
        assert (good > 20).all() and (good > bad + 6).all(), (good, bad)


def test_cache_round_trip(items, tmp_path):
    path = str(tmp_path / "clips.safetensors")
    assert cache_clips(items, path, indices=[0, 2], progress=False) == 2  # any indexable of clip dicts
    cached = CachedClips(path)
    assert len(cached) == 2
    for j, i in enumerate([0, 2]):
        for k, v in items[i].items():
            assert torch.equal(v, cached[j][k]) if torch.is_tensor(v) else v == cached[j][k], k


def test_clip_from_views_on_disk(tmp_path):
    scene = Scene.random(5)
    poses = scene.sample_poses(np.random.default_rng(5), 9)
    cams = [Camera.from_fov(p, 60.0, 24, 32) for p in poses]  # non-square captures
    rgb, depth = scene.render(cams)
    write_scene(str(tmp_path), [View(cams[i], rgb[i], depth[i]) for i in (0, 8)])
    data = read_scene(str(tmp_path))
    keys = torch.stack([v.camera.c2w for v in data.views])
    targets = [cams[0].with_pose(p) for p in interpolate_poses(keys, 5)]
    clip = clip_from_views(data.views, targets, 16)
    assert clip["is_input"].tolist() == [True, False, False, False, True]
    assert (clip["frames"][:, 1:4] == 0).all()
    sq0 = square_view(data.views[0], 16)
    assert (clip["frames"][:, 0] - (sq0.rgb * 2 - 1)).abs().max() <= 1 / 255 + 1e-6
    # normalization, computed independently: relative to view 0, scaled by 1 / median depth of view 0
    scale = 1.0 / sq0.depth[sq0.depth > 0].median().item()
    rel = torch.linalg.inv(data.views[0].camera.c2w) @ data.views[1].camera.c2w
    assert torch.allclose(clip["c2w"][4, :3, :3].double(), rel[:3, :3], atol=1e-6)
    assert torch.allclose(clip["c2w"][4, :3, 3].double(), rel[:3, 3] * scale, atol=1e-5)
    # the renders at the in-between cameras agree with ground-truth renders there
    gt_rgb, _ = scene.render([square_view(None, 16, c) for c in targets])
    gt = gt_rgb * 2 - 1
    c, m = clip["cond_rgb"].transpose(0, 1), clip["cond_mask"].transpose(0, 1)
    good = psnr(c[1:4], gt[1:4], data_range=2.0, mask=m[1:4])
    bad = psnr(c[1:4], gt[1:4].flip(-1), data_range=2.0, mask=m[1:4])
    assert (good > 20).all() and (good > bad + 6).all(), (good, bad)
    # a point cloud alone (no depth maps) gives the same geometry
    pts, cols = unproject(rgb[[0, 8]], depth[[0, 8]], [cams[0], cams[8]])
    no_depth = [View(v.camera, v.rgb, None) for v in data.views]
    clip2 = clip_from_views(no_depth, targets, 16, points=pts, point_colors=cols)
    good2 = psnr(clip2["cond_rgb"].transpose(0, 1)[1:4], gt[1:4], data_range=2.0, mask=clip2["cond_mask"].transpose(0, 1)[1:4])
    assert (good2 > 20).all(), good2
    with pytest.raises(ValueError, match="input_indices"):
        clip_from_views(data.views, targets, 16, input_indices=[0, 0])
    with pytest.raises(ValueError, match="no depth"):
        clip_from_views(no_depth, targets, 16)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        ClipDataset("val")
    with pytest.raises(ValueError, match="num_inputs"):
        ClipDataset(num_frames=2, num_inputs=(1, 3))
    with pytest.raises(IndexError):
        ClipDataset(num_clips=2)[2]


def test_one_thread_restores_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError):
            with one_thread():
                raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------- extrapolating clips
# Clips 0, 1, 57 of the held-out split (paths="interp"): float64 sums of frames, cond_rgb, c2w, the count of seen
# render pixels (cond_mask) and the sum of squared frames. Until 2026-11-30 this was a sha256 of the clips' bytes
# (recorded with the code of commit 7ffe800); on a fresh install of the same requirements (numpy 2.4.6, torch 2.13.0)
# the bytes differ in the last bits while every statistic of the split is unchanged (mean hole fraction 0.0907,
# percentiles 0 / 0.0061 / 0.0297 / 0.1536 / 0.2583, 26% of clips >= 15%: bench/logs/teacher_v2_data_stats.json),
# so the check is now on values, to a relative 1e-5.
HELD_OUT_SUMS = {
    0: ((-12889.106, -12424.8589, 31.8814), 8009, 9248.7681),
    1: ((-10182.4547, -9355.7331, 29.7108), 7942, 6802.7582),
    57: ((-10593.7254, -9363.047, 30.2064), 7209, 6734.8036),
}


def test_fixed_held_out_split_is_unchanged():
    """The original held-out split (paths="interp") is the one every earlier evaluation used (see HELD_OUT_SUMS)."""
    ds = ClipDataset("test", 8, 32, 100)
    for i, (sums, seen, frames_sq) in HELD_OUT_SUMS.items():
        it = ds[i]
        got = [float(it[k].double().sum()) for k in ("frames", "cond_rgb", "c2w")]
        assert got == pytest.approx(sums, rel=1e-5, abs=1e-3), (i, got)
        assert int(it["cond_mask"].sum()) == seen, i
        assert float(it["frames"].double().square().sum()) == pytest.approx(frames_sq, rel=1e-5), i


def test_extrapolating_clips():
    """paths="extrapolate": inputs at the start, holes in the target frames, crops of larger frames whose input
    point cloud reaches beyond the crop, geometric consistency, determinism, a held-out split of its own."""
    from fastvdm.data.dataset import TEST_EXTRAP_SEED, hole_fractions

    ds = ClipDataset("train", num_frames=6, size=16, num_clips=6, seed=3, paths="extrapolate", crop_scales=(3,),
                     hole_range=(0.2, 0.4))
    holes = []
    for i in range(6):
        it = ds[i]
        inp = it["is_input"]
        assert inp[0] and int(inp.sum()) <= 2 and (int(inp.sum()) == 1 or inp[1])
        assert it["scene_seed"] % 2 == 0 and torch.allclose(it["c2w"][0], torch.eye(4), atol=1e-6)
        # crops: the principal point is off-centre by the crop offset of a 48-px frame (focal of a 48-px frame)
        fx, fy, cx, cy = it["intrinsics"][0].tolist()
        assert 16 / 2 - 32 <= cx <= 16 / 2 + 32 and fx > 16 / (2 * np.tan(np.radians(75) / 2)) * 3 * 0.99
        f, c, m = (it[k].transpose(0, 1) for k in ("frames", "cond_rgb", "cond_mask"))
        good = psnr(c, f, data_range=2.0, mask=m)[~inp]
        assert (good[m[~inp].flatten(1).mean(1) > 0.05] > 20).all(), good
        holes.append(float(hole_fractions(it).mean()))
    assert max(holes) <= 0.4 + 1e-6 and np.mean(holes) > 0.1, holes
    again = ClipDataset("train", num_frames=6, size=16, num_clips=6, seed=3, paths="extrapolate", crop_scales=(3,),
                        hole_range=(0.2, 0.4))[2]
    assert torch.equal(again["frames"], ds[2]["frames"]) and torch.equal(again["cond_mask"], ds[2]["cond_mask"])
    test = ClipDataset("test", paths="extrapolate", seed=5)
    assert test.seed == TEST_EXTRAP_SEED and test.scene_seed(0) % 2 == 1
    assert test.scene_seed(0) != ClipDataset("test").scene_seed(0)
    with pytest.raises(ValueError, match="paths"):
        ClipDataset("train", paths="spiral")
    with pytest.raises(ValueError, match="crop_scales"):
        ClipDataset("train", paths="extrapolate", crop_scales=(0,))
