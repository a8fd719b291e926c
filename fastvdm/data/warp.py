"""Point-cloud warping: unproject RGB-D views to points, render points into target cameras with a z-buffer.

``render_points`` is the conditioning renderer (the holey "point-cloud render" the model completes). Each
point covers the pixels whose centres lie within ``radius`` pixels of its projection along both image axes
(a square splat: radius 0.5 covers the one pixel containing the projection, radius 1 about 2x2 pixels).
Visibility is a z-buffer resolved by one vectorized scatter-min: each splat is a camera-facing paraboloid,
so a point at z-depth z seen at squared pixel distance d2 from its projection has depth z (1 + falloff d2)
there, and the nearest one wins (ties: lowest point index, so the result is deterministic). A pixel's own
point (d2 ~ 0) thus beats the splats of its neighbours on the same, possibly slanted, surface, while a
clearly nearer surface still covers it; with falloff 0 this is the plain nearest-point z-buffer.
"""

from __future__ import annotations

from typing import Sequence

import torch

from fastvdm.data.cameras import Camera, camera_rays


def unproject(rgb: torch.Tensor, depth: torch.Tensor, cameras: Sequence[Camera]) -> tuple[torch.Tensor, torch.Tensor]:
    """World points of RGB-D views.

    rgb: (V, C, H, W) colours (any range); depth: (V, H, W) z-depth in world units, <= 0 or non-finite means
    no measurement; cameras: V cameras (intrinsics rescaled to H x W). Returns points (N, 3) float32 and their
    colours (N, C), for the N valid pixels, in view-major, row-major order.
    """
    if rgb.dim() != 4 or depth.dim() != 3 or rgb.shape[0] != depth.shape[0] or rgb.shape[-2:] != depth.shape[-2:]:
        raise ValueError(f"unproject: expected rgb (V, C, H, W) and depth (V, H, W), got {tuple(rgb.shape)} "
                         f"and {tuple(depth.shape)}")
    if len(cameras) != rgb.shape[0]:
        raise ValueError(f"unproject: {rgb.shape[0]} views but {len(cameras)} cameras")
    h, w = depth.shape[-2:]
    pts, cols = [], []
    for v, cam in enumerate(cameras):
        o, d = camera_rays(cam, h, w)
        z = depth[v].float()
        ok = torch.isfinite(z) & (z > 0)
        pts.append(o + z[ok][:, None] * d[ok])
        cols.append(rgb[v].permute(1, 2, 0)[ok])
    return torch.cat(pts), torch.cat(cols)


def project(points: torch.Tensor, camera: Camera, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates (N, 2) (u right, v down; pixel (i, j) spans [i, i+1)) and z-depth (N,) of world points."""
    cam = camera.resized(h, w) if (h, w) != (camera.height, camera.width) else camera
    w2c = cam.w2c.to(points.dtype)
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    zs = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    u = cam.fx * pc[:, 0] / zs + cam.cx
    v = cam.fy * pc[:, 1] / zs + cam.cy
    return torch.stack([u, v], -1), z


def render_points(points: torch.Tensor, colors: torch.Tensor, cameras: Sequence[Camera], h: int, w: int,
                  radius: float = 1.0, falloff: float = 1.0, near: float = 1e-3
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render a coloured point cloud into each camera with a z-buffer (see the module docstring).

    points: (N, 3) world positions; colors: (N, C); cameras: V cameras (intrinsics rescaled to h x w);
    radius: square splat half-width in pixels (>= 0.5 for hole-free renders of a same-resolution view);
    falloff: relative depth added to a splat per squared pixel of distance from its centre; near: points
    with z-depth below it are dropped. Returns rgb (V, C, h, w) (0 where empty), mask (V, 1, h, w) in
    {0., 1.} and depth (V, h, w) z-depth of the winning point (0 where empty), all float32.
    """
    if points.dim() != 2 or points.shape[1] != 3 or colors.dim() != 2 or colors.shape[0] != points.shape[0]:
        raise ValueError(f"render_points: expected points (N, 3) and colors (N, C), got {tuple(points.shape)} "
                         f"and {tuple(colors.shape)}")
    if radius <= 0 or falloff < 0:
        raise ValueError(f"render_points: need radius > 0 pixels and falloff >= 0, got {radius}, {falloff}")
    if points.shape[0] >= 1 << 31:
        raise ValueError(f"render_points: at most 2^31 - 1 points, got {points.shape[0]}")
    points = points.float()
    n_views, n_ch, hw = len(cameras), colors.shape[1], h * w
    k = int(2 * radius) + 1  # candidate pixels per axis
    pix_all, key_all, z_all = [], [], []
    ids = torch.arange(points.shape[0])
    for vi, cam in enumerate(cameras):
        uv, z = project(points, cam, h, w)
        keep = z > near
        uv, z, pid = uv[keep], z[keep], ids[keep]
        first = torch.ceil(uv - radius - 0.5).long()  # first candidate column / row
        for dy in range(k):
            for dx in range(k):
                cand = first + torch.tensor([dx, dy])
                off = cand.float() + 0.5 - uv
                ok = (off.abs() <= radius).all(-1) & (cand[:, 0] >= 0) & (cand[:, 0] < w) & (cand[:, 1] >= 0) & (cand[:, 1] < h)
                zs = z[ok] * (1 + falloff * (off[ok] ** 2).sum(-1))
                # positive float32 bits order like the floats: (splat depth, point index) packed in one int64
                key_all.append((zs.view(torch.int32).long() << 32) | pid[ok])
                pix_all.append(vi * hw + cand[ok, 1] * w + cand[ok, 0])
                z_all.append(z[ok])
    pix, key, z = torch.cat(pix_all), torch.cat(key_all), torch.cat(z_all)
    total = n_views * hw
    sentinel = torch.iinfo(torch.int64).max
    best = torch.full((total,), sentinel, dtype=torch.int64).scatter_reduce_(0, pix, key, "amin")
    filled = best != sentinel
    win = best[filled] & 0xFFFFFFFF
    rgb = torch.zeros(total, n_ch, dtype=torch.float32)
    rgb[filled] = colors[win].float()
    depth = torch.zeros(total, dtype=torch.float32)
    is_win = key == best[pix]
    depth[pix[is_win]] = z[is_win]
    rgb = rgb.reshape(n_views, h, w, n_ch).permute(0, 3, 1, 2).contiguous()
    return rgb, filled.float().reshape(n_views, 1, h, w), depth.reshape(n_views, h, w)
