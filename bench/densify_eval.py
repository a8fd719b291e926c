"""`fastvdm densify`'s frames against the ground truth, vs. the raw point-cloud renders (warps) of the kept views.

    python bench/densify_eval.py [--scenes 6] [--steps 1 2 4] [--json bench/logs/densify_eval.json]

Held-out procedural scenes (``fastvdm data make --split test``, 8 views of 64x64); views 0 and 7 are kept as the
sparse capture and the scene's own 8 cameras are the path (as ``fastvdm densify --cameras``), so the 6 generated
frames have ray-traced ground truth (centre-cropped and resized to the model's 32x32, as densify writes them).
Per scene: PSNR of the warps and of the student at each step count, over all pixels, the rendered ("vis") pixels
and the warps' holes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def psnr(a, b, mask=None) -> float:
    err = (a - b) ** 2
    if mask is not None:
        if not bool(mask.any()):
            return float("nan")
        err = err[mask.expand_as(err)]
    return 10 * math.log10(1.0 / max(float(err.mean()), 1e-20))


def main() -> None:
    from fastvdm.cli import main as cli
    from fastvdm.data.dataset import clip_from_views
    from fastvdm.data.scene_io import read_scene, square_view
    from fastvdm.pipeline import load_student

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=6)
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--student", default="tiny")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_student(args.student)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cli(["data", "make", "--out", os.path.join(tmp, "full"), "--scenes", str(args.scenes), "--split", "test",
             "--no-progress"])
        for i in range(args.scenes):
            s = read_scene(os.path.join(tmp, "full", f"scene_{i:05d}"))
            cams = [v.camera for v in s.views]
            clip = clip_from_views([s.views[0], s.views[7]], cams, pipe.size, input_indices=[0, 7])
            warp = ((clip["cond_rgb"].transpose(0, 1) + 1) / 2)[1:7]
            hole = clip["cond_mask"].transpose(0, 1)[1:7] < 0.5
            gt = torch.stack([square_view(v, pipe.size).rgb for v in s.views])[1:7]
            row = {"scene": i, "hole_fraction": float(hole.float().mean()),
                   "warp": {"psnr": psnr(warp, gt), "psnr_vis": psnr(warp, gt, ~hole), "psnr_holes": psnr(warp, gt, hole)}}
            for n in args.steps:
                out = pipe.densify([s.views[0], s.views[7]], cams, [0, 7], generator=torch.Generator().manual_seed(0),
                                   num_steps=n)["rgb"][1:7]
                row[f"student_{n}step"] = {"psnr": psnr(out, gt), "psnr_vis": psnr(out, gt, ~hole),
                                           "psnr_holes": psnr(out, gt, hole)}
            rows.append(row)
            print(f"scene {i}: holes {100 * row['hole_fraction']:.2f}% | " + " | ".join(
                f"{k} {v['psnr']:.2f} (vis {v['psnr_vis']:.2f}, holes {v['psnr_holes']:.2f})"
                for k, v in row.items() if isinstance(v, dict)), flush=True)
    keys = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    mean = {k: sum(r[k]["psnr"] for r in rows) / len(rows) for k in keys}
    print("mean PSNR: " + ", ".join(f"{k} {v:.2f}" for k, v in mean.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "scenes": rows, "mean_psnr": mean}, f, indent=2)


if __name__ == "__main__":
    main()
