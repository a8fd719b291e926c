"""Clip caches for the v2 tiny teacher (issue 19) and the hole-fraction distribution of each split.

    python bench/make_teacher_data.py [--out runs/cache] [--train-extrap 1500] [--train-interp 1000]

Writes (skipping files that exist):
  OUT/train_v2/extrap_t8_s32_n{N}.safetensors   ClipDataset("train", paths="extrapolate", seed 1): structured
                                                materials, extrapolating paths, crops of 32/64/96-px frames
  OUT/train_v2/interp_t8_s32_n{M}.safetensors   ClipDataset("train", seed 2): the original interpolating clips
  OUT/test_t8_s32_n100.safetensors              the fixed held-out split (paths="interp", TEST_SEED)
  OUT/test_extrap_t8_s32_n100.safetensors       the new held-out split (paths="extrapolate", TEST_EXTRAP_SEED)
(--part I/N --only extrap|interp: the I-th of N interleaved shards of a train file, for parallel processes)
and prints, per file, the distribution of the per-clip mean hole fraction of the target (non-input) frames.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

from fastvdm.data.dataset import CachedClips, ClipDataset, cache_clips, hole_fractions


def stats(path: str) -> dict:
    ds = CachedClips(path)
    per_clip = np.array([float(hole_fractions(ds[i]).mean()) for i in range(len(ds))])
    q = np.percentile(per_clip, [10, 25, 50, 75, 90])
    return {"file": path, "clips": len(ds), "mean": round(float(per_clip.mean()), 4),
            "p10_p25_p50_p75_p90": [round(float(v), 4) for v in q],
            "frac_clips_ge_15pct": round(float((per_clip >= 0.15).mean()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/cache")
    ap.add_argument("--train-extrap", type=int, default=1500)
    ap.add_argument("--train-interp", type=int, default=1000)
    ap.add_argument("--stats-json", default=None, help="also write the statistics here")
    ap.add_argument("--only", choices=("test", "extrap", "interp"), help="write only these files")
    ap.add_argument("--part", default="0/1", help="I/N: write the I-th of N interleaved shards of the train files "
                                                 "(parallel processes; the trainer reads a folder of shards)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    jobs = [
        (os.path.join(args.out, "test_t8_s32_n100.safetensors"), ClipDataset("test", 8, 32, 100)),
        (os.path.join(args.out, "test_extrap_t8_s32_n100.safetensors"),
         ClipDataset("test", 8, 32, 100, paths="extrapolate")),
        (os.path.join(args.out, "train_v2", f"extrap_t8_s32_n{args.train_extrap}.safetensors"),
         ClipDataset("train", 8, 32, args.train_extrap, seed=1, paths="extrapolate")),
        (os.path.join(args.out, "train_v2", f"interp_t8_s32_n{args.train_interp}.safetensors"),
         ClipDataset("train", 8, 32, args.train_interp, seed=2)),
    ]
    part, parts = (int(v) for v in args.part.split("/"))
    out = []
    for j, (path, ds) in enumerate(jobs):
        kind = ("test", "test", "extrap", "interp")[j]
        if len(ds) == 0 or (args.only and args.only != kind):
            continue
        indices = None
        if kind != "test" and parts > 1:
            path = path.replace(".safetensors", f"_part{part}of{parts}.safetensors")
            indices = list(range(part, len(ds), parts))
        if not os.path.isfile(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            cache_clips(ds, tmp, indices)
            os.replace(tmp, path)
        out.append(stats(path))
        print(json.dumps(out[-1]), flush=True)
    if args.stats_json:
        with open(args.stats_json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
