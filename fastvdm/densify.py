"""Densify a posed capture at its own resolution: keep what the photos saw, generate only what they missed.

    from fastvdm.pipeline import densify_scene, load_student
    result = densify_scene("my_capture/", "dense/")              # nerfstudio / COLMAP folder in, nerfstudio out
    out = load_student("tiny").densify(views, cameras)           # one clip: inputs + target cameras, in memory

One clip (:func:`densify_clip`): the input views' geometry (RGB-D unprojected as surfels, a PLY, or stereo
depth) is warped into every target camera at the target's full resolution with
:func:`fastvdm.data.warp.splat_surfels`, whose "seen" mask marks only pixels an input pixel actually covers.
The model then runs on the clip at a *working resolution* (below) and its output is upsampled into the holes
only. The seen pixels keep the warp exactly; the blend at hole borders is in the holes: the model's output
there is shifted by the warp-minus-model residual of the seen pixels, filled smoothly into the holes
(``harmonize``), so a hole meets its surroundings without a colour step, and within ``ramp`` working pixels
of the border it fades into the smooth fill of the surroundings (``feather`` > 0 also mixes the seen pixels
within that many pixels of a hole toward the model). Input frames come back as the original photos.

Working resolution: the network was trained on 32 x 32 clips whose holes have a median distance of
``TRAIN_HOLE_DISTANCE`` = 2.8 px from the nearest seen pixel (measured over the non-input frames of 40
held-out ``ClipDataset("test", 8, 32)`` clips). The clip's full-resolution holes are measured the same way
(median over the hole pixels of the target frames of the Euclidean distance transform), and the frames are
scaled by TRAIN_HOLE_DISTANCE / that median, so the model sees holes at the pixel scale it was trained on;
the scale is clamped to at most 1 (never upsampled), at least what brings the shorter side to the model's
training size (``pipe.size``), and at most sqrt(max_pixels / (H W)) (compute bound). The condition at that
size is the area average of the full-resolution warp over its seen pixels (a working pixel is seen when at
least half of its area is). The U-Net runs at any H x W (:class:`fastvdm.models.padded.PaddedNetwork`).

Whole scenes (:func:`densify_scene`): inputs are the scene's photos; targets are the given cameras, the
scene's target-only frames (no image), or cameras interpolated between consecutive inputs. Targets are
generated in clips of the model's length with the two inputs nearest to each clip.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fastvdm.data.cameras import Camera, interpolate_poses, plucker_rays, relative_to
from fastvdm.diffusion.hole_fill import pull_push_fill
from fastvdm.errors import UserError

TRAIN_HOLE_DISTANCE = 2.8  # px: median hole-pixel distance to the nearest seen pixel in the 32x32 training clips
DEFAULT_MAX_PIXELS = 128 * 128


class DensifyError(UserError):
    """Bad densify input; the message names the frame or argument and what to do."""


# ----------------------------------------------------------------------------------------------- geometry
@dataclass
class Geometry:
    """World points (N, 3) float32, colours (N, 3) in [0, 1], surfel tangents (N, 2, 3) (0: no footprint, e.g. PLY),
    and where each input view's depth came from ("depth", "stereo", or None)."""

    points: torch.Tensor
    colors: torch.Tensor
    tangents: torch.Tensor
    sources: list = field(default_factory=list)


def scene_geometry(views: Sequence, points: Optional[torch.Tensor] = None, colors: Optional[torch.Tensor] = None,
                   stereo: str = "auto", names: Optional[Sequence[str]] = None) -> Geometry:
    """The point cloud densify warps: every input view's depth map unprojected as surfels, plus ``points``.

    stereo: "auto" computes depth by two-view stereo (:mod:`fastvdm.data.stereo`) for the views without a
    depth map when the scene has no point cloud either; "always" for every view without a depth map;
    "never" not at all. Raises :class:`DensifyError` naming the view when no geometry can be had.
    """
    from fastvdm.data.warp import unproject_surfels

    if stereo not in ("auto", "always", "never"):
        raise DensifyError(f"stereo must be 'auto', 'always' or 'never', got {stereo!r}")
    names = list(names) if names is not None else [v.name or f"view {i}" for i, v in enumerate(views)]
    depths = [v.depth for v in views]
    sources = ["depth" if d is not None else None for d in depths]
    need = [i for i, d in enumerate(depths) if d is None]
    if need and (stereo == "always" or (stereo == "auto" and points is None)):
        from fastvdm.data.stereo import stereo_depth_for_views

        if len(views) < 2:
            raise DensifyError(f"{names[need[0]]}: no depth map, no point cloud and no second photo to match it "
                               "with; give depth_file_path, ply_file_path, or at least two posed photos")
        for i, d in stereo_depth_for_views(views, need, names=names).items():
            depths[i] = d
            sources[i] = "stereo"
    pts, cols, tans = [], [], []
    for v, d in zip(views, depths):
        if d is None:
            continue
        if d.shape != v.rgb.shape[1:]:
            raise DensifyError(f"{v.name}: depth is {tuple(d.shape)}, image is {tuple(v.rgb.shape[1:])}")
        p, c, s = unproject_surfels(v.rgb[None], d[None], [v.camera])
        pts.append(p), cols.append(c), tans.append(s)
    if points is not None:
        if colors is None or colors.shape != points.shape:
            raise DensifyError("the point cloud needs one colour per point (red, green, blue in the PLY)")
        pts.append(points.float()), cols.append(colors.float()), tans.append(torch.zeros(points.shape[0], 2, 3))
    if not pts or sum(p.shape[0] for p in pts) == 0:
        raise DensifyError("no geometry: the input views have no (valid) depth and there is no point cloud; give "
                           "depth_file_path per frame, ply_file_path, or photos stereo can match (stereo='auto')")
    return Geometry(torch.cat(pts), torch.cat(cols).clamp(0, 1), torch.cat(tans), sources)


# ----------------------------------------------------------------------------------------------- working size
def hole_distance(holes: torch.Tensor) -> float:
    """Median over hole pixels of the distance (px) to the nearest seen pixel; holes (T, H, W) bool. 0 if none."""
    import cv2

    vals = []
    for hm in holes:
        m = hm.numpy().astype(np.uint8)
        if m.any():
            vals.append(cv2.distanceTransform(m, cv2.DIST_L2, 5)[m > 0])
    return float(np.median(np.concatenate(vals))) if vals else 0.0


def working_size(holes: torch.Tensor, model_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(h, w) the model runs at for full-resolution hole masks ``holes`` (T, H, W); see the module docstring."""
    h, w = holes.shape[-2:]
    d = hole_distance(holes)
    scale = TRAIN_HOLE_DISTANCE / d if d > 0 else 0.0
    scale = max(scale, model_size / min(h, w))
    scale = min(scale, math.sqrt(max_pixels / (h * w)), 1.0)
    return max(1, round(h * scale)), max(1, round(w * scale))


# ----------------------------------------------------------------------------------------------- compositing
def smooth_fill(x: torch.Tensor, mask: torch.Tensor, iters: int = 5) -> torch.Tensor:
    """Fill x (N, C, H, W) where mask (N, 1, H, W) is 0 by a multigrid harmonic fill (pull-push pyramid of
    means, ``iters`` Jacobi sweeps of Laplace's equation per level on the way up); known pixels unchanged."""
    filled = pull_push_fill(x.unsqueeze(2), mask.unsqueeze(2).to(x.dtype), smooth_iters=iters).squeeze(2)
    return torch.where(mask > 0, x, filled)


def composite(warp: torch.Tensor, seen: torch.Tensor, generated: torch.Tensor, feather: float = 0.0,
              harmonize: bool = True, ramp: float = 0.0) -> torch.Tensor:
    """Seen pixels from ``warp``, holes from ``generated`` (both (N, 3, H, W) in [0, 1]; seen (N, 1, H, W)).

    harmonize: add to ``generated`` the warp-minus-generated residual of the seen pixels, filled smoothly
    into the holes (:func:`smooth_fill`), so the generated content meets its surroundings without a step.
    ramp: hole pixels closer than ``ramp`` px to a seen pixel mix the smooth fill of the warp itself (weight
    1 - distance / ramp) with the generated image: at the hole border the surroundings continue, deeper in
    the hole the model takes over (0: the generated image everywhere in the holes).
    feather: seen pixels within this distance (px) of a hole mix toward the generated image linearly
    (weight of the warp = distance / feather; 0 = hard switch).
    """
    import cv2

    gen = generated
    if harmonize:
        gen = (gen + smooth_fill(warp - gen, seen) * (1 - seen)).clamp(0, 1)
    if ramp > 0:
        dist = torch.stack([torch.from_numpy(cv2.distanceTransform((s.numpy() < 0.5).astype(np.uint8), cv2.DIST_L2, 5))
                            for s in seen[:, 0]])[:, None]
        a = (dist / ramp).clamp(0, 1)
        gen = a * gen + (1 - a) * smooth_fill(warp, seen)
    if feather > 0:
        alpha = []
        for s in seen[:, 0]:
            m = s.numpy().astype(np.uint8)
            d = cv2.distanceTransform(m, cv2.DIST_L2, 5) if (m == 0).any() else np.full(m.shape, 1e9, np.float32)
            alpha.append(torch.from_numpy(np.clip(d / feather, 0, 1)))
        alpha = torch.stack(alpha)[:, None].float()
    else:
        alpha = seen
    return alpha * warp + (1 - alpha) * gen


# ----------------------------------------------------------------------------------------------- one clip
def _normalized(cams: Sequence[Camera], ref_view, geom: Geometry) -> list[Camera]:
    """Cameras relative to the first input view, scaled so the median depth of the scene in front of it is 1."""
    ref = ref_view.camera
    if ref_view.depth is not None and bool((ref_view.depth > 0).any()):
        median = float(ref_view.depth[ref_view.depth > 0].median())
    else:
        z = (geom.points.double() - ref.center) @ ref.rotation[:, 2]
        z = z[z > 0]
        median = float(z.median()) if z.numel() else 1.0
    return relative_to(cams, ref, 1.0 / median)


def densify_clip(pipe, inputs: Sequence, targets: Sequence[Camera], geometry: Optional[Geometry] = None,
                 input_positions: Optional[Sequence[int]] = None,
                 generator: Optional[torch.Generator] = None, num_steps: Optional[int] = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, feather: float = 0.0, harmonize: bool = True,
                 ramp: float = 2.0, progress: bool = False) -> dict:
    """Generate ``targets`` (cameras, any size, all of one aspect ratio) from ``inputs`` (``scene_io.View``s).

    The clip the model sees has the inputs at ``input_positions`` (default: the first input first, as in
    training, the others last) and the targets, in order, at the other frames; at most the model's
    ``max_frames`` frames. ramp: hole pixels within that many *working* pixels of a seen pixel blend from the
    smooth fill of the surroundings to the model (the upsampled output there interpolates working pixels that
    straddle the hole border; see :func:`composite`). geometry: from :func:`scene_geometry` (default:
    the inputs' own depth maps, or stereo). Returns {"rgb": [(3, H_t, W_t) in [0, 1]] per target, "seen":
    [(1, H_t, W_t) {0, 1}], "warp": the full-resolution warps, "seen_fraction": [float], "working_size": (h, w)
    or None when nothing was missing (no network call), "nfe"}.
    """
    if not inputs or not targets:
        raise DensifyError(f"densify needs at least one input view and one target camera, got {len(inputs)} "
                           f"and {len(targets)}")
    max_frames = getattr(getattr(pipe.model, "config", None), "max_frames", 64)
    if len(inputs) + len(targets) > max_frames:
        raise DensifyError(f"a clip of {len(inputs)} inputs + {len(targets)} targets exceeds the model's "
                           f"{max_frames} frames; split the targets")
    geom = geometry if geometry is not None else scene_geometry(inputs)
    aspect = targets[0].width / targets[0].height
    for j, c in enumerate(list(targets) + [v.camera for v in inputs]):
        if abs(c.width / c.height - aspect) > 0.01 * aspect:
            what = f"target {j}" if j < len(targets) else f"input {inputs[j - len(targets)].name}"
            raise DensifyError(f"{what} is {c.width}x{c.height}, target 0 is {targets[0].width}x{targets[0].height}: "
                               "one clip needs one aspect ratio; densify cameras of other shapes separately")
    warps, seens = [], []
    for c in targets:
        rgb, seen, _ = splat_surfels_cached(geom, c)
        warps.append(rgb)
        seens.append(seen)
    holes = [s[0] < 0.5 for s in seens]
    fractions = [float(s.mean()) for s in seens]
    if not any(bool(hm.any()) for hm in holes):
        return {"rgb": [w.clamp(0, 1) for w in warps], "seen": seens, "warp": warps, "seen_fraction": fractions,
                "working_size": None, "nfe": 0}
    # the working grid follows the first target's full-resolution holes
    hw, ww = working_size(torch.stack([hm for hm in holes if hm.shape == holes[0].shape]), pipe.size, max_pixels)
    t = len(inputs) + len(targets)
    in_idx = [0] + list(range(len(targets) + 1, t)) if input_positions is None else [int(i) for i in input_positions]
    if len(in_idx) != len(inputs) or len(set(in_idx)) != len(in_idx) or not all(0 <= i < t for i in in_idx):
        raise DensifyError(f"input_positions must be {len(inputs)} distinct frames in [0, {t}), got {in_idx}")
    tgt_idx = [i for i in range(t) if i not in set(in_idx)]
    frames: list = [None] * t
    for i, v in zip(in_idx, inputs):
        frames[i] = v.camera
    for i, c in zip(tgt_idx, targets):
        frames[i] = c
    cond_rgb = torch.zeros(3, t, hw, ww)
    cond_mask = torch.zeros(1, t, hw, ww)
    for j, w_, s_ in zip(tgt_idx, warps, seens):
        area = F.interpolate(s_[None], size=(hw, ww), mode="area")[0]
        col = F.interpolate((w_ * s_)[None], size=(hw, ww), mode="area")[0] / area.clamp_min(1e-6)
        m = (area >= 0.5).float()
        cond_rgb[:, j], cond_mask[:, j] = (col * 2 - 1) * m, m
    input_frames = torch.zeros(3, t, hw, ww)
    for j, v in zip(in_idx, inputs):
        small = F.interpolate(v.rgb[None], size=(hw, ww), mode="bilinear", antialias=True, align_corners=False)[0]
        small = (small.clamp(0, 1) * 255).round() / 127.5 - 1  # 8-bit, like the training frames
        input_frames[:, j] = cond_rgb[:, j] = small
        cond_mask[:, j] = 1
    rel = _normalized(frames, inputs[0], geom)
    plucker = torch.stack([plucker_rays(c, hw, ww) for c in rel], 1)
    is_input = torch.zeros(t, dtype=torch.bool)
    is_input[in_idx] = True
    cond = {"cond_rgb": cond_rgb[None], "cond_mask": cond_mask[None], "plucker": plucker[None],
            "is_input": is_input[None], "input_frames": input_frames[None]}
    out = pipe(cond, generator=generator, num_steps=num_steps, progress=progress)[0].cpu()
    gen = ((out + 1) / 2).clamp(0, 1).transpose(0, 1)[tgt_idx]  # (T_targets, 3, hw, ww)
    rgb = []
    for j, c in enumerate(targets):
        up = F.interpolate(gen[j:j + 1], size=(c.height, c.width), mode="bicubic", align_corners=False).clamp(0, 1)
        r = ramp * c.width / ww  # working pixels -> output pixels
        rgb.append(composite(warps[j][None], seens[j][None], up, feather, harmonize, r)[0].clamp(0, 1))
    return {"rgb": rgb, "seen": seens, "warp": warps, "seen_fraction": fractions, "working_size": (hw, ww),
            "nfe": pipe.last_nfe}


def splat_surfels_cached(geom: Geometry, camera: Camera) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The full-resolution warp of ``geom`` into ``camera``: rgb (3, H, W), seen (1, H, W), depth (H, W)."""
    from fastvdm.data.warp import splat_surfels

    rgb, seen, depth = splat_surfels(geom.points, geom.colors, [camera], camera.height, camera.width, geom.tangents)
    return rgb[0], seen[0], depth[0]


# ----------------------------------------------------------------------------------------------- whole scenes
def _same_pose(a: Camera, b: Camera, tol: float = 1e-4) -> bool:
    return float((a.c2w.double() - b.c2w.double()).abs().max()) < tol


def _nearest_inputs(views: Sequence, cams: Sequence[Camera], k: int) -> list[int]:
    """Indices of the k input views closest to a group of target cameras (centre distance plus viewing-angle
    mismatch, weighted by the scene's camera spread), nearest first."""
    centres = torch.stack([c.center for c in cams])
    fwd = torch.stack([c.rotation[:, 2] for c in cams])
    spread = max(float(torch.stack([v.camera.center for v in views]).std(0, correction=0).norm()), 1e-6)
    cost = []
    for v in views:
        d = (centres - v.camera.center).norm(dim=1).mean() / spread
        ang = 1 - (fwd @ v.camera.rotation[:, 2]).mean()
        cost.append(float(d + 2 * ang))
    return sorted(range(len(views)), key=lambda i: cost[i])[:k]


def plan_clips(views: Sequence, targets: Optional[Sequence[Camera]] = None, views_per_gap: int = 6,
               clip_frames: int = 8) -> list[dict]:
    """[{"inputs": [view indices], "targets": [target indices], "cameras": [Camera]}] covering every target once.

    targets None: between each pair of consecutive input views, ``views_per_gap`` cameras interpolated
    smoothly in position and rotation (intrinsics of the first view of the pair), generated with that pair.
    targets given: in order, in groups of clip_frames - 2, each with the (up to) two input views nearest to it.
    Targets with the pose of an input view are that input (not generated); "input_of" maps them.
    """
    if targets is None:
        if len(views) < 2:
            raise DensifyError(f"densify needs at least 2 input views to plan a path between them, got {len(views)}"
                               " (or give target cameras)")
        clips = []
        for i, (a, b) in enumerate(zip(views, views[1:])):
            poses = interpolate_poses(torch.stack([a.camera.c2w, b.camera.c2w]), views_per_gap + 2)[1:-1]
            clips.append({"inputs": [i, i + 1], "cameras": [a.camera.with_pose(p) for p in poses]})
        return clips
    group = max(1, clip_frames - 2)
    free = [c for c in targets if not any(_same_pose(c, v.camera) for v in views)]
    clips = []
    for s in range(0, len(free), group):
        cams = free[s:s + group]
        clips.append({"inputs": _nearest_inputs(views, cams, min(2, len(views))), "cameras": cams})
    return clips


@dataclass
class DensifyResult:
    """Frames of the dense capture in output order: views (``scene_io.View``s at full resolution), is_input,
    seen_fraction (1 for inputs), plus points/colors of its point cloud and cost counters."""

    views: list
    is_input: list
    seen_fraction: list
    points: torch.Tensor
    colors: torch.Tensor
    nfe: int = 0
    seconds: float = 0.0
    clips: int = 0
    working_sizes: list = field(default_factory=list)
    depth_sources: list = field(default_factory=list)


def densify_views(pipe, views: Sequence, targets: Optional[Sequence[Camera]] = None, points=None, colors=None,
                  views_per_gap: Optional[int] = None, seed: int = 0, num_steps: Optional[int] = None,
                  stereo: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS, feather: float = 0.0,
                  harmonize: bool = True, ramp: float = 2.0, progress: bool = False) -> DensifyResult:
    """Densify posed photos (``scene_io.View``s) along ``targets`` (or a path between the views); in memory.

    Output order: with targets, the targets in their order (a target with an input's pose is that input
    photo), preceded by the inputs that are on no target; without, input, generated gap, input, ...
    """
    from tqdm import tqdm

    if not views:
        raise DensifyError("densify needs at least one input photo")
    geom = scene_geometry(views, points, colors, stereo)
    frames = pipe.frames
    n = frames - 2 if views_per_gap is None else int(views_per_gap)
    max_frames = getattr(getattr(pipe.model, "config", None), "max_frames", 64)
    if targets is None and not 1 <= n <= max_frames - 2:
        raise DensifyError(f"views_per_gap must be in [1, {max_frames - 2}], got {n}")
    clips = plan_clips(views, targets, n, frames)
    generated: dict[int, tuple] = {}
    per_clip = []
    nfe, seconds, sizes = 0, 0.0, []
    for c, clip in enumerate(tqdm(clips, desc="densify", unit="clip", disable=not progress)):
        g = torch.Generator().manual_seed(seed * 1_000_003 + c)
        t0 = time.perf_counter()
        res = densify_clip(pipe, [views[i] for i in clip["inputs"]], clip["cameras"], geom, generator=g,
                           num_steps=num_steps, max_pixels=max_pixels, feather=feather, harmonize=harmonize,
                           ramp=ramp)
        seconds += time.perf_counter() - t0
        nfe += res["nfe"]
        sizes.append(res["working_size"])
        per_clip.append(res)
        for j, cam in enumerate(clip["cameras"]):
            generated[id(cam)] = (res["rgb"][j], res["seen_fraction"][j])
    from fastvdm.data.scene_io import View

    out, is_in, frac = [], [], []

    def add_gen(cam):
        rgb, f = generated[id(cam)]
        out.append(View(cam, rgb.contiguous(), None, f"generated_{len(out):05d}"))
        is_in.append(False), frac.append(f)

    def add_input(v):
        out.append(View(v.camera, v.rgb, None, v.name))
        is_in.append(True), frac.append(1.0)

    if targets is None:
        for i, v in enumerate(views):
            add_input(v)
            if i < len(clips):
                for cam in clips[i]["cameras"]:
                    add_gen(cam)
    else:
        on_path = [any(_same_pose(c, v.camera) for c in targets) for v in views]
        for v, on in zip(views, on_path):
            if not on:
                add_input(v)
        for c in targets:
            hit = [v for v in views if _same_pose(c, v.camera)]
            if hit:
                add_input(hit[0])
            else:
                add_gen(c)
    return DensifyResult(out, is_in, frac, geom.points, geom.colors, nfe, seconds, len(clips), sizes, geom.sources)


def densify_scene(scene, out_dir: Optional[str] = None, cameras=None, pipe=None, model: str = "tiny",
                  views_per_gap: Optional[int] = None, seed: int = 0, num_steps: Optional[int] = None,
                  stereo: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS, feather: float = 0.0,
                  harmonize: bool = True, ramp: float = 2.0, force: bool = False, progress: bool = False,
                  extra_meta: Optional[dict] = None, inputs: Sequence[str] = ()) -> DensifyResult:
    """Densify a capture and (with ``out_dir``) write it as a nerfstudio folder; returns the :class:`DensifyResult`.

    scene: a folder (nerfstudio ``transforms.json``, or a COLMAP model: ``sparse/0`` or a folder with
    ``cameras``/``images``/``points3D`` files, images in ``images/``) or a ``scene_io.SceneData``.
    Frames with an image are inputs; frames without one are targets. cameras: target cameras (a list of
    Camera, or a transforms.json path whose frames need no images); default: the scene's target-only
    frames, else ``views_per_gap`` interpolated cameras between consecutive inputs. pipe: an NVSPipeline
    (or a function returning one, called after the inputs have been read and checked; ``model`` is only
    recorded in the output; :func:`fastvdm.pipeline.densify_scene` loads ``load_student(model)``). Output (``out_dir``, refused if not empty unless ``force``, or if it is,
    holds or lies in an input (``scene``, ``cameras``, ``inputs``); written to a temporary folder first):
    every frame at full resolution in ``images/``, its camera in ``transforms.json`` with per-frame
    ``fastvdm_input`` and ``fastvdm_seen_fraction``, and the point cloud the warps used as ``sparse_pc.ply``
    (``ply_file_path``).
    """
    from fastvdm.data.scene_io import SceneData, read_capture, write_scene

    protect = [p for p in [scene if isinstance(scene, str) else None,
                           cameras if isinstance(cameras, str) else None, *inputs] if p]
    if out_dir is not None:
        from fastvdm.outdir import check_output_dir

        check_output_dir(out_dir, force, protect)  # refused before any work; never an input
    source = scene if isinstance(scene, str) else None
    if isinstance(scene, str):
        scene = read_capture(scene)
    if not isinstance(scene, SceneData):
        raise DensifyError(f"scene must be a folder or a SceneData, got {type(scene).__name__}")
    targets = None
    if cameras is not None:
        targets = read_target_cameras(cameras) if isinstance(cameras, str) else list(cameras)
    elif getattr(scene, "targets", None):
        targets = list(scene.targets)
    if pipe is None:
        raise DensifyError("densify_scene needs pipe= (an NVSPipeline, or a function returning one); "
                           "fastvdm.pipeline.densify_scene loads the shipped student by default")
    if not hasattr(pipe, "densify"):  # a loader: called once the inputs have been read and checked
        pipe = pipe()
    res = densify_views(pipe, scene.views, targets, scene.points, scene.colors, views_per_gap, seed, num_steps,
                        stereo, max_pixels, feather, harmonize, ramp, progress)
    if out_dir is not None:
        from fastvdm.outdir import staged_output_dir

        meta = {"generation_seconds": res.seconds, "nfe": res.nfe,
                "fastvdm": {"source": os.path.abspath(source) if source else None,
                            "model": model,
                            "steps": num_steps or pipe.default_steps, "views_per_gap": views_per_gap,
                            "cameras": cameras if isinstance(cameras, str) else None, "seed": seed,
                            "working_sizes": [list(s) if s else None for s in res.working_sizes],
                            "depth_sources": res.depth_sources, "max_pixels": max_pixels}}
        meta.update(extra_meta or {})
        frame_meta = [{"fastvdm_input": bool(i), "fastvdm_seen_fraction": round(float(f), 6)}
                      for i, f in zip(res.is_input, res.seen_fraction)]
        with staged_output_dir(out_dir, force, protect) as tmp:
            write_scene(tmp, res.views, res.points, res.colors, extra_meta=meta, frame_meta=frame_meta)
    return res


def read_target_cameras(path: str) -> list[Camera]:
    """Target cameras from a transforms.json (frames need no images); errors name the file and frame."""
    from fastvdm.data.cameras import camera_from_transforms_frame
    from fastvdm.data.scene_io import load_transforms

    meta = load_transforms(path, "--cameras")
    cams = []
    for i, fr in enumerate(meta["frames"]):
        try:
            cams.append(camera_from_transforms_frame(meta, fr, f"--cameras {path} frames[{i}]"))
        except ValueError as e:
            raise DensifyError(str(e)) from None
    return cams
