"""``fastvdm export``: a training run (or checkpoint) as a pretrained folder that ``from_pretrained`` loads.

    fastvdm export runs/kl --out my_student [--kind student] [--raw] [--force]

Writes OUT/config.json (architecture, parameterization, schedule, kind, frames, size, sampler, provenance) and
OUT/model.safetensors (the EMA weights unless ``--raw``), whole or not at all; ``--kind`` defaults to what the
run's training stage says (teacher, or student for a distillation run).
"""

from __future__ import annotations

import argparse
import os

from fastvdm.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="write a training run as a pretrained folder (config.json + weights)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", help="run folder (latest checkpoint) or checkpoint / exported model file")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --force)")
    p.add_argument("--kind", choices=("student", "teacher"), default=None,
                   help="what the model is (default: from the run's training stage)")
    p.add_argument("--model", default=None, help="model name in the checkpoint (default unet)")
    p.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from fastvdm.outdir import check_output_dir, staged_output_dir
    from fastvdm.pipeline import export_pretrained, model_kind
    from fastvdm.train import read_checkpoint, resolve_checkpoint

    path = resolve_checkpoint(args.ckpt)
    check_output_dir(args.out, args.force, [args.ckpt])  # before any work
    kind = args.kind or model_kind(read_checkpoint(path)[1])
    if kind is None:
        raise UserError(f"{path}: its training stage does not say whether it is a student or a teacher; "
                        "pass --kind")
    with staged_output_dir(args.out, args.force, [args.ckpt]) as tmp:
        export_pretrained(path, tmp, kind, name=args.model, ema=not args.raw, overwrite=True,
                          provenance={"exported_by": "fastvdm export"})
    print(f"wrote {kind} {os.path.abspath(args.out)} (config.json, model.safetensors) from {path}")
    return 0
