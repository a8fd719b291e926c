"""Two-view stereo depth (``fastvdm.data.stereo``) against ground truth: ray-cast procedural scenes and a real pair.

    python bench/stereo_eval.py [--scenes 8] [--json bench/logs/stereo_eval.json]

Synthetic: procedural scene s (seeds 1..N), 192 x 128 cameras at 60 degrees FOV looking into the room from
(0, -1.5, 1.2) towards (0, 1, 1); the second camera is shifted 0.25 m sideways (parallel), 0.25 m sideways and
toed in to the same target, or 0.25 m down (parallel, vertical baseline). Real: the Motorcycle pair (741 x 500,
structured-light ground truth of the left view). Per pair: the fraction of pixels with a confident depth (after
the left-right check) and the median and 90th-percentile relative depth error there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def stats(d, gt) -> dict:
    ok = (d > 0) & (gt > 0)
    rel = ((d - gt).abs() / gt)[ok]
    return {"confident": float(ok.float().mean()), "median_rel": float(rel.median()),
            "p90_rel": float(rel.quantile(0.9))}


def main() -> None:
    from fastvdm.data.cameras import Camera, look_at
    from fastvdm.data.examples import motorcycle_views
    from fastvdm.data.scene_io import View
    from fastvdm.data.scenes import Scene
    from fastvdm.data.stereo import stereo_pair_depth

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    eye, tgt = torch.tensor([0.0, -1.5, 1.2]), torch.tensor([0.0, 1.0, 1.0])
    kinds = {"sideways": ((0.25, 0.0, 0.0), False), "toed-in": ((0.25, 0.0, 0.0), True),
             "vertical": ((0.0, 0.0, -0.25), False)}
    for s in range(1, args.scenes + 1):
        scene = Scene.random(s)
        for kind, (shift, toe) in kinds.items():
            sh = torch.tensor(shift)
            ca = Camera.from_fov(look_at(eye, tgt), 60.0, 128, 192)
            cb = Camera.from_fov(look_at(eye + sh, tgt if toe else tgt + sh), 60.0, 128, 192)
            rgb, depth = scene.render([ca, cb], 128, 192)
            da, _ = stereo_pair_depth(View(ca, rgb[0], None, "a"), View(cb, rgb[1], None, "b"))
            rows.append({"case": f"scene {s}", "kind": kind, **stats(da, depth[0])})
            print(json.dumps(rows[-1]), flush=True)
    left, right = motorcycle_views()
    d, _ = stereo_pair_depth(left, right)
    rows.append({"case": "motorcycle", "kind": "real", **stats(d, left.depth)})
    print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for kind in list(kinds) + ["real"]:
        rs = [r for r in rows if r["kind"] == kind]
        summary[kind] = {k: float(np.median([r[k] for r in rs])) for k in ("confident", "median_rel", "p90_rel")}
        summary[kind]["worst_median_rel"] = max(r["median_rel"] for r in rs)
        summary[kind]["pairs"] = len(rs)
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
