"""Cameras: Plücker rays vs a brute-force per-pixel oracle, transforms.json round trips, trajectories."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation, Slerp

from fastvdm.data.cameras import (Camera, cameras_from_transforms, cameras_to_transforms, check_rotation,
                                  forward_walk_poses, interpolate_poses, look_at, matrix_to_quaternion,
                                  orbit_poses, plucker_rays, quaternion_to_matrix, relative_to)


def _random_camera(rng, w=12, h=9):
    c2w = np.eye(4)
    c2w[:3, :3] = Rotation.random(random_state=rng).as_matrix()
    c2w[:3, 3] = rng.normal(size=3) * 2
    return Camera(torch.tensor(c2w), rng.uniform(8, 20), rng.uniform(8, 20), rng.uniform(3, 9), rng.uniform(2, 7), w, h)


def _brute_plucker(cam, h, w):
    """Independent per-pixel loop in numpy float64 (intrinsics scaled to h x w by hand)."""
    sx, sy = w / cam.width, h / cam.height
    kinv = np.linalg.inv(np.array([[cam.fx * sx, 0, cam.cx * sx], [0, cam.fy * sy, cam.cy * sy], [0, 0, 1]]))
    c2w = cam.c2w.numpy()
    out = np.zeros((6, h, w))
    for v in range(h):
        for u in range(w):
            d = c2w[:3, :3] @ (kinv @ np.array([u + 0.5, v + 0.5, 1.0]))
            d /= np.linalg.norm(d)
            out[:3, v, u] = np.cross(c2w[:3, 3], d)
            out[3:, v, u] = d
    return out


def test_plucker_matches_brute_force_and_is_perpendicular():
    rng = np.random.default_rng(0)
    for h, w in [(9, 12), (5, 7)]:  # own size, and a rescaled one
        cam = _random_camera(rng)
        p = plucker_rays(cam, h, w)
        assert p.shape == (6, h, w) and p.dtype == torch.float32
        np.testing.assert_allclose(p.numpy(), _brute_plucker(cam, h, w), atol=2e-6, rtol=1e-5)
        m, d = p[:3].double(), p[3:].double()
        assert torch.allclose(d.norm(dim=0), torch.ones(h, w, dtype=torch.float64), atol=1e-6)
        assert (m * d).sum(0).abs().max() < 1e-5  # moment is perpendicular to the direction
        # the moment does not depend on which point of the ray is used: (o + s d) x d == o x d
        o = cam.center.view(3, 1, 1)
        assert torch.allclose(torch.linalg.cross(o + 1.7 * d, d, dim=0), m, atol=1e-5)


def test_look_at_orbit_walk():
    rng = np.random.default_rng(1)
    eye, target = rng.normal(size=3), rng.normal(size=3) + np.array([3.0, 0, 0])
    m = look_at(eye, target).numpy()
    assert check_rotation(torch.tensor(m[:3, :3])) < 1e-12
    pc = np.linalg.inv(m) @ np.append(target, 1)
    assert abs(pc[0]) < 1e-9 and abs(pc[1]) < 1e-9 and pc[2] > 0  # target on the optical axis
    assert (m[:3, 1] @ np.array([0, 0, 1.0])) < 0  # image y (down) points against world up

    center = torch.tensor([0.5, -1.0, 0.7], dtype=torch.float64)
    poses = orbit_poses(center, 2.0, 7, start_deg=30, sweep_deg=90, height=0.4)
    horiz = (poses[:, :2, 3] - center[:2]).norm(dim=-1)
    assert torch.allclose(horiz, torch.full((7,), 2.0, dtype=torch.float64))
    assert torch.allclose(poses[:, 2, 3], torch.full((7,), 1.1, dtype=torch.float64))
    for pose in poses:  # every camera looks at the centre
        pc = torch.linalg.inv(pose) @ torch.cat([center, torch.ones(1, dtype=torch.float64)])
        assert pc[:2].abs().max() < 1e-9 and pc[2] > 0

    start = look_at([0.0, 0.0, 1.5], [1.0, 2.0, 1.2])
    walk = forward_walk_poses(start, 33, distance=1.5, yaw_deg=40)
    steps = (walk[1:, :3, 3] - walk[:-1, :3, 3]).norm(dim=-1)
    assert steps.sum().item() == pytest.approx(1.5, rel=1e-3)  # arc length
    assert torch.allclose(walk[:, 2, 3], torch.full((33,), 1.5, dtype=torch.float64))  # keeps its height
    h0, h1 = walk[0, :2, 2], walk[-1, :2, 2]
    turn = math.degrees(math.atan2(h0[0] * h1[1] - h0[1] * h1[0], h0 @ h1))
    assert turn == pytest.approx(40.0, abs=1e-6)
    straight = forward_walk_poses(start, 5, distance=2.0)
    fwd = start[:2, 2] / start[:2, 2].norm()
    assert torch.allclose(straight[-1, :2, 3] - start[:2, 3], 2.0 * fwd)


def test_quaternions_and_interpolation():
    rng = np.random.default_rng(2)
    rots = Rotation.random(50, random_state=rng)
    q = matrix_to_quaternion(torch.tensor(rots.as_matrix()))
    ref = torch.tensor(rots.as_quat(scalar_first=True))
    ref = torch.where(ref[:, :1] < 0, -ref, ref)
    assert torch.allclose(q, ref, atol=1e-12)
    assert torch.allclose(quaternion_to_matrix(q), torch.tensor(rots.as_matrix()), atol=1e-12)

    keys = torch.stack([_random_camera(rng).c2w for _ in range(3)])
    poses = interpolate_poses(keys, 9)
    for j in range(3):  # keys land on frames 0, 4, 8
        assert torch.allclose(poses[4 * j], keys[j], atol=1e-12)
    assert max(check_rotation(p[:3, :3]) for p in poses) < 1e-9

    two = torch.stack([look_at([0, 0, 1.0], [1, 0, 1.0]), look_at([1, 1, 1.2], [1, 3, 0.8])])
    mid = interpolate_poses(two, 3)[1]
    slerp = Slerp([0, 1], Rotation.from_matrix(two[:, :3, :3].numpy()))([0.5]).as_matrix()[0]
    assert np.allclose(mid[:3, :3].numpy(), slerp, atol=1e-12)
    assert torch.allclose(mid[:3, 3], two[:, :3, 3].mean(0))
    # smooth: rotation angle between consecutive frames varies slowly (no jumps at the keys)
    fine = interpolate_poses(keys, 65)
    rel = Rotation.from_matrix((fine[:-1, :3, :3].transpose(1, 2) @ fine[1:, :3, :3]).numpy()).magnitude()
    assert np.abs(np.diff(rel)).max() < 0.2 * rel.max()


def test_relative_to():
    rng = np.random.default_rng(3)
    cams = [_random_camera(rng) for _ in range(3)]
    rel = relative_to(cams, cams[1], scale=0.5)
    assert torch.allclose(rel[1].c2w, torch.eye(4, dtype=torch.float64), atol=1e-12)
    expect = torch.linalg.inv(cams[1].c2w) @ cams[2].c2w
    assert torch.allclose(rel[2].c2w[:3, :3], expect[:3, :3], atol=1e-12)
    assert torch.allclose(rel[2].c2w[:3, 3], 0.5 * expect[:3, 3], atol=1e-12)


def test_transforms_json_round_trip_and_convention():
    rng = np.random.default_rng(4)
    cams = [_random_camera(rng, 40, 30) for _ in range(4)]
    meta = json.loads(json.dumps(cameras_to_transforms(cams, [f"images/{i}.png" for i in range(4)])))
    back = cameras_from_transforms(meta)
    for a, b in zip(cams, back):
        assert torch.allclose(a.c2w, b.c2w, atol=1e-12)
        assert (a.fx, a.fy, a.cx, a.cy, a.width, a.height) == (b.fx, b.fy, b.cx, b.cy, b.width, b.height)
    # shared intrinsics go to the top level
    shared = [cams[0].with_pose(c.c2w) for c in cams]
    meta = cameras_to_transforms(shared)
    assert meta["fl_x"] == cams[0].fx and "fl_x" not in meta["frames"][0]
    # OpenGL identity pose: the camera looks down world -z, image up is world +y
    gl = {"fl_x": 10, "fl_y": 10, "cx": 5, "cy": 5, "w": 10, "h": 10,
          "frames": [{"transform_matrix": np.eye(4).tolist()}]}
    cam = cameras_from_transforms(gl)[0]
    assert torch.allclose(cam.rotation[:, 2], torch.tensor([0, 0, -1.0], dtype=torch.float64))
    assert torch.allclose(cam.rotation[:, 1], torch.tensor([0, -1.0, 0], dtype=torch.float64))


def test_transforms_json_bad_input():
    good = {"fl_x": 10, "fl_y": 10, "cx": 5, "cy": 5, "w": 10, "h": 10, "frames": [{"transform_matrix": np.eye(4).tolist()}]}
    bad = json.loads(json.dumps(good))
    bad["frames"][0]["transform_matrix"][0][0] = 1.3  # scaled axis
    with pytest.raises(ValueError, match=r"frames\[0\].*transform_matrix.*orthonormal"):
        cameras_from_transforms(bad)
    bad = json.loads(json.dumps(good))
    del bad["fl_y"]
    with pytest.raises(ValueError, match="'fl_y'"):
        cameras_from_transforms(bad)
    bad = dict(good, k1=0.1)
    with pytest.raises(ValueError, match="'k1'.*distortion"):
        cameras_from_transforms(bad)
    bad = dict(good, camera_model="OPENCV_FISHEYE")
    with pytest.raises(ValueError, match="camera_model"):
        cameras_from_transforms(bad)
