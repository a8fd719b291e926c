"""Depth for posed photos: two-view stereo against ray-cast ground truth and a real pair; COLMAP models."""

import numpy as np
import pytest
import torch

from fastvdm.data.cameras import Camera, look_at
from fastvdm.data.scene_io import View


def _median_rel(d, gt):
    ok = (d > 0) & (gt > 0)
    return float(((d - gt).abs() / gt)[ok].median()), float(ok.float().mean())


@pytest.mark.parametrize("seed,shift,toe", [(5, (0.25, 0, 0), True), (11, (-0.2, 0, 0.05), False),
                                           (8, (0.25, 0, 0), False), (5, (0, 0, -0.25), False)])
def test_stereo_depth_matches_ray_cast_ground_truth(seed, shift, toe):
    """Procedural scenes at 192 x 128: sideways, leftward-and-up, and vertical baselines (with a toed-in pair):
    the confident stereo depth of both views has a median relative error under 6% against the ray-caster, and
    covers more than half of each view (bench/RESULTS.md reports the measured errors)."""
    from fastvdm.data.scenes import Scene
    from fastvdm.data.stereo import stereo_pair_depth

    scene = Scene.random(seed)
    eye, tgt = torch.tensor([0.0, -1.5, 1.2]), torch.tensor([0.0, 1.0, 1.0])
    s = torch.tensor(shift)
    ca = Camera.from_fov(look_at(eye, tgt), 60.0, 128, 192)
    cb = Camera.from_fov(look_at(eye + s, tgt if toe else tgt + s), 60.0, 128, 192)
    rgb, depth = scene.render([ca, cb], 128, 192)
    da, db = stereo_pair_depth(View(ca, rgb[0], None, "a"), View(cb, rgb[1], None, "b"))
    for d, gt in ((da, depth[0]), (db, depth[1])):
        err, frac = _median_rel(d, gt)
        assert err < 0.06 and frac > 0.5, (err, frac)


def test_stereo_on_a_real_photo_pair():
    """Motorcycle (real photos, structured-light ground truth): median relative depth error under 1%."""
    from fastvdm.data.examples import motorcycle_views
    from fastvdm.data.stereo import stereo_pair_depth

    left, right = motorcycle_views()
    d, _ = stereo_pair_depth(left, right)
    err, frac = _median_rel(d, left.depth)
    assert err < 0.01 and frac > 0.5, (err, frac)


def test_stereo_refuses_forward_motion_naming_the_photo():
    from fastvdm.densify import scene_geometry

    eye, tgt = torch.tensor([0.0, -1.5, 1.2]), torch.tensor([0.0, 1.0, 1.0])
    cams = [Camera.from_fov(look_at(eye + torch.tensor([0.0, y, 0.0]), tgt), 60.0, 32, 48) for y in (0.0, 0.3)]
    views = [View(c, torch.rand(3, 32, 48), None, f"images/p{i}.png") for i, c in enumerate(cams)]
    with pytest.raises(ValueError, match=r"images/p0.png: no depth map.*sideways"):
        scene_geometry(views)


def _write_colmap_text(folder, views, points, colors):
    """A COLMAP text model written by hand from the format's documentation (cameras.txt, images.txt,
    points3D.txt), with the photos in folder/images."""
    from PIL import Image

    from fastvdm.data.cameras import matrix_to_quaternion

    model = folder / "sparse" / "0"
    model.mkdir(parents=True)
    (folder / "images").mkdir()
    cam_lines, img_lines = [], []
    for i, v in enumerate(views, 1):
        c = v.camera
        cam_lines.append(f"{i} PINHOLE {c.width} {c.height} {c.fx!r} {c.fy!r} {c.cx!r} {c.cy!r}")
        w2c = c.w2c
        q = matrix_to_quaternion(w2c[:3, :3]).tolist()
        t = w2c[:3, 3].tolist()
        img_lines.append(f"{i} {' '.join(repr(x) for x in q)} {' '.join(repr(x) for x in t)} {i} view{i}.png")
        img_lines.append("")  # no 2-D points
        rgb8 = (v.rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(rgb8).save(folder / "images" / f"view{i}.png")
    (model / "cameras.txt").write_text("# Camera list\n" + "\n".join(cam_lines) + "\n")
    (model / "images.txt").write_text("# Image list\n" + "\n".join(img_lines) + "\n")
    pts = [f"{k + 1} {p[0]!r} {p[1]!r} {p[2]!r} {int(c[0])} {int(c[1])} {int(c[2])} 0.5" for k, (p, c) in
           enumerate(zip(points.tolist(), (colors * 255).round().tolist()))]
    (model / "points3D.txt").write_text("# 3D point list\n" + "\n".join(pts) + "\n")


def test_colmap_text_model_reads_as_the_same_scene(tmp_path):
    """Cameras, photos and points of a COLMAP text model come back as the scene that wrote it; densify_scene
    accepts the folder (points as the geometry, no stereo needed)."""
    from fastvdm.data.scene_io import read_capture
    from fastvdm.data.scenes import Scene

    scene = Scene.random(5)
    eye, tgt = torch.tensor([0.0, -1.5, 1.2]), torch.tensor([0.0, 1.0, 1.0])
    cams = [Camera(look_at(eye + torch.tensor([x, 0.0, 0.0]), tgt), 70.0, 72.0, 31.0, 20.5, 64, 40)
            for x in (-0.2, 0.2)]
    rgb, depth = scene.render(cams, 40, 64)
    views = [View(c, (r * 255).round() / 255, None, "") for c, r in zip(cams, rgb)]
    pts = torch.tensor([[0.1, 0.9, 1.0], [-0.3, 1.5, 0.7], [0.4, 2.0, 1.3]], dtype=torch.float64)
    cols = torch.tensor([[1.0, 0.0, 0.5], [0.2, 0.4, 0.6], [0.0, 1.0, 0.0]])
    _write_colmap_text(tmp_path, views, pts, cols)
    got = read_capture(str(tmp_path))
    assert len(got.views) == 2 and got.points.shape == (3, 3)
    for v, ref in zip(got.views, views):
        c, r = v.camera, ref.camera
        torch.testing.assert_close(c.c2w, r.c2w, atol=1e-9, rtol=0)
        assert (c.fx, c.fy, c.cx, c.cy, c.width, c.height) == (r.fx, r.fy, r.cx, r.cy, r.width, r.height)
        torch.testing.assert_close(v.rgb, ref.rgb, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.points.double(), pts, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.colors, cols, atol=1 / 255, rtol=0)


def test_colmap_distorted_camera_is_refused(tmp_path):
    from fastvdm.data.scene_io import read_capture

    v = View(Camera(torch.eye(4, dtype=torch.float64), 50.0, 50.0, 16.0, 12.0, 32, 24), torch.rand(3, 24, 32), None, "")
    _write_colmap_text(tmp_path, [v], torch.zeros(1, 3), torch.zeros(1, 3))
    cam = tmp_path / "sparse" / "0" / "cameras.txt"
    cam.write_text("1 SIMPLE_RADIAL 32 24 50.0 16.0 12.0 0.1\n")
    with pytest.raises(ValueError, match="lens distortion.*undistort"):
        read_capture(str(tmp_path))


def test_colmap_binary_model_reads_like_the_text_one(tmp_path):
    import pycolmap

    from fastvdm.data.scene_io import read_capture

    cams = [Camera(look_at(torch.tensor([x, -1.5, 1.2]), torch.tensor([0.0, 1.0, 1.0])), 40.0, 40.0, 16.0, 12.0, 32, 24)
            for x in (-0.2, 0.2)]
    views = [View(c, torch.rand(3, 24, 32), None, "") for c in cams]
    _write_colmap_text(tmp_path / "t", views, torch.rand(5, 3), torch.rand(5, 3))
    binary = tmp_path / "b"
    (binary / "sparse" / "0").mkdir(parents=True)
    pycolmap.Reconstruction(str(tmp_path / "t" / "sparse" / "0")).write_binary(str(binary / "sparse" / "0"))
    assert (binary / "sparse" / "0" / "images.bin").is_file()
    (binary / "images").symlink_to(tmp_path / "t" / "images")
    a, b = read_capture(str(tmp_path / "t")), read_capture(str(binary))
    for va, vb in zip(a.views, b.views):
        torch.testing.assert_close(va.camera.c2w, vb.camera.c2w, atol=1e-12, rtol=0)
        assert torch.equal(va.rgb, vb.rgb)
    torch.testing.assert_close(a.points, b.points)


def test_geometry_sources_rgbd_point_cloud_and_stereo():
    """RGB-D views and a point cloud together; a photo without depth beside a point cloud uses the cloud (no
    stereo unless asked); stereo='always' computes it anyway; without any geometry the error says what to give."""
    from fastvdm.data.scenes import Scene
    from fastvdm.densify import scene_geometry

    scene = Scene.random(5)
    tgt = torch.tensor([0.0, 1.0, 1.0])
    cams = [Camera.from_fov(look_at(torch.tensor([x, -1.5, 1.2]), tgt), 60.0, 64, 96) for x in (-0.15, 0.15)]
    rgb, depth = scene.render(cams, 64, 96)
    ply = torch.rand(10, 3), torch.rand(10, 3)
    g = scene_geometry([View(cams[0], rgb[0], depth[0], "a"), View(cams[1], rgb[1], depth[1], "b")], *ply)
    assert g.points.shape[0] == 2 * 64 * 96 + 10 and g.sources == ["depth", "depth"]
    assert g.tangents[-10:].abs().max() == 0 and g.tangents[:-10].norm(dim=-1).min() > 0
    mixed = [View(cams[0], rgb[0], depth[0], "a"), View(cams[1], rgb[1], None, "b")]
    assert scene_geometry(mixed, *ply).sources == ["depth", None]
    assert scene_geometry(mixed, *ply, stereo="always").sources == ["depth", "stereo"]
    with pytest.raises(ValueError, match="no geometry.*depth_file_path.*ply_file_path"):
        scene_geometry([View(cams[0], rgb[0], None, "a"), View(cams[1], rgb[1], None, "b")], stereo="never")
