"""Scene folders: write/read round trips (PNG and npy depth, PLY), foreign PLY variants, clear errors."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fastvdm.data.cameras import Camera, look_at
from fastvdm.errors import OutputError
from fastvdm.data.scene_io import SceneFormatError, View, read_ply, read_scene, square_view, write_ply, write_scene
from fastvdm.data.scenes import Scene


def _views(n=2, h=12, w=16):
    scene = Scene.random(3)
    poses = scene.sample_poses(np.random.default_rng(0), n)
    cams = [Camera.from_fov(p, 60.0, h, w) for p in poses]
    rgb, depth = scene.render(cams)
    return [View(c, rgb[i], depth[i]) for i, c in enumerate(cams)]


@pytest.mark.parametrize("depth_format", ["png", "npy"])
def test_round_trip(tmp_path, depth_format):
    views = _views()
    gen = torch.Generator().manual_seed(0)
    pts, cols = torch.randn(50, 3, generator=gen), torch.rand(50, 3, generator=gen)
    write_scene(str(tmp_path), views, pts, cols, depth_format=depth_format)
    data = read_scene(str(tmp_path))
    assert len(data.views) == 2
    for a, b in zip(views, data.views):
        assert torch.allclose(a.camera.c2w, b.camera.c2w, atol=1e-12)
        assert (a.camera.fx, a.camera.cy, a.camera.width) == (b.camera.fx, b.camera.cy, b.camera.width)
        assert (b.rgb - a.rgb).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit PNG
        tol = 0.5e-3 + 1e-6 if depth_format == "png" else 0.0  # millimetres or exact float32
        assert (b.depth - a.depth).abs().max() <= tol
    assert torch.equal(data.points, pts)
    assert (data.colors - cols).abs().max() <= 0.5 / 255 + 1e-6
    meta = json.load(open(tmp_path / "transforms.json"))
    assert meta["frames"][0]["depth_file_path"].endswith(depth_format) and meta["ply_file_path"] == "sparse_pc.ply"


def test_foreign_ply_variants(tmp_path):
    # big-endian, doubles, extra properties, colours as uchar after a normal
    rec = np.array([(1.5, -2.0, 3.25, 0.0, 0.0, 1.0, 255, 0, 128, 7)],
                   dtype=[("x", ">f8"), ("y", ">f8"), ("z", ">f8"), ("nx", ">f4"), ("ny", ">f4"), ("nz", ">f4"),
                          ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")])
    hdr = ("ply\nformat binary_big_endian 1.0\nelement vertex 1\nproperty double x\nproperty double y\n"
           "property double z\nproperty float nx\nproperty float ny\nproperty float nz\nproperty uchar red\n"
           "property uchar green\nproperty uchar blue\nproperty uchar alpha\nelement face 0\n"
           "property list uchar int vertex_indices\nend_header\n")
    p = tmp_path / "a.ply"
    p.write_bytes(hdr.encode() + rec.tobytes())
    pts, cols = read_ply(str(p))
    assert pts.tolist() == [[1.5, -2.0, 3.25]]
    assert torch.allclose(cols, torch.tensor([[1.0, 0.0, 128 / 255]]))
    q = tmp_path / "b.ply"
    q.write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
                 "end_header\n0 1 2\n3 4 5\n")
    pts, cols = read_ply(str(q))
    assert pts.tolist() == [[0, 1, 2], [3, 4, 5]] and cols is None
    t = tmp_path / "c.ply"
    write_ply(str(t), torch.zeros(4, 3), torch.zeros(4, 3))
    t.write_bytes(t.read_bytes()[:-5])
    with pytest.raises(SceneFormatError, match="truncated"):
        read_ply(str(t))


def _edit(folder, fn):
    path = os.path.join(folder, "transforms.json")
    meta = json.load(open(path))
    fn(meta)
    json.dump(meta, open(path, "w"))


def test_errors_name_file_and_field(tmp_path):
    views = _views()
    with pytest.raises(FileNotFoundError, match="transforms.json"):
        read_scene(str(tmp_path / "nothing"))
    d = str(tmp_path / "s")

    write_scene(d, views, depth_format="npy")
    os.remove(os.path.join(d, "images", "frame_00001.png"))
    with pytest.raises(FileNotFoundError, match=r"frames\[1\]\.file_path.*frame_00001\.png"):
        read_scene(d)

    write_scene(d, views, depth_format="npy")
    Image.new("RGB", (10, 10)).save(os.path.join(d, "images", "frame_00000.png"))
    with pytest.raises(SceneFormatError, match=r"frames\[0\]\.file_path.*frame_00000\.png is 10x10.*'w', 'h'"):
        read_scene(d)

    write_scene(d, views, depth_format="npy")
    _edit(d, lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(1, 0.7))
    with pytest.raises(SceneFormatError, match=r"transforms.json frames\[1\].*'transform_matrix'.*orthonormal"):
        read_scene(d)

    write_scene(d, views, depth_format="npy")
    bad = views[0].depth.numpy().copy()
    bad[3, 4] = np.nan
    np.save(os.path.join(d, "depth", "frame_00000.npy"), bad)
    with pytest.raises(SceneFormatError, match=r"frames\[0\]\.depth_file_path.*frame_00000\.npy.*NaN"):
        read_scene(d)

    write_scene(d, views, depth_format="png")
    Image.new("L", (16, 12)).save(os.path.join(d, "depth", "frame_00001.png"))  # 8-bit depth
    with pytest.raises(SceneFormatError, match=r"frames\[1\]\.depth_file_path.*16-bit"):
        read_scene(d)

    write_scene(d, views, depth_format="png")
    _edit(d, lambda m: m.__setitem__("ply_file_path", "missing.ply"))
    with pytest.raises(FileNotFoundError, match="ply_file_path.*missing.ply"):
        read_scene(d)

    with pytest.raises(ValueError, match="65.535 m"):
        write_scene(str(tmp_path / "far"), [View(views[0].camera, views[0].rgb, views[0].depth + 70.0)])


def test_square_view_keeps_projection():
    gen = torch.Generator().manual_seed(1)
    cam = Camera(look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), up=(0.0, -1.0, 0.0)), 30.0, 31.0, 21.0, 14.0, 40, 30)
    view = View(cam, torch.rand(3, 30, 40, generator=gen), torch.rand(30, 40, generator=gen) + 1)
    sq = square_view(view, 15)
    assert sq.rgb.shape == (3, 15, 15) and sq.depth.shape == (15, 15)
    assert sq.camera.width == sq.camera.height == 15
    p = torch.tensor([0.1, -0.2, 1.0], dtype=torch.float64)  # camera frame == world frame here
    u, v = cam.fx * p[0] + cam.cx, cam.fy * p[1] + cam.cy
    u2, v2 = sq.camera.fx * p[0] + sq.camera.cx, sq.camera.fy * p[1] + sq.camera.cy
    assert u2.item() == pytest.approx((u.item() - 5) * 0.5) and v2.item() == pytest.approx(v.item() * 0.5)
    # depth is sampled, not blended: pixel (i, j) is the source pixel at the new pixel centre
    assert sq.depth[3, 4].item() == view.depth[7, 5 + 9].item()


def test_data_make_cli(tmp_path):
    import argparse

    from fastvdm.cli import data as cli

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "scenes"
    argv = ["data", "make", "--out", str(out), "--scenes", "2", "--seed", "3", "--size", "16", "--views", "3",
            "--ply", "--no-progress"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    index = json.load(open(out / "scenes.json"))
    assert [s["folder"] for s in index["scenes"]] == ["scene_00000", "scene_00001"]
    assert all(s["scene_seed"] % 2 == 0 for s in index["scenes"])  # train scenes
    for s in index["scenes"]:
        data = read_scene(str(out / s["folder"]))
        assert len(data.views) == 3 and data.views[0].rgb.shape == (3, 16, 16)
        assert data.views[0].depth.min() > 0 and data.points.shape == (3 * 16 * 16, 3)
    assert sorted(os.listdir(tmp_path)) == ["scenes"]  # no temporary folders left behind
    with pytest.raises(OutputError, match="not empty"):
        args.func(parser.parse_args(argv))
    args = parser.parse_args(argv[:-2] + ["--force", "--no-progress", "--scenes", "1"])
    assert args.func(args) == 0 and len(json.load(open(out / "scenes.json"))["scenes"]) == 1
    assert sorted(os.listdir(tmp_path)) == ["scenes"]


def test_nerf_synthetic_style(tmp_path):
    """camera_angle_x instead of focal lengths, no w/h/cx/cy, file paths without extension."""
    gen = torch.Generator().manual_seed(2)
    img = (torch.rand(10, 14, 3, generator=gen) * 255).to(torch.uint8).numpy()
    os.makedirs(tmp_path / "train")
    Image.fromarray(img).save(tmp_path / "train" / "r_0.png")
    pose = [[1, 0, 0, 0.5], [0, 0, -1, -2.0], [0, 1, 0, 0.3], [0, 0, 0, 1]]  # OpenGL: looking along world +y
    json.dump({"camera_angle_x": 0.69, "frames": [{"file_path": "./train/r_0", "transform_matrix": pose}]},
              open(tmp_path / "transforms.json", "w"))
    view = read_scene(str(tmp_path)).views[0]
    cam = view.camera
    assert (cam.width, cam.height, cam.cx, cam.cy) == (14, 10, 7.0, 5.0)
    assert cam.fx == cam.fy == pytest.approx(7.0 / np.tan(0.345))
    assert torch.allclose(cam.rotation[:, 2], torch.tensor([0, 1.0, 0], dtype=torch.float64))  # forward
    assert torch.equal(view.rgb, torch.from_numpy(img).permute(2, 0, 1).float() / 255)
