"""A voxel grid built directly from a procedural scene (no training): the known-scene oracle of the renderer.

Density comes from the scene's analytic solid (outside the room's interior, or inside a primitive), sampled
with ``supersample``^3 points per grid cell around every grid point; colour is baked from ray-cast RGB-D
views (each surface point splats its colour to the grid points of its cell; unset grid points near the
surface are filled from their neighbours). Rendering this grid must reproduce the ray-caster's images and
depth up to the grid's resolution: that tests ray generation, box intersection, trilinear sampling, the
compositing and the depth convention of ``VoxelGrid`` against independent code.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from fastvdm.data.cameras import Camera
from fastvdm.data.scenes import Scene
from fastvdm.data.warp import unproject
from fastvdm.recon.grid import VoxelGrid


def scene_solid(scene: Scene, points: torch.Tensor) -> torch.Tensor:
    """(M,) bool: world points (M, 3) inside solid matter (beyond the room's walls or inside a primitive)."""
    p = points.double()
    a, b, h = scene.room.size
    solid = (p[:, 0].abs() >= a) | (p[:, 1].abs() >= b) | (p[:, 2] <= 0) | (p[:, 2] >= h)
    for prim in scene.primitives[1:]:
        q = p - torch.tensor(prim.center, dtype=torch.float64)
        if prim.yaw != 0.0:  # into the primitive's frame: R^T q (row vectors: q R)
            c, s = math.cos(prim.yaw), math.sin(prim.yaw)
            q = q @ torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        if prim.kind == "box":
            solid |= (q.abs() <= torch.tensor(prim.size, dtype=torch.float64)).all(-1)
        elif prim.kind == "sphere":
            solid |= (q * q).sum(-1) <= prim.size[0] ** 2
        elif prim.kind == "cylinder":
            r, hc = prim.size
            solid |= (q[:, 0] ** 2 + q[:, 1] ** 2 <= r * r) & (q[:, 2] >= 0) & (q[:, 2] <= hc)
        else:
            raise ValueError(f"scene_solid: unknown primitive kind {prim.kind!r}")
    return solid


@torch.no_grad()
def grid_from_scene(scene: Scene, bake_cameras: Sequence[Camera], max_res: int = 64, margin_voxels: float = 2.0,
                    supersample: int = 3, sharpness: float = 10.0, fill_iters: int = 3,
                    bake_images: tuple[torch.Tensor, torch.Tensor] | None = None) -> VoxelGrid:
    """The VoxelGrid of ``scene``'s room (walls included, ``margin_voxels`` beyond them) at ``max_res``.

    Raw density = sharpness * (2 occ - 1), occ the solid fraction of a voxel-sized cube around each grid
    point, so the interpolated raw density crosses 0 on the occ = 1/2 surface and is +-``sharpness`` away
    from it (softplus(10) / voxel: opaque within a tenth of a voxel; softplus(-10) ~ 5e-5: empty).
    Colour: baked from ray-cast RGB-D renders of ``bake_cameras`` (they should see every surface that will
    be rendered), then ``fill_iters`` rounds of neighbour averaging into the unset grid points.
    ``bake_images``: their renders (rgb (V, 3, H, W), depth (V, H, W)) if already made (else rendered here).
    """
    a, b, h = scene.room.size
    ext = max(2 * a, 2 * b, h)
    m = margin_voxels * ext / (max_res - 1)
    vg = VoxelGrid.for_box((-a - m, -b - m, -m), (a + m, b + m, h + m), max_res)
    nx, ny, nz = vg.shape_xyz
    pts = vg.grid_points().reshape(-1, 3)
    k = supersample
    offs = (torch.arange(k, dtype=torch.float32) + 0.5) / k - 0.5
    oz, oy, ox = torch.meshgrid(offs, offs, offs, indexing="ij")
    offs = torch.stack([ox, oy, oz], -1).reshape(-1, 3) * vg.voxel
    occ = torch.zeros(pts.shape[0])
    for o in offs:
        occ += scene_solid(scene, pts + o).float()
    occ /= offs.shape[0]
    grid = vg.grid.data[0]
    grid[0] = (sharpness * (2 * occ - 1)).view(nz, ny, nx)
    rgb, depth = scene.render(list(bake_cameras)) if bake_images is None else bake_images
    p, c = unproject(rgb, depth, list(bake_cameras))
    known = vg.init_from_points(p, c, density=None).float()[None, None]
    col = grid[1:].clone()
    col = col[None]
    kernel = torch.ones(1, 1, 3, 3, 3)
    for _ in range(fill_iters):
        s = F.conv3d(F.pad(col * known, (1,) * 6, mode="replicate"), kernel.expand(3, 1, 3, 3, 3), groups=3)
        n = F.conv3d(F.pad(known, (1,) * 6, mode="replicate"), kernel)
        new = (known == 0) & (n > 0)
        col = torch.where(new, s / n.clamp(min=1), col)
        known = torch.where(new, torch.ones_like(known), known)
    grid[1:] = col[0]
    return vg
