"""FVGen ablation on the 2-D toy (ring of 8 Gaussians, MLP v-prediction teacher): sliced Wasserstein distance
(SWD, lower is better) of the 1/2/4-step students to the data.

    python experiments/distill_toy2d.py [--gan-steps 600 --kl-steps 300 --lr-kl 3e-6 --fake-steps 10] [--markdown]

Rows: the teacher (50-step DDIM), the undistilled student (the teacher's weights in the few-step sampler),
GAN stage only, GAN + plain DMD, GAN + softened KL, GAN + softened KL + GAN term, softened KL without GAN init
(student from the teacher, discriminator from the GAN stage). Each KL variant starts from the same
GAN-stage student and discriminator and runs with the same seed.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch
from torch import nn

from fastvdm.diffusion import DDIMSampler, FewStepSampler, VSchedule
from fastvdm.distill.gan_stage import GANConfig, GANStage
from fastvdm.distill.kl_stage import KLConfig, KLStage
from fastvdm.models.discriminator import Discriminator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from toys import ring_of_gaussians, ring_swd, train_ring_teacher  # noqa: E402  (tests/toys.py)


def swds(model, sch) -> list[float]:
    out = []
    for n in (1, 2, 4):
        sampler = FewStepSampler(sch)
        out.append(ring_swd(lambda shape, g: sampler(model, {}, shape, generator=g, num_steps=n)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher-steps", type=int, default=1500)
    p.add_argument("--gan-steps", type=int, default=600)
    p.add_argument("--lr-gan", type=float, default=1e-5)
    p.add_argument("--lr-d", type=float, default=1e-3)
    p.add_argument("--disc-steps", type=int, default=2)
    p.add_argument("--t-max-disc", type=float, default=500.0)
    p.add_argument("--kl-steps", type=int, default=300)
    p.add_argument("--lr-kl", type=float, default=3e-6)
    p.add_argument("--lr-fake", type=float, default=1e-3)
    p.add_argument("--fake-steps", type=int, default=10)
    p.add_argument("--kl-disc-steps", type=int, default=0, help="head updates per student update in the KL stage")
    p.add_argument("--gan-weight", type=float, default=0.1, help="weight of the extra GAN term (its row)")
    p.add_argument("--variants", nargs="+", default=["dmd", "skl", "skl_gan", "skl_noinit"],
                   help="KL-stage rows to run: dmd, skl, skl_gan, skl_noinit (default all)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    sch = VSchedule()
    t0 = time.time()
    teacher = train_ring_teacher(sch, args.teacher_steps, seed=args.seed).requires_grad_(False)
    rows = []
    ddim = DDIMSampler(sch, num_steps=50)
    rows.append(("teacher, 50-step DDIM", [None, None, ring_swd(lambda s, g: ddim(teacher, {}, s, generator=g))], 0.0))
    rows.append(("undistilled (teacher weights, few-step sampler)", swds(teacher, sch), 0.0))
    sampler = FewStepSampler(sch)

    def batches(seed):
        g = torch.Generator().manual_seed(seed)
        while True:
            yield ring_of_gaussians(args.batch, generator=g)

    torch.manual_seed(args.seed)
    student = copy.deepcopy(teacher).requires_grad_(True)
    head = nn.Sequential(nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 1))
    disc = Discriminator(teacher, head)
    gcfg = GANConfig(lr_g=args.lr_gan, lr_d=args.lr_d, disc_steps=args.disc_steps, t_range=(0.0, args.t_max_disc))
    stage = GANStage(student, disc, sampler, gcfg)
    t1 = time.time()
    data = batches(args.seed + 1)
    for _ in range(args.gan_steps):
        stage.step(next(data))
    rows.append((f"GAN stage only ({args.gan_steps} steps)", swds(student, sch), time.time() - t1))
    gan_student, gan_head = copy.deepcopy(student.state_dict()), copy.deepcopy(head.state_dict())

    variants = {
        "dmd": ("GAN + plain DMD", True, dict(weighting="plain")),
        "skl": ("GAN + softened KL", True, dict(weighting="softened")),
        "skl_gan": (f"GAN + softened KL + GAN term ({args.gan_weight})", True,
                    dict(weighting="softened", gan_weight=args.gan_weight, disc_steps=max(1, args.kl_disc_steps))),
        "skl_noinit": ("softened KL without GAN init", False, dict(weighting="softened")),
    }
    for name, gan_init, kw in (variants[v] for v in args.variants):
        torch.manual_seed(args.seed + 2)
        s = copy.deepcopy(teacher).requires_grad_(True)
        if gan_init:
            s.load_state_dict(gan_student)
        h = copy.deepcopy(head)
        h.load_state_dict(gan_head)
        d = Discriminator(teacher, h)
        fake = copy.deepcopy(teacher).requires_grad_(True)
        kw.setdefault("disc_steps", args.kl_disc_steps)
        cfg = KLConfig(lr_g=args.lr_kl, lr_fake=args.lr_fake, fake_steps=args.fake_steps, lr_d=args.lr_d,
                       disc_t_range=(0.0, args.t_max_disc), **kw)
        kl = KLStage(s, teacher, fake, sampler, d, cfg)
        data = batches(args.seed + 3)
        t1 = time.time()
        for _ in range(args.kl_steps):
            logs = kl.step(next(data))
        rows.append((f"{name} ({args.kl_steps} KL steps)", swds(s, sch), time.time() - t1))
        print(f"# {name}: last logs {({k: round(v, 4) for k, v in logs.items()})}", flush=True)

    print(f"\n{vars(args)}; total {time.time() - t0:.0f} s\n")
    print("| model | SWD 1-step | SWD 2-step | SWD 4-step | train s |")
    print("|---|---|---|---|---|")
    for name, v, sec in rows:
        cells = " | ".join("-" if x is None else f"{x:.4f}" for x in v)
        print(f"| {name} | {cells} | {sec:.0f} |")


if __name__ == "__main__":
    main()
