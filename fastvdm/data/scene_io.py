"""Scene folders in the nerfstudio format: ``transforms.json`` + images, optional depth and point cloud.

Layout written by ``write_scene`` (and read by ``read_scene`` together with any nerfstudio-style folder)::

    DIR/transforms.json        intrinsics (fl_x, fl_y, cx, cy, w, h), frames[i].transform_matrix (OpenGL c2w)
    DIR/images/frame_00000.png 8-bit RGB            frames[i].file_path
    DIR/depth/frame_00000.png  16-bit z-depth in mm frames[i].depth_file_path (or .npy: float metres)
    DIR/sparse_pc.ply          binary PLY, x y z float + red green blue uchar   top-level ply_file_path

NeRF-synthetic ("Blender") files also work: ``camera_angle_x`` instead of focal lengths, no image size (taken
from the images), principal point at the centre, file paths without the ``.png`` extension.
PNG depth is scaled by the top-level ``depth_unit_scale_factor`` (nerfstudio's field; default 0.001, i.e.
millimetres); 0 means no measurement. Bad input raises ``FileNotFoundError`` / ``SceneFormatError`` naming
the file and the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fastvdm.data.cameras import Camera, camera_from_transforms_frame, cameras_to_transforms
from fastvdm.errors import UserError


class SceneFormatError(UserError):
    """A scene folder's file or field is malformed; the message names both."""


# Depth sanity: metres. Farther than this is a unit mistake (e.g. a PNG in micrometres, or a float sentinel).
MAX_DEPTH_M = 1e5


@dataclass
class View:
    """One posed image. rgb: (3, H, W) float32 in [0, 1]; depth: (H, W) float32 z-depth in metres, 0 where
    unknown, or None; camera: its Camera (width W, height H)."""

    camera: Camera
    rgb: torch.Tensor
    depth: torch.Tensor | None = None
    name: str = ""


@dataclass
class SceneData:
    """A scene folder's content. points: (N, 3) float32 world positions, colors: (N, 3) float32 in [0, 1]."""

    views: list
    points: torch.Tensor | None = None
    colors: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)
    targets: list = field(default_factory=list)  # cameras of frames without an image (``read_scene(targets=True)``)


# ----------------------------------------------------------------------------------------------- images
# PIL modes read as colour images, by how: 8-bit (scaled by 255), 16-bit grey (scaled by 65535), with an alpha
# channel (dropped, with a note). Any other mode (CMYK, float, HSV, ...) is refused with what to do.
_RGB_8BIT = ("RGB", "L", "1", "P", "RGBX", "YCbCr")
_RGB_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
_GREY_16BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def read_image(path: str, where: str) -> tuple[torch.Tensor, bool]:
    """(rgb (3, H, W) float32 in [0, 1], had_alpha) of a PNG/JPEG (any format PIL reads, in the modes above).

    8-bit modes are divided by 255, 16-bit greyscale by 65535 (never clipped); palette images are expanded;
    an alpha channel is dropped (``had_alpha`` True: the caller notes it). Raises FileNotFoundError or
    SceneFormatError naming ``where`` and the file.
    """
    from PIL import Image

    if not os.path.isfile(path):
        what = "is a folder, not an image" if os.path.isdir(path) else "not found"
        raise FileNotFoundError(f"{where}: file {path} {what}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode == "P" and "transparency" in im.info:
                mode = "PA"
            if mode in _GREY_16BIT:
                arr = np.asarray(im).astype(np.float64)
                if arr.ndim != 2:
                    raise SceneFormatError(f"{where}: image {path} has PIL mode {mode} with shape {arr.shape}")
                if arr.size and (arr.min() < 0 or arr.max() > 65535):
                    raise SceneFormatError(f"{where}: image {path} is a {mode} integer image with values outside "
                                           "0..65535; save it as an 8- or 16-bit PNG")
                grey = (arr / 65535.0).astype(np.float32)
                rgb = np.repeat(grey[..., None], 3, axis=-1)
                return torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), False
            if mode in _RGB_ALPHA:
                arr = np.asarray(im.convert("RGBA"), dtype=np.float32)[..., :3] / 255.0
                return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), True
            if mode in _RGB_8BIT:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
                return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), False
    except OSError as e:
        raise SceneFormatError(f"{where}: cannot read image {path}: {e}") from None
    raise SceneFormatError(f"{where}: image {path} has PIL mode {mode!r}, which is not read as colour; convert it "
                           "to an 8-bit RGB (or 16-bit greyscale) PNG or JPEG")


def _read_rgb(path: str, where: str) -> torch.Tensor:
    return read_image(path, where)[0]


def _read_depth(path: str, where: str, unit: float) -> torch.Tensor:
    from PIL import Image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: file {path} not found")
    if path.endswith(".npy"):
        try:
            arr = np.load(path).astype(np.float32)
        except (OSError, ValueError) as e:
            raise SceneFormatError(f"{where}: cannot read depth {path}: {e}") from None
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
    else:
        try:
            with Image.open(path) as im:
                if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
                    raise SceneFormatError(f"{where}: depth {path} must be a 16-bit single-channel PNG "
                                           f"(millimetres), got PIL mode {im.mode}")
                arr = np.asarray(im).astype(np.float32) * unit
        except OSError as e:
            raise SceneFormatError(f"{where}: cannot read depth {path}: {e}") from None
    if arr.ndim != 2:
        raise SceneFormatError(f"{where}: depth {path} must be a 2-D map, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise SceneFormatError(f"{where}: depth {path} contains NaN or infinite values "
                               f"({int((~np.isfinite(arr)).sum())} pixels); use 0 for missing depth")
    if (arr < 0).any():
        raise SceneFormatError(f"{where}: depth {path} contains negative values; use 0 for missing depth")
    if not (arr > 0).any():
        raise SceneFormatError(f"{where}: depth {path} is 0 everywhere (no measurement at all); fix the file or "
                               "its units, or remove this frame's depth_file_path")
    if arr.max() > MAX_DEPTH_M:
        raise SceneFormatError(f"{where}: depth {path} reaches {arr.max():.3g} m (more than {MAX_DEPTH_M:.0e} m): "
                               "depth must be in metres (PNG: millimetres times depth_unit_scale_factor); use 0 "
                               "for missing depth")
    return torch.from_numpy(arr)


def _write_png(path: str, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path)


# ----------------------------------------------------------------------------------------------- PLY
_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def read_ply(path: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Vertices of a PLY file (binary little/big endian or ascii): points (N, 3) float32 and colours (N, 3)
    float32 in [0, 1] (None without red/green/blue). The vertex element must come first."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PLY file {path} not found")
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise SceneFormatError(f"{path}: not a PLY file (first line is not 'ply')")
        fmt, count, props, element = None, None, [], None
        while True:
            line = f.readline()
            if not line:
                raise SceneFormatError(f"{path}: PLY header has no 'end_header'")
            tok = line.decode("ascii", "replace").split()
            if not tok or tok[0] in ("comment", "obj_info"):
                continue
            if tok[0] == "end_header":
                break
            if tok[0] == "format":
                fmt = tok[1]
            elif tok[0] == "element":
                element = tok[1]
                if element == "vertex":
                    count = int(tok[2])
                elif count is None:
                    raise SceneFormatError(f"{path}: PLY element 'vertex' must come first, found '{element}'")
            elif tok[0] == "property" and element == "vertex":
                if tok[1] == "list":
                    raise SceneFormatError(f"{path}: list property '{tok[-1]}' in PLY element 'vertex'")
                if tok[1] not in _PLY_TYPES:
                    raise SceneFormatError(f"{path}: unknown PLY property type '{tok[1]}'")
                props.append((tok[2], _PLY_TYPES[tok[1]]))
        if count is None:
            raise SceneFormatError(f"{path}: PLY has no 'vertex' element")
        names = [p[0] for p in props]
        for axis in "xyz":
            if axis not in names:
                raise SceneFormatError(f"{path}: PLY vertex property '{axis}' missing")
        if fmt == "ascii":
            data = np.loadtxt(f, max_rows=count, ndmin=2)
            if data.shape[0] != count or data.shape[1] < len(props):
                raise SceneFormatError(f"{path}: PLY has {data.shape[0]} ascii vertices, header says {count}")
            rec = {n: data[:, i] for i, n in enumerate(names)}
        elif fmt in ("binary_little_endian", "binary_big_endian"):
            e = "<" if fmt == "binary_little_endian" else ">"
            dt = np.dtype([(n, e + t) for n, t in props])
            buf = f.read(dt.itemsize * count)
            if len(buf) < dt.itemsize * count:
                raise SceneFormatError(f"{path}: PLY is truncated ({len(buf) // dt.itemsize} of {count} vertices)")
            rec = np.frombuffer(buf, dtype=dt)
        else:
            raise SceneFormatError(f"{path}: unsupported PLY format {fmt!r}")
    pts = np.stack([np.asarray(rec[a], dtype=np.float32) for a in "xyz"], -1)
    if not np.isfinite(pts).all():
        raise SceneFormatError(f"{path}: PLY vertex positions contain NaN or infinite values")
    colors = None
    if all(c in names for c in ("red", "green", "blue")):
        cols = np.stack([np.asarray(rec[c], dtype=np.float32) for c in ("red", "green", "blue")], -1)
        kind = dict(props)["red"]
        colors = torch.from_numpy(cols / 255.0 if kind[0] in "iu" else cols).float()
    return torch.from_numpy(pts), colors


def write_ply(path: str, points: torch.Tensor, colors: torch.Tensor) -> None:
    """Binary little-endian PLY: points (N, 3) as float x y z, colours (N, 3) in [0, 1] as uchar r g b."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    cols = np.asarray(colors, dtype=np.float32).reshape(-1, 3)
    if pts.shape != cols.shape:
        raise ValueError(f"write_ply: points {pts.shape} and colors {cols.shape} differ in shape")
    rec = np.empty(pts.shape[0], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                        ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    c8 = np.clip(np.round(cols * 255), 0, 255).astype(np.uint8)
    rec["red"], rec["green"], rec["blue"] = c8[:, 0], c8[:, 1], c8[:, 2]
    header = ("ply\nformat binary_little_endian 1.0\ncomment written by fastvdm\n"
              f"element vertex {pts.shape[0]}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rec.tobytes())


# ----------------------------------------------------------------------------------------------- scene folders
def load_transforms(path: str, what: str = "scene") -> dict:
    """The parsed ``transforms.json`` at ``path`` (a dict with a non-empty ``frames`` list); FileNotFoundError
    or SceneFormatError naming the file (and, for a folder, what to give instead)."""
    if os.path.isdir(path):
        inner = os.path.join(path, "transforms.json")
        hint = f"; give {inner}" if os.path.isfile(inner) else ""
        raise SceneFormatError(f"{what} {path} is a folder, not a transforms.json file{hint}")
    if not os.path.isfile(path):
        hint = " (a scene folder needs transforms.json)" if what == "scene" else ""
        raise FileNotFoundError(f"{what} file {path} not found{hint}")
    try:
        with open(path, "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
    except json.JSONDecodeError as e:
        raise SceneFormatError(f"{what} {path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise SceneFormatError(f"{what} {path}: not a text (UTF-8 JSON) file") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise SceneFormatError(f"{what} {path}: field 'frames' must be a non-empty list")
    return meta


def read_scene(folder: str, load_depth: bool = True, load_points: bool = True, targets: bool = False) -> SceneData:
    """Read a nerfstudio-style scene folder (see the module docstring); cameras come back in OpenCV axes.

    targets: frames without ``file_path`` (or with ``file_path`` null or "") are target cameras
    (``SceneData.targets``; they need ``w``/``h`` per frame or at the top level) instead of an error.
    """
    if not os.path.isdir(folder):
        what = "is a file, not a scene folder" if os.path.exists(folder) else "not found"
        raise FileNotFoundError(f"scene folder {folder} {what} (a scene folder holds transforms.json and images)")
    tf = os.path.join(folder, "transforms.json")
    meta = load_transforms(tf, "scene")
    unit = meta.get("depth_unit_scale_factor", 1e-3)
    if isinstance(unit, bool) or not isinstance(unit, (int, float)) or not np.isfinite(unit) or unit <= 0:
        raise SceneFormatError(f"{tf}: field 'depth_unit_scale_factor' must be a positive number (metres per PNG "
                               f"depth unit, e.g. 0.001 for millimetres), got {unit!r}")
    unit = float(unit)
    views, alpha, target_cams = [], [], []
    for i, fr in enumerate(meta["frames"]):
        where = f"{tf} frames[{i}]"
        if targets and isinstance(fr, dict) and not fr.get("file_path"):
            try:
                target_cams.append(camera_from_transforms_frame(meta, fr, where + " (target camera, no image)"))
            except ValueError as e:
                raise SceneFormatError(str(e)) from None
            continue
        if not isinstance(fr, dict) or "file_path" not in fr:
            raise SceneFormatError(f"{where}: missing field 'file_path'")
        for key in ("file_path", "depth_file_path"):
            if key in fr and fr[key] is not None and (not isinstance(fr[key], str) or not fr[key].strip()):
                raise SceneFormatError(f"{where}: field '{key}' must be a file path (a string relative to "
                                       f"{folder}), got {fr[key]!r}")
        img_path = os.path.join(folder, fr["file_path"])
        if not os.path.splitext(img_path)[1] and not os.path.isfile(img_path) and os.path.isfile(img_path + ".png"):
            img_path += ".png"  # NeRF-synthetic files omit the extension
        rgb, had_alpha = read_image(img_path, f"{where}.file_path")
        if had_alpha:
            alpha.append(img_path)
        sized = fr
        if all(k not in fr and k not in meta for k in ("w", "h")):  # no size given: the image's own
            sized = dict(fr, w=rgb.shape[2], h=rgb.shape[1])
        try:
            cam = camera_from_transforms_frame(meta, sized, where)
        except ValueError as e:
            raise SceneFormatError(str(e)) from None
        if rgb.shape[1:] != (cam.height, cam.width):
            raise SceneFormatError(f"{where}.file_path: image {img_path} is {rgb.shape[2]}x{rgb.shape[1]} (w x h) "
                                   f"but fields 'w', 'h' say {cam.width}x{cam.height}")
        depth = None
        if load_depth and fr.get("depth_file_path"):
            dpath = os.path.join(folder, fr["depth_file_path"])
            depth = _read_depth(dpath, f"{where}.depth_file_path", unit)
            if depth.shape != (cam.height, cam.width):
                raise SceneFormatError(f"{where}.depth_file_path: depth {dpath} is {depth.shape[1]}x{depth.shape[0]} "
                                       f"(w x h) but fields 'w', 'h' say {cam.width}x{cam.height}")
        views.append(View(cam, rgb, depth, fr["file_path"]))
    if alpha:
        import sys

        print(f"fastvdm: note: {len(alpha)} image(s) of {folder} have an alpha channel (e.g. {alpha[0]}); it is "
              "ignored (the colour is used as is)", file=sys.stderr)
    points = colors = None
    if load_points and meta.get("ply_file_path"):
        if not isinstance(meta["ply_file_path"], str):
            raise SceneFormatError(f"{tf}: field 'ply_file_path' must be a file path (a string), got "
                                   f"{meta['ply_file_path']!r}")
        ppath = os.path.join(folder, meta["ply_file_path"])
        if not os.path.isfile(ppath):
            raise FileNotFoundError(f"{tf}: field 'ply_file_path': file {ppath} not found")
        points, colors = read_ply(ppath)
    if not views:
        raise SceneFormatError(f"{tf}: no frame has an image ('file_path'); at least one input photo is needed")
    return SceneData(views, points, colors, meta, target_cams)


def read_capture(folder: str) -> SceneData:
    """A capture folder for densify: nerfstudio (``transforms.json``, frames without images are targets) or a
    COLMAP model (:func:`fastvdm.data.colmap.read_colmap`: ``sparse/0``, ``sparse`` or the folder itself holding
    ``cameras``/``images``/``points3D`` .txt or .bin, photos in ``images/``)."""
    if not os.path.isdir(folder) or os.path.isfile(os.path.join(folder, "transforms.json")):
        return read_scene(folder, targets=True)  # (its errors name a missing folder or a bad transforms.json)
    from fastvdm.data.colmap import find_colmap_model, read_colmap

    model = find_colmap_model(folder) if os.path.isdir(folder) else None
    if model is not None:
        return read_colmap(model, os.path.join(folder, "images"))
    raise FileNotFoundError(f"{os.path.join(folder, 'transforms.json')} not found (a capture folder needs "
                            "transforms.json, or a COLMAP model in sparse/0 with the photos in images/)")


def write_scene(folder: str, views: Sequence[View], points: torch.Tensor | None = None,
                colors: torch.Tensor | None = None, depth_format: str = "png", extra_meta: dict | None = None,
                frame_meta: Sequence[dict] | None = None) -> str:
    """Write views (and an optional point cloud) as a scene folder; returns the transforms.json path.

    depth_format: "png" (16-bit millimetres, up to 65.535 m) or "npy" (float32 metres). extra_meta: extra
    top-level transforms.json fields; frame_meta: extra fields per frame (one dict per view). ``folder`` is
    created; existing files of the same names are overwritten.
    """
    if depth_format not in ("png", "npy"):
        raise ValueError(f"write_scene: depth_format must be 'png' or 'npy', got {depth_format!r}")
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    names = [f"images/frame_{i:05d}.png" for i in range(len(views))]
    meta = cameras_to_transforms([v.camera for v in views], names)
    for i, (v, fr) in enumerate(zip(views, meta["frames"])):
        if v.rgb.shape != (3, v.camera.height, v.camera.width):
            raise ValueError(f"write_scene: view {i} rgb has shape {tuple(v.rgb.shape)}, camera says "
                             f"(3, {v.camera.height}, {v.camera.width})")
        rgb8 = (v.rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        _write_png(os.path.join(folder, names[i]), rgb8)
        if v.depth is not None:
            os.makedirs(os.path.join(folder, "depth"), exist_ok=True)
            d = v.depth.double().numpy()
            if not np.isfinite(d).all() or (d < 0).any():
                raise ValueError(f"write_scene: view {i} depth has NaN, infinite or negative values")
            rel = f"depth/frame_{i:05d}.{depth_format}"
            if depth_format == "png":
                mm = np.round(d * 1000.0)
                if mm.max() > 65535:
                    raise ValueError(f"write_scene: view {i} depth reaches {d.max():.2f} m, beyond 16-bit "
                                     "millimetres (65.535 m); use depth_format='npy'")
                _write_png(os.path.join(folder, rel), mm.astype(np.uint16))
            else:
                np.save(os.path.join(folder, rel), d.astype(np.float32))
            fr["depth_file_path"] = rel
    if depth_format == "png" and any(v.depth is not None for v in views):
        meta["depth_unit_scale_factor"] = 1e-3
    if frame_meta is not None:
        if len(frame_meta) != len(views):
            raise ValueError(f"write_scene: {len(frame_meta)} frame_meta entries for {len(views)} views")
        for fr, extra in zip(meta["frames"], frame_meta):
            fr.update(extra)
    meta.update(extra_meta or {})
    if points is not None:
        if colors is None:
            raise ValueError("write_scene: points need colors")
        write_ply(os.path.join(folder, "sparse_pc.ply"), points, colors)
        meta["ply_file_path"] = "sparse_pc.ply"
    tf = os.path.join(folder, "transforms.json")
    with open(tf + ".tmp", "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tf + ".tmp", tf)
    return tf


# ----------------------------------------------------------------------------------------------- resizing
def square_view(view: View | None, size: int, camera: Camera | None = None):
    """Centre-crop to a square and resize to ``size`` x ``size``.

    With a View: returns a new View (rgb resampled with antialiasing, depth by nearest sample at the new
    pixel centres, camera adjusted). With ``view=None``: returns ``camera`` adjusted the same way.
    """
    cam = view.camera if view is not None else camera
    s = min(cam.width, cam.height)
    left, top = (cam.width - s) // 2, (cam.height - s) // 2
    new_cam = cam.cropped(left, top, s, s).resized(size, size)
    if view is None:
        return new_cam
    rgb = view.rgb[:, top:top + s, left:left + s]
    if s != size:
        rgb = F.interpolate(rgb[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    depth = view.depth
    if depth is not None:
        depth = depth[top:top + s, left:left + s]
        if s != size:
            depth = F.interpolate(depth[None, None], size=(size, size), mode="nearest-exact")[0, 0]
    return View(new_cam, rgb.clamp(0, 1).contiguous(), depth, view.name)
