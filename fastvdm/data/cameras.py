"""Pinhole cameras (OpenCV convention), nerfstudio ``transforms.json`` conversion, trajectories, Plücker rays.

Convention (DESIGN.md): camera axes x right, y down, z forward; ``c2w`` is the 4x4 camera-to-world matrix
(float64); intrinsics ``fx, fy, cx, cy`` are in pixels of an image ``width`` x ``height``; pixel ``(u, v)``
(column, row) has its centre at ``(u + 0.5, v + 0.5)``. World units are metres for the procedural scenes.

nerfstudio's ``transforms.json`` stores OpenGL camera-to-world matrices (x right, y up, z backward); they are
converted on load and on save by flipping the y and z camera axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import torch

from fastvdm.errors import UserError

# Right-multiplying a c2w by this swaps between the OpenCV and OpenGL camera axes (it is its own inverse).
_FLIP_YZ = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera.

    c2w: (4, 4) float64 camera-to-world matrix, OpenCV axes. fx, fy, cx, cy: intrinsics in pixels of an image
    of ``width`` x ``height`` pixels.
    """

    c2w: torch.Tensor
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self):
        c2w = torch.as_tensor(self.c2w, dtype=torch.float64).detach().cpu()
        if c2w.shape != (4, 4):
            raise ValueError(f"Camera.c2w must be 4x4, got shape {tuple(c2w.shape)}")
        object.__setattr__(self, "c2w", c2w)
        for name in ("fx", "fy", "cx", "cy"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @property
    def center(self) -> torch.Tensor:
        """(3,) camera centre in world coordinates."""
        return self.c2w[:3, 3]

    @property
    def rotation(self) -> torch.Tensor:
        """(3, 3) camera-to-world rotation; its columns are the camera's x (right), y (down), z (forward) axes."""
        return self.c2w[:3, :3]

    @property
    def w2c(self) -> torch.Tensor:
        """(4, 4) world-to-camera matrix (exact rigid inverse of ``c2w``)."""
        r, t = self.rotation, self.center
        out = torch.eye(4, dtype=torch.float64)
        out[:3, :3] = r.T
        out[:3, 3] = -r.T @ t
        return out

    @property
    def K(self) -> torch.Tensor:
        """(3, 3) float64 intrinsic matrix."""
        return torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=torch.float64)

    def with_pose(self, c2w: torch.Tensor) -> "Camera":
        """The same intrinsics with another (4, 4) camera-to-world pose."""
        return replace(self, c2w=c2w)

    def resized(self, height: int, width: int) -> "Camera":
        """The same camera for an image resampled (not cropped) to ``height`` x ``width`` pixels."""
        sx, sy = width / self.width, height / self.height
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy,
                       width=width, height=height)

    def cropped(self, left: int, top: int, height: int, width: int) -> "Camera":
        """The same camera for the ``height`` x ``width`` crop whose top-left pixel is (``left``, ``top``)."""
        return replace(self, cx=self.cx - left, cy=self.cy - top, width=width, height=height)

    @staticmethod
    def from_fov(c2w: torch.Tensor, fov_x_deg: float, height: int, width: int) -> "Camera":
        """A camera with square pixels, principal point at the image centre and horizontal FOV in degrees."""
        f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
        return Camera(c2w, f, f, width / 2, height / 2, width, height)


def check_rotation(r: torch.Tensor, tol: float = 1e-3) -> float:
    """Max deviation of (3, 3) ``r`` from a proper rotation (``|r^T r - I|`` and ``|det r - 1|``); raises none."""
    r = torch.as_tensor(r, dtype=torch.float64)
    ortho = (r.T @ r - torch.eye(3, dtype=torch.float64)).abs().max().item()
    return max(ortho, abs(torch.linalg.det(r).item() - 1.0))


def opengl_to_opencv(c2w: torch.Tensor) -> torch.Tensor:
    """(..., 4, 4) OpenGL camera-to-world (y up, z backward) -> OpenCV (y down, z forward). Self-inverse."""
    c2w = torch.as_tensor(c2w, dtype=torch.float64)
    return c2w @ _FLIP_YZ


opencv_to_opengl = opengl_to_opencv


# ----------------------------------------------------------------------------------------------- transforms.json
class CameraFormatError(UserError):
    """A camera field of a transforms.json is missing, malformed or implausible; the message names the frame."""


# Sanity limits for cameras read from files (generous: they catch unit mistakes and placeholder values).
FOCAL_RANGE = (0.05, 1000.0)  # focal length in pixels, as a multiple of the larger image side
PRINCIPAL_RANGE = 10.0  # cx in [-10 w, 11 w], cy likewise
MAX_IMAGE_SIDE = 100_000
MAX_TRANSLATION = 1e9  # camera centre, in scene units
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
_READ_ORDER = ("w", "h", "fl_x", "fl_y", "cx", "cy")  # image size first: the fallbacks need it
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


def camera_from_transforms_frame(meta: dict, frame: dict, where: str = "transforms.json") -> Camera:
    """The :class:`Camera` of one entry of ``meta["frames"]`` (per-frame intrinsics override top-level ones).

    Without ``fl_x`` / ``fl_y``, a top-level ``camera_angle_x`` (horizontal FOV in radians, NeRF-synthetic
    files) gives both; without ``cx`` / ``cy`` the principal point is the image centre.

    ``where`` names the source (file and frame) in error messages. Raises :class:`CameraFormatError` (a
    ``ValueError``) for a missing, malformed or implausible field (see ``FOCAL_RANGE`` and the other limits),
    a non-orthonormal rotation, or an unsupported camera model (fisheye, equirectangular);
    lens distortion coefficients are rejected too, since the pipeline is pinhole-only (undistort first).
    """
    vals = {}
    for key in _READ_ORDER:
        v = frame.get(key, meta.get(key))
        if v is None and key in ("fl_x", "fl_y") and "camera_angle_x" in meta and "w" in vals:
            # NeRF-synthetic ("Blender") files give a horizontal field of view instead of focal lengths
            try:
                angle = float(meta["camera_angle_x"])
            except (TypeError, ValueError):
                raise CameraFormatError(f"{where}: field 'camera_angle_x' must be a number (radians), got "
                                        f"{meta['camera_angle_x']!r}") from None
            if not 0 < angle < math.pi:
                raise CameraFormatError(f"{where}: field 'camera_angle_x' = {angle!r} must be in (0, pi) radians")
            v = 0.5 * vals["w"] / math.tan(0.5 * angle)
        if v is None and key in ("cx", "cy") and "w" in vals and "h" in vals:
            v = 0.5 * (vals["w"] if key == "cx" else vals["h"])  # principal point defaults to the centre
        if v is None:
            raise CameraFormatError(f"{where}: missing field '{key}' (needed per frame or at the top level)")
        try:
            vals[key] = float(v)
        except (TypeError, ValueError):
            raise CameraFormatError(f"{where}: field '{key}' must be a number, got {v!r}") from None
        if not math.isfinite(vals[key]) or (key != "cx" and key != "cy" and vals[key] <= 0):
            raise CameraFormatError(f"{where}: field '{key}' must be finite and positive, got {v!r}")
    model = frame.get("camera_model", meta.get("camera_model", "OPENCV"))
    if model not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
        raise CameraFormatError(f"{where}: field 'camera_model' is {model!r}; only pinhole (OPENCV/PINHOLE) is "
                                "supported")
    for key in _DISTORTION_KEYS:
        v = frame.get(key, meta.get(key, 0.0))
        if not isinstance(v, (int, float)) or v != 0.0:
            raise CameraFormatError(f"{where}: field '{key}' = {v} (lens distortion) is not supported; undistort the "
                             "images first (e.g. with COLMAP image_undistorter) and set it to 0")
    if "transform_matrix" not in frame:
        raise CameraFormatError(f"{where}: missing field 'transform_matrix'")
    try:
        m = torch.tensor(frame["transform_matrix"], dtype=torch.float64)
    except (TypeError, ValueError):
        raise CameraFormatError(f"{where}: field 'transform_matrix' must be a 4x4 list of numbers") from None
    if m.shape == (3, 4):
        m = torch.cat([m, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    if m.shape != (4, 4) or not torch.isfinite(m).all():
        raise CameraFormatError(f"{where}: field 'transform_matrix' must be a finite 4x4 matrix, got shape "
                                f"{tuple(m.shape)}")
    if (m[3] - torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)).abs().max() > 1e-6:
        raise CameraFormatError(f"{where}: field 'transform_matrix' last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    err = check_rotation(m[:3, :3])
    if err > 1e-3:
        raise CameraFormatError(f"{where}: field 'transform_matrix' rotation is not orthonormal with det +1 "
                         f"(max error {err:.2e}); scaled or sheared poses are not supported")
    w, h = vals["w"], vals["h"]
    if w != int(w) or h != int(h):
        raise CameraFormatError(f"{where}: fields 'w' and 'h' must be integers, got {w}, {h}")
    if w > MAX_IMAGE_SIDE or h > MAX_IMAGE_SIDE:
        raise CameraFormatError(f"{where}: fields 'w', 'h' = {w:g} x {h:g} pixels is not an image size (at most "
                                f"{MAX_IMAGE_SIDE} per side)")
    for key, side in (("fl_x", w), ("fl_y", h)):
        f = vals[key]
        if not FOCAL_RANGE[0] * max(w, h) <= f <= FOCAL_RANGE[1] * max(w, h):
            raise CameraFormatError(
                f"{where}: field '{key}' = {f:.6g} px is not a plausible focal length for a {w:g} x {h:g} image "
                f"(expected {FOCAL_RANGE[0]:g} to {FOCAL_RANGE[1]:g} times the larger side: a field of view of "
                f"about 170 to 0.06 degrees); focal lengths are in pixels")
    for key, side in (("cx", w), ("cy", h)):
        if not -PRINCIPAL_RANGE * side <= vals[key] <= (1 + PRINCIPAL_RANGE) * side:
            raise CameraFormatError(f"{where}: field '{key}' = {vals[key]:.6g} px lies far outside the {w:g} x {h:g} "
                                    "image; the principal point is in pixels (usually near the centre)")
    if m[:3, 3].abs().max() > MAX_TRANSLATION:
        raise CameraFormatError(f"{where}: field 'transform_matrix' puts the camera at {m[:3, 3].abs().max():.3g} "
                                f"units from the origin (more than {MAX_TRANSLATION:.0e}); re-centre the poses")
    return Camera(opengl_to_opencv(m), vals["fl_x"], vals["fl_y"], vals["cx"], vals["cy"], int(w), int(h))


def cameras_from_transforms(meta: dict, where: str = "transforms.json") -> list[Camera]:
    """All cameras of a parsed nerfstudio ``transforms.json`` dict, in frame order (OpenCV convention)."""
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise CameraFormatError(f"{where}: field 'frames' must be a non-empty list")
    return [camera_from_transforms_frame(meta, f, f"{where} frames[{i}]") for i, f in enumerate(frames)]


def cameras_to_transforms(cameras: Sequence[Camera], file_paths: Sequence[str] | None = None) -> dict:
    """A nerfstudio ``transforms.json`` dict for ``cameras`` (OpenGL poses, pinhole, no distortion).

    Intrinsics shared by all cameras go to the top level, otherwise each frame carries its own.
    ``file_paths`` (one per camera) fills ``frames[i]["file_path"]``.
    """
    if not cameras:
        raise ValueError("cameras_to_transforms: need at least one camera")
    intr = [(c.fx, c.fy, c.cx, c.cy, c.width, c.height) for c in cameras]
    shared = all(i == intr[0] for i in intr)
    meta: dict = {"camera_model": "OPENCV"}
    if shared:
        meta.update(dict(zip(_INTRINSIC_KEYS, intr[0])))
    frames = []
    for i, cam in enumerate(cameras):
        f: dict = {}
        if file_paths is not None:
            f["file_path"] = file_paths[i]
        f["transform_matrix"] = opencv_to_opengl(cam.c2w).tolist()
        if not shared:
            f.update(dict(zip(_INTRINSIC_KEYS, intr[i])))
        frames.append(f)
    meta["frames"] = frames
    return meta


# ----------------------------------------------------------------------------------------------- relative poses
def relative_to(cameras: Sequence[Camera], reference: Camera, scale: float = 1.0) -> list[Camera]:
    """Cameras expressed in ``reference``'s camera frame, with translations multiplied by ``scale``.

    After this, ``reference`` itself has the identity pose. Depth maps of these cameras scale by ``scale`` too.
    """
    w2c = reference.w2c
    out = []
    for cam in cameras:
        m = w2c @ cam.c2w
        m[:3, 3] *= scale
        out.append(cam.with_pose(m))
    return out


# ----------------------------------------------------------------------------------------------- rotations
def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """(..., 4, 4) float64 OpenCV camera-to-world at ``eye`` looking at ``target`` (world ``up`` maps to
    image up). eye, target: (..., 3), broadcast against each other."""
    eye = torch.as_tensor(eye, dtype=torch.float64)
    target = torch.as_tensor(target, dtype=torch.float64)
    eye, target = torch.broadcast_tensors(eye, target)
    up = torch.as_tensor(up, dtype=torch.float64).expand_as(eye)
    z = target - eye
    zn = z.norm(dim=-1, keepdim=True)
    if bool((zn < 1e-12).any()):
        raise ValueError("look_at: eye and target coincide")
    z = z / zn
    x = torch.linalg.cross(z, up, dim=-1)
    xn = x.norm(dim=-1, keepdim=True)
    if bool((xn < 1e-9).any()):
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    x = x / xn
    y = torch.linalg.cross(z, x, dim=-1)
    m = torch.eye(4, dtype=torch.float64).repeat(*eye.shape[:-1], 1, 1)
    m[..., :3, 0], m[..., :3, 1], m[..., :3, 2], m[..., :3, 3] = x, y, z, eye
    return m


def matrix_to_quaternion(r: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z) with w >= 0."""
    r = torch.as_tensor(r, dtype=torch.float64)
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    # Four candidate solutions; the one with the largest |component| is well conditioned (Shepperd's method).
    q_abs = torch.sqrt(torch.clamp(torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                                                1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1), min=0.0))
    d21, d02, d10 = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
    s10, s02, s21 = r[..., 1, 0] + r[..., 0, 1], r[..., 0, 2] + r[..., 2, 0], r[..., 2, 1] + r[..., 1, 2]
    sq = q_abs ** 2
    cands = torch.stack([
        torch.stack([sq[..., 0], d21, d02, d10], -1),
        torch.stack([d21, sq[..., 1], s10, s02], -1),
        torch.stack([d02, s10, sq[..., 2], s21], -1),
        torch.stack([d10, s02, s21, sq[..., 3]], -1),
    ], -2) / (2.0 * q_abs[..., :, None].clamp(min=1e-12))
    best = q_abs.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z), normalized here -> (..., 3, 3) rotation matrices."""
    q = torch.as_tensor(q, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def _catmull_rom(keys: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Uniform Catmull-Rom through (K, D) ``keys`` at parameters ``s`` in [0, K-1]; ends extrapolated linearly."""
    k = keys.shape[0]
    if k == 1:
        return keys.expand(s.shape[0], -1).clone()
    pad = torch.cat([2 * keys[:1] - keys[1:2], keys, 2 * keys[-1:] - keys[-2:-1]])
    i = torch.clamp(s.floor().long(), max=k - 2)
    t = (s - i)[:, None]
    p0, p1, p2, p3 = pad[i], pad[i + 1], pad[i + 2], pad[i + 3]
    return 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3)


# ----------------------------------------------------------------------------------------------- trajectories
def interpolate_poses(keys: torch.Tensor, n: int) -> torch.Tensor:
    """(n, 4, 4) poses through the (K, 4, 4) camera-to-world ``keys``, evenly spaced in the key parameter.

    Smooth (C1) interpolation: camera centres follow a Catmull-Rom spline; rotations follow a Catmull-Rom
    spline in quaternion space (signs aligned to the previous key), renormalized. With two keys this is
    linear motion with the spherical midpoint. Frame 0 equals key 0 and frame n-1 equals the last key;
    key j lands exactly on frame j * (n - 1) / (K - 1) when that is an integer.
    """
    keys = torch.as_tensor(keys, dtype=torch.float64)
    k = keys.shape[0]
    if n < 1 or k < 1:
        raise ValueError(f"interpolate_poses: need n >= 1 and at least one key, got n={n}, {k} keys")
    q = matrix_to_quaternion(keys[:, :3, :3])
    for j in range(1, k):  # shortest path between consecutive keys
        if (q[j] * q[j - 1]).sum() < 0:
            q[j] = -q[j]
    s = torch.linspace(0, k - 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    out = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    out[:, :3, 3] = _catmull_rom(keys[:, :3, 3], s)
    out[:, :3, :3] = quaternion_to_matrix(_catmull_rom(q, s))
    return out


def orbit_poses(center, radius: float, n: int, start_deg: float = 0.0, sweep_deg: float = 360.0,
                height: float = 0.0, target=None, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """(n, 4, 4) poses on a horizontal circle (world z up) around ``center`` looking at ``target``.

    Positions: center + radius * (cos a, sin a, 0) + (0, 0, height) for a from ``start_deg`` over
    ``sweep_deg`` degrees (endpoint included unless the sweep is a full turn). ``target`` defaults to ``center``.
    """
    center = torch.as_tensor(center, dtype=torch.float64)
    target = center if target is None else torch.as_tensor(target, dtype=torch.float64)
    full = abs(abs(sweep_deg) - 360.0) < 1e-9
    if n > 1:
        a = torch.linspace(0, 1, n + 1 if full else n, dtype=torch.float64)[:n]
    else:
        a = torch.zeros(1, dtype=torch.float64)
    a = torch.deg2rad(start_deg + sweep_deg * a)
    eyes = center + torch.stack([radius * torch.cos(a), radius * torch.sin(a), torch.full_like(a, height)], -1)
    return look_at(eyes, target, up)


def forward_walk_poses(start: torch.Tensor, n: int, distance: float, yaw_deg: float = 0.0,
                       up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """(n, 4, 4) poses walking ``distance`` along ``start``'s horizontal viewing direction while turning.

    The camera keeps its height and pitch; its heading turns by ``yaw_deg`` in total (about world ``up``),
    and it moves along the current heading (an arc of constant curvature).
    """
    start = torch.as_tensor(start, dtype=torch.float64)
    up = torch.as_tensor(up, dtype=torch.float64)
    up = up / up.norm()
    fwd = start[:3, 2] - (start[:3, 2] @ up) * up
    if fwd.norm() < 1e-9:
        raise ValueError("forward_walk_poses: the start camera looks straight up or down")
    fwd = fwd / fwd.norm()
    side = torch.linalg.cross(up, fwd)
    s = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    yaw = math.radians(yaw_deg)
    ang = yaw * s
    if abs(yaw) < 1e-9:  # straight line
        along, lateral = distance * s, torch.zeros_like(s)
    else:  # arc of length `distance` turning by `yaw`
        r = distance / yaw
        along, lateral = r * torch.sin(ang), r * (1 - torch.cos(ang))
    out = []
    for i in range(n):
        c, si = math.cos(ang[i]), math.sin(ang[i])
        # Rotation about `up` by ang[i] (Rodrigues), applied to the start orientation.
        kx = torch.tensor([[0, -up[2], up[1]], [up[2], 0, -up[0]], [-up[1], up[0], 0]], dtype=torch.float64)
        rot = torch.eye(3, dtype=torch.float64) + si * kx + (1 - c) * (kx @ kx)
        m = start.clone()
        m[:3, :3] = rot @ start[:3, :3]
        m[:3, 3] = start[:3, 3] + along[i] * fwd + lateral[i] * side
        out.append(m)
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------- rays
def camera_rays(camera: Camera, h: int | None = None, w: int | None = None,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixel centres of an ``h`` x ``w`` image (default: the camera's own size).

    Returns origins (3,) and directions (h, w, 3), both ``dtype``. Directions are NOT normalized: their
    camera-frame z component is 1, so ``origin + depth * direction`` is the point at z-depth ``depth``.
    """
    h = camera.height if h is None else h
    w = camera.width if w is None else w
    cam = camera if (h, w) == (camera.height, camera.width) else camera.resized(h, w)
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                          indexing="ij")
    d_cam = torch.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, torch.ones_like(u)], -1)
    d = d_cam @ cam.rotation.T
    return cam.center.to(dtype), d.to(dtype)


def plucker_rays(camera: Camera, h: int | None = None, w: int | None = None) -> torch.Tensor:
    """(6, h, w) float32 Plücker embedding: moment ``o x d`` (channels 0-2), then unit direction ``d`` (3-5).

    ``o`` is the camera centre and ``d`` the unit world direction through each pixel centre (+0.5). Intrinsics
    are rescaled when (h, w) differs from the camera's own size. Express cameras relative to the first input
    view and normalize the scene scale beforehand (see ``relative_to``).
    """
    o, d = camera_rays(camera, h, w, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    m = torch.linalg.cross(o.expand_as(d), d, dim=-1)
    return torch.cat([m, d], -1).permute(2, 0, 1).to(torch.float32).contiguous()
