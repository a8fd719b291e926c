"""Seeded procedural scenes and a vectorized CPU ray-caster (PyTorch): exact RGB and metric depth.

A scene is a closed room (floor, ceiling, four walls; world z up, floor at z = 0, centred at the origin)
with 3-8 primitives (yawed boxes, spheres, vertical cylinders) standing on the floor or floating. Surfaces
are textured with real photographs bundled in scikit-image's wheel (read from ``skimage.data_dir``; nothing
is downloaded), tinted grey photographs, checkerboards or flat colours. Textures repeat with mirroring
(so they are continuous) and are mip-mapped by the pixel footprint (trilinear), so low-resolution renders
are not aliased. Lighting is Lambertian (ambient + one directional + one point light, no shadows), so the
colour of a surface point does not depend on the viewpoint: an RGB-D render warped into another camera
must reproduce that camera's render. Everything is fully determined by the scene seed.

Units: metres. ``Scene.render`` returns RGB in [0, 1] and z-depth (distance along the camera's optical axis).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fastvdm.data.cameras import Camera, camera_rays, forward_walk_poses, interpolate_poses, look_at, orbit_poses

TEX_SIZE = 128  # texels per side of a photo texture (level 0 of its mip pyramid)
_EPS = 1e-4  # minimum hit distance (metres along a z=1-normalized ray)

# Photographs bundled in the scikit-image wheel (no network fetch): colour ones, and greyscale ones (tinted).
COLOR_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                "hubble_deep_field.jpg", "retina.jpg", "ihc.png")
GRAY_PHOTOS = ("brick.png", "grass.png", "gravel.png", "camera.png", "coins.png", "moon.png", "page.png")


@functools.lru_cache(maxsize=None)
def load_photo(name: str, size: int = TEX_SIZE) -> torch.Tensor:
    """(3, size, size) float32 in [0, 1]: a bundled scikit-image photo, centre-cropped square and resized.

    Greyscale photos come back with three equal channels.
    """
    import skimage
    from PIL import Image

    path = os.path.join(skimage.data_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"scikit-image photo {path} is not bundled in this install")
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        im = im.resize((size, size), Image.Resampling.BOX)
        arr = np.asarray(im, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------------------------- materials
@dataclass
class Material:
    """A repeating texture. texture: (3, S, S) albedo in [0, 1], S a power of two; tile: metres per repeat."""

    texture: torch.Tensor
    tile: float


def _random_color(rng: np.random.Generator, lo: float = 0.25, hi: float = 0.95) -> torch.Tensor:
    hue = rng.uniform(0, 1)
    sat = rng.uniform(0.2, 0.85)
    val = rng.uniform(lo, hi)
    rgb = [val * (1 - sat * max(0.0, min(1.0, abs((hue * 6 + k) % 6 - 3) - 1))) for k in (0, 4, 2)]
    return torch.tensor(rgb, dtype=torch.float32)


def _soften(tex: torch.Tensor, std: float = 1.5) -> torch.Tensor:
    """Circular Gaussian blur of a (3, S, S) texture (printed edges, not aliased steps; still tiles)."""
    r = int(math.ceil(3 * std))
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / std) ** 2)
    g = g / g.sum()
    k = 2 * r + 1
    tex = F.conv2d(F.pad(tex[None], (r, r, 0, 0), mode="circular"), g.view(1, 1, 1, k).expand(3, 1, 1, k), groups=3)
    return F.conv2d(F.pad(tex, (0, 0, r, r), mode="circular"), g.view(1, 1, k, 1).expand(3, 1, k, 1), groups=3)[0]


STRUCTURED_KINDS = ("bricks", "stripes", "tiles", "planks", "dots")


def structured_material(rng: np.random.Generator, kind: str | None = None) -> Material:
    """A procedural material whose continuation is predictable from a part of it (64x64 texels, tiling):
    ``bricks`` (offset rows, per-brick colour jitter, mortar), ``stripes`` (two colours, soft bands), ``tiles``
    (square tiles with grout), ``planks`` (boards with a grain along them) or ``dots`` (a regular dot lattice)."""
    kind = STRUCTURED_KINDS[rng.integers(len(STRUCTURED_KINDS))] if kind is None else kind
    n = 64
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")
    a, b = _random_color(rng), _random_color(rng)
    if kind == "bricks":
        rows = int(rng.choice([4, 8]))
        h = n // rows
        row = (yy // h).long()
        shift = torch.where(row % 2 == 1, torch.tensor(h), torch.tensor(0))
        col = ((xx + shift) // (2 * h)).long()
        jitter = torch.tensor(rng.uniform(0.8, 1.15, (rows, n // (2 * h) + 1)), dtype=torch.float32)
        brick = a[:, None, None] * jitter[row, col % jitter.shape[1]][None]
        mortar = ((yy % h) < 1.5) | (((xx + shift) % (2 * h)) < 1.5)
        tex = torch.where(mortar[None], (0.5 * b + 0.45)[:, None, None].clamp(max=1), brick)
    elif kind == "stripes":
        period = float(rng.choice([8, 16, 32]))
        u = xx if rng.uniform() < 0.5 else yy
        w = (0.5 + 0.5 * torch.cos(2 * math.pi * u / period)) ** float(rng.uniform(0.5, 3))
        tex = a[:, None, None] * w[None] + b[:, None, None] * (1 - w[None])
    elif kind == "tiles":
        size = int(rng.choice([8, 16, 32]))
        grout = ((yy % size) < 1.5) | ((xx % size) < 1.5)
        tex = torch.where(grout[None], b[:, None, None], a[:, None, None])
    elif kind == "planks":
        rows = int(rng.choice([4, 8]))
        h = n // rows
        row = (yy // h).long()
        tone = torch.tensor(rng.uniform(0.8, 1.15, rows), dtype=torch.float32)[row]
        grain = 1 + 0.08 * torch.sin(2 * math.pi * (xx / n * float(rng.integers(1, 4)) + 0.3 * torch.sin(
            2 * math.pi * yy / h)) * 3)
        gap = (yy % h) < 1.0
        tex = torch.where(gap[None], (0.4 * a)[:, None, None], a[:, None, None] * (tone * grain)[None])
    elif kind == "dots":
        period = int(rng.choice([8, 16]))
        d = ((xx % period - period / 2 + 0.5) ** 2 + (yy % period - period / 2 + 0.5) ** 2).sqrt()
        tex = torch.where((d < period * 0.3)[None], a[:, None, None], b[:, None, None])
    else:
        raise ValueError(f"unknown structured material {kind!r}; choose one of {STRUCTURED_KINDS}")
    return Material(_soften(tex.clamp(0, 1)).clamp(0, 1).contiguous(), float(rng.uniform(0.8, 2.0)))


def random_material(rng: np.random.Generator, structured: bool = False) -> Material:
    """A photo (60%), checkerboard (20%) or flat colour (20%) material; with ``structured``: a photo (35%),
    checkerboard (10%), :func:`structured_material` (40%) or flat colour (15%)."""
    if structured:
        kind = rng.choice(4, p=[0.35, 0.1, 0.15, 0.4])
        if kind == 3:
            return structured_material(rng)
    else:
        kind = rng.choice(3, p=[0.6, 0.2, 0.2])
    if kind == 0:
        names = COLOR_PHOTOS + GRAY_PHOTOS
        name = names[rng.integers(len(names))]
        tex = load_photo(name)
        if name in GRAY_PHOTOS:
            tex = tex * (_random_color(rng, 0.7, 1.0) / 0.85).clamp(max=1.0)[:, None, None]
        return Material(tex, float(rng.uniform(1.2, 3.0)))
    if kind == 1:
        a, b = _random_color(rng), _random_color(rng)
        yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
        sel = (((yy // 16) + (xx // 16)) % 2).bool()
        tex = torch.where(sel[None], a[:, None, None], b[:, None, None])
        # soften the square edges (a printed checker, not an aliased step); circular, so it still tiles
        g = torch.exp(-0.5 * (torch.arange(-4, 5, dtype=torch.float32) / 1.5) ** 2)
        g = g / g.sum()
        tex = F.conv2d(F.pad(tex[None], (4, 4, 0, 0), mode="circular"), g.view(1, 1, 1, 9).expand(3, 1, 1, 9), groups=3)
        tex = F.conv2d(F.pad(tex, (0, 0, 4, 4), mode="circular"), g.view(1, 1, 9, 1).expand(3, 1, 9, 1), groups=3)[0]
        return Material(tex, float(rng.uniform(1.0, 2.5)))
    return Material(_random_color(rng)[:, None, None].clone(), 1.0)


class _TextureAtlas:
    """All mip levels of all materials of a scene in one flat texel buffer, sampled trilinearly by gather."""

    def __init__(self, materials: Sequence[Material]):
        levels = [int(math.log2(m.texture.shape[-1])) + 1 for m in materials]
        n_lv = max(levels)
        texels, offsets, sizes, off = [], torch.zeros(len(materials), n_lv, dtype=torch.long), \
            torch.zeros(len(materials), n_lv, dtype=torch.long), 0
        for i, m in enumerate(materials):
            t = m.texture.float()
            if t.shape[-1] != t.shape[-2] or t.shape[-1] & (t.shape[-1] - 1):
                raise ValueError(f"material {i}: texture must be square with power-of-two size, got {tuple(t.shape)}")
            for lv in range(n_lv):
                if lv < levels[i]:
                    if lv > 0:
                        t = F.avg_pool2d(t[None], 2)[0]
                    texels.append(t.reshape(3, -1).T)
                    offsets[i, lv], sizes[i, lv] = off, t.shape[-1]
                    off += t.shape[-1] ** 2
                else:  # beyond the 1x1 level: repeat it
                    offsets[i, lv], sizes[i, lv] = offsets[i, lv - 1], sizes[i, lv - 1]
        self.texels = torch.cat(texels).contiguous()
        self.offsets, self.sizes = offsets, sizes
        self.max_level = torch.tensor([lv - 1 for lv in levels], dtype=torch.float32)
        self.tile = torch.tensor([m.tile for m in materials], dtype=torch.float32)
        self.base_size = torch.tensor([m.texture.shape[-1] for m in materials], dtype=torch.float32)

    def sample(self, mat: torch.Tensor, uv: torch.Tensor, footprint: torch.Tensor) -> torch.Tensor:
        """Albedo (N, 3) of materials ``mat`` (N,) at surface coordinates ``uv`` (N, 2) in metres.

        footprint (N,): size of one pixel on the surface in metres; selects the mip level.
        """
        tile = self.tile[mat]
        x = uv / tile[:, None]
        x = 1.0 - ((x % 2.0) - 1.0).abs()  # mirrored repeat: continuous, in [0, 1]
        lod = torch.log2((footprint * self.base_size[mat] / tile).clamp(min=1.0))
        lod = torch.minimum(lod, self.max_level[mat])
        l0 = lod.floor().long()
        l1 = torch.minimum(l0 + 1, self.max_level[mat].long())
        w1 = (lod - l0)[:, None]
        return self._bilinear(mat, l0, x) * (1 - w1) + self._bilinear(mat, l1, x) * w1

    def _bilinear(self, mat, lv, x):
        s = self.sizes[mat, lv]
        base = self.offsets[mat, lv]
        p = (x * s[:, None] - 0.5).clamp(min=0.0)
        p = torch.minimum(p, (s - 1)[:, None].float())
        i0 = p.floor().long()
        f = p - i0
        i1 = torch.minimum(i0 + 1, (s - 1)[:, None])
        tx = self.texels
        c00 = tx[base + i0[:, 1] * s + i0[:, 0]]
        c01 = tx[base + i0[:, 1] * s + i1[:, 0]]
        c10 = tx[base + i1[:, 1] * s + i0[:, 0]]
        c11 = tx[base + i1[:, 1] * s + i1[:, 0]]
        fx, fy = f[:, :1], f[:, 1:]
        return (c00 * (1 - fx) + c01 * fx) * (1 - fy) + (c10 * (1 - fx) + c11 * fx) * fy


# ----------------------------------------------------------------------------------------------- primitives
@dataclass
class Primitive:
    """A solid in a local frame: rotated by ``yaw`` (radians, about world z), then translated to ``center``.

    kind "box": ``size`` = half extents (a, b, c), centred at ``center``.
    kind "sphere": ``size`` = (r,), centred at ``center``.
    kind "cylinder": ``size`` = (r, h); axis along z from ``center`` (base) up by h.
    kind "room": the inside of the box [-a, a] x [-b, b] x [0, h] (``size`` = (a, b, h)), seen from within;
    its faces use materials floor, ceiling, walls x-, x+, y-, y+ (``material`` holds 6 ids).
    """

    kind: str
    center: tuple
    size: tuple
    material: tuple
    yaw: float = 0.0

    def footprint_radius(self) -> float:
        """Radius (m) of a vertical cylinder around ``center`` containing the primitive (not for rooms)."""
        if self.kind == "box":
            return math.hypot(self.size[0], self.size[1])
        return float(self.size[0])


def _to_local(prim: Primitive, o: torch.Tensor, d: torch.Tensor):
    """Rays in the primitive's frame: R^T (o - c), R^T d (row vectors), and R (None when yaw is 0)."""
    ctr = torch.tensor(prim.center, dtype=o.dtype)
    if prim.yaw == 0.0:
        return o - ctr, d, None
    c, s = math.cos(prim.yaw), math.sin(prim.yaw)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=o.dtype)
    return (o - ctr) @ rot, d @ rot, rot


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product of (N, 3) tensors (explicit: a reduction over 3 elements is slow on the CPU)."""
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def _safe(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)


def _intersect(prim: Primitive, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Hit distance (N,) along rays o + t d (local coordinates), inf where missed."""
    inf = torch.full_like(o[:, 0], math.inf)
    if prim.kind == "room":
        a, b, h = prim.size
        lo = torch.tensor([-a, -b, 0.0], dtype=o.dtype)
        hi = torch.tensor([a, b, h], dtype=o.dtype)
        dd = _safe(d)
        t_ax = torch.where(dd > 0, (hi - o) / dd, (lo - o) / dd)
        return torch.minimum(torch.minimum(t_ax[:, 0], t_ax[:, 1]), t_ax[:, 2]).clamp(min=_EPS)
    if prim.kind == "box":
        e = torch.tensor(prim.size, dtype=o.dtype)
        dd = _safe(d)
        t1, t2 = (-e - o) / dd, (e - o) / dd
        lo, hi = torch.minimum(t1, t2), torch.maximum(t1, t2)
        tmin = torch.maximum(torch.maximum(lo[:, 0], lo[:, 1]), lo[:, 2])
        tmax = torch.minimum(torch.minimum(hi[:, 0], hi[:, 1]), hi[:, 2])
        return torch.where((tmax >= tmin) & (tmin > _EPS), tmin, inf)
    if prim.kind == "sphere":
        r = prim.size[0]
        a, b, c = _dot(d, d), _dot(o, d), _dot(o, o) - r * r
        disc = b * b - a * c
        t = (-b - disc.clamp(min=0).sqrt()) / a
        return torch.where((disc >= 0) & (t > _EPS), t, inf)
    if prim.kind == "cylinder":
        r, h = prim.size
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
        c = o[:, 0] ** 2 + o[:, 1] ** 2 - r * r
        disc = b * b - a * c
        ts = (-b - disc.clamp(min=0).sqrt()) / a.clamp(min=1e-12)
        zs = o[:, 2] + ts * d[:, 2]
        ts = torch.where((disc >= 0) & (a > 1e-12) & (ts > _EPS) & (zs >= 0) & (zs <= h), ts, inf)
        dz = _safe(d[:, 2])
        tc = torch.where(o[:, 2] > h, (h - o[:, 2]) / dz, -o[:, 2] / dz)
        pc = o[:, :2] + tc[:, None] * d[:, :2]
        tc = torch.where((tc > _EPS) & ((pc * pc).sum(-1) <= r * r), tc, inf)
        return torch.minimum(ts, tc)
    raise ValueError(f"unknown primitive kind {prim.kind!r}")


def _surface(prim: Primitive, p: torch.Tensor):
    """Local normal (N, 3), surface coordinates uv (N, 2) in metres and material-slot (N,) at local hits p."""
    n = torch.zeros_like(p)
    slot = torch.zeros(p.shape[0], dtype=torch.long)
    if prim.kind in ("room", "box"):
        if prim.kind == "room":
            a, b, h = prim.size
            q = p - torch.tensor([0.0, 0.0, h / 2], dtype=p.dtype)
            e = torch.tensor([a, b, h / 2], dtype=p.dtype)
        else:
            q, e = p, torch.tensor(prim.size, dtype=p.dtype)
        axis = (q.abs() / e).argmax(-1)
        sign = torch.sign(q.gather(1, axis[:, None]))[:, 0]
        n.scatter_(1, axis[:, None], sign[:, None])
        if prim.kind == "room":
            n = -n  # seen from inside
            slot = torch.where(axis == 2, (sign > 0).long(), 2 + 2 * axis + (sign > 0).long())
        # planar coordinates on the face: drop the normal axis
        uv = torch.where((axis == 0)[:, None], p[:, [1, 2]],
                         torch.where((axis == 1)[:, None], p[:, [0, 2]], p[:, [0, 1]]))
        return n, uv, slot
    if prim.kind == "sphere":
        r = prim.size[0]
        n = p / r
        phi = torch.atan2(p[:, 1], p[:, 0])
        theta = torch.acos((p[:, 2] / r).clamp(-1, 1))
        return n, torch.stack([r * phi, r * theta], -1), slot
    if prim.kind == "cylinder":
        r, h = prim.size
        radial = (p[:, 0] ** 2 + p[:, 1] ** 2).sqrt()
        cap = ((p[:, 2] <= 1e-4) | (p[:, 2] >= h - 1e-4)) & (radial < r * (1 - 1e-3))
        n = torch.where(cap[:, None], torch.stack([torch.zeros_like(radial), torch.zeros_like(radial),
                                                    torch.where(p[:, 2] > h / 2, 1.0, -1.0)], -1),
                        torch.stack([p[:, 0] / r, p[:, 1] / r, torch.zeros_like(radial)], -1))
        uv_side = torch.stack([r * torch.atan2(p[:, 1], p[:, 0]), p[:, 2]], -1)
        return n, torch.where(cap[:, None], p[:, :2], uv_side), slot
    raise ValueError(f"unknown primitive kind {prim.kind!r}")


# ----------------------------------------------------------------------------------------------- scene
@dataclass
class Scene:
    """A room with primitives, materials and lights. Build one with ``Scene.random(seed)``.

    primitives[0] is the room. light_dir: (3,) unit direction towards the directional light. point_light:
    (3,) position. Lambertian shading:
    albedo * (ambient + sun * max(n.l, 0) + lamp * max(n.l_p, 0) / (1 + d^2 / 4)), d the distance to the lamp.
    Texture filtering: the mip level is chosen for a footprint of ``blur`` pixels, stretched by
    1 / cos(incidence) ** ``aniso`` on slanted surfaces. blur = 2 keeps textures below half the pixel Nyquist
    rate, so that re-projecting a render into a nearby view reproduces that view's render (measured: with
    blur = 1 the nearest-point warp of tests/test_warp.py lost 2-5 dB on photo and checker textures).
    """

    primitives: list
    materials: list
    light_dir: tuple
    point_light: tuple
    ambient: float = 0.35
    sun: float = 0.45
    lamp: float = 0.6
    blur: float = 2.0
    aniso: float = 1.0
    seed: int | None = None
    _atlas: _TextureAtlas | None = field(default=None, repr=False)

    @property
    def room(self) -> Primitive:
        return self.primitives[0]

    # ------------------------------------------------------------------ generation
    @staticmethod
    def random(seed: int, structured: bool = False) -> "Scene":
        """The procedural scene of ``seed`` (any int >= 0): same seed, same scene, on any machine. ``structured``
        draws materials from the mix with :func:`structured_material` (False: the original mix, which the
        fixed held-out split uses)."""
        rng = np.random.default_rng(seed)
        a, b, h = rng.uniform(2.0, 4.0), rng.uniform(2.0, 4.0), rng.uniform(2.6, 3.6)
        materials = [random_material(rng, structured) for _ in range(3)]  # floor, ceiling, walls
        wall2 = len(materials)
        materials.append(random_material(rng, structured) if rng.uniform() < 0.5 else materials[2])
        room = Primitive("room", (0.0, 0.0, 0.0), (a, b, h), (0, 1, 2, 2, wall2, wall2))
        prims = [room]
        placed: list[tuple[float, float, float]] = []
        for _ in range(int(rng.integers(3, 9))):
            kind = ("box", "sphere", "cylinder")[rng.integers(3)]
            if kind == "box":
                size = (rng.uniform(0.2, 0.7), rng.uniform(0.2, 0.7), rng.uniform(0.15, 0.9))
            elif kind == "sphere":
                size = (rng.uniform(0.25, 0.65),)
            else:
                size = (rng.uniform(0.15, 0.5), rng.uniform(0.3, 1.8))
            yaw = rng.uniform(0, 2 * math.pi) if kind == "box" else 0.0
            prim = Primitive(kind, (0.0, 0.0, 0.0), size, (len(materials),), yaw)
            rad = prim.footprint_radius()
            for _try in range(30):
                x = rng.uniform(-a + rad + 0.1, a - rad - 0.1) if a - rad > 0.2 else 0.0
                y = rng.uniform(-b + rad + 0.1, b - rad - 0.1) if b - rad > 0.2 else 0.0
                if all(math.hypot(x - px, y - py) > rad + pr + 0.1 for px, py, pr in placed):
                    break
            else:
                continue
            if kind == "box":
                z = size[2]
            elif kind == "sphere":
                z = size[0] if rng.uniform() < 0.7 else rng.uniform(size[0] + 0.3, max(size[0] + 0.3, h - size[0] - 0.2))
            else:
                z = 0.0
            prim.center = (float(x), float(y), float(z))
            prims.append(prim)
            placed.append((x, y, rad))
            materials.append(random_material(rng, structured))
        ld = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.5, 1.5)])
        lamp = (rng.uniform(-a + 0.3, a - 0.3), rng.uniform(-b + 0.3, b - 0.3), h - 0.25)
        return Scene(prims, materials, tuple(ld / np.linalg.norm(ld)), tuple(float(v) for v in lamp), seed=seed)

    # ------------------------------------------------------------------ free space and camera paths
    def is_free(self, points: torch.Tensor, margin: float = 0.4) -> torch.Tensor:
        """(N,) bool: points (N, 3) inside the room and at least ``margin`` metres from every primitive's
        bounding cylinder (horizontally) and from walls, floor and ceiling."""
        a, b, h = self.room.size
        p = torch.as_tensor(points, dtype=torch.float64)
        ok = (p[:, 0].abs() < a - margin) & (p[:, 1].abs() < b - margin) & (p[:, 2] > margin) & (p[:, 2] < h - margin)
        for prim in self.primitives[1:]:
            dist = torch.hypot(p[:, 0] - prim.center[0], p[:, 1] - prim.center[1])
            ok &= dist > prim.footprint_radius() + margin
        return ok

    def eye_candidates(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(look-at targets (K, 3): a point above each object and the room centre; eye positions (M, 3) in free
        space: 512 uniform draws from ``rng`` in the room at 0.9-1.9 m height, kept where free (with a 0.15 m
        margin if none is free at the default one)). float64."""
        a, b, h = self.room.size
        targets = torch.tensor([[p.center[0], p.center[1], min(p.center[2] + 0.3, 1.2)] for p in self.primitives[1:]]
                               + [[0.0, 0.0, 0.8]], dtype=torch.float64)
        cand = torch.tensor(np.stack([rng.uniform(-a, a, 512), rng.uniform(-b, b, 512),
                                      rng.uniform(0.9, max(0.95, min(1.9, h - 0.5)), 512)], -1))
        free = cand[self.is_free(cand)]
        if free.shape[0] == 0:
            free = cand[self.is_free(cand, margin=0.15)]
        return targets, free

    def sample_poses(self, rng: np.random.Generator, n: int, kind: str | None = None) -> torch.Tensor:
        """(n, 4, 4) OpenCV camera-to-world poses of a smooth camera path whose cameras are all in free space.

        kind: "orbit" (arc around an object), "walk" (forward walk, turning), "interp" (spline through 2-3
        views of an object), or None for a random choice. Paths that leave free space are shortened or
        redrawn; if none fits, the camera pans in place. Deterministic given ``rng``'s state.
        """
        kinds = ("orbit", "walk", "interp")
        if kind is not None and kind not in kinds:
            raise ValueError(f"sample_poses: unknown kind {kind!r} (use orbit, walk, interp or None)")
        targets, free = self.eye_candidates(rng)  # candidate eye positions in free space (rejection sampling)
        for _attempt in range(40):
            if free.shape[0] == 0:
                break
            k = kinds[rng.integers(3)] if kind is None else kind
            tgt = targets[rng.integers(targets.shape[0])]
            dist = (free[:, :2] - tgt[:2]).norm(dim=-1)
            near = free[(dist > 1.0) & (dist < 3.0)]
            if near.shape[0] == 0:
                continue
            eye = near[rng.integers(near.shape[0])]
            scale = 1.0
            for _shrink in range(3):  # shorten the path until it stays in free space
                if k == "orbit":
                    rel = eye - tgt
                    poses = orbit_poses(tgt, float(rel[:2].norm()), n, start_deg=math.degrees(math.atan2(rel[1], rel[0])),
                                        sweep_deg=scale * rng.uniform(25, 110) * rng.choice([-1, 1]),
                                        height=float(rel[2]), target=tgt)
                elif k == "walk":
                    start = look_at(eye, tgt + torch.tensor([0.0, 0.0, rng.uniform(-0.3, 0.1)], dtype=torch.float64))
                    length = scale * min(rng.uniform(0.4, 1.6), 0.6 * float((eye - tgt)[:2].norm()))
                    poses = forward_walk_poses(start, n, length, yaw_deg=rng.uniform(-35, 35))
                else:
                    keys = [eye]
                    for _ in range(int(rng.integers(1, 3))):
                        step = near[(near - keys[-1]).norm(dim=-1) < 2.0 * scale]
                        keys.append(step[rng.integers(step.shape[0])])
                    aims = tgt + torch.tensor(rng.uniform(-0.4, 0.4, (len(keys), 3)), dtype=torch.float64)
                    poses = interpolate_poses(look_at(torch.stack(keys), aims), n)
                if bool(self.is_free(poses[:, :3, 3], margin=0.3).all()):
                    return poses
                scale *= 0.5
        # fallback: pan in place at the freest candidate
        eye = free[0] if free.shape[0] else torch.tensor([0.0, 0.0, 1.5], dtype=torch.float64)
        ang = torch.deg2rad(torch.tensor(rng.uniform(0, 360), dtype=torch.float64) + torch.linspace(0, 60, n, dtype=torch.float64))
        aims = eye + torch.stack([torch.cos(ang), torch.sin(ang), torch.full_like(ang, -0.2)], -1)
        return look_at(eye.expand_as(aims), aims)

    # ------------------------------------------------------------------ rendering
    def _get_atlas(self) -> _TextureAtlas:
        if self._atlas is None:
            self._atlas = _TextureAtlas(self.materials)
        return self._atlas

    def cast(self, o: torch.Tensor, d: torch.Tensor, focal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shade rays o + t d (N, 3) float32 (d with unit camera-frame z, so t is z-depth).

        focal (N,): focal length in pixels of each ray's camera (for texture filtering).
        Returns colour (N, 3) in [0, 1] and t (N,) (0 where nothing was hit).
        """
        n_rays = o.shape[0]
        ts = []
        for prim in self.primitives:
            lo, ld, _ = _to_local(prim, o, d)
            ts.append(_intersect(prim, lo, ld))
        tt = torch.stack(ts)
        t, which = tt.min(0)
        hit = torch.isfinite(t)
        p = o + t[:, None] * d
        normal = torch.zeros_like(o)
        uv = torch.zeros(n_rays, 2, dtype=o.dtype)
        mat = torch.zeros(n_rays, dtype=torch.long)
        for i, prim in enumerate(self.primitives):
            sel = (which == i) & hit
            if not bool(sel.any()):
                continue
            lo, _, rot = _to_local(prim, p[sel], d[sel])
            n_l, uv_l, slot = _surface(prim, lo)
            normal[sel] = n_l if rot is None else n_l @ rot.T
            uv[sel] = uv_l
            mat[sel] = torch.tensor(prim.material, dtype=torch.long)[slot]
        dn = _dot(d, d).sqrt()
        cos = _dot(normal, d).abs() / dn
        footprint = self.blur * t / (focal * dn) / cos.clamp(min=0.05) ** self.aniso
        albedo = self._get_atlas().sample(mat, uv, footprint)
        light_dir = torch.tensor(self.light_dir, dtype=o.dtype)
        to_lamp = torch.tensor(self.point_light, dtype=o.dtype) - p
        dist2 = _dot(to_lamp, to_lamp)
        lamp = _dot(normal, to_lamp).clamp(min=0) / dist2.sqrt().clamp(min=1e-6) / (1 + dist2 / 4)
        shade = self.ambient + self.sun * _dot(normal, light_dir.expand_as(normal)).clamp(min=0) + self.lamp * lamp
        rgb = (albedo * shade[:, None]).clamp(0, 1)
        return torch.where(hit[:, None], rgb, 0.0), torch.where(hit, t, 0.0)

    def render(self, cameras: Camera | Sequence[Camera], h: int | None = None, w: int | None = None,
               chunk: int = 1 << 17) -> tuple[torch.Tensor, torch.Tensor]:
        """Render RGB (V, 3, h, w) float32 in [0, 1] and z-depth (V, h, w) float32 in metres.

        ``cameras`` is one Camera (then V = 1) or a sequence; all are rendered at ``h`` x ``w`` (default: the
        first camera's size), their intrinsics rescaled to it. One sample per pixel, at the pixel centre.
        """
        cams = [cameras] if isinstance(cameras, Camera) else list(cameras)
        if not cams:
            raise ValueError("Scene.render: no cameras")
        h = cams[0].height if h is None else h
        w = cams[0].width if w is None else w
        os_, ds, fs = [], [], []
        for cam in cams:
            o, d = camera_rays(cam, h, w)
            os_.append(o.expand(h * w, 3))
            ds.append(d.reshape(-1, 3))
            sc = cam.resized(h, w)
            fs.append(torch.full((h * w,), math.sqrt(sc.fx * sc.fy), dtype=torch.float32))
        o, d, f = torch.cat(os_), torch.cat(ds), torch.cat(fs)
        rgb, depth = [], []
        for s in range(0, o.shape[0], chunk):
            c, t = self.cast(o[s:s + chunk], d[s:s + chunk], f[s:s + chunk])
            rgb.append(c)
            depth.append(t)
        v = len(cams)
        rgb = torch.cat(rgb).reshape(v, h, w, 3).permute(0, 3, 1, 2).contiguous()
        return rgb, torch.cat(depth).reshape(v, h, w)
