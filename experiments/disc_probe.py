"""How separable are the student's clips from real ones? A probe of what a GAN discriminator could learn.

    python -m experiments.disc_probe --teacher runs/teacher_tiny --data runs/cache/test_t8_s32_n100.safetensors \
        --clips 64 [--t 0 20 100] [--student RUN] [--json OUT.json]

For each held-out clip: the real target frames x0 and the student's 4-step sample (teacher weights on the
few-step grid = the GAN stage's starting point; or ``--student RUN``, a distillation run; one sample per clip,
seeded). Two families of per-clip scores,
each turned into an AUC of "real vs generated" (0.5 = inseparable; 1.0 or 0.0 = perfectly separable by a
threshold on that one number):
- pixel statistics over the render's holes on target frames (where the two differ): variance, mean absolute
  Laplacian (high-frequency energy), mean absolute horizontal gradient;
- the frozen teacher encoder's pooled middle-block features at noise level t (what the default discriminator
  head sees): the best single-channel AUC over its channels, and a linear probe (least squares on half the
  clips, AUC on the other half).
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from fastvdm.data.dataset import CachedClips
from fastvdm.diffusion import FewStepSampler, VSchedule
from fastvdm.models import make_cond
from fastvdm.train import load_model

from experiments.disc_heads import hole_map


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(score of a real clip > score of a generated one), ties counted half (Mann-Whitney)."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def hole_stats(x: torch.Tensor, holes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-clip statistics (B,) of x (B, 3, T, H, W) over hole pixels (holes (B, 1, T, H, W) in {0, 1})."""
    B, C, T, H, W = x.shape
    frames = x.transpose(1, 2).reshape(B * T, C, H, W)
    lap_k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).expand(C, 1, 3, 3)
    lap = F.conv2d(F.pad(frames, (1, 1, 1, 1), mode="replicate"), lap_k, groups=C).abs()
    gx = (frames[..., 1:] - frames[..., :-1]).abs()
    lap = lap.reshape(B, T, C, H, W).transpose(1, 2)
    gx = F.pad(gx, (0, 1)).reshape(B, T, C, H, W).transpose(1, 2)
    n = (holes.sum((1, 2, 3, 4)) * C).clamp_min(1)
    mean = (x * holes).sum((1, 2, 3, 4)) / n
    var = (((x - mean.view(B, 1, 1, 1, 1)) ** 2) * holes).sum((1, 2, 3, 4)) / n
    return {"hole variance": var, "hole |laplacian|": (lap * holes).sum((1, 2, 3, 4)) / n,
            "hole |d/dx|": (gx * holes).sum((1, 2, 3, 4)) / n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", help="distillation run to sample from (default: the teacher's weights)")
    p.add_argument("--data", required=True, help="a clip cache (cache_clips)")
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--t", type=float, nargs="+", default=[0.0, 20.0, 100.0], help="encoder noise levels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, _ = load_model(args.teacher, ema=True)
    model.eval().requires_grad_(False)
    data = CachedClips(args.data)
    n = min(args.clips, len(data))
    items = [data[i] for i in range(n)]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("frames", "cond_rgb", "cond_mask", "plucker", "is_input")}
    x0, cond = make_cond(batch)
    sampler, schedule = FewStepSampler(VSchedule()), VSchedule()
    student = model
    if args.student:
        student, _ = load_model(args.student, name="unet", ema=True)
        student.eval().requires_grad_(False)
    with torch.no_grad():
        fake = torch.cat([sampler(student, {k: v[i:i + 8] for k, v in cond.items()}, tuple(x0[i:i + 8].shape))
                          for i in range(0, n, 8)])
    holes = hole_map(cond, x0)
    results = {"student": args.student or args.teacher, "clips": n, "hole fraction": float(holes.mean()), "pixel": {}, "encoder": {}}
    real_s, fake_s = hole_stats(x0, holes), hole_stats(fake, holes)
    for name in real_s:
        results["pixel"][name] = {"auc": auc(real_s[name], fake_s[name]), "real": float(real_s[name].mean()),
                                  "generated": float(fake_s[name].mean())}
    half = n // 2
    for t in args.t:
        tt = torch.full((n,), t)
        noise = torch.randn_like(x0)
        with torch.no_grad():
            fr = torch.cat([model.encode(schedule.add_noise(x0[i:i + 8], noise[i:i + 8], tt[i:i + 8]), tt[i:i + 8],
                                         {k: v[i:i + 8] for k, v in cond.items()}).mean((2, 3, 4)) for i in range(0, n, 8)])
            ff = torch.cat([model.encode(schedule.add_noise(fake[i:i + 8], noise[i:i + 8], tt[i:i + 8]), tt[i:i + 8],
                                         {k: v[i:i + 8] for k, v in cond.items()}).mean((2, 3, 4)) for i in range(0, n, 8)])
        per_channel = [auc(fr[:, c], ff[:, c]) for c in range(fr.shape[1])]
        best = max(per_channel, key=lambda a: abs(a - 0.5))
        # linear probe: fit on the first half of the clips (real = +1, generated = -1), score the second half
        X = torch.cat([fr[:half], ff[:half]]).double()
        X = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
        y = torch.cat([torch.ones(half), -torch.ones(half)]).double()
        w = torch.linalg.lstsq(X, y[:, None], driver="gelsd").solution[:, 0]
        score = lambda f: torch.cat([f[half:].double(), torch.ones(n - half, 1, dtype=torch.float64)], 1) @ w  # noqa: E731
        results["encoder"][str(t)] = {"best channel auc": best, "linear probe auc (held-out half)": auc(score(fr), score(ff)),
                                      "mean |feature difference| / feature std": float((fr - ff).abs().mean() / fr.std())}
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
