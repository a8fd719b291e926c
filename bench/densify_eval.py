"""Densify at full resolution vs. the full-resolution warp + OpenCV Telea inpainting, on held-out views.

    python bench/densify_eval.py [--sizes 128x128 192x128] [--scenes 6] [--steps 4] [--json OUT.json]
    python bench/densify_eval.py --real [--seeds 3] [--figure bench/densify_motorcycle.jpg] [--json ...]  # real pair

Synthetic: the held-out split's clips (``ClipDataset("test")``'s scenes and camera paths, 8 frames) rendered
at W x H; frames 0 and 7 are the inputs (RGB-D), frames 1-6 the held-out targets with ray-traced ground truth.
Real: the left photo of ``skimage.data.stereo_motorcycle()`` with its ground-truth depth is the input, the right
photo (741 x 500) the held-out target (:mod:`fastvdm.data.examples`). Both methods share the same z-buffered
surfel warp (``fastvdm.data.warp.splat_surfels``) and its seen mask; they differ only in the holes (and, for
densify, nowhere else). A third row, ``warp_harmonic``, fills the holes with densify's own classical smooth fill
(``fastvdm.densify.smooth_fill``) and no model: what the network adds beyond it. PSNR over all pixels, the seen
pixels and the holes (masked PSNR), per method.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def psnr(a, b, mask=None) -> float:
    err = (a - b) ** 2
    if mask is not None:
        m = mask.expand_as(err)
        if not bool(m.any()):
            return float("nan")
        err = err[m]
    return 10 * math.log10(1.0 / max(float(err.mean()), 1e-20))


def telea(warp: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """OpenCV Telea inpainting (radius 3) of warp (3, H, W) in [0, 1] where seen (1, H, W) is 0."""
    import cv2

    w8 = np.ascontiguousarray((warp.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    out = cv2.inpaint(w8, (seen[0] < 0.5).numpy().astype(np.uint8), 3, cv2.INPAINT_TELEA)
    return torch.from_numpy(out).permute(2, 0, 1).float() / 255


def scores(out, gt, seen) -> dict:
    s = seen > 0.5
    return {"psnr": psnr(out, gt), "psnr_seen": psnr(out, gt, s), "psnr_holes": psnr(out, gt, ~s)}


def synthetic_case(index: int, h: int, w: int):
    """(views 0 and 7 as RGB-D inputs, the 8 cameras, the 8 ground-truth frames) of held-out clip ``index``."""
    from fastvdm.data.cameras import Camera
    from fastvdm.data.dataset import ClipDataset
    from fastvdm.data.scene_io import View
    from fastvdm.data.scenes import Scene

    ds = ClipDataset("test", num_frames=8, size=32)
    rng = np.random.default_rng([ds.seed, index, 1])
    scene = Scene.random(ds.scene_seed(index))
    poses = scene.sample_poses(rng, 8)
    fov = rng.uniform(*ds.fov_deg)
    cams = [Camera.from_fov(p, fov, h, w) for p in poses]
    rgb, depth = scene.render(cams, h, w)
    rgb = (rgb.clamp(0, 1) * 255).round() / 255
    views = [View(cams[i], rgb[i], depth[i], f"frame_{i}") for i in (0, 7)]
    return views, cams, rgb


def main() -> None:
    from fastvdm.densify import densify_clip, scene_geometry, smooth_fill
    from fastvdm.pipeline import load_student

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["128x128", "192x128"], help="W x H of the synthetic renders")
    p.add_argument("--scenes", type=int, default=6)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--student", default="tiny")
    p.add_argument("--real", action="store_true", help="the Motorcycle photo pair instead of synthetic scenes")
    p.add_argument("--seeds", type=int, default=1, help="sampling seeds per case (real: averaged)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    p.add_argument("--figure", default=None, help="real: save a 2x2 grid (warp, warp + Telea, densify, photo) here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_student(args.student)
    rows = []
    if args.real:
        from fastvdm.data.examples import motorcycle_views

        left, right = motorcycle_views()
        geom = scene_geometry([left])
        for seed in range(args.seeds):
            res = densify_clip(pipe, [left], [right.camera], geom, generator=torch.Generator().manual_seed(seed),
                               num_steps=args.steps)
            seen = res["seen"][0]
            row = {"case": "motorcycle", "seed": seed, "size": [right.camera.width, right.camera.height],
                   "working_size": res["working_size"], "seen_fraction": res["seen_fraction"][0],
                   "densify": scores(res["rgb"][0], right.rgb, seen),
                   "warp_telea": scores(telea(res["warp"][0], seen), right.rgb, seen),
                   "warp_harmonic": scores(smooth_fill(res["warp"][0][None], seen[None])[0], right.rgb, seen)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.figure and seed == 0:
                from PIL import Image

                panels = [res["warp"][0] * seen, telea(res["warp"][0], seen), res["rgb"][0], right.rgb]
                top, bottom = torch.cat(panels[:2], 2), torch.cat(panels[2:], 2)
                grid = torch.nn.functional.interpolate(torch.cat([top, bottom], 1)[None], scale_factor=0.5,
                                                       mode="area")[0]
                Image.fromarray((grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(
                    args.figure, quality=90)
    else:
        for size in args.sizes:
            w, h = (int(x) for x in size.lower().split("x"))
            for i in range(args.scenes):
                views, cams, gt = synthetic_case(i, h, w)
                geom = scene_geometry(views)
                res = densify_clip(pipe, views, cams[1:7], geom, input_positions=[0, 7],
                                   generator=torch.Generator().manual_seed(0), num_steps=args.steps)
                outs = torch.stack(res["rgb"])
                seen = torch.stack(res["seen"])
                tel = torch.stack([telea(wp, s) for wp, s in zip(res["warp"], res["seen"])])
                row = {"case": f"scene {i}", "size": [w, h], "working_size": res["working_size"],
                       "hole_fraction": 1 - float(seen.mean()),
                       "densify": scores(outs, gt[1:7], seen), "warp_telea": scores(tel, gt[1:7], seen),
                       "warp_harmonic": scores(smooth_fill(torch.stack(res["warp"]), seen), gt[1:7], seen)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    groups = sorted({tuple(r["size"]) for r in rows})
    summary = {}
    for g in groups:
        rs = [r for r in rows if tuple(r["size"]) == g]
        summary[f"{g[0]}x{g[1]}"] = {m: {k: float(np.nanmean([r[m][k] for r in rs])) for k in rs[0][m]}
                                     for m in ("densify", "warp_telea", "warp_harmonic")}
        summary[f"{g[0]}x{g[1]}"]["hole_wins"] = sum(r["densify"]["psnr_holes"] > r["warp_telea"]["psnr_holes"]
                                                     for r in rs)
        summary[f"{g[0]}x{g[1]}"]["cases"] = len(rs)
    print(json.dumps(summary, indent=1))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
