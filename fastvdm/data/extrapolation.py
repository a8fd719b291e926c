"""Camera paths that leave what the input views saw: the clips where completion matters.

The input views sit at the start of the path (frame 0, and frame 1 when there are two); the camera then
extrapolates past them, so the later target frames see surfaces the inputs never saw (holes in the
point-cloud render of the inputs). Kinds (all in the scene's free space, heights kept):

- ``turn``: the camera pans (yaw) by 25-75 degrees, drifting slightly forward: the holes enter from one side.
- ``back``: it backs away from what it looked at (0.5-1.5 m) with some sideways drift: the frame borders and the
  surfaces behind the first view's occluders open up.
- ``side``: it translates sideways (0.5-1.5 m), aimed at the object or keeping its heading: disocclusions
  behind objects and one border.
- ``forward_turn``: it walks forward (0.3-1 m) while turning by 15-50 degrees.
- ``orbit``: it circles the object it looks at by 30-90 degrees.

``extrapolation_path(scene, rng, kind)`` returns the kind and a function ``path(u)`` of the path parameter
u in [0, 1] (a (n,) tensor) -> (n, 4, 4) OpenCV camera-to-world poses, with ``path(0)`` the first input view.
:class:`fastvdm.data.dataset.ClipDataset` (``paths="extrapolate"``) shortens the path (u scaled down) until
the mean hole fraction of the target frames is at most a per-clip target, which sets the hole distribution.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from fastvdm.data.cameras import look_at

PATH_KINDS = ("turn", "back", "side", "forward_turn", "orbit")


def _rot_z(angle: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) rotations about world z by ``angle`` (n,) radians."""
    c, s = torch.cos(angle), torch.sin(angle)
    z, o = torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1), torch.stack([z, z, o], -1)], -2)


def path_start(scene, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(eye, target) float64 (3,): an eye in free space 1-3 m (horizontally) from an object (or the room
    centre) it looks at. Falls back to the room centre looking at a wall point."""
    targets, free = scene.eye_candidates(rng)
    for _ in range(20):
        if free.shape[0] == 0:
            break
        tgt = targets[rng.integers(targets.shape[0])]
        dist = (free[:, :2] - tgt[:2]).norm(dim=-1)
        near = free[(dist > 1.0) & (dist < 3.0)]
        if near.shape[0]:
            return near[rng.integers(near.shape[0])], tgt
    eye = free[0] if free.shape[0] else torch.tensor([0.0, 0.0, 1.5], dtype=torch.float64)
    return eye, eye + torch.tensor([1.0, 0.3, -0.2], dtype=torch.float64)


def extrapolation_path(scene, rng: np.random.Generator, kind: str | None = None
                       ) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """(kind, path): see the module docstring. Deterministic given ``rng``'s state."""
    if kind is None:
        kind = PATH_KINDS[rng.integers(len(PATH_KINDS))]
    if kind not in PATH_KINDS:
        raise ValueError(f"extrapolation_path: unknown kind {kind!r}; choose one of {PATH_KINDS}")
    eye, tgt = path_start(scene, rng)
    d0 = tgt - eye
    fwd = torch.tensor([float(d0[0]), float(d0[1]), 0.0], dtype=torch.float64)
    fwd = fwd / fwd.norm().clamp_min(1e-9)
    side = torch.tensor([-float(fwd[1]), float(fwd[0]), 0.0], dtype=torch.float64)
    sign = float(rng.choice([-1.0, 1.0]))

    if kind == "turn":
        yaw, drift = sign * math.radians(rng.uniform(25, 75)), rng.uniform(0.0, 0.25)
        tilt = rng.uniform(-0.15, 0.15)

        def path(u):
            u = u.double()
            eyes = eye + (u * drift)[:, None] * fwd
            dirs = (_rot_z(yaw * u) @ d0)
            dirs = dirs + (u * tilt)[:, None] * torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) * d0.norm()
            return look_at(eyes, eyes + dirs)
    elif kind == "back":
        dist, lateral, lift = rng.uniform(0.5, 1.5), rng.uniform(-0.4, 0.4), rng.uniform(-0.1, 0.2)

        def path(u):
            u = u.double()
            eyes = eye - (u * dist)[:, None] * fwd + (u * lateral)[:, None] * side
            eyes = eyes + (u * lift)[:, None] * torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
            return look_at(eyes, tgt.expand_as(eyes))
    elif kind == "side":
        dist, aim = sign * rng.uniform(0.5, 1.5), rng.uniform() < 0.5

        def path(u):
            u = u.double()
            eyes = eye + (u * dist)[:, None] * side
            return look_at(eyes, tgt.expand_as(eyes) if aim else eyes + d0)
    elif kind == "forward_turn":
        dist, yaw = rng.uniform(0.3, 1.0), sign * math.radians(rng.uniform(15, 50))

        def path(u):
            u = u.double()
            eyes = eye + (u * dist * min(1.0, 0.6 * float(d0[:2].norm())))[:, None] * fwd
            return look_at(eyes, eyes + _rot_z(yaw * u) @ d0)
    else:  # orbit
        sweep = sign * math.radians(rng.uniform(30, 90))
        rel = eye - tgt

        def path(u):
            u = u.double()
            eyes = tgt + _rot_z(sweep * u) @ rel
            return look_at(eyes, tgt.expand_as(eyes))
    return kind, path
