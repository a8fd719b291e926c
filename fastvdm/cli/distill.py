"""``fastvdm train distill``: the two FVGen stages on the shared training loop (DDP, resume, EMA, checkpoints).

    fastvdm train distill --teacher runs/teacher_tiny --stage gan --steps 500 --out runs/gan --synthetic
    fastvdm train distill --teacher runs/teacher_tiny --stage kl --init runs/gan --steps 500 --out runs/kl \
        --synthetic [--weighting softened|plain] [--gan-weight 0.1] [--disc-steps 0]
    fastvdm train distill ... --stage kl --disc runs/gan        # no --init: "softened KL without GAN init"

Stage gan: the student (registered as model "unet", so ``load_model(OUT)`` returns it) starts from the
teacher's (EMA) weights; the discriminator is the frozen teacher encoder + a trainable head ("disc_head").
Stage kl: the student starts from ``--init`` (a GAN-stage run) or, without it, from the teacher; the
fake-score model ("fake") from the teacher; the discriminator head from ``--disc`` (default: ``--init``).
Data options are those of ``fastvdm train teacher`` (``--data`` or ``--synthetic``). Re-running resumes.
"""

from __future__ import annotations

import argparse
import os

from fastvdm.cli._training import add_clip_args, add_run_args, open_clips_from_args

from fastvdm.errors import UserError


def add_parser(sub) -> argparse.ArgumentParser:
    d = sub.add_parser("distill", help="distill the teacher into the 4-step student (GAN stage, then KL stage)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--teacher", required=True, help="teacher run folder or checkpoint (fastvdm train teacher)")
    d.add_argument("--stage", required=True, choices=("gan", "kl"), help="gan (stage 1) or kl (stage 2)")
    d.add_argument("--steps", type=int, required=True, help="total student updates")
    d.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl, config.json)")
    add_clip_args(d)
    d.add_argument("--init", help="kl: GAN-stage run to start the student from (default: the teacher)")
    d.add_argument("--disc", help="kl: GAN-stage run whose discriminator head to use (default: --init)")
    d.add_argument("--batch", type=int, default=2, help="global batch size (default 2)")
    d.add_argument("--lr-g", type=float, default=None, help="student learning rate (default 5e-6 gan, 3e-6 kl)")
    d.add_argument("--lr-d", type=float, default=2e-5, help="discriminator-head learning rate (default 2e-5)")
    d.add_argument("--lr-fake", type=float, default=1e-5, help="kl: fake-score learning rate (default 1e-5)")
    d.add_argument("--disc-steps", type=int, default=None,
                   help="head updates per student update (default 2 gan, 0 kl: the stage-1 head stays fixed)")
    d.add_argument("--fake-steps", type=int, default=5, help="kl: fake-score updates per student update (default 5)")
    d.add_argument("--weighting", default="softened", choices=("softened", "plain"),
                   help="kl: softened reverse KL (sigmoid(-logit) weights) or plain DMD (default softened)")
    d.add_argument("--gan-weight", type=float, default=0.0, help="kl: weight of an extra GAN term (default 0)")
    d.add_argument("--guidance", type=float, default=1.0, help="kl: teacher classifier-free guidance (default 1)")
    d.add_argument("--t-max-disc", type=float, default=999.0, help="largest noise level the discriminator judges")
    d.add_argument("--head-width", type=int, default=64, help="gan: discriminator head width (default 64)")
    add_run_args(d, ema=0.99, ckpt_every=50, keep=2, ema_what="student EMA", clip_what="max gradient norm per optimizer",
                 changed="--frames/--size/--data/--batch/--teacher/--init")
    d.set_defaults(func=main)
    return d


def main(args: argparse.Namespace) -> int:
    import torch

    from fastvdm.distill import GANConfig, KLConfig, build_stage, stage_step_fn
    from fastvdm.train import DatasetBatches, RunConfig, init_distributed, load_model, train

    if args.steps < 1 or args.batch < 1:
        raise UserError(f"--steps and --batch must be >= 1, got {args.steps}, {args.batch}")
    if args.stage == "gan" and (args.init or args.disc):
        raise UserError("--init and --disc are options of --stage kl")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from fastvdm.outdir import RUN_MARKERS, check_output_dir
    from fastvdm.pipeline import model_kind

    check_output_dir(args.out, inputs=[args.teacher, args.init, args.disc, args.data], resume=True,
                     markers=RUN_MARKERS)
    rank, world, device = init_distributed()
    torch.manual_seed(args.seed)
    teacher, teacher_meta = load_model(args.teacher, ema=True, device=device)
    if model_kind(teacher_meta) == "student":
        raise UserError(f"--teacher {args.teacher} is a distilled student, not a teacher: give a `fastvdm train "
                        "teacher` run (or the shipped fastvdm/weights/teacher_tiny)")
    t_disc = (0.0, args.t_max_disc)
    if args.stage == "gan":
        config = GANConfig(lr_g=args.lr_g or 5e-6, lr_d=args.lr_d, t_range=t_disc,
                           disc_steps=2 if args.disc_steps is None else args.disc_steps)
        # head_options: the experiment's head config (experiments/distill_disc.py sets it; not a CLI option)
        head = {"width": args.head_width, **getattr(args, "head_options", {})}
    else:
        config = KLConfig(weighting=args.weighting, lr_g=args.lr_g or 3e-6, lr_fake=args.lr_fake, lr_d=args.lr_d,
                          fake_steps=args.fake_steps, guidance=args.guidance, gan_weight=args.gan_weight,
                          disc_steps=0 if args.disc_steps is None else args.disc_steps, disc_t_range=t_disc)
        head = None
    stage, state = build_stage(args.stage, teacher, config, init=args.init, disc=args.disc, head=head,
                               ema=args.ema, device=device)
    dataset = open_clips_from_args(args)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    run = RunConfig(out_dir=args.out, steps=args.steps, seed=args.seed, ckpt_every=args.ckpt_every,
                    keep_last=args.keep, grad_clip=args.grad_clip, amp=not args.no_amp,
                    allow_config_change=args.allow_config_change, parallel="fsdp" if args.fsdp else "ddp",
                    config={"stage": f"distill-{args.stage}", **config, "world_size": world})
    if rank == 0:
        print(f"distill {args.stage}: student from {args.init or args.teacher}, {len(dataset)} clips, batch "
              f"{args.batch}, {world} process(es) on {device}{' (FSDP)' if args.fsdp and world > 1 else ''}",
              flush=True)
    logs = train(run, state, stage_step_fn(stage), DatasetBatches(dataset, args.batch, args.seed,
                                                                        workers=args.workers))
    if rank == 0 and logs:
        print(f"done: step {logs['step']}; student = model 'unet' in {os.path.join(args.out, 'checkpoints')}")
    return 0
