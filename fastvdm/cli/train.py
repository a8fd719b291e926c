"""``fastvdm train``: train the teacher (and, from the distillation module, the student).

    fastvdm train teacher --synthetic --preset tiny --steps 2000 --out runs/teacher_tiny \
        [--frames 8 --size 32 --clips 1500 --cache runs/cache/train.safetensors] [--batch 4 --lr 2e-4]
    fastvdm train teacher --data CLIPS.safetensors|DIR --preset tiny --steps N --out DIR
    torchrun --nproc-per-node 2 -m fastvdm train teacher ...     # data parallel (gloo on CPU, nccl on GPU)
    torchrun --nproc-per-node 8 -m fastvdm train teacher --preset base --fsdp ...   # parameters sharded (FSDP2)

``--data`` takes a clip cache written by ``fastvdm.data.dataset.cache_clips`` (or a folder of them; both read
by ``fastvdm.data.open_clips``);
``--synthetic`` renders procedural clips (ClipDataset, train split) on the fly or, with ``--cache``, once into
that file first. Re-running the same command resumes from the latest checkpoint in ``--out``.
"""

from __future__ import annotations

import argparse
import os

from fastvdm.cli._training import add_clip_args, add_run_args, open_clips_from_args

from fastvdm.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    train = subparsers.add_parser("train", help="train the teacher (or distill the student)")
    sub = train.add_subparsers(dest="train_command", metavar="STAGE")
    t = sub.add_parser("teacher", help="train the multi-step video diffusion teacher",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_clip_args(t)
    t.add_argument("--preset", default="tiny", choices=("tiny", "base"), help="model preset (default tiny)")
    t.add_argument("--denoiser", default="posterior", choices=("posterior", "v"),
                   help="denoiser wrapping the network (fastvdm.diffusion.denoisers): posterior = EDM-style "
                        "preconditioning around the hole-filled render (default); v = the network predicts v")
    t.add_argument("--weighting", default="output", choices=("output", "edm", "v"),
                   help="loss weighting over noise levels (fastvdm.train.teacher.WEIGHTINGS; default output)")
    t.add_argument("--init", help="start from this model's weights (run folder or model file; EMA weights), "
                                  "e.g. fastvdm/weights/teacher_tiny; ignored when resuming")
    t.add_argument("--steps", type=int, required=True, help="total optimization steps")
    t.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl, config.json)")
    t.add_argument("--batch", type=int, default=4, help="global batch size (default 4)")
    t.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate (default 2e-4)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    t.add_argument("--warmup", type=int, default=100, help="linear LR warmup steps (default 100)")
    t.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="LR after the warmup: constant, or cosine decay to 0 at --steps (default constant)")
    t.add_argument("--p-uncond", type=float, default=0.1, help="condition dropout probability (default 0.1)")
    add_run_args(t, ema=0.999, ckpt_every=100, keep=3, changed="--frames/--size/--preset/--data/--batch")
    t.set_defaults(func=main_teacher)
    from fastvdm.cli.distill import add_parser as add_distill_parser  # `fastvdm train distill` (issue 8)

    add_distill_parser(sub)
    train.set_defaults(func=lambda args: train.print_help() or 2)
    return train


def main_teacher(args: argparse.Namespace) -> int:
    import torch

    from fastvdm.diffusion.denoisers import preset_denoiser
    from fastvdm.train import DatasetBatches, RunConfig, TrainState, init_distributed, load_model, train
    from fastvdm.train.teacher import TeacherStep

    if args.steps < 1 or args.batch < 1:
        raise UserError(f"--steps and --batch must be >= 1, got {args.steps}, {args.batch}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from fastvdm.outdir import RUN_MARKERS, check_output_dir

    # a run folder is resumed, never replaced; a folder of other files is refused
    check_output_dir(args.out, inputs=[args.data], resume=True, markers=RUN_MARKERS)
    rank, world, device = init_distributed()
    dataset = open_clips_from_args(args)
    torch.manual_seed(args.seed)
    net = preset_denoiser(args.preset, args.denoiser)
    if args.init:  # the checkpoint's own denoiser settings and weights; a resume overwrites them anyway
        net, _ = load_model(args.init, ema=True)
        net.train().requires_grad_(True)
    state = TrainState()
    model = state.add_model("unet", net.to(device), ema_decay=args.ema)
    state.add_optimizer("unet", torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay))
    run = RunConfig(out_dir=args.out, steps=args.steps, seed=args.seed, ckpt_every=args.ckpt_every,
                    keep_last=args.keep, grad_clip=args.grad_clip, warmup_steps=args.warmup,
                    lr_schedule=args.lr_schedule, amp=not args.no_amp, allow_config_change=args.allow_config_change,
                    parallel="fsdp" if args.fsdp else "ddp",
                    config={"stage": "teacher", "preset": args.preset, "batch": args.batch, "lr": args.lr,
                            "p_uncond": args.p_uncond, "data": args.data or "synthetic", "lr_schedule": args.lr_schedule,
                            "denoiser": args.denoiser, "weighting": args.weighting, "init": args.init,
                            "frames": args.frames, "size": args.size, "world_size": world})
    if rank == 0:
        n = sum(p.numel() for p in model.parameters())
        print(f"teacher {args.preset}: {n / 1e6:.2f}M parameters, {len(dataset)} clips, batch {args.batch}, "
              f"{world} process(es) on {device}{' (FSDP)' if args.fsdp and world > 1 else ''}", flush=True)
    batches = DatasetBatches(dataset, args.batch, args.seed, workers=args.workers)
    logs = train(run, state, TeacherStep(p_uncond=args.p_uncond, weighting=args.weighting), batches)
    if rank == 0 and logs:
        print(f"done: step {logs['step']} loss {logs['loss']:.4f}; checkpoints in {os.path.join(args.out, 'checkpoints')}")
    return 0


def main(args: argparse.Namespace) -> int:
    return args.func(args)
