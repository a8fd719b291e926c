"""Benchmark of procedural clip generation (the embedded training data) on the CPU.

    python bench/bench_data.py                       # 100 clips of 16 frames at 64x64, torch's default threads
    python bench/bench_data.py --threads 1           # one core
    python bench/bench_data.py --clips 20 --size 128

Clip generation runs single-threaded (``ClipDataset`` items do, see ``fastvdm.data.dataset.one_thread``);
``--threads`` sets torch's thread count outside it (for ``render_points`` alone). Reports the wall time to generate ``--clips`` consecutive ``ClipDataset("train")`` items in this process
(the first item included: it also loads and resizes the scikit-image photos), seconds per clip, and a stage
breakdown measured on a second pass over the first ``--profile`` items: scene build + camera path, ray-cast
render of all frames, and assembly (unprojection, point z-buffer render into every frame, Plücker maps).
Also times ``render_points`` alone: 3 input views of size x size warped into ``--frames`` cameras.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import machine_name, median_seconds  # noqa: E402

from fastvdm.data import dataset as D  # noqa: E402
from fastvdm.data.cameras import Camera  # noqa: E402
from fastvdm.data.scenes import Scene  # noqa: E402
from fastvdm.data.warp import render_points, unproject  # noqa: E402


def stage_times(ds: D.ClipDataset, index: int) -> dict:
    """The steps of ``ClipDataset.__getitem__``, timed separately (same code path, same results)."""
    t0 = time.perf_counter()
    scene_seed = ds.scene_seed(index)
    rng = np.random.default_rng([ds.seed, index, 1])
    scene = Scene.random(scene_seed)
    poses = scene.sample_poses(rng, ds.num_frames)
    fov = rng.uniform(*ds.fov_deg)
    cams = [Camera.from_fov(p, fov, ds.size, ds.size) for p in poses]
    k = int(rng.integers(ds.num_inputs[0], ds.num_inputs[1] + 1))
    idx = [0] + sorted(int(i) for i in rng.choice(np.arange(1, ds.num_frames), size=k - 1, replace=False)) if k > 1 else [0]
    t1 = time.perf_counter()
    rgb, depth = scene.render(cams, ds.size, ds.size)
    t2 = time.perf_counter()
    frames = D._to_signed(rgb)
    D._assemble(frames, frames[idx], depth[idx], idx, cams, ds.size, ds.radius, scene_seed=scene_seed)
    t3 = time.perf_counter()
    return {"scene+path": t1 - t0, "render": t2 - t1, "assemble": t3 - t2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--profile", type=int, default=20, help="items in the stage breakdown")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = D.ClipDataset("train", num_frames=args.frames, size=args.size, num_clips=args.clips)
    print(f"machine: {machine_name()}, torch threads: {torch.get_num_threads()}")

    t0 = time.perf_counter()
    inputs = 0
    for i in range(args.clips):
        inputs += int(ds[i]["is_input"].sum())
    total = time.perf_counter() - t0
    print(f"{args.clips} clips of {args.frames} frames at {args.size}x{args.size}: {total:.2f} s total, "
          f"{total / args.clips * 1000:.0f} ms/clip ({inputs / args.clips:.2f} input views/clip on average)")

    with D.one_thread():
        stages = [stage_times(ds, i) for i in range(min(args.profile, args.clips))]
    print("stage breakdown (mean ms/clip over %d clips): " % len(stages)
          + ", ".join(f"{k} {1000 * np.mean([s[k] for s in stages]):.1f}" for k in stages[0]))

    scene = Scene.random(0)
    poses = scene.sample_poses(np.random.default_rng(0), args.frames)
    cams = [Camera.from_fov(p, 60.0, args.size, args.size) for p in poses]
    rgb, depth = scene.render(cams[:3])
    pts, cols = unproject(rgb, depth, cams[:3])
    for label, ctx in ((f"{torch.get_num_threads()} threads", contextlib.nullcontext), ("1 thread", D.one_thread)):
        with ctx():
            sec = median_seconds(lambda: render_points(pts, cols, cams, args.size, args.size, radius=1.0))
        print(f"render_points ({label}): {pts.shape[0]} points into {args.frames} cameras at {args.size}x{args.size}, "
              f"radius 1: {sec * 1000:.1f} ms ({pts.shape[0] * args.frames / sec / 1e6:.1f} M point-projections/s)")


if __name__ == "__main__":
    main()
