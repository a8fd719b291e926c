"""``fastvdm data``: write procedural scenes to disk as nerfstudio-style scene folders.

    fastvdm data make --out DIR --scenes N --seed S [--size 64] [--views 8] [--split train] [--ply] [--force]

DIR/scene_00000/ ... each hold transforms.json, images/, depth/ (16-bit PNG, millimetres) and, with
``--ply``, sparse_pc.ply; DIR/scenes.json lists the folders with their scene seeds. The scene seeds are
those of ``ClipDataset(split, seed=S)`` items 0..N-1, so ``--split test`` exports the held-out scenes.
Library: ``fastvdm.data.export.export_scenes``. Everything is written to a temporary folder beside DIR and renamed at the end: an interrupted run leaves
no half-written DIR.
"""

from __future__ import annotations

import argparse
import os

from fastvdm.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    data = subparsers.add_parser("data", help="make procedural multi-view scenes (RGB, depth, cameras) on disk")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    make = sub.add_parser("make", help="render N seeded procedural scenes into nerfstudio-style folders",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    make.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --force)")
    make.add_argument("--scenes", type=int, required=True, help="number of scenes")
    make.add_argument("--seed", type=int, default=0, help="dataset seed (default 0; ignored by --split test)")
    make.add_argument("--size", type=int, default=64, help="image width and height in pixels (default 64)")
    make.add_argument("--views", type=int, default=8, help="views per scene along a smooth camera path (default 8)")
    make.add_argument("--split", choices=("train", "test"), default="train", help="which scene seeds (default train)")
    make.add_argument("--ply", action="store_true", help="also write a point cloud (sparse_pc.ply) from the depth maps")
    make.add_argument("--force", action="store_true", help="replace a non-empty --out")
    make.add_argument("--no-progress", action="store_true", help="no progress bar")
    make.set_defaults(func=main)
    data.set_defaults(func=lambda args: data.print_help() or 2)
    return data


def main(args: argparse.Namespace) -> int:
    from fastvdm.data.export import export_scenes
    from fastvdm.outdir import staged_output_dir

    if args.scenes < 1 or args.size < 8 or args.views < 1:
        raise UserError(f"--scenes and --views must be >= 1 and --size >= 8, "
                         f"got {args.scenes}, {args.views}, {args.size}")
    with staged_output_dir(args.out, args.force) as tmp:
        export_scenes(tmp, args.scenes, seed=args.seed, size=args.size, views=args.views, split=args.split,
                      ply=args.ply, progress=not args.no_progress)
    out = os.path.abspath(args.out)
    print(f"wrote {args.scenes} scenes ({args.views} views of {args.size}x{args.size}) to {out}")
    return 0
