"""Depth for posed photos without depth maps: classical two-view stereo.

For a pair of views (A, B) with known cameras: both photos are rectified with their cameras
(``cv2.stereoRectify``, zero disparity at infinity; a mostly vertical baseline is handled by transposing the
rectified images), OpenCV's semi-global matcher (``StereoSGBM``) computes the disparity of the left and of the
right rectified image, and a left-right consistency check keeps a pixel only where the two agree within
``lr_tolerance`` px (the confidence mask; SGBM's uniqueness test and speckle filter also reject pixels).
Rectified disparity d is z-depth f B / d in the rectified camera; each original pixel looks up its rectified
position (the rectifying rotation and projection) and takes the depth of the nearest rectified pixel, rotated
back into the original camera. Pixels without a confident match get depth 0 (unknown).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from fastvdm.data.cameras import Camera
from fastvdm.errors import UserError


def _gray8(rgb: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W) uint8 luminance."""
    a = rgb.clamp(0, 1).numpy()
    g = 0.299 * a[0] + 0.587 * a[1] + 0.114 * a[2]
    return np.round(g * 255).astype(np.uint8)


def _sgbm(left: np.ndarray, right: np.ndarray, num_disp: int, block: int) -> np.ndarray:
    import cv2

    m = cv2.StereoSGBM_create(minDisparity=0, numDisparities=num_disp, blockSize=block, P1=8 * block * block,
                              P2=32 * block * block, uniquenessRatio=10, speckleWindowSize=100, speckleRange=2,
                              disp12MaxDiff=-1, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    d = m.compute(left, right).astype(np.float32) / 16.0
    d[d <= 0] = np.nan  # SGBM marks failures with minDisparity - 1; d = 0 would be infinitely far
    return d


def lr_check(disp_l: np.ndarray, disp_r: np.ndarray, tol: float = 1.0) -> np.ndarray:
    """Left-right consistency: left pixel (y, x) with disparity d is kept where the right disparity at
    (y, round(x - d)) is within ``tol`` of d. Returns a bool mask of the left image."""
    h, w = disp_l.shape
    xs = np.arange(w)[None, :] - np.nan_to_num(disp_l, nan=1e9)
    xr = np.round(xs).astype(np.int64)
    ok = np.isfinite(disp_l) & (xr >= 0) & (xr < w)
    rows = np.broadcast_to(np.arange(h)[:, None], (h, w))
    dr = np.full((h, w), np.nan, np.float32)
    dr[ok] = disp_r[rows[ok], xr[ok]]
    return ok & np.isfinite(dr) & (np.abs(dr - np.nan_to_num(disp_l)) <= tol)


def stereo_pair_depth(a, b, num_disparities: int | None = None, block_size: int = 5, lr_tolerance: float = 1.0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-depth maps (H_a, W_a) and (H_b, W_b) of views a and b (``scene_io.View``s) from each other, 0 where
    no confident match. num_disparities: SGBM search range (default: a quarter of the rectified width, a
    multiple of 16, at most 256)."""
    import cv2

    ca, cb = a.camera, b.camera
    h, w = ca.height, ca.width
    rgb_b = b.rgb
    if (cb.height, cb.width) != (h, w):  # one rectification size: resample b to a's size
        rgb_b = torch.nn.functional.interpolate(rgb_b[None], size=(h, w), mode="bilinear", antialias=True,
                                                align_corners=False)[0]
        cb = cb.resized(h, w)
    rel = cb.w2c @ ca.c2w  # X_b = R X_a + T
    r, t = rel[:3, :3].numpy(), rel[:3, 3].numpy()
    if np.linalg.norm(t) < 1e-9:
        raise UserError(f"{a.name} and {b.name}: the two cameras are at the same place; stereo needs a baseline")
    ka, kb = ca.K.numpy(), cb.K.numpy()
    z5 = np.zeros(5)
    r1, r2, p1, p2, _, _, _ = cv2.stereoRectify(ka, z5, kb, z5, (w, h), r, t.reshape(3, 1),
                                                flags=cv2.CALIB_ZERO_DISPARITY, alpha=1)
    vertical = abs(p2[1, 3]) > abs(p2[0, 3])
    maps = [cv2.initUndistortRectifyMap(k, z5, rr, pp, (w, h), cv2.CV_32FC1) for k, rr, pp in
            ((ka, r1, p1), (kb, r2, p2))]
    ims = [cv2.remap(_gray8(x), mx, my, cv2.INTER_LINEAR) for x, (mx, my) in zip((a.rgb, rgb_b), maps)]
    ax = 1 if vertical else 0
    f = p1[ax, ax]
    base = p2[ax, 3] / p2[ax, ax]  # -B when b's rectified camera is to the right of / below a's
    if vertical:
        ims = [np.ascontiguousarray(x.T) for x in ims]
    a_is_left = base < 0
    left, right = (ims[0], ims[1]) if a_is_left else (ims[1], ims[0])
    wl = left.shape[1]
    nd = num_disparities or min(256, max(16, int(np.ceil(wl / 4 / 16)) * 16))
    pad = nd  # SGBM leaves the first numDisparities columns of the left image empty: pad on the left
    lp = cv2.copyMakeBorder(left, 0, 0, pad, 0, cv2.BORDER_REPLICATE)
    rp = cv2.copyMakeBorder(right, 0, 0, pad, 0, cv2.BORDER_REPLICATE)
    d_l = _sgbm(lp, rp, nd, block_size)[:, pad:]
    d_r = _sgbm(np.ascontiguousarray(rp[:, ::-1]), np.ascontiguousarray(lp[:, ::-1]), nd, block_size)[:, ::-1][:, pad:]
    ok_l = lr_check(d_l, d_r, lr_tolerance)
    ok_r = lr_check(d_r[:, ::-1], d_l[:, ::-1], lr_tolerance)[:, ::-1]  # mirrored: right disparities point right
    d_l = np.where(ok_l, d_l, np.nan)
    d_r = np.where(ok_r, d_r, np.nan)
    if vertical:
        d_l, d_r = d_l.T, d_r.T
    disp_a, disp_b = (d_l, d_r) if a_is_left else (d_r, d_l)
    depth_a = _back_to_original(disp_a, ca, r1, p1, f, abs(base))
    depth_b = _back_to_original(disp_b, cb, r2, p2, f, abs(base))
    if (b.camera.height, b.camera.width) != (h, w):
        depth_b = torch.nn.functional.interpolate(depth_b[None, None], size=(b.camera.height, b.camera.width),
                                                  mode="nearest-exact")[0, 0]
    return depth_a, depth_b


def _back_to_original(disp: np.ndarray, cam: Camera, rect: np.ndarray, proj: np.ndarray, f: float, baseline: float
                      ) -> torch.Tensor:
    """Depth in the original camera from a rectified disparity map (nearest rectified pixel per original pixel)."""
    import cv2

    h, w = cam.height, cam.width
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    pts = np.stack([u.ravel(), v.ravel()], -1).astype(np.float64)[:, None]
    # OpenCV pixel centres are integers: shift by 0.5 in and out
    rp = cv2.undistortPoints(pts - 0.5, cam.K.numpy(), np.zeros(5), R=rect, P=proj)[:, 0] + 0.5
    xr, yr = np.floor(rp[:, 0]).astype(np.int64), np.floor(rp[:, 1]).astype(np.int64)
    hh, ww = disp.shape
    inside = (xr >= 0) & (xr < ww) & (yr >= 0) & (yr < hh)
    d = np.full(h * w, np.nan, np.float64)
    d[inside] = disp[yr[inside], xr[inside]]
    z_rect = f * baseline / d
    x_rect = np.stack([(rp[:, 0] - proj[0, 2]) / proj[0, 0], (rp[:, 1] - proj[1, 2]) / proj[1, 1], np.ones(h * w)], -1)
    x_rect *= z_rect[:, None]
    z = (x_rect @ rect)[:, 2]  # rect rotates original -> rectified; its transpose back: z = (R^T x)_z
    z = np.where(np.isfinite(z) & (z > 0), z, 0.0)
    return torch.from_numpy(z.reshape(h, w).astype(np.float32))


def best_partner(views: Sequence, i: int) -> int | None:
    """The other view to match view i with: the nearest camera centre among views looking the same way
    (viewing directions within 60 degrees) and displaced mostly sideways (the baseline's component across
    view i's optical axis at least half its length: forward motion cannot be rectified); None if none is."""
    ci = views[i].camera
    axis = ci.rotation[:, 2]
    best, best_d = None, float("inf")
    for j, v in enumerate(views):
        if j == i:
            continue
        b = v.camera.center - ci.center
        d = float(b.norm())
        if d < 1e-9 or float(v.camera.rotation[:, 2] @ axis) < 0.5:
            continue
        if float((b - (b @ axis) * axis).norm()) < 0.5 * d:
            continue
        if d < best_d:
            best, best_d = j, d
    return best


def stereo_depth_for_views(views: Sequence, indices: Sequence[int], names: Sequence[str] | None = None,
                           **kwargs) -> dict[int, torch.Tensor]:
    """{i: depth (H, W)} for each view index in ``indices``, each matched with its :func:`best_partner`."""
    names = list(names) if names is not None else [v.name for v in views]
    out = {}
    for i in indices:
        j = best_partner(views, i)
        if j is None:
            raise UserError(f"{names[i]}: no depth map, and no other photo sees the same side of the scene from "
                             "a sideways-shifted place to match it with by stereo; give depth_file_path or "
                             "ply_file_path, or add such a photo")
        out[i] = stereo_pair_depth(views[i], views[j], **kwargs)[0]
        if not bool((out[i] > 0).any()):
            raise UserError(f"{names[i]}: stereo with {names[j]} found no confident match; give depth_file_path "
                             "or ply_file_path")
    return out
