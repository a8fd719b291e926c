"""Training clips: ``ClipDataset`` (procedural, seeded, fixed held-out test split), ``clip_from_views``, a cache.

A clip is T frames along a camera path; 1-3 of them are input views (the first frame always is). The
input views' RGB-D is unprojected to a point cloud and rendered into every frame's camera: that holey render
and its mask condition the model. Every item is a dict of CPU tensors in the model's layout (C, T, H, W):

- ``frames``    (3, T, H, W) float32, ground-truth frames, RGB in [-1, 1] (8-bit quantized, like photos)
- ``cond_rgb``  (3, T, H, W) float32, point-cloud render of the input views, [-1, 1], 0 where invalid
- ``cond_mask`` (1, T, H, W) float32, validity mask in {0, 1}
- ``plucker``   (6, T, H, W) float32, Plücker rays (moment o x d, then unit direction d)
- ``is_input``  (T,) bool, True at input-view frames
- ``scene_seed`` int, the procedural scene (-1 for clips built from real views)
- ``c2w``       (T, 4, 4) float32, the normalized camera-to-world poses (OpenCV) the Plücker maps use
- ``intrinsics`` (T, 4) float32, fx, fy, cx, cy in pixels of the H x W frames
- ``depth``     (T, H, W) float32, ground-truth z-depth of every frame in the normalized units (procedural clips
  only; used by the temporal-consistency metric)

Normalization (DESIGN.md): poses are relative to the first input view (its pose is the identity) and the
scene is scaled so that the median depth of the first input view is 1.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from fastvdm.data.cameras import Camera, plucker_rays, relative_to
from fastvdm.data.scenes import Scene
from fastvdm.data.warp import render_points, unproject
from fastvdm.errors import UserError

TEST_SEED = 20240611  # the held-out split: the same clips in every evaluation of the project
TEST_EXTRAP_SEED = 20261130  # the held-out split of extrapolating clips (paths="extrapolate"), beside it
PATH_DRAWS = 4  # extrapolating paths drawn per clip at most (see ClipDataset._make_extrapolating)
SCALE_STEPS = (3.0, 2.2, 1.6, 1.2, 1.0, 0.75, 0.55, 0.4, 0.28, 0.2, 0.14, 0.1)  # path shortenings tried to meet a clip's hole target
DEFAULT_NUM_CLIPS = {"train": 100_000, "test": 100}
_KEYS_U8 = ("frames", "cond_rgb")


@contextlib.contextmanager
def one_thread():
    """Run torch ops single-threaded inside the block (the previous thread count is restored).

    Clip generation is thousands of small ops; intra-op threads do not speed them up, and on a loaded
    machine (more busy threads than cores) OpenMP's waiting makes each parallel op slower by orders of
    magnitude (measured here: 0.2 s/clip single-threaded vs. 1-13 s/clip with 2 threads under load).
    Parallelize over clips instead (DataLoader workers).
    """
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


def _to_signed(rgb01: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> 8-bit quantized [-1, 1] float32 (the exact values the cache restores)."""
    return (rgb01.clamp(0, 1) * 255).round().to(torch.uint8).float() / 127.5 - 1.0


def _float32_cams(cams: Sequence[Camera]) -> list[Camera]:
    """Round poses and intrinsics to float32 (what is stored), so maps recomputed from a cache are identical."""
    r = lambda x: float(np.float32(x))  # noqa: E731
    return [Camera(c.c2w.float().double(), r(c.fx), r(c.fy), r(c.cx), r(c.cy), c.width, c.height) for c in cams]


def _assemble(frames: torch.Tensor, input_rgb: torch.Tensor, input_depth: torch.Tensor | None,
              input_idx: Sequence[int], cams: Sequence[Camera], size: int, radius: float,
              extra_points: tuple[torch.Tensor, torch.Tensor] | None = None, scene_seed: int = -1,
              input_cams: Sequence[Camera] | None = None, frame_depth: torch.Tensor | None = None) -> dict:
    """Build a clip dict.

    frames: (T, 3, size, size) in [-1, 1]; input_rgb: (K, 3, h, w) in [-1, 1]; input_depth: (K, h, w) metric
    z-depth or None; cams: T cameras at size x size (world frame); extra_points: world points (N, 3) and
    colours (N, 3) in [-1, 1] added to the cloud (e.g. from a PLY); input_cams: the K input views' cameras at
    h x w (world frame; default: the clip's cameras at the input frames, h = w = size). Larger input views (a
    clip cropped from higher-resolution frames) put points outside the crop into the cloud too. frame_depth:
    (T, size, size) metric z-depth of every frame, stored normalized as ``depth`` when given.
    """
    t = len(cams)
    ref = cams[input_idx[0]]
    # scale: median depth of the first input view -> 1
    if input_depth is not None and bool((input_depth[0] > 0).any()):
        d0 = input_depth[0][torch.isfinite(input_depth[0]) & (input_depth[0] > 0)]
        median = float(d0.median())
    elif extra_points is not None and extra_points[0].shape[0] > 0:
        z = (extra_points[0].double() - ref.center) @ ref.rotation[:, 2]
        z = z[z > 0]
        median = float(z.median()) if z.numel() else 1.0
    else:
        median = 1.0
    scale = 1.0 / median
    rel = _float32_cams(relative_to(cams, ref, scale))
    rel_in = [rel[i] for i in input_idx] if input_cams is None else _float32_cams(relative_to(input_cams, ref, scale))
    pts, cols = [], []
    if input_depth is not None:
        p, c = unproject(input_rgb, input_depth * scale, rel_in)
        pts.append(p)
        cols.append(c)
    if extra_points is not None:
        w2c = ref.w2c
        p = (extra_points[0].double() @ w2c[:3, :3].T + w2c[:3, 3]) * scale
        pts.append(p.float())
        cols.append(extra_points[1].float())
    if pts:
        cond, mask, _ = render_points(torch.cat(pts), torch.cat(cols), rel, size, size, radius=radius)
    else:
        cond, mask = torch.zeros(t, 3, size, size), torch.zeros(t, 1, size, size)
    is_input = torch.zeros(t, dtype=torch.bool)
    is_input[list(input_idx)] = True
    out = {
        "frames": frames.permute(1, 0, 2, 3).contiguous(),
        "cond_rgb": (cond * mask).permute(1, 0, 2, 3).contiguous(),
        "cond_mask": mask.permute(1, 0, 2, 3).contiguous(),
        "plucker": torch.stack([plucker_rays(c, size, size) for c in rel], 1),
        "is_input": is_input,
        "scene_seed": int(scene_seed),
        "c2w": torch.stack([c.c2w for c in rel]).float(),
        "intrinsics": torch.tensor([[c.fx, c.fy, c.cx, c.cy] for c in rel], dtype=torch.float32),
    }
    if frame_depth is not None:
        out["depth"] = (frame_depth.float() * scale).contiguous()
    return out


class ClipDataset(Dataset):
    """Procedural training clips; item ``i`` is a deterministic function of (split, seed, i).

    split: "train" or "test". The test split always uses ``TEST_SEED`` (``TEST_EXTRAP_SEED`` with
    paths="extrapolate"; ``seed`` is ignored for it), and its scenes (odd scene seeds) are disjoint from every
    train scene (even scene seeds).
    num_frames: T; size: H = W in pixels; num_clips: length (default 100000 train, 100 test);
    num_inputs: (min, max) input views per clip; radius: splat radius (pixels) of the condition render;
    fov_deg: (min, max) horizontal field of view.

    paths: "interp" (the original clips: :meth:`Scene.sample_poses` paths, input views anywhere along them; the
    fixed held-out split) or "extrapolate": scenes with structured materials
    (``Scene.random(seed, structured=True)``), :mod:`fastvdm.data.extrapolation` paths with the 1-2 input views
    at frames 0 (and 1), shortened until the mean hole fraction of the target frames is at most a target drawn
    from U(``hole_range``); and each clip is a ``size`` crop (at a random position) of frames rendered at
    ``size * c``, c drawn from ``crop_scales`` (1 = the whole small frame), so the network sees holes at the
    pixel scale of larger captures. The input views' point clouds come from their whole ``size * c`` frames.
    """

    def __init__(self, split: str = "train", num_frames: int = 16, size: int = 64, num_clips: int | None = None,
                 seed: int = 0, num_inputs: tuple[int, int] = (1, 3), radius: float = 1.0,
                 fov_deg: tuple[float, float] = (50.0, 75.0), paths: str = "interp",
                 crop_scales: Sequence[int] = (1, 1, 2, 3), hole_range: tuple[float, float] = (0.12, 0.5)):
        if split not in ("train", "test"):
            raise ValueError(f"ClipDataset: split must be 'train' or 'test', got {split!r}")
        if num_frames < 1 or size < 1:
            raise ValueError(f"ClipDataset: num_frames and size must be >= 1, got {num_frames}, {size}")
        lo, hi = num_inputs
        if not 1 <= lo <= hi or hi > num_frames:
            raise ValueError(f"ClipDataset: num_inputs must satisfy 1 <= min <= max <= num_frames, got {num_inputs}")
        if paths not in ("interp", "extrapolate"):
            raise ValueError(f"ClipDataset: paths must be 'interp' or 'extrapolate', got {paths!r}")
        if not crop_scales or any(int(c) < 1 for c in crop_scales):
            raise ValueError(f"ClipDataset: crop_scales must be integers >= 1, got {crop_scales}")
        if not 0 < hole_range[0] <= hole_range[1] <= 1:
            raise ValueError(f"ClipDataset: hole_range must satisfy 0 < lo <= hi <= 1, got {hole_range}")
        self.split, self.num_frames, self.size = split, num_frames, size
        self.num_clips = DEFAULT_NUM_CLIPS[split] if num_clips is None else int(num_clips)
        self.paths, self.crop_scales, self.hole_range = paths, tuple(int(c) for c in crop_scales), tuple(hole_range)
        self.seed = (TEST_SEED if paths == "interp" else TEST_EXTRAP_SEED) if split == "test" else int(seed)
        self.num_inputs, self.radius, self.fov_deg = (lo, hi), radius, fov_deg

    def __len__(self) -> int:
        return self.num_clips

    def scene_seed(self, index: int) -> int:
        """The procedural scene seed of item ``index`` (even for train, odd for test)."""
        rng = np.random.default_rng([self.seed, index, 0])
        return 2 * int(rng.integers(1 << 30)) + (self.split == "test")

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"ClipDataset index {index} out of range [0, {self.num_clips})")
        with one_thread():
            return self._make(index)

    def _make(self, index: int) -> dict:
        if self.paths == "extrapolate":
            return self._make_extrapolating(index)
        scene_seed = self.scene_seed(index)
        rng = np.random.default_rng([self.seed, index, 1])
        scene = Scene.random(scene_seed)
        t, s = self.num_frames, self.size
        poses = scene.sample_poses(rng, t)
        fov = rng.uniform(*self.fov_deg)
        cams = [Camera.from_fov(p, fov, s, s) for p in poses]
        k = int(rng.integers(self.num_inputs[0], self.num_inputs[1] + 1))
        idx = [0] + sorted(int(i) for i in rng.choice(np.arange(1, t), size=k - 1, replace=False)) if k > 1 else [0]
        rgb, depth = scene.render(cams, s, s)
        frames = _to_signed(rgb)
        return _assemble(frames, frames[idx], depth[idx], idx, cams, s, self.radius, scene_seed=scene_seed,
                         frame_depth=depth)


    def _make_extrapolating(self, index: int) -> dict:
        from fastvdm.data.extrapolation import extrapolation_path

        scene_seed = self.scene_seed(index)
        rng = np.random.default_rng([self.seed, index, 2])
        scene = Scene.random(scene_seed, structured=True)
        t, s = self.num_frames, self.size
        fov = rng.uniform(*self.fov_deg)
        k = int(rng.integers(max(1, self.num_inputs[0]), min(2, self.num_inputs[1], t) + 1))
        idx = list(range(k))
        c = self.crop_scales[rng.integers(len(self.crop_scales))]
        full = s * c
        left, top = (int(v) for v in rng.integers(0, full - s + 1, 2))
        hole_target = rng.uniform(*self.hole_range)
        u = torch.linspace(0, 1, t, dtype=torch.float64)
        targets = [i for i in range(t) if i not in idx]
        chosen, best = None, -1.0
        for _draw in range(PATH_DRAWS):  # a path whose longest free extent leaves < half the target: redraw
            _kind, path = extrapolation_path(scene, rng)
            for scale in SCALE_STEPS:
                poses = path(u * scale)
                if not bool(scene.is_free(poses[:, :3, 3], margin=0.25).all()):
                    continue
                full_cams = [Camera.from_fov(p, fov, full, full) for p in poses]
                in_cams = [full_cams[i] for i in idx]
                rgb_in, depth_in = scene.render(in_cams, full, full)
                pts, cols = unproject(rgb_in, depth_in, in_cams)
                crop = [cam.cropped(left, top, s, s) for cam in full_cams]
                hole = 1.0
                if targets:
                    _, mask, _ = render_points(pts, cols, [crop[i] for i in targets], s, s, radius=self.radius)
                    hole = 1.0 - float(mask.mean())
                if hole <= hole_target:
                    if hole > best:
                        chosen, best = (poses, crop, in_cams, rgb_in, depth_in), hole
                    break
            if best >= 0.5 * hole_target:
                break
        if chosen is None:  # no shortening stays in free space: the pose path of the interp clips
            poses = scene.sample_poses(rng, t)
            full_cams = [Camera.from_fov(p, fov, full, full) for p in poses]
            in_cams = [full_cams[i] for i in idx]
            rgb_in, depth_in = scene.render(in_cams, full, full)
            chosen = (poses, [cam.cropped(left, top, s, s) for cam in full_cams], in_cams, rgb_in, depth_in)
        poses, crop, in_cams, rgb_in, depth_in = chosen
        frames, depth = torch.zeros(t, 3, s, s), torch.zeros(t, s, s)
        in_signed = _to_signed(rgb_in)
        for j, i in enumerate(idx):
            frames[i] = in_signed[j, :, top:top + s, left:left + s]
            depth[i] = depth_in[j, top:top + s, left:left + s]
        if targets:
            rgb_t, depth_t = scene.render([crop[i] for i in targets], s, s)
            frames[targets], depth[targets] = _to_signed(rgb_t), depth_t
        return _assemble(frames, in_signed, depth_in, idx, crop, s, self.radius, scene_seed=scene_seed,
                         input_cams=in_cams, frame_depth=depth)


def hole_fractions(clip: dict) -> torch.Tensor:
    """(T_target,) fraction of hole pixels (render mask 0) of each non-input frame of a clip dict."""
    keep = ~clip["is_input"].bool()
    return 1.0 - clip["cond_mask"][0][keep].float().flatten(1).mean(1)


def clip_from_views(views: Sequence, target_cameras: Sequence[Camera], size: int,
                    input_indices: Sequence[int] | None = None, points: torch.Tensor | None = None,
                    point_colors: torch.Tensor | None = None, radius: float = 1.0) -> dict:
    """The clip dict (as ``ClipDataset`` items) for real input views and a camera path.

    views: K input views (``fastvdm.data.scene_io.View``: camera, rgb (3, H, W) in [0, 1], depth (H, W) in
    metres or None); target_cameras: T cameras of the path; input_indices: the K frames where the inputs
    sit (their cameras replace the path's there); default: evenly spaced, round(j (T-1) / (K-1)), which is
    where ``interpolate_poses`` through the input poses puts them. points / point_colors: optional world
    point cloud (N, 3) with colours (N, 3) in [0, 1] (e.g. the scene's PLY), added to the unprojected depth.
    Images and cameras are centre-cropped to squares and resized to ``size``. Frames that are not inputs
    have no ground truth: ``frames`` is 0 there (use ``is_input``). Scale normalization uses the median
    depth of the first input view (without depth maps: the median depth of the points in front of it).
    """
    from fastvdm.data.scene_io import square_view

    k, t = len(views), len(target_cameras)
    if k < 1 or t < 1:
        raise ValueError(f"clip_from_views: need at least one view and one target camera, got {k} and {t}")
    if input_indices is None:
        input_indices = [0] if k == 1 else [round(j * (t - 1) / (k - 1)) for j in range(k)]
    input_indices = [int(i) for i in input_indices]
    if len(input_indices) != k or len(set(input_indices)) != k or not all(0 <= i < t for i in input_indices):
        raise ValueError(f"clip_from_views: input_indices must be {k} distinct frames in [0, {t}), got {input_indices}")
    sq = [square_view(v, size) for v in views]
    cams = [square_view(None, size, c) for c in target_cameras]
    for j, i in enumerate(input_indices):
        cams[i] = sq[j].camera
    frames = torch.zeros(t, 3, size, size)
    in_rgb = torch.stack([_to_signed(v.rgb) for v in sq])
    for j, i in enumerate(input_indices):
        frames[i] = in_rgb[j]
    has_depth = [v.depth is not None for v in sq]
    if any(has_depth) and not all(has_depth):
        raise ValueError("clip_from_views: either all input views have depth or none does")
    depth = torch.stack([v.depth for v in sq]) if all(has_depth) else None
    extra = None
    if points is not None:
        if point_colors is None or point_colors.shape != points.shape:
            raise ValueError("clip_from_views: points (N, 3) need point_colors (N, 3) in [0, 1]")
        extra = (points, point_colors.float() * 2 - 1)
    if depth is None and extra is None:
        raise ValueError("clip_from_views: the input views have no depth and no point cloud was given")
    with one_thread():
        return _assemble(frames, in_rgb, depth, input_indices, cams, size, radius, extra_points=extra)


# ----------------------------------------------------------------------------------------------- cache
def cache_clips(dataset: Dataset, path: str, indices: Sequence[int] | None = None, progress: bool = True) -> int:
    """Write clips of ``dataset`` (all, or ``indices``) to one safetensors file; returns the clip count.

    RGB is stored as uint8 (lossless: clips are 8-bit quantized), poses, intrinsics and depth as float32; Plücker
    maps are recomputed on load (bit-identical). Read it back with ``CachedClips(path)``. All clips are
    held in memory before writing (about 0.5 MB per 16-frame 64x64 clip): write shards for large sets.
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    indices = range(len(dataset)) if indices is None else list(indices)
    cols: dict[str, list] = {k: [] for k in ("frames", "cond_rgb", "cond_mask", "is_input", "scene_seed", "c2w", "intrinsics")}
    for i in tqdm(indices, desc="caching clips", disable=not progress):
        item = dataset[i]
        for key in _KEYS_U8:
            cols[key].append(((item[key] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
        cols["cond_mask"].append(item["cond_mask"].to(torch.uint8))
        cols["is_input"].append(item["is_input"])
        cols["scene_seed"].append(torch.tensor(item["scene_seed"], dtype=torch.int64))
        cols["c2w"].append(item["c2w"])
        cols["intrinsics"].append(item["intrinsics"])
        if "depth" in item:
            cols.setdefault("depth", []).append(item["depth"].float())
    if cols.get("depth") is not None and len(cols["depth"]) != len(cols["frames"]):
        raise ValueError("cache_clips: some clips have depth and some do not")
    if not cols["frames"]:
        raise ValueError("cache_clips: no clips to write")
    save_file({k: torch.stack(v).contiguous() for k, v in cols.items()}, path, metadata={"format": "fastvdm-clips-1"})
    return len(cols["frames"])


_ST_DTYPES = {"U8": np.uint8, "BOOL": np.bool_, "I64": np.int64, "F32": np.float32, "F64": np.float64,
              "I32": np.int32, "F16": np.float16}


def mmap_safetensors(path: str) -> tuple[dict, dict]:
    """(metadata, {name: read-only numpy memmap view}) of a safetensors file: nothing is read until indexed, and
    every process mapping the file (ranks, DataLoader workers) shares its pages in the OS page cache."""
    import json
    import struct

    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", None) or {}
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    arrays = {}
    for name, info in header.items():
        if info["dtype"] not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}, not a clip cache dtype")
        start, end = info["data_offsets"]
        arrays[name] = raw[8 + n + start:8 + n + end].view(_ST_DTYPES[info["dtype"]]).reshape(info["shape"])
    return meta, arrays


class CachedClips(Dataset):
    """Clips written by ``cache_clips``; items equal the original dataset's items exactly. The file is memory-
    mapped (only the clips indexed are read), so a cache larger than RAM works and every rank and DataLoader
    worker reading it shares one copy in the page cache."""

    def __init__(self, path: str):
        meta, self._data = mmap_safetensors(path)
        if meta.get("format") != "fastvdm-clips-1":
            raise ValueError(f"{path}: not a fastvdm clip cache (metadata 'format' is {meta.get('format')!r})")
        self.path = path

    def __len__(self) -> int:
        return self._data["frames"].shape[0]

    def __getstate__(self) -> dict:  # pickled by path (DataLoader workers started by spawn/forkserver): the
        return {"path": self.path}    # default would copy the whole memory-mapped cache into every worker

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip {index} of a cache of {len(self)}")
        d = {k: torch.from_numpy(np.array(v[index])) for k, v in self._data.items()}
        mask = d["cond_mask"].float()
        c2w, intr = d["c2w"], d["intrinsics"]
        h, w = d["frames"].shape[-2:]
        cams = [Camera(c2w[i].double(), *intr[i].tolist(), w, h) for i in range(c2w.shape[0])]
        out = {
            "frames": d["frames"].float() / 127.5 - 1.0,
            "cond_rgb": torch.where(mask > 0, d["cond_rgb"].float() / 127.5 - 1.0, 0.0),
            "cond_mask": mask,
            "plucker": torch.stack([plucker_rays(c, h, w) for c in cams], 1),
            "is_input": d["is_input"].bool(),
            "scene_seed": int(d["scene_seed"]),
            "c2w": c2w.clone(),
            "intrinsics": intr.clone(),
        }
        if "depth" in d:
            out["depth"] = d["depth"].clone()
        return out


def cache_shards(dataset: Dataset, folder: str, clips_per_shard: int = 1024, rank: int = 0, world_size: int = 1,
                 progress: bool = True) -> list[str]:
    """Write ``dataset`` as shard files ``folder/clips-00000.safetensors``, ... of ``clips_per_shard`` clips each
    (:func:`cache_clips` format), holding one shard in memory at a time; rank r of ``world_size`` writes shards
    r, r + world_size, ... Each shard is written to a temporary file and renamed; shards already present are
    kept, so an interrupted run resumes. Read them with :func:`open_clips` (``data=folder``): every rank
    memory-maps them. Returns the paths of this rank's shards."""
    import os

    n = len(dataset)
    if n < 1:
        raise ValueError("cache_shards: no clips to write")
    os.makedirs(folder, exist_ok=True)
    count = -(-n // clips_per_shard)
    mine = []
    for i in range(rank, count, world_size):
        path = os.path.join(folder, f"clips-{i:05d}.safetensors")
        mine.append(path)
        if os.path.isfile(path):
            continue
        tmp = f"{path}.tmp-{os.getpid()}"
        cache_clips(dataset, tmp, range(i * clips_per_shard, min(n, (i + 1) * clips_per_shard)), progress=progress)
        os.replace(tmp, path)
    return mine


def open_clips(data: str | None = None, *, frames: int = 8, size: int = 32, clips: int | None = None, seed: int = 0,
               cache: str | None = None, clips_per_shard: int = 1024) -> Dataset:
    """The training clips the teacher and distillation stages read.

    data: a clip cache file written by :func:`cache_clips`, or a folder of ``*.safetensors`` caches (concatenated
    in name order). Without ``data``: procedural clips (``ClipDataset("train", num_frames=frames, size=size,
    num_clips=clips, seed=seed)``) rendered on the fly or, with ``cache``, rendered once into that file first
    (written to a temporary file and renamed, so an interrupted run leaves no half-written cache) and read from it.
    A ``cache`` that does not end in ``.safetensors`` is a folder of shards (:func:`cache_shards`, of
    ``clips_per_shard`` clips): under torch.distributed every rank writes its share of the shards (rank r the
    shards r, r + world_size, ...), waits for the others' (a barrier once the process group exists), then all
    read all of them, memory-mapped.
    Raises FileNotFoundError naming ``data`` when it holds no cache.
    """
    import glob
    import os

    from torch.utils.data import ConcatDataset

    if data:
        if os.path.isdir(data):
            files = sorted(glob.glob(os.path.join(data, "*.safetensors")))
            if not files:
                raise FileNotFoundError(f"--data {data}: no *.safetensors clip caches in this folder")
            return ConcatDataset([CachedClips(f) for f in files]) if len(files) > 1 else CachedClips(files[0])
        if not os.path.isfile(data):
            raise FileNotFoundError(f"--data {data} not found")
        return CachedClips(data)
    ds = ClipDataset("train", num_frames=frames, size=size, num_clips=clips, seed=seed)
    if not cache:
        return ds
    if not cache.endswith(".safetensors"):
        import time

        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        else:  # under torchrun before the process group exists
            rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        cache_shards(ds, cache, clips_per_shard, rank=rank, world_size=world, progress=rank == 0)
        count = -(-len(ds) // clips_per_shard)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank's shards are in place
        while len(glob.glob(os.path.join(cache, "clips-*.safetensors"))) < count:  # the other ranks' shards
            time.sleep(1.0)
        return open_clips(cache)
    if not os.path.isfile(cache):
        from fastvdm.outdir import sweep_stale_file_temps

        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        sweep_stale_file_temps(cache)  # a killed earlier run's partial cache
        tmp = f"{cache}.tmp-{os.getpid()}"
        try:
            cache_clips(ds, tmp)
            os.replace(tmp, cache)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    return CachedClips(cache)


def clip_from_scene(scene_dir: str, frames: int, size: int, inputs: int = 1):
    """A clip of a scene folder: ``frames`` views evenly spaced along its camera list form the camera path,
    ``inputs`` of them (evenly spaced, the first always) the input views whose RGB-D (or the scene's point
    cloud) is rendered into every frame. Returns (clip dict as ClipDataset items, ground-truth frames
    (3, frames, size, size) in [-1, 1])."""
    import torch

    from fastvdm.data.scene_io import read_scene, square_view

    scene = read_scene(scene_dir)
    n = len(scene.views)
    if n < frames:
        raise UserError(f"scene {scene_dir} has {n} views; the model needs {frames} (use at most {n} frames)")
    if not 1 <= inputs <= frames:
        raise UserError(f"inputs must be in [1, {frames}], got {inputs}")
    pick = [round(i * (n - 1) / max(frames - 1, 1)) for i in range(frames)]
    in_idx = [0] if inputs == 1 else [round(j * (frames - 1) / (inputs - 1)) for j in range(inputs)]
    views = [scene.views[pick[i]] for i in in_idx]
    if scene.points is None and any(v.depth is None for v in views):
        raise UserError(f"scene {scene_dir}: the input views have no depth and there is no point cloud")
    clip = clip_from_views(views, [scene.views[i].camera for i in pick], size, input_indices=in_idx,
                           points=scene.points, point_colors=scene.colors)
    gt = torch.stack([square_view(scene.views[i], size).rgb * 2 - 1 for i in pick], 1)
    return clip, gt
