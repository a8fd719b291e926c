"""``fastvdm eval``: score a checkpoint on the held-out split against the raw render and OpenCV inpainting.

    fastvdm eval --ckpt runs/teacher_tiny [--steps 1 25] [--clips 100] [--guidance 1] [--json OUT.json]

The test split is ``ClipDataset("test")`` (fixed seed) at the frame count and size the checkpoint was trained
on (override with --frames/--size, or pass a clip cache of it with --data). ``--steps`` takes one or more
DDIM step counts (``--sampler few-step``: the 4-step student grid, or 1/2 steps). Prints a table and writes
JSON (default CKPT_DIR/eval.json). Metrics: see :mod:`fastvdm.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import os

from fastvdm.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="PSNR/SSIM of a checkpoint on the held-out split vs. classical baselines",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="run folder (latest checkpoint) or checkpoint / model file")
    p.add_argument("--model", default=None, help="model name in the checkpoint (default unet)")
    p.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    p.add_argument("--steps", type=int, nargs="+", default=[25], help="sampler step counts (default 25)")
    p.add_argument("--sampler", choices=("ddim", "few-step"), default="ddim", help="default ddim")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (default 1 = off)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (default 0)")
    p.add_argument("--clips", type=int, default=100, help="held-out clips (default 100, the whole split)")
    p.add_argument("--batch", type=int, default=10, help="clips per batch (default 10)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: the training config)")
    p.add_argument("--size", type=int, default=None, help="frame size (default: the training config)")
    p.add_argument("--data", default=None, help="a clip cache of the test split to use instead of rendering it")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="output JSON path (default CKPT_DIR/eval.json)")
    p.add_argument("--no-baselines", action="store_true", help="skip the render and OpenCV baselines")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=main)
    return p


def _test_split(args, meta: dict):
    from fastvdm.data.dataset import CachedClips, ClipDataset

    if args.data:
        return CachedClips(args.data)
    run_cfg = meta.get("run", {}).get("config", {})
    frames = args.frames or int(run_cfg.get("frames", 8))
    size = args.size or int(run_cfg.get("size", 32))
    return ClipDataset("test", num_frames=frames, size=size)


def main(args: argparse.Namespace) -> int:
    import torch

    from fastvdm.diffusion import DDIMSampler, FewStepSampler, VSchedule
    from fastvdm.models import drop_condition
    from fastvdm.evaluate import baseline_methods, evaluate, format_table, sampler_method
    from fastvdm.train import load_model, resolve_checkpoint
    from fastvdm.outdir import check_output_file
    from fastvdm.train.checkpoint import atomic_write_text

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if any(s < 1 for s in args.steps) or args.clips < 1 or args.batch < 1:
        raise UserError(f"--steps, --clips and --batch must be >= 1, got {args.steps}, {args.clips}, {args.batch}")
    from fastvdm.models.pretrained import is_pretrained_folder

    path = args.ckpt if is_pretrained_folder(args.ckpt) else resolve_checkpoint(args.ckpt)
    out = args.json or os.path.join(args.ckpt if os.path.isdir(args.ckpt) else os.path.dirname(path), "eval.json")
    check_output_file(out, [path, args.data], "--json")  # before any work
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, meta = load_model(path, args.model, ema=not args.raw, device=device)
    dataset = _test_split(args, meta)
    sch = VSchedule()
    methods = {} if args.no_baselines else baseline_methods()
    for n in args.steps:
        if args.sampler == "ddim":
            s = DDIMSampler(sch, num_steps=n, eta=args.eta, guidance=args.guidance, uncond=drop_condition)
            name = f"model_ddim{n}" + (f"_cfg{args.guidance:g}" if args.guidance != 1 else "")
            methods[name] = sampler_method(model, s, args.seed, device=device)
        else:
            s = FewStepSampler(sch)
            methods[f"model_fewstep{n}"] = sampler_method(model, s, args.seed, num_steps=n, device=device)
    result = evaluate(dataset, methods, clips=args.clips, batch_size=args.batch, progress=not args.no_progress)
    print(format_table(result))
    report = {"checkpoint": path, "step": meta.get("step"), "ema": not args.raw, "sampler": args.sampler,
              "guidance": args.guidance, "eta": args.eta, "seed": args.seed, "device": str(device),
              "split": "test", "frames": dataset[0]["frames"].shape[1], "size": dataset[0]["frames"].shape[-1],
              "results": result}
    atomic_write_text(out, json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0
