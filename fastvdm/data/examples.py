"""A real photographed capture with known geometry, built from data the installed packages ship.

``motorcycle_views()``: the Middlebury 2014 "Motorcycle" stereo pair as ``skimage.data.stereo_motorcycle()``
ships it (741 x 500 px, rectified, ground-truth disparity of the left view from structured light). The two
cameras are identical pinholes (focal length ``MOTORCYCLE_FOCAL`` px, principal point at the image centre)
``MOTORCYCLE_BASELINE`` m apart along x, so a left pixel with disparity d lies at z-depth f B / d and lands
d pixels to the left in the right photo, exactly as the ground truth says. The left view carries that
metric depth (0 where the ground truth has none); the right view is a real photo of the same scene.
Focal length and baseline are the dataset's calibration at a quarter of its resolution; any other pair with
f B fixed gives the same images.
"""

from __future__ import annotations

import numpy as np
import torch

from fastvdm.data.cameras import Camera

MOTORCYCLE_FOCAL = 3979.911 / 4  # px at 741 x 500
MOTORCYCLE_BASELINE = 0.193001  # m


def motorcycle_views():
    """(left, right): ``scene_io.View``s; left has depth (H, W) in metres (0 where unknown), right has none."""
    from skimage.data import stereo_motorcycle

    from fastvdm.data.scene_io import View

    left, right, disp = stereo_motorcycle()
    h, w = disp.shape
    f, b = MOTORCYCLE_FOCAL, MOTORCYCLE_BASELINE
    ok = np.isfinite(disp) & (disp > 0)
    depth = np.where(ok, f * b / np.where(ok, disp, 1.0), 0.0).astype(np.float32)
    c2w_l = torch.eye(4, dtype=torch.float64)
    c2w_r = c2w_l.clone()
    c2w_r[0, 3] = b
    cam_l = Camera(c2w_l, f, f, w / 2, h / 2, w, h)
    cam_r = Camera(c2w_r, f, f, w / 2, h / 2, w, h)
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0  # noqa: E731
    return (View(cam_l, to_t(left), torch.from_numpy(depth), "motorcycle_left"),
            View(cam_r, to_t(right), None, "motorcycle_right"))


def write_motorcycle_capture(folder: str, depth: bool = True, right_photo: bool = False) -> str:
    """Write the Motorcycle pair as a nerfstudio capture folder; returns its transforms.json path.

    depth: the left photo carries its ground-truth depth (``depth/``, 16-bit millimetres); right_photo: the
    right photo is an input too (else the right camera is a target-only frame, without ``file_path``).
    ``depth=False, right_photo=True`` is a photos-only capture (densify then uses stereo).
    """
    import json
    import os

    from fastvdm.data.cameras import cameras_to_transforms
    from fastvdm.data.scene_io import write_scene

    left, right = motorcycle_views()
    if not depth:
        left.depth = None
    views = [left, right] if right_photo else [left]
    tf = write_scene(folder, views)
    if not right_photo:
        with open(tf) as f:
            meta = json.load(f)
        meta["frames"].append(cameras_to_transforms([right.camera])["frames"][0])
        with open(tf + ".tmp", "w") as f:
            json.dump(meta, f, indent=2)
        os.replace(tf + ".tmp", tf)
    return tf
