"""The training-data options shared by ``fastvdm train teacher`` and ``fastvdm train distill``."""

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
