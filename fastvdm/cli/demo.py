"""``fastvdm demo``: the shipped teacher (50 steps) and 4-step student on a held-out scene with 2 input views.

    fastvdm demo [--out ./fastvdm-demo] [--force] [--scene N] [--split extrap|interp] [--teacher tiny] [--student tiny]

Takes a clip of a held-out split (procedural scenes no model was trained on) with exactly 2 input views at the
frame count and size the models were trained at: by default the first clip of the extrapolating held-out split
(``ClipDataset("test", paths="extrapolate")``: the camera leaves what the inputs saw) whose target frames have at
least ``--min-holes`` (15%) hole pixels, so there is something to complete; ``--scene`` picks one by index and
``--split interp`` uses the original held-out split. Writes the input views (``inputs.png``), runs the teacher
(DDIM, ``--teacher-steps``) and the student (``--student-steps``), and writes to ``--out``:

- ``video.mp4`` and ``video.gif`` (only the GIF where no mp4 encoder is installed): per frame, side by side:
  render | teacher | student | OpenCV | ground truth
- ``grid.png``: labelled rows = render / teacher N / student N / OpenCV / ground truth, frames left to right
- ``metrics.json``: for the raw render, OpenCV inpainting of it, the teacher and the student: PSNR, SSIM,
  PSNR over the pixels the render missed, seconds and network evaluations (target frames only)

and prints the same numbers as a table. No network access: the models are the ones shipped in
``fastvdm/weights`` (``--teacher``/``--student`` also take a run folder or checkpoint file).
"""

from __future__ import annotations

import argparse
import json
import os

from fastvdm.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="run the shipped teacher and 4-step student on a held-out scene",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="fastvdm-demo", help="output folder (default ./fastvdm-demo)")
    p.add_argument("--scene", type=int, default=None,
                   help="index of the held-out clip (0-99; default: the first with at least --min-holes holes)")
    p.add_argument("--split", choices=("extrap", "interp"), default="extrap",
                   help="held-out split: extrap (extrapolating camera paths, default) or interp (the original)")
    p.add_argument("--min-holes", type=float, default=0.15,
                   help="without --scene: the least hole fraction of the target frames (default 0.15)")
    p.add_argument("--teacher", default="tiny", help="shipped teacher name, run folder or file (default tiny)")
    p.add_argument("--student", default="tiny", help="shipped student name, run folder or file (default tiny)")
    p.add_argument("--teacher-steps", type=int, default=50, help="teacher DDIM steps (default 50)")
    p.add_argument("--student-steps", type=int, default=4, help="student steps (default 4)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--scale", type=int, default=4, help="upscaling of the written images (default 4)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=main)
    return p


def run_demo(args) -> dict:
    """Run the demo, writing ``args.out`` whole or not at all (staged; a non-empty folder needs ``--force``)."""
    from fastvdm.outdir import check_output_dir, staged_output_dir

    inputs = [m for m in (args.teacher, args.student) if os.path.exists(m)]
    check_output_dir(args.out, getattr(args, "force", False), inputs)  # before any work
    with staged_output_dir(args.out, getattr(args, "force", False), inputs) as tmp:
        return _run_demo(args, tmp)


def _run_demo(args, out: str) -> dict:
    import time

    import torch

    from fastvdm.data.dataset import ClipDataset, hole_fractions
    from fastvdm.evaluate import clip_scores, opencv_inpaint
    from fastvdm.media import clip_strip, save_grid, save_png, save_video, to_uint8
    from fastvdm.models import make_cond
    from fastvdm.pipeline import load_student, load_teacher

    if args.teacher_steps < 1 or args.student_steps < 1:
        raise UserError(f"--teacher-steps and --student-steps must be >= 1, got {args.teacher_steps}, "
                         f"{args.student_steps}")
    if args.scene is not None and not 0 <= args.scene < 100:
        raise UserError(f"--scene must be in [0, 100) (the held-out split), got {args.scene}")
    if not 0 <= args.min_holes < 1:
        raise UserError(f"--min-holes must be in [0, 1), got {args.min_holes}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    teacher, student = load_teacher(args.teacher), load_student(args.student)
    if (teacher.frames, teacher.size) != (student.frames, student.size):
        raise UserError(f"teacher ({teacher.frames} frames, {teacher.size}px) and student ({student.frames} frames, "
                         f"{student.size}px) were trained on different clip shapes")
    split = ClipDataset("test", num_frames=student.frames, size=student.size, num_inputs=(2, 2),
                        paths="extrapolate" if args.split == "extrap" else "interp")
    clip, scene = pick_clip(split, args.scene, args.min_holes)
    batch = torch.utils.data.default_collate([clip])
    gt, cond = make_cond(batch)
    inputs = [int(i) for i in torch.nonzero(clip["is_input"]).flatten()]
    inputs_png = save_png(os.path.join(out, "inputs.png"), clip_strip(clip["frames"][:, inputs]), args.scale)
    print(f"held-out {args.split} scene {scene} (scene seed {int(clip['scene_seed'])}): {student.frames} frames at "
          f"{student.size}x{student.size}, input views at frames {inputs}, "
          f"{100 * float(hole_fractions(clip).mean()):.1f}% holes -> {os.path.join(args.out, 'inputs.png')}",
          flush=True)

    preds, rows = {}, {}
    render = batch["cond_rgb"]
    t0 = time.perf_counter()
    preds["opencv_telea"] = opencv_inpaint(render, batch["cond_mask"])
    rows["opencv_telea"] = (time.perf_counter() - t0, 0)
    preds["render"] = render
    rows["render"] = (0.0, 0)
    for name, pipe, steps in (("teacher", teacher, args.teacher_steps), ("student", student, args.student_steps)):
        if progress:
            print(f"{name}: {steps} steps", flush=True)
        g = torch.Generator().manual_seed(args.seed)
        t0 = time.perf_counter()
        preds[name] = pipe(cond, generator=g, num_steps=steps, progress=progress).cpu()
        rows[name] = (time.perf_counter() - t0, pipe.last_nfe)
    metrics = {}
    for name in ("render", "opencv_telea", "teacher", "student"):
        pred = torch.where(batch["is_input"][:, None, :, None, None], gt, preds[name].float().clamp(-1, 1))
        scores = clip_scores(pred[0], gt[0], batch["cond_mask"][0], batch["is_input"][0])
        metrics[name] = {k: scores[k] for k in ("psnr", "ssim", "psnr_masked", "ssim_masked")}
        metrics[name].update(seconds=rows[name][0], nfe=rows[name][1])
        preds[name] = pred
    report = {"split": args.split, "scene_index": scene, "scene_seed": int(clip["scene_seed"]), "frames": student.frames,
              "size": student.size, "input_frames": inputs, "hole_fraction": scores["hole_fraction"],
              "seed": args.seed,
              "teacher": {"model": args.teacher, "steps": args.teacher_steps},
              "student": {"model": args.student, "steps": args.student_steps},
              "student_time_vs_teacher": metrics["student"]["seconds"] / max(metrics["teacher"]["seconds"], 1e-12),
              "methods": metrics}
    order = [("render", "render"), ("teacher", f"teacher {args.teacher_steps}"),
             ("student", f"student {args.student_steps}"), ("opencv_telea", "OpenCV"), ("gt", "ground truth")]
    clips = {"render": render[0], "teacher": preds["teacher"][0], "student": preds["student"][0],
             "opencv_telea": preds["opencv_telea"][0], "gt": gt[0]}
    grid = save_grid(os.path.join(out, "grid.png"), [clips[k] for k, _ in order], args.scale,
                     labels=[label for _, label in order])
    side = [to_uint8(clips[k]) for k, _ in order]  # each (T, H, W, 3)
    import numpy as np

    video = save_video(os.path.join(out, "video"), [np.concatenate(f, 1) for f in zip(*side)], scale=args.scale,
                       gif_too=True)
    files = {"inputs": inputs_png, "grid": grid, "video": video}
    gif = os.path.splitext(video)[0] + ".gif"
    if gif != video:
        files["video_gif"] = gif
    # the paths the files will have once the staged folder is renamed to --out
    report["files"] = {k: os.path.join(args.out, os.path.relpath(v, out)) for k, v in files.items()}
    from fastvdm.train.checkpoint import atomic_write_text

    atomic_write_text(os.path.join(out, "metrics.json"), json.dumps(report, indent=2))
    return report


def pick_clip(split, scene, min_holes: float):
    """(clip, index): item ``scene`` of ``split``, or (scene None) the first item whose target frames have at
    least ``min_holes`` hole pixels on average."""
    from fastvdm.data.dataset import hole_fractions

    if scene is not None:
        return split[scene], scene
    for i in range(len(split)):
        clip = split[i]
        if float(hole_fractions(clip).mean()) >= min_holes:
            return clip, i
    raise UserError(f"no held-out clip has at least {100 * min_holes:.0f}% holes: lower --min-holes or pass --scene")


def format_report(report: dict) -> str:
    names = {"render": "raw render", "opencv_telea": "OpenCV inpaint",
             "teacher": f"teacher ({report['teacher']['steps']} steps)",
             "student": f"student ({report['student']['steps']} steps)"}
    lines = [f"{'method':<22}{'PSNR':>8}{'SSIM':>8}{'PSNR(holes)':>13}{'seconds':>10}{'NFE':>6}"]
    for k, m in report["methods"].items():
        lines.append(f"{names[k]:<22}{m['psnr']:>8.2f}{m['ssim']:>8.4f}{m['psnr_masked']:>13.2f}"
                     f"{m['seconds']:>10.3f}{m['nfe']:>6}")
    lines.append(f"(target frames only; holes = {100 * report['hole_fraction']:.1f}% of their pixels; student time = "
                 f"{100 * report['student_time_vs_teacher']:.1f}% of the teacher's)")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    report = run_demo(args)
    print(format_report(report))
    f = report["files"]
    videos = f["video"] + (f" (+ {f['video_gif']})" if "video_gif" in f else "")
    print(f"wrote {f['inputs']}, {f['grid']}, {videos} and {os.path.join(args.out, 'metrics.json')}")
    return 0
