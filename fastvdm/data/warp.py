"""Point-cloud warping: unproject RGB-D views to points, render points into target cameras with a z-buffer.

``render_points`` is the conditioning renderer (the holey "point-cloud render" the model completes). Each
point projected to (u, v) covers the pixels whose centres c satisfy u - r < c_x <= u + r and
v - r < c_y <= v + r for r = ``radius`` (a square splat: radius 0.5 covers exactly the pixel containing
the projection, radius 1 exactly 2x2 pixels).
Visibility is a z-buffer resolved by one vectorized scatter-min: each splat is a camera-facing paraboloid,
so a point at z-depth z seen at squared pixel distance d2 from its projection has depth z (1 + falloff d2)
there, and the nearest one wins (ties: lowest point index, so the result is deterministic). A pixel's own
point (d2 ~ 0) thus beats the splats of its neighbours on the same, possibly slanted, surface, while a
clearly nearer surface still covers it; with falloff 0 this is the plain nearest-point z-buffer.
The scatter-min runs on int64 keys packing (float32 splat depth bits, point index); a GPU kernel could do
the same with an atomic min per pixel. Inputs are CPU tensors.

``splat_surfels`` is the full-resolution warp used by densify: every point is the surfel of the source pixel
it was unprojected from (``unproject_surfels`` gives the surface vectors spanning it), so in a target camera
it covers the pixels whose centres fall inside that source pixel's projected footprint, and nothing else. Its "seen" mask
therefore marks exactly the target pixels some input pixel sees (no splat bleeding into disoccluded pixels);
overlapping footprints are resolved by the same z-buffer.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from fastvdm.data.cameras import Camera, camera_rays

_MAX_ENTRIES = 1 << 23  # (offset, view, point) candidates processed at once by render_points (~0.5 GB peak)


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
    if points.shape[0] == 0 or n_views == 0:
        return torch.zeros(n_views, n_ch, h, w), torch.zeros(n_views, 1, h, w), torch.zeros(n_views, h, w)
    k = math.ceil(2 * radius)  # candidate pixels per axis
    per_view = points.shape[0] * k * k
    if n_views > 1 and n_views * per_view > _MAX_ENTRIES:  # bound memory: cameras in groups
        step = max(1, _MAX_ENTRIES // per_view)
        parts = [render_points(points, colors, cameras[i:i + step], h, w, radius, falloff, near)
                 for i in range(0, n_views, step)]
        return tuple(torch.cat(x) for x in zip(*parts))
    # project into all cameras at once: (V, N)
    cams = [c.resized(h, w) if (h, w) != (c.height, c.width) else c for c in cameras]
    w2c = torch.stack([c.w2c for c in cams]).float()
    intr = torch.tensor([[c.fx, c.fy, c.cx, c.cy] for c in cams], dtype=torch.float32)
    # elementwise (not a matmul): the result for a camera does not depend on which cameras share the call
    r, t = w2c[:, None, :3, :3], w2c[:, None, :3, 3]
    pc = r[..., 0] * points[None, :, 0:1] + r[..., 1] * points[None, :, 1:2] + r[..., 2] * points[None, :, 2:3] + t
    z_all = pc[..., 2]  # (V, N)
    uv = intr[:, None, :2] * pc[..., :2] / torch.where(z_all.abs() < 1e-12, 1e-12, z_all)[..., None] + intr[:, None, 2:]
    first = torch.floor(uv - radius - 0.5).long() + 1  # first covered column / row, (V, N, 2)
    # every (candidate offset, view, point) at once; invalid entries go to a dummy pixel with a max key
    offs = torch.stack(torch.meshgrid(torch.arange(k), torch.arange(k), indexing="xy"), -1).reshape(-1, 1, 1, 2)
    cand = first[None] + offs  # (k*k, V, N, 2) as (column, row)
    off = cand.float() + 0.5 - uv[None]
    ox, oy = off[..., 0], off[..., 1]
    ok = ((ox > -radius) & (ox <= radius) & (oy > -radius) & (oy <= radius) & (z_all > near)[None]
          & (cand[..., 0] >= 0) & (cand[..., 0] < w) & (cand[..., 1] >= 0) & (cand[..., 1] < h))
    total = n_views * hw
    view_base = (torch.arange(n_views) * hw)[None, :, None]
    pix = torch.where(ok, view_base + cand[..., 1] * w + cand[..., 0], total)
    zs = (z_all[None] * (1 + falloff * (ox * ox + oy * oy))).clamp(min=near)
    # positive float32 bits order like the floats: (splat depth, point index) packed in one int64
    key = (zs.view(torch.int32).long() << 32) | torch.arange(points.shape[0])
    sentinel = torch.iinfo(torch.int64).max
    key = torch.where(ok, key, sentinel)
    best = torch.full((total + 1,), sentinel, dtype=torch.int64)
    best = best.scatter_reduce_(0, pix.reshape(-1), key.reshape(-1), "amin")[:total]
    filled = best != sentinel
    win = best & 0xFFFFFFFF
    rgb = torch.where(filled[:, None], colors[torch.where(filled, win, 0)].float(), 0.0)
    view_of_pixel = torch.arange(total) // hw
    depth = torch.where(filled, z_all[view_of_pixel, torch.where(filled, win, 0)], 0.0)
    rgb = rgb.reshape(n_views, h, w, n_ch).permute(0, 3, 1, 2).contiguous()
    return rgb, filled.float().reshape(n_views, 1, h, w), depth.reshape(n_views, h, w)


def unproject_surfels(rgb: torch.Tensor, depth: torch.Tensor, cameras: Sequence[Camera], max_step: float = 0.05
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``unproject`` plus each point's surfel: the world vectors spanning its source pixel on the surface.

    The pixel's footprint on the surface is the parallelogram spanned by tangents (N, 2, 3): the world
    displacement to the next pixel along x and along y, measured on the depth map by central differences
    (one-sided where one neighbour is missing or more than ``max_step`` (relative depth) away, i.e. across a
    depth edge); with neither neighbour on the same surface, the fronto-parallel step z / f along the camera
    axis. Returns points (N, 3) float32, colours (N, C) and tangents (N, 2, 3) float32, in ``unproject``'s order.
    """
    pts, cols = unproject(rgb, depth, cameras)
    h, w = depth.shape[-2:]
    tangents = []
    for v, cam in enumerate(cameras):
        c = cam if (h, w) == (cam.height, cam.width) else cam.resized(h, w)
        o, d = camera_rays(c, h, w)
        z = depth[v].float()
        ok = torch.isfinite(z) & (z > 0)
        zz = torch.where(ok, z, 0.0)
        p = o + zz[..., None] * d  # (h, w, 3)
        steps = []
        for axis, (f, col) in enumerate(((c.fx, 0), (c.fy, 1))):
            dim = 1 - axis  # x: along columns (dim 1 of (h, w)), y: along rows (dim 0)
            fallback = (zz / f)[..., None] * c.rotation[:, col].float()
            nxt = torch.roll(p, -1, dim) - p
            prv = p - torch.roll(p, 1, dim)
            zn, zp = torch.roll(zz, -1, dim), torch.roll(zz, 1, dim)
            okn = ok & (zn > 0) & ((zn - zz).abs() <= max_step * zz)
            okp = ok & (zp > 0) & ((zp - zz).abs() <= max_step * zz)
            last = torch.zeros_like(ok)
            if dim == 1:
                last[:, -1] = True
                first = torch.zeros_like(ok)
                first[:, 0] = True
            else:
                last[-1, :] = True
                first = torch.zeros_like(ok)
                first[0, :] = True
            okn &= ~last
            okp &= ~first
            step = torch.where((okn & okp)[..., None], 0.5 * (nxt + prv),
                               torch.where(okn[..., None], nxt, torch.where(okp[..., None], prv, fallback)))
            steps.append(step[ok])
        tangents.append(torch.stack(steps, 1))
    return pts, cols, torch.cat(tangents)


def splat_surfels(points: torch.Tensor, colors: torch.Tensor, cameras: Sequence[Camera], h: int, w: int,
                  tangents: torch.Tensor | None = None, margin: float = 1.0, max_radius: float = 8.0,
                  near: float = 1e-3, falloff: float = 0.05) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Z-buffered surfel splat at full resolution; "seen" marks only pixels an input point's footprint covers.

    points: (N, 3) world positions; colors: (N, C); cameras: V cameras (intrinsics rescaled to h x w);
    tangents: (N, 2, 3) world vectors spanning each point's source pixel on the surface
    (``unproject_surfels``; all-zero rows or None for points without a footprint, e.g. a PLY: those cover only
    the pixel they project into). A surfel covers the target pixels whose centres lie in the bounding box of
    its projected footprint parallelogram (half-widths r_x, r_y = margin * (|J t_1| + |J t_2|) / 2 per axis,
    J the target projection's Jacobian at the point; at least 0.5, so every point covers its own pixel, at
    most ``max_radius``, so grazing surfels do not smear). Neighbouring footprints tile the surface, so a
    target pixel is seen iff some input pixel's footprint covers its centre; a disocclusion (a depth edge in
    the input, where tangents stop) stays a hole. margin > 1 would close sub-pixel cracks at the price of
    marking that much of a pixel beyond the footprints as seen. Visibility: nearest z-depth wins, with a
    ``falloff`` (relative depth per squared normalized footprint distance) that lets a pixel's own surfel win
    against its neighbours' on the same surface.
    Returns rgb (V, C, h, w) (0 where unseen), seen (V, 1, h, w) in {0., 1.}, depth (V, h, w) (0 where
    unseen), all float32.
    """
    if points.dim() != 2 or points.shape[1] != 3 or colors.dim() != 2 or colors.shape[0] != points.shape[0]:
        raise ValueError(f"splat_surfels: expected points (N, 3) and colors (N, C), got {tuple(points.shape)} "
                         f"and {tuple(colors.shape)}")
    if tangents is not None and tangents.shape != (points.shape[0], 2, 3):
        raise ValueError(f"splat_surfels: tangents must be (N, 2, 3) = ({points.shape[0]}, 2, 3), got "
                         f"{tuple(tangents.shape)}")
    if margin < 1 or max_radius < 0.5:
        raise ValueError(f"splat_surfels: need margin >= 1 and max_radius >= 0.5, got {margin}, {max_radius}")
    n_views, n_ch, hw = len(cameras), colors.shape[1], h * w
    out_rgb, out_seen, out_depth = [], [], []
    points = points.float()
    colors = colors.float()
    idx = torch.arange(points.shape[0])
    for cam in cameras:
        c = cam if (h, w) == (cam.height, cam.width) else cam.resized(h, w)
        w2c = c.w2c.float()
        pc = points @ w2c[:3, :3].T + w2c[:3, 3]
        z = pc[:, 2]
        front = z > near
        pcf, zf, ids = pc[front], z[front], idx[front]
        u = c.fx * pcf[:, 0] / zf + c.cx
        v = c.fy * pcf[:, 1] / zf + c.cy
        if tangents is None:
            rx = ry = torch.full_like(zf, 0.5)
        else:
            tc = tangents.float()[front] @ w2c[:3, :3].T  # (M, 2, 3) in target camera axes
            qx, qy, qz = pcf[:, None, 0], pcf[:, None, 1], zf[:, None]
            du = c.fx * (tc[..., 0] * qz - qx * tc[..., 2]) / qz ** 2  # (M, 2): projected pixel steps
            dv = c.fy * (tc[..., 1] * qz - qy * tc[..., 2]) / qz ** 2
            rx = (0.5 * margin * du.abs().sum(1)).clamp(0.5, max_radius)
            ry = (0.5 * margin * dv.abs().sum(1)).clamp(0.5, max_radius)
        # keep points whose footprint can touch the image
        inside = (u + rx > 0) & (u - rx < w) & (v + ry > 0) & (v - ry < h)
        u, v, rx, ry, zf, ids = u[inside], v[inside], rx[inside], ry[inside], zf[inside], ids[inside]
        best = torch.full((hw + 1,), torch.iinfo(torch.int64).max, dtype=torch.int64)
        x0 = torch.floor(u - rx - 0.5).long() + 1  # first column whose centre is > u - rx
        y0 = torch.floor(v - ry - 0.5).long() + 1
        nx = torch.ceil(2 * rx).long()  # candidate offsets per point: 0..nx (a few large surfels cost only
        ny = torch.ceil(2 * ry).long()  # their own extra passes)
        kx = int(nx.max()) if nx.numel() else 0
        ky = int(ny.max()) if ny.numel() else 0
        for oy in range(ky + 1):
            for ox in range(kx + 1):
                sel = torch.nonzero((nx >= ox) & (ny >= oy)).squeeze(1) if ox > 1 or oy > 1 else None
                if sel is not None and sel.numel() == 0:
                    continue
                pick = (lambda t: t) if sel is None else (lambda t: t[sel])  # noqa: E731
                cx_, cy_ = pick(x0) + ox, pick(y0) + oy
                uu, vv, rxx, ryy = pick(u), pick(v), pick(rx), pick(ry)
                dx, dy = cx_.float() + 0.5 - uu, cy_.float() + 0.5 - vv
                ok = ((dx > -rxx) & (dx <= rxx) & (dy > -ryy) & (dy <= ryy)
                      & (cx_ >= 0) & (cx_ < w) & (cy_ >= 0) & (cy_ < h))
                if not bool(ok.any()):
                    continue
                d2 = (dx[ok] / rxx[ok]) ** 2 + (dy[ok] / ryy[ok]) ** 2
                zs = pick(zf)[ok] * (1 + falloff * d2)
                key = (zs.view(torch.int32).long() << 32) | pick(ids)[ok]
                best.scatter_reduce_(0, cy_[ok] * w + cx_[ok], key, "amin")
        best = best[:hw]
        seen = best != torch.iinfo(torch.int64).max
        win = torch.where(seen, best & 0xFFFFFFFF, 0)
        out_rgb.append(torch.where(seen[:, None], colors[win], 0.0).T.reshape(n_ch, h, w))
        out_seen.append(seen.float().reshape(1, h, w))
        out_depth.append(torch.where(seen, z[win], 0.0).reshape(h, w))
    if n_views == 0:
        return torch.zeros(0, n_ch, h, w), torch.zeros(0, 1, h, w), torch.zeros(0, h, w)
    return torch.stack(out_rgb), torch.stack(out_seen), torch.stack(out_depth)
