"""Teacher (DDIM, 50 steps) vs distilled students (1/2/4 steps) on the held-out split, in one process.

    python bench/distill_eval.py --teacher runs/teacher_tiny --student gan=runs/distill_gan \
        --student kl=runs/distill_kl [--clips 20 --batch 10 --threads 1 --json OUT.json]

Every method sees the same clips in the same order (one run, one machine), so wall times are comparable:
the report gives PSNR / SSIM (all target pixels and holes only), seconds and network evaluations per clip,
and each student's time as a fraction of the teacher's 50-step time.
"""

from __future__ import annotations

import argparse
import json

import torch

from fastvdm.data.dataset import CachedClips, ClipDataset
from fastvdm.diffusion import DDIMSampler, FewStepSampler, VSchedule
from fastvdm.evaluate import evaluate, format_table, sampler_method
from fastvdm.train import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="teacher run folder or checkpoint")
    p.add_argument("--student", action="append", default=[], help="NAME=RUN (repeatable): a distillation run")
    p.add_argument("--teacher-steps", type=int, default=50)
    p.add_argument("--student-steps", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--data", help="a clip cache of the test split (instead of rendering it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dataset = CachedClips(args.data) if args.data else ClipDataset("test", num_frames=args.frames, size=args.size)
    sch = VSchedule()
    teacher, meta = load_model(args.teacher, ema=True)
    methods = {f"teacher_ddim{args.teacher_steps}": sampler_method(teacher, DDIMSampler(sch, args.teacher_steps),
                                                                     args.seed)}
    steps = {}
    for spec in args.student:
        name, run = spec.split("=", 1)
        student, smeta = load_model(run, name="unet", ema=True)
        steps[name] = smeta.get("step")
        for n in args.student_steps:
            methods[f"{name}_{n}step"] = sampler_method(student, FewStepSampler(sch), args.seed, num_steps=n)
    result = evaluate(dataset, methods, clips=args.clips, batch_size=args.batch)
    print(format_table(result))
    t_teacher = result[f"teacher_ddim{args.teacher_steps}"]["sec_per_clip"]
    for name, r in result.items():
        r["time_vs_teacher"] = r["sec_per_clip"] / t_teacher
        print(f"{name}: {100 * r['time_vs_teacher']:.2f}% of the teacher's time")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "teacher_step": meta.get("step"), "student_steps": steps,
                       "results": result}, f, indent=2)


if __name__ == "__main__":
    main()
