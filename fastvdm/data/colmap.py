"""COLMAP models (``cameras``/``images``/``points3D``, text or binary) as a ``scene_io.SceneData``.

Read with ``pycolmap.Reconstruction`` (the maintained reader of both formats). Registered images become input
views (photos from ``images_dir``/<image name>, no depth), the 3-D points with their colours become the scene's
point cloud. COLMAP's camera frame is OpenCV's (x right, y down, z forward) and its pixel centres sit at +0.5,
as in :mod:`fastvdm.data.cameras`, so poses convert by inverting ``cam_from_world``. Only undistorted pinhole
cameras are accepted (SIMPLE_PINHOLE, PINHOLE, or a distortion model whose coefficients are all 0).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from fastvdm.data.cameras import Camera
from fastvdm.errors import UserError

_MODEL_FILES = ("cameras", "images", "points3D")


def find_colmap_model(folder: str) -> str | None:
    """The folder holding a COLMAP model: ``folder/sparse/0``, ``folder/sparse`` or ``folder`` itself, or None."""
    for cand in (os.path.join(folder, "sparse", "0"), os.path.join(folder, "sparse"), folder):
        for ext in (".bin", ".txt"):
            if all(os.path.isfile(os.path.join(cand, n + ext)) for n in _MODEL_FILES):
                return cand
    return None


def _camera(cam, where: str) -> tuple[float, float, float, float]:
    name = cam.model_name if hasattr(cam, "model_name") else str(cam.model)
    name = str(name).split(".")[-1]
    p = [float(x) for x in cam.params]
    if name == "SIMPLE_PINHOLE":
        return p[0], p[0], p[1], p[2]
    if name == "PINHOLE":
        return p[0], p[1], p[2], p[3]
    try:
        f_idx, pp_idx = list(cam.focal_length_idxs()), list(cam.principal_point_idxs())
        extra = list(cam.extra_params_idxs())
    except (AttributeError, TypeError):
        f_idx, pp_idx, extra = [], [], [0]
    if f_idx and pp_idx and all(p[i] == 0.0 for i in extra):
        fx = p[f_idx[0]]
        fy = p[f_idx[1]] if len(f_idx) > 1 else fx
        return fx, fy, p[pp_idx[0]], p[pp_idx[1]]
    raise UserError(f"{where}: camera model {name} with lens distortion {[p[i] for i in extra]} is not supported; "
                     "undistort first (colmap image_undistorter) and densify the undistorted model")


def read_colmap(model_dir: str, images_dir: str):
    """SceneData of a COLMAP model folder; photos are read from ``images_dir`` by image name."""
    try:
        import pycolmap
    except ImportError:
        raise UserError(f"{model_dir} is a COLMAP model; reading it needs pycolmap (pip install pycolmap), or "
                        "convert it to a transforms.json folder") from None

    from fastvdm.data.scene_io import SceneData, View, _read_rgb

    try:
        rec = pycolmap.Reconstruction(model_dir)
    except Exception as e:  # pycolmap raises its own types for malformed files
        raise UserError(f"{model_dir}: cannot read the COLMAP model: {e}") from None
    views = []
    for image_id in sorted(rec.images):
        im = rec.images[image_id]
        if hasattr(im, "has_pose") and not im.has_pose:
            continue
        where = f"{model_dir} image {image_id} ({im.name})"
        cam = rec.cameras[im.camera_id]
        fx, fy, cx, cy = _camera(cam, where)
        cfw = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world
        w2c = np.eye(4)
        w2c[:3, :] = np.asarray(cfw.matrix(), dtype=np.float64)
        c2w = torch.from_numpy(np.linalg.inv(w2c))
        rgb = _read_rgb(os.path.join(images_dir, im.name), where)
        if rgb.shape[1:] != (cam.height, cam.width):
            raise UserError(f"{where}: photo {os.path.join(images_dir, im.name)} is {rgb.shape[2]}x{rgb.shape[1]} "
                             f"(w x h) but its COLMAP camera {im.camera_id} is {cam.width}x{cam.height}")
        views.append(View(Camera(c2w, fx, fy, cx, cy, cam.width, cam.height), rgb, None, im.name))
    if not views:
        raise UserError(f"{model_dir}: the COLMAP model has no registered image")
    pts = colors = None
    if len(rec.points3D):
        ids = sorted(rec.points3D)
        pts = torch.tensor(np.stack([np.asarray(rec.points3D[i].xyz) for i in ids]), dtype=torch.float32)
        colors = torch.tensor(np.stack([np.asarray(rec.points3D[i].color) for i in ids]), dtype=torch.float32) / 255
    return SceneData(views, pts, colors, {"colmap_model": os.path.abspath(model_dir)})
