"""Procedural scenes: analytic depth of hand-built scenes, determinism, bundled photo textures, camera paths."""

import math

import numpy as np
import pytest
import torch

from fastvdm.data.cameras import Camera, camera_rays, look_at
from fastvdm.data.scenes import COLOR_PHOTOS, GRAY_PHOTOS, Material, Primitive, Scene, load_photo


def _flat(rgb):
    return Material(torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1), 1.0)


def _scene(objects):
    """A 6 x 6 x 3 m room with flat walls and the given primitives (material ids 1.. in order)."""
    room = Primitive("room", (0.0, 0.0, 0.0), (3.0, 3.0, 3.0), (0, 0, 0, 0, 0, 0))
    prims = [room] + [Primitive(k, c, s, (i + 1,), yaw) for i, (k, c, s, yaw) in enumerate(objects)]
    mats = [_flat([0.5, 0.5, 0.5])] + [_flat([0.9, 0.2, 0.1]) for _ in objects]
    return Scene(prims, mats, (0.0, 0.0, 1.0), (0.0, 0.0, 2.5))


def _oracle_depth(cam, h, w, scene):
    """Brute-force per-ray numpy intersection with the room walls and axis-aligned spheres / upright cylinders."""
    o, d = camera_rays(cam, h, w, dtype=torch.float64)
    o, d = o.numpy(), d.reshape(-1, 3).numpy()
    out = np.empty(len(d))
    for i, di in enumerate(d):
        best = math.inf
        a, b, hh = scene.room.size
        for axis, lo, hi in ((0, -a, a), (1, -b, b), (2, 0.0, hh)):
            if di[axis] > 0:
                best = min(best, (hi - o[axis]) / di[axis])
            elif di[axis] < 0:
                best = min(best, (lo - o[axis]) / di[axis])
        for p in scene.primitives[1:]:
            c = np.array(p.center)
            if p.kind == "sphere":
                oc = o - c
                qa, qb, qc = di @ di, 2 * oc @ di, oc @ oc - p.size[0] ** 2
                disc = qb * qb - 4 * qa * qc
                if disc >= 0:
                    t = (-qb - math.sqrt(disc)) / (2 * qa)
                    if t > 0:
                        best = min(best, t)
            elif p.kind == "cylinder":
                r, hgt = p.size
                oc = o - c
                qa = di[0] ** 2 + di[1] ** 2
                qb = 2 * (oc[0] * di[0] + oc[1] * di[1])
                qc = oc[0] ** 2 + oc[1] ** 2 - r * r
                disc = qb * qb - 4 * qa * qc
                if qa > 0 and disc >= 0:
                    t = (-qb - math.sqrt(disc)) / (2 * qa)
                    if t > 0 and 0 <= oc[2] + t * di[2] <= hgt:
                        best = min(best, t)
                for zc in (0.0, hgt):  # caps
                    if di[2] != 0:
                        t = (zc - oc[2]) / di[2]
                        q = oc + t * di
                        if t > 0 and q[0] ** 2 + q[1] ** 2 <= r * r:
                            best = min(best, t)
        out[i] = best
    return out.reshape(h, w)


def test_depth_matches_analytic_intersections():
    scene = _scene([("sphere", (1.0, 0.3, 0.8), (0.5,), 0.0), ("cylinder", (1.2, -0.9, 0.0), (0.3, 1.1), 0.0)])
    for eye, target in [((-1.5, 0.0, 1.2), (1.0, 0.0, 0.7)), ((2.5, 2.5, 2.0), (1.0, -0.5, 0.5))]:
        cam = Camera.from_fov(look_at(eye, target), 70.0, 20, 24)
        rgb, depth = scene.render(cam)
        assert rgb.shape == (1, 3, 20, 24) and depth.shape == (1, 20, 24)
        assert rgb.min() >= 0 and rgb.max() <= 1
        np.testing.assert_allclose(depth[0].numpy(), _oracle_depth(cam, 20, 24, scene), rtol=1e-4, atol=1e-4)


def test_box_face_depth_and_yaw():
    # camera straight above a yawed box: the top face is at z = 2 * 0.4, so depth = 2.5 - 0.8 there
    scene = _scene([("box", (0.0, 0.0, 0.4), (0.5, 0.3, 0.4), 0.6)])
    cam = Camera.from_fov(look_at((0.0, 0.0, 2.5), (0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)), 60.0, 31, 31)
    _, depth = scene.render(cam)
    o, d = camera_rays(cam, dtype=torch.float64)
    hit = o[:2] + 1.7 * d[..., :2]  # (x, y) where each ray crosses the top face plane
    c, s = math.cos(0.6), math.sin(0.6)
    local = torch.stack([c * hit[..., 0] + s * hit[..., 1], -s * hit[..., 0] + c * hit[..., 1]], -1)
    on_top = (local[..., 0].abs() < 0.49) & (local[..., 1].abs() < 0.29)
    off = (local[..., 0].abs() > 0.51) | (local[..., 1].abs() > 0.31)
    assert on_top.sum() > 20
    assert torch.allclose(depth[0][on_top], torch.full_like(depth[0][on_top], 1.7), atol=1e-4)
    assert (depth[0][off] > 1.71).all()  # beside the box: the floor (or box sides further down)


def test_random_scene_is_deterministic_and_valid():
    cam_pose = look_at((0.0, 0.0, 1.5), (1.0, 0.3, 1.0))
    cam = Camera.from_fov(cam_pose, 60.0, 16, 16)
    a, b, c = Scene.random(7), Scene.random(7), Scene.random(8)
    ra, da = a.render(cam)
    rb, db = b.render(cam)
    assert torch.equal(ra, rb) and torch.equal(da, db)
    rc, _ = c.render(cam)
    assert not torch.equal(ra, rc)
    for seed in range(4):
        s = Scene.random(seed)
        assert 4 <= len(s.primitives) <= 9 and s.primitives[0].kind == "room"
        poses = s.sample_poses(np.random.default_rng(seed), 6)
        assert poses.shape == (6, 4, 4)
        assert bool(s.is_free(poses[:, :3, 3]).all())
        rgb, depth = s.render([Camera.from_fov(p, 60.0, 12, 12) for p in poses])
        assert (depth > 0).all() and torch.isfinite(depth).all()  # closed room: every ray hits something
        assert rgb.std() > 0.02  # textured, lit content


@pytest.mark.parametrize("name", [COLOR_PHOTOS[0], GRAY_PHOTOS[0]])
def test_bundled_photos(name):
    tex = load_photo(name)
    assert tex.shape == (3, 128, 128) and tex.dtype == torch.float32
    assert 0 <= tex.min() and tex.max() <= 1 and tex.std() > 0.05


def test_structured_materials():
    """Each structured kind: a 64x64 power-of-two texture in [0, 1] with visible structure (not flat), the same
    for the same seed; Scene.random(seed) without ``structured`` draws the original mix (other scenes)."""
    from fastvdm.data.scenes import STRUCTURED_KINDS, structured_material

    for kind in STRUCTURED_KINDS:
        a = structured_material(np.random.default_rng(4), kind)
        b = structured_material(np.random.default_rng(4), kind)
        assert torch.equal(a.texture, b.texture) and a.texture.shape == (3, 64, 64)
        assert a.texture.min() >= 0 and a.texture.max() <= 1 and a.texture.std() > 0.01, kind
    with pytest.raises(ValueError, match="structured material"):
        structured_material(np.random.default_rng(0), "marble")
    s = Scene.random(7, structured=True)
    assert Scene.random(7, structured=True).materials[0].texture.equal(s.materials[0].texture)
    rgb, depth = s.render(Camera.from_fov(look_at([0.0, 0.0, 1.5], [1.0, 0.2, 1.0]), 60, 16, 16))
    assert torch.isfinite(rgb).all() and (depth > 0).all()
