"""A voxel-grid radiance field: density and colour on a regular grid, trilinear interpolation, volume rendering.

The field lives in an axis-aligned world box ``[lo, hi]`` (metres). ``VoxelGrid.grid`` is one parameter of
shape (1, 4, nz, ny, nx): channel 0 the raw density, channels 1-3 the raw colour. Grid point (i, j, k) sits at
``lo + (i, j, k) * voxel`` for x, y, z (grid points on the box corners: ``align_corners=True`` in
``grid_sample`` terms). Values are interpolated trilinearly *before* the activations (post-activation, as in
DVGO), which gives sub-voxel sharp surfaces:

    density(x) = softplus(raw_density(x)) / voxel_min     [1 / metre]
    colour(x)  = sigmoid(raw_colour(x))                    [0, 1], view-independent (Lambertian scenes)

Rays are sampled at a fixed metric step (half the smallest voxel size by default) between their entry into
and exit from the box; alpha compositing (NeRF quadrature: alpha_i = 1 - exp(-density_i * step)) gives the
colour, the z-depth (expected distance of the weights times the ray's cosine to the optical axis) and the
opacity. What a ray does not accumulate shows a learned constant background colour.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from fastvdm.data.cameras import Camera, camera_rays


def camera_ray_bundle(cameras: Sequence[Camera], h: int | None = None, w: int | None = None) -> dict:
    """Rays of all pixels of ``cameras`` (row-major per view, views in order), float32.

    Returns ``origins`` (N, 3) world positions, ``dirs`` (N, 3) unit world directions, ``zscale`` (N,) the
    cosine between each ray and its camera's optical axis (z-depth = distance * zscale).
    """
    os_, ds, zs = [], [], []
    for cam in cameras:
        hh = cam.height if h is None else h
        ww = cam.width if w is None else w
        o, d = camera_rays(cam, hh, ww)  # d has camera-frame z = 1
        d = d.reshape(-1, 3)
        n = d.norm(dim=-1, keepdim=True)
        os_.append(o.expand_as(d))
        ds.append(d / n)
        zs.append(1.0 / n[:, 0])
    return {"origins": torch.cat(os_).float(), "dirs": torch.cat(ds).float(), "zscale": torch.cat(zs).float()}


def ray_box(origins: torch.Tensor, dirs: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Slab intersection of rays (N, 3) with the box [lo, hi]: entry and exit distances (N,), exit <= entry
    where the ray misses. The entry is clamped at 0 (origins inside the box enter at 0)."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (lo - origins) * inv, (hi - origins) * inv
    tmin = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
    tmax = torch.maximum(t0, t1).amin(-1)
    return tmin, tmax


class VoxelGrid(torch.nn.Module):
    """Density + RGB grid over the box [lo, hi] with ``shape`` = (nx, ny, nz) grid points (see module doc).

    ``init_density`` is the raw density everywhere at start (-6: about 0.1% opacity per voxel crossed, an
    almost empty scene); colours start at grey (raw 0). ``background`` (3,) raw colour seen where rays
    leave the box with opacity left, sigmoid-activated.
    """

    def __init__(self, lo, hi, shape: Sequence[int], init_density: float = -6.0):
        super().__init__()
        lo = torch.as_tensor(lo, dtype=torch.float32).reshape(3)
        hi = torch.as_tensor(hi, dtype=torch.float32).reshape(3)
        nx, ny, nz = (int(s) for s in shape)
        if min(nx, ny, nz) < 2 or not bool((hi > lo).all()):
            raise ValueError(f"VoxelGrid: need hi > lo and at least 2 grid points per axis, got {lo.tolist()}, "
                             f"{hi.tolist()}, {shape}")
        self.register_buffer("lo", lo)
        self.register_buffer("hi", hi)
        self.shape_xyz = (nx, ny, nz)
        grid = torch.zeros(1, 4, nz, ny, nx)
        grid[:, 0] = init_density
        self.grid = torch.nn.Parameter(grid)
        self.background = torch.nn.Parameter(torch.zeros(3))

    @staticmethod
    def for_box(lo, hi, max_res: int, **kw) -> "VoxelGrid":
        """A grid with ``max_res`` points along the box's longest side and near-cubic voxels elsewhere."""
        lo = torch.as_tensor(lo, dtype=torch.float32)
        hi = torch.as_tensor(hi, dtype=torch.float32)
        ext = hi - lo
        shape = [max(2, int(math.ceil((max_res - 1) * float(e) / float(ext.max()))) + 1) for e in ext]
        return VoxelGrid(lo, hi, shape, **kw)

    @property
    def voxel(self) -> torch.Tensor:
        """(3,) grid spacing in metres along x, y, z."""
        n = torch.tensor(self.shape_xyz, dtype=torch.float32)
        return (self.hi - self.lo) / (n - 1)

    def normalized(self, points: torch.Tensor) -> torch.Tensor:
        """World points (..., 3) -> grid_sample coordinates in [-1, 1] (x, y, z order)."""
        return (points - self.lo) / (self.hi - self.lo) * 2.0 - 1.0

    def query(self, points: torch.Tensor, density_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Density (M,) in 1/m and colour (M, 3) in [0, 1] (None with ``density_only``) at world points
        (M, 3) (zero density outside the box)."""
        g = self.normalized(points).view(1, 1, 1, -1, 3)
        src = self.grid[:, :1] if density_only else self.grid
        raw = F.grid_sample(src, g, mode="bilinear", padding_mode="border", align_corners=True)
        raw = raw.view(src.shape[1], -1)
        inside = ((points >= self.lo) & (points <= self.hi)).all(-1)
        sigma = F.softplus(raw[0]) / float(self.voxel.min()) * inside
        return sigma, None if density_only else torch.sigmoid(raw[1:].T)

    def render(self, origins: torch.Tensor, dirs: torch.Tensor, zscale: torch.Tensor | None = None,
               near: float = 0.05, step: float | None = None, early_stop: float = 1e-4) -> dict:
        """Volume-render rays: origins (N, 3), unit dirs (N, 3) (world, metres), zscale (N,) (see
        ``camera_ray_bundle``; default 1: depth is the distance along the ray).

        near: minimum distance (m); step: sample spacing in metres (default half the smallest voxel);
        early_stop: samples whose transmittance is below it are skipped (their weights sum to less than
        it; 0 keeps every sample), found by a density-only pass without gradient.
        Returns ``rgb`` (N, 3) in [0, 1] (background included), ``depth`` (N,) expected z-depth of the
        weights (rays with opacity a < 1 put the rest 1 - a at the box exit), ``acc`` (N,) opacity in
        [0, 1]. Differentiable in ``grid`` and ``background``.
        """
        n_rays = origins.shape[0]
        step = float(self.voxel.min()) * 0.5 if step is None else float(step)
        tmin, tmax = ray_box(origins, dirs, self.lo, self.hi)
        tmin = tmin.clamp(min=near)
        length = (tmax - tmin).clamp(min=0.0)
        n_samples = max(1, int(math.ceil(float(length.max()) / step))) if n_rays else 1
        t = tmin[:, None] + (torch.arange(n_samples, dtype=origins.dtype) + 0.5) * step  # (N, S)
        inside = t < tmax[:, None]
        pts = origins[:, None] + t[..., None] * dirs[:, None]
        if early_stop > 0:  # a cheap density-only pass: drop the samples behind (nearly) opaque matter
            with torch.no_grad():
                sel = inside.nonzero(as_tuple=True)
                sig = torch.zeros(n_rays, n_samples, dtype=origins.dtype)
                sig = sig.index_put(sel, self.query(pts[sel], density_only=True)[0])
                trans = torch.exp(-torch.cumsum(sig * step, 1) + sig * step)  # exclusive: before sample i
                inside &= trans > early_stop
        sel = inside.nonzero(as_tuple=True)  # sample only inside the box (rays have very different lengths)
        sigma_in, col_in = self.query(pts[sel])
        sigma = torch.zeros(n_rays, n_samples, dtype=sigma_in.dtype).index_put(sel, sigma_in)
        col = torch.zeros(n_rays, n_samples, 3, dtype=col_in.dtype).index_put(sel, col_in)
        alpha = 1.0 - torch.exp(-sigma * step)
        trans = torch.cumprod(torch.cat([torch.ones(n_rays, 1, dtype=alpha.dtype), 1.0 - alpha + 1e-10], 1), 1)[:, :-1]
        w = alpha * trans
        acc = w.sum(1)
        rgb = (w[..., None] * col).sum(1) + (1.0 - acc)[:, None] * torch.sigmoid(self.background)
        dist = (w * t).sum(1) + (1.0 - acc) * torch.maximum(tmax, tmin)
        z = dist if zscale is None else dist * zscale
        return {"rgb": rgb, "depth": z, "acc": acc}

    forward = render

    @torch.no_grad()
    def render_views(self, cameras: Sequence[Camera], h: int | None = None, w: int | None = None,
                     chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Render whole images: rgb (V, 3, H, W), z-depth (V, H, W), opacity (V, H, W), float32."""
        rays = camera_ray_bundle(cameras, h, w)
        outs = [self.render(rays["origins"][s:s + chunk], rays["dirs"][s:s + chunk], rays["zscale"][s:s + chunk])
                for s in range(0, rays["origins"].shape[0], chunk)]
        hh = cameras[0].height if h is None else h
        ww = cameras[0].width if w is None else w
        v = len(cameras)
        rgb = torch.cat([o["rgb"] for o in outs]).reshape(v, hh, ww, 3).permute(0, 3, 1, 2).contiguous()
        depth = torch.cat([o["depth"] for o in outs]).reshape(v, hh, ww)
        acc = torch.cat([o["acc"] for o in outs]).reshape(v, hh, ww)
        return rgb, depth, acc

    def total_variation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean squared differences between neighbouring grid points: (density TV, colour TV), raw values."""
        g = self.grid[0]
        tv = [((g[:, 1:] - g[:, :-1]) ** 2).mean((1, 2, 3)), ((g[:, :, 1:] - g[:, :, :-1]) ** 2).mean((1, 2, 3)),
              ((g[..., 1:] - g[..., :-1]) ** 2).mean((1, 2, 3))]
        tv = torch.stack(tv).sum(0)  # (4,)
        return tv[0], tv[1:].mean()

    def grid_points(self) -> torch.Tensor:
        """(nz, ny, nx, 3) world positions of the grid points."""
        nx, ny, nz = self.shape_xyz
        axes = [torch.linspace(float(self.lo[i]), float(self.hi[i]), n) for i, n in enumerate((nx, ny, nz))]
        zz, yy, xx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        return torch.stack([xx, yy, zz], -1)

    # ------------------------------------------------------------------ initialization and (de)serialization
    @torch.no_grad()
    def init_from_points(self, points: torch.Tensor, colors: torch.Tensor, density: float | None = 4.0) -> torch.Tensor:
        """Seed the grid from a coloured point cloud (N, 3) world, (N, 3) in [0, 1] (e.g. unprojected depth).

        Each point is splatted to the 8 grid points of its cell with trilinear weights; grid points that
        receive weight get raw density ``density`` (softplus(4)/voxel: ~87% opacity per voxel crossed) and
        the weighted mean colour (``density=None``: colour only); the rest keep their value. Points outside
        the box are ignored. Returns the (nz, ny, nx) bool mask of the grid points that were set.
        """
        nx, ny, nz = self.shape_xyz
        f = (points.float() - self.lo) / self.voxel  # continuous grid index (x, y, z)
        ok = ((f >= 0) & (f <= torch.tensor([nx - 1, ny - 1, nz - 1]))).all(-1)
        f, c = f[ok], colors.float()[ok]
        i0 = f.floor().long()
        i0 = torch.minimum(i0, torch.tensor([nx - 2, ny - 2, nz - 2]))
        fr = f - i0
        wsum = torch.zeros(nz * ny * nx)
        csum = torch.zeros(nz * ny * nx, 3)
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    wt = ((fr[:, 0] if dx else 1 - fr[:, 0]) * (fr[:, 1] if dy else 1 - fr[:, 1])
                          * (fr[:, 2] if dz else 1 - fr[:, 2]))
                    idx = ((i0[:, 2] + dz) * ny + (i0[:, 1] + dy)) * nx + (i0[:, 0] + dx)
                    wsum.index_add_(0, idx, wt)
                    csum.index_add_(0, idx, wt[:, None] * c)
        hit = wsum > 1e-3
        mean = (csum / wsum.clamp(min=1e-8)[:, None]).clamp(0.02, 0.98)
        g = self.grid.data[0].view(4, -1)
        if density is not None:
            g[0, hit] = density
        g[1:, hit] = torch.logit(mean[hit]).T
        return hit.view(nz, ny, nx)

    def state(self) -> dict:
        """Tensors to save (safetensors-compatible): grid, background, lo, hi."""
        return {"grid": self.grid.detach().contiguous(), "background": self.background.detach().contiguous(),
                "lo": self.lo.clone(), "hi": self.hi.clone()}

    @staticmethod
    def from_state(state: dict) -> "VoxelGrid":
        g = state["grid"]
        vg = VoxelGrid(state["lo"], state["hi"], (g.shape[4], g.shape[3], g.shape[2]))
        with torch.no_grad():
            vg.grid.copy_(g)
            vg.background.copy_(state["background"])
        return vg
