"""The options shared by ``fastvdm train teacher`` and ``fastvdm train distill``: training data and the run."""

from __future__ import annotations

import argparse


def add_clip_args(p: argparse.ArgumentParser) -> None:
    """--data | --synthetic (required, exclusive), then --frames, --size, --clips, --cache for --synthetic."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="clip cache file (cache_clips) or a folder of *.safetensors caches")
    src.add_argument("--synthetic", action="store_true", help="procedural clips (ClipDataset train split)")
    p.add_argument("--frames", type=int, default=8, help="--synthetic: frames per clip (default 8)")
    p.add_argument("--size", type=int, default=32, help="--synthetic: frame size in pixels (default 32)")
    p.add_argument("--clips", type=int, default=None, help="--synthetic: number of training clips")
    p.add_argument("--cache", help="--synthetic: cache the clips first (reused if present): a .safetensors file, or a "
                   "folder of shards (1024 clips each; every torchrun rank writes its share, all read them "
                   "memory-mapped: for caches larger than RAM)")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes loading each rank's batches ahead (default 0: in the loop)")


def open_clips_from_args(args: argparse.Namespace):
    """:func:`fastvdm.data.open_clips` of the parsed options."""
    from fastvdm.data import open_clips

    return open_clips(args.data, frames=args.frames, size=args.size, clips=args.clips, seed=args.seed,
                      cache=args.cache)


def add_run_args(p: argparse.ArgumentParser, ema: float, ckpt_every: int, keep: int, ema_what: str = "EMA",
                 clip_what: str = "max gradient norm", changed: str = "--frames/--size/--data/--batch") -> None:
    """--ema, --grad-clip, --seed, --ckpt-every, --keep, --threads, --no-amp, --allow-config-change, --fsdp (the
    training loop's options; defaults per command)."""
    p.add_argument("--ema", type=float, default=ema, help=f"{ema_what} decay (default {ema:g})")
    p.add_argument("--grad-clip", type=float, default=1.0, help=f"{clip_what} (default 1)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    p.add_argument("--ckpt-every", type=int, default=ckpt_every, help=f"checkpoint every N steps (default {ckpt_every})")
    p.add_argument("--keep", type=int, default=keep, help=f"checkpoints kept (default {keep}; 0 = all)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--allow-config-change", action="store_true",
                   help=f"resume a run folder even though {changed} differ from it")
    p.add_argument("--fsdp", action="store_true",
                   help="under torchrun: shard the trained models, their EMA and optimizer states over the ranks "
                        "(FSDP2 fully_shard) instead of replicating them (DDP); checkpoints stay full, so a run "
                        "resumes with or without it")
