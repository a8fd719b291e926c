"""Point-cloud warping: brute-force z-buffer oracle, exact self-warp, and re-projection between two renders."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastvdm.data.cameras import Camera, look_at
from fastvdm.data.scenes import Scene
from fastvdm.data.warp import project, render_points, unproject


def _oracle(points, colors, cam, h, w, radius, falloff, near=1e-3):
    """Per-pixel loop over all points in float64: min of (z (1 + falloff d2), point index) among covering splats."""
    c2w = cam.resized(h, w)
    k = c2w.K.numpy()
    w2c = c2w.w2c.numpy()
    pc = points.double().numpy() @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    uv = (pc @ k.T)[:, :2] / z[:, None]
    rgb = np.zeros((colors.shape[1], h, w))
    mask = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            off = np.array([x + 0.5, y + 0.5]) - uv
            cand = np.where(((off > -radius) & (off <= radius)).all(1) & (z > near))[0]
            if len(cand) == 0:
                continue
            zs = z[cand] * (1 + falloff * (off[cand] ** 2).sum(1))
            best = cand[np.lexsort((cand, zs))[0]]
            rgb[:, y, x] = colors[best].numpy()
            mask[y, x] = 1
    return rgb, mask


@pytest.mark.parametrize("radius,falloff", [(0.5, 1.0), (1.0, 0.0), (1.0, 1.0), (1.6, 0.3)])
def test_render_points_matches_brute_force(radius, falloff):
    gen = torch.Generator().manual_seed(int(radius * 10 + falloff * 100))
    pts = torch.randn(300, 3, generator=gen) * torch.tensor([1.0, 1.0, 0.5]) + torch.tensor([0.0, 0.0, 4.0])
    cols = torch.rand(300, 3, generator=gen)
    cams = [Camera.from_fov(look_at((0.0, 0.0, 0.0), (0.0, 0.0, 4.0), up=(0, -1.0, 0)), 50.0, 9, 11),
            Camera.from_fov(look_at((1.0, 0.5, 0.2), (0.0, 0.0, 4.0), up=(0, -1.0, 0)), 40.0, 18, 22)]
    rgb, mask, depth = render_points(pts, cols, cams, 9, 11, radius=radius, falloff=falloff)
    assert rgb.shape == (2, 3, 9, 11) and mask.shape == (2, 1, 9, 11) and depth.shape == (2, 9, 11)
    for v, cam in enumerate(cams):
        ref_rgb, ref_mask = _oracle(pts, cols, cam, 9, 11, radius, falloff)
        assert ref_mask.sum() > 0
        np.testing.assert_array_equal(mask[v, 0].numpy(), ref_mask)
        np.testing.assert_allclose(rgb[v].numpy(), ref_rgb, atol=1e-6)
    assert (depth[mask[:, 0] == 0] == 0).all() and (depth[mask[:, 0] > 0] > 0).all()


def test_unproject_project_round_trip():
    gen = torch.Generator().manual_seed(5)
    cam = Camera(look_at((0.3, -0.2, 1.0), (2.0, 1.0, 0.5)), 9.0, 11.0, 6.2, 4.1, 12, 8)
    depth = 1 + 3 * torch.rand(1, 8, 12, generator=gen)
    depth[0, 2, 3] = 0.0  # no measurement
    depth[0, 4, 5] = float("nan")
    rgb = torch.rand(1, 3, 8, 12, generator=gen)
    pts, cols = unproject(rgb, depth, [cam])
    assert pts.shape == (94, 3)
    uv, z = project(pts, cam, 8, 12)
    valid = torch.isfinite(depth[0]) & (depth[0] > 0)
    v, u = torch.nonzero(valid, as_tuple=True)
    assert torch.allclose(uv, torch.stack([u + 0.5, v + 0.5], -1).float(), atol=1e-4)
    assert torch.allclose(z, depth[0][valid], rtol=1e-5)
    assert torch.equal(cols, rgb[0].permute(1, 2, 0)[valid])


def _two_views(seed, res, step=1):
    scene = Scene.random(seed)
    poses = scene.sample_poses(np.random.default_rng(seed), 16)
    cams = [Camera.from_fov(p, 60.0, res, res) for p in (poses[0], poses[step])]
    rgb, depth = scene.render(cams)
    return cams, rgb, depth


def test_self_warp_is_exact():
    cams, rgb, depth = _two_views(0, 32)
    pts, cols = unproject(rgb[:1], depth[:1], cams[:1])
    out, mask, d = render_points(pts, cols, cams[:1], 32, 32, radius=0.5)
    assert mask.all()
    assert torch.equal(out, rgb[:1])
    assert torch.allclose(d, depth[:1], rtol=1e-5)


def test_reprojection_matches_second_render():
    """Render view A with depth, warp it into camera B (splat radius 1), compare with B's own render on
    co-visible pixels: the warped point lies on B's visible surface (depth within 1%), and the pixel is not
    next to a geometric edge or crease of B's depth map (where the nearest-point warp cannot place a
    boundary to sub-pixel accuracy). Planes have affine disparity, so edges and creases are where B's
    disparity has a large second difference."""
    sq_err, count = 0.0, 0
    for seed in range(4):
        cams, rgb, depth = _two_views(seed, 96)
        pts, cols = unproject(rgb[:1], depth[:1], cams[:1])
        out, mask, wdepth = render_points(pts, cols, cams[1:], 96, 96, radius=1.0)
        d = depth[1]
        disp = (1 / d)[None, None]
        lap = torch.zeros_like(disp)
        lap[..., :, 1:-1] = (disp[..., :, 2:] + disp[..., :, :-2] - 2 * disp[..., :, 1:-1]).abs()
        lap[..., 1:-1, :] = torch.maximum(lap[..., 1:-1, :], (disp[..., 2:, :] + disp[..., :-2, :] - 2 * disp[..., 1:-1, :]).abs())
        edge = F.max_pool2d(lap, 3, 1, 1)[0, 0] > 0.01 * disp[0, 0]
        covis = (mask[0, 0] > 0) & ((wdepth[0] - d).abs() < 0.01 * d) & ~edge
        assert covis.float().mean() > 0.3  # the views overlap substantially
        err = ((out[0] - rgb[1]) ** 2)[:, covis]
        sq_err += err.sum().item()
        count += err.numel()
        # an unrelated image scores far lower: the comparison is discriminative
        assert ((out[0] - rgb[1].flip(-1)) ** 2)[:, covis].mean() > 10 * err.mean()
    psnr = 10 * np.log10(1.0 / (sq_err / count))
    assert psnr > 35.0, psnr


def test_camera_groups_give_identical_renders(monkeypatch):
    import fastvdm.data.warp as warp

    cams, rgb, depth = _two_views(1, 24, step=5)
    pts, cols = unproject(rgb, depth, cams)
    targets = [cams[0], cams[1], cams[0], cams[1], cams[1]]
    whole = render_points(pts, cols, targets, 24, 24)
    monkeypatch.setattr(warp, "_MAX_ENTRIES", pts.shape[0] * 4 * 2)  # two cameras per group
    grouped = render_points(pts, cols, targets, 24, 24)
    for a, b in zip(whole, grouped):
        assert torch.equal(a, b)


def test_bad_input():
    with pytest.raises(ValueError, match="radius"):
        render_points(torch.zeros(2, 3), torch.zeros(2, 3), [], 4, 4, radius=0)
    with pytest.raises(ValueError, match="points"):
        render_points(torch.zeros(2, 2), torch.zeros(2, 3), [], 4, 4)
    with pytest.raises(ValueError, match="cameras"):
        unproject(torch.zeros(2, 3, 4, 4), torch.ones(2, 4, 4), [])
