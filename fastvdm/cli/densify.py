"""``fastvdm densify``: turn a sparse posed capture into a dense one with the 4-step student.

    fastvdm densify SCENE_DIR --out OUT_DIR [--views-per-gap N] [--ckpt tiny] [--steps 4] [--cameras FILE] [--force]

SCENE_DIR is a nerfstudio-style folder (``transforms.json`` + images, with per-frame depth
``depth_file_path`` or a point cloud ``ply_file_path``; ``fastvdm data make`` writes them). Its frames are the
input views, in file order. Between each pair of consecutive input views the camera path is interpolated
(smooth in position and rotation, intrinsics of the first view of the pair) with N new cameras, and the
student completes the point-cloud renders of the pair's RGB-D (plus the scene's point cloud) along that clip
of N + 2 frames. ``--cameras FILE`` (a transforms.json) gives the whole camera path instead; each input view
must sit on it (same pose), and it is generated as one clip.

OUT_DIR receives the dense capture in the same format, ready for NeRF / Gaussian-splatting trainers: every
frame (input views included, centre-cropped and resized to the model's resolution) as ``images/*.png`` with its
camera in ``transforms.json`` (per frame ``fastvdm_input`` says which are the inputs), and ``sparse_pc.ply``
(``ply_file_path``), the input views' RGB-D unprojected (plus the scene's own point cloud), for splatting
initialization. Top-level fields ``generation_seconds`` and ``nfe`` record the cost. A non-empty OUT_DIR is
refused unless ``--force``; everything is written to a temporary folder first, so an error leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
import time

from fastvdm.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("densify", help="densify a sparse capture (transforms.json + RGB-D) with the student",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scene", metavar="SCENE_DIR", help="sparse capture folder (transforms.json, images, depth or PLY)")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --force)")
    p.add_argument("--views-per-gap", type=int, default=None,
                   help="new views between consecutive input views (default: the model's clip length - 2)")
    p.add_argument("--ckpt", default="tiny", help="shipped student name, run folder or checkpoint (default tiny)")
    p.add_argument("--steps", type=int, default=4, help="student steps (default 4)")
    p.add_argument("--cameras", default=None, help="a transforms.json with the whole camera path to generate")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)
    return p


def _same_pose(a, b, tol: float = 1e-4) -> bool:
    return float((a.c2w.double() - b.c2w.double()).abs().max()) < tol


def plan_clips(views, views_per_gap: int, path_cameras=None) -> list[tuple[list, list, list]]:
    """[(clip input views, clip cameras, input indices)]: one clip per gap between consecutive views, or one
    clip along ``path_cameras`` with every view placed at the path camera of the same pose."""
    import torch

    from fastvdm.data.cameras import interpolate_poses

    if path_cameras is not None:
        idx = []
        for j, v in enumerate(views):
            hits = [i for i, c in enumerate(path_cameras) if _same_pose(c, v.camera)]
            if not hits:
                raise UserError(f"--cameras: input view {j} ({v.name}) has no camera of the same pose on the path")
            idx.append(hits[0])
        if len(set(idx)) != len(idx):
            raise UserError("--cameras: two input views sit on the same path camera")
        order = sorted(range(len(views)), key=lambda j: idx[j])
        return [([views[j] for j in order], list(path_cameras), [idx[j] for j in order])]
    if len(views) < 2:
        raise UserError(f"densify needs at least 2 input views to plan a path between them, got {len(views)} "
                         "(or give the path with --cameras)")
    clips = []
    for a, b in zip(views, views[1:]):
        poses = interpolate_poses(torch.stack([a.camera.c2w, b.camera.c2w]), views_per_gap + 2)
        cams = [a.camera.with_pose(p.to(a.camera.c2w.dtype)) for p in poses]
        clips.append(([a, b], cams, [0, views_per_gap + 1]))
    return clips


def densify(args) -> dict:
    import torch
    from tqdm import tqdm

    from fastvdm.data.cameras import camera_from_transforms_frame
    from fastvdm.data.scene_io import View, load_transforms, read_scene, write_scene
    from fastvdm.data.warp import unproject
    from fastvdm.outdir import check_output_dir, staged_output_dir
    from fastvdm.pipeline import load_student

    inputs = [args.scene, args.cameras, args.ckpt if os.path.exists(args.ckpt) else None]
    check_output_dir(args.out, args.force, inputs)  # before any work: refused outputs fail in a second
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    scene = read_scene(args.scene)
    if scene.points is None and any(v.depth is None for v in scene.views):
        raise UserError(f"{args.scene}: every input view needs depth (depth_file_path), or the scene a point cloud "
                         "(ply_file_path)")
    pipe = load_student(args.ckpt)
    max_frames = pipe.model.config.max_frames
    n = pipe.frames - 2 if args.views_per_gap is None else args.views_per_gap
    if not 1 <= n <= max_frames - 2:
        raise UserError(f"--views-per-gap must be in [1, {max_frames - 2}], got {n}")
    path = None
    if args.cameras:
        meta = load_transforms(args.cameras, "--cameras")
        path = [camera_from_transforms_frame(meta, fr, f"--cameras {args.cameras} frames[{i}]")
                for i, fr in enumerate(meta["frames"])]
        if not 2 <= len(path) <= max_frames:
            raise UserError(f"--cameras: the path must have 2 to {max_frames} cameras, got {len(path)}")
    clips = plan_clips(scene.views, n, path)

    out_views, frame_meta, seconds, nfe = [], [], 0.0, 0
    for c, (views, cams, idx) in enumerate(tqdm(clips, desc="densify", unit="clip", disable=args.no_progress)):
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + c)
        t0 = time.perf_counter()
        res = pipe.densify(views, cams, idx, scene.points, scene.colors, generator=g, num_steps=args.steps)
        seconds += time.perf_counter() - t0
        nfe += res["nfe"]
        for i, (rgb, cam) in enumerate(zip(res["rgb"], res["cameras"])):
            if c > 0 and path is None and i == 0:
                continue  # the previous clip's last frame
            out_views.append(View(cam, rgb.contiguous(), None, f"frame_{len(out_views):05d}"))
            frame_meta.append({"fastvdm_input": i in idx})

    points, colors = [], []
    with_depth = [v for v in scene.views if v.depth is not None]
    if with_depth:
        p, col = unproject(torch.stack([v.rgb for v in with_depth]), torch.stack([v.depth for v in with_depth]),
                           [v.camera for v in with_depth])
        points.append(p), colors.append(col)
    if scene.points is not None:
        points.append(scene.points.float()), colors.append(scene.colors.float())
    extra = {"generation_seconds": seconds, "nfe": nfe,
             "fastvdm": {"source": os.path.abspath(args.scene), "model": args.ckpt, "steps": args.steps,
                         "views_per_gap": None if path is not None else n, "cameras": args.cameras,
                         "size": pipe.size, "seed": args.seed}}
    with staged_output_dir(args.out, args.force, inputs) as tmp:
        write_scene(tmp, out_views, torch.cat(points), torch.cat(colors).clamp(0, 1), extra_meta=extra,
                    frame_meta=frame_meta)
    return {"out": os.path.abspath(args.out), "frames": len(out_views), "inputs": len(scene.views),
            "clips": len(clips), "seconds": seconds, "nfe": nfe, "size": pipe.size}


def main(args: argparse.Namespace) -> int:
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    r = densify(args)
    print(f"wrote {r['frames']} views ({r['inputs']} inputs, {r['frames'] - r['inputs']} generated, "
          f"{r['size']}x{r['size']}) to {r['out']}: {r['clips']} clip(s), {r['nfe']} network evaluations, "
          f"{r['seconds']:.1f} s")
    return 0
