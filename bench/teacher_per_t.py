"""Does the teacher's network add anything to its denoiser's Gaussian prior? Per noise level, on held-out clips.

    python bench/teacher_per_t.py CKPT [CKPT ...] [--data CACHE] [--clips 10] [--json OUT]

For each checkpoint (loaded as its denoiser, EMA weights) and t in (19, 59, 139, 299, 599, 999), with one fixed
noise draw (seed 0) on the first ``--clips`` clips: the x0 MSE in the holes of the target frames of (a) the
model's x0 prediction and (b) the same denoiser with the network's output set to 0 (PosteriorDenoiser: the
Gaussian posterior mean around the hole-filled render), and the weighted training loss of each (the teacher's
"output" weighting: squared error of the network output, averaged over all pixels of the target frames).
"""

from __future__ import annotations

import argparse
import json

import torch

from fastvdm.data.dataset import CachedClips
from fastvdm.diffusion import VSchedule
from fastvdm.models import make_cond
from fastvdm.train import load_model

TS = (19, 59, 139, 299, 599, 999)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", nargs="+")
    ap.add_argument("--data", default="runs/cache/test_extrap_t8_s32_n100.safetensors")
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = CachedClips(args.data)
    b = torch.utils.data.default_collate([ds[i] for i in range(args.clips)])
    x0, cond = make_cond(b)
    target = (~b["is_input"])[:, None, :, None, None].float().expand_as(x0)
    holes = (1 - b["cond_mask"]).expand_as(x0) * target
    sch = VSchedule()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    out = {}
    for path in args.ckpt:
        m, _ = load_model(path)
        rows = []
        for t in TS:
            tt = torch.full((x0.shape[0],), float(t))
            xt = sch.add_noise(x0, noise, tt)
            with torch.no_grad():
                x0_model = sch.v_to_x0(xt, m(xt, tt, cond), tt)
                x0_prior = m.network_input(xt, tt, cond) if hasattr(m, "network_input") else torch.zeros_like(x0)
            w = m.output_weight(tt)[:, None, None, None, None]
            v_true = sch.v_target(x0, noise, tt)
            mse = lambda a, msk: float(((a - x0) ** 2 * msk).sum() / msk.sum())  # noqa: E731
            loss = lambda a: float((((sch.x0_to_v(xt, a, tt) - v_true) ** 2) * w * target).sum() / target.sum())  # noqa: E731
            rows.append({"t": t, "x0_mse_holes_model": mse(x0_model, holes), "x0_mse_holes_prior": mse(x0_prior, holes),
                         "loss_model": loss(x0_model), "loss_prior": loss(x0_prior)})
            r = rows[-1]
            print(f"{path}  t={t:4d}  holes x0 MSE: model {r['x0_mse_holes_model']:.5f}  prior {r['x0_mse_holes_prior']:.5f}"
                  f"   loss: model {r['loss_model']:.4f}  prior {r['loss_prior']:.4f}", flush=True)
        out[path] = rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
