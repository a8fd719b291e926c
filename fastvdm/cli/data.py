"""``fastvdm data``: write procedural scenes to disk as nerfstudio-style scene folders.

    fastvdm data make --out DIR --scenes N --seed S [--size 64] [--views 8] [--split train] [--ply] [--force]

DIR/scene_00000/ ... each hold transforms.json, images/, depth/ (16-bit PNG, millimetres) and, with
``--ply``, sparse_pc.ply; DIR/scenes.json lists the folders with their scene seeds. The scene seeds are
those of ``ClipDataset(split, seed=S)`` items 0..N-1, so ``--split test`` exports the held-out scenes.
Everything is written to a temporary folder beside DIR and renamed at the end: an interrupted run leaves
no half-written DIR.
"""

from __future__ import annotations

import argparse
import json
import os


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


def make_scene(folder: str, scene_seed: int, rng_seed: tuple, size: int, views: int, ply: bool) -> None:
    """Render one procedural scene along a sampled camera path and write it as a scene folder."""
    import numpy as np

    from fastvdm.data.cameras import Camera
    from fastvdm.data.scene_io import View, write_scene
    from fastvdm.data.scenes import Scene
    from fastvdm.data.warp import unproject

    rng = np.random.default_rng(list(rng_seed))
    scene = Scene.random(scene_seed)
    poses = scene.sample_poses(rng, views)
    fov = rng.uniform(50.0, 75.0)
    cams = [Camera.from_fov(p, fov, size, size) for p in poses]
    rgb, depth = scene.render(cams)
    points = colors = None
    if ply:
        points, colors = unproject(rgb, depth, cams)
    write_scene(folder, [View(c, rgb[i], depth[i]) for i, c in enumerate(cams)], points, colors)


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fastvdm.data.dataset import ClipDataset, one_thread
    from fastvdm.outdir import staged_output_dir

    if args.scenes < 1 or args.size < 8 or args.views < 1:
        raise ValueError(f"--scenes and --views must be >= 1 and --size >= 8, "
                         f"got {args.scenes}, {args.views}, {args.size}")
    ds = ClipDataset(args.split, seed=args.seed, num_clips=args.scenes)
    with staged_output_dir(args.out, args.force) as tmp:
        index = []
        for i in tqdm(range(args.scenes), desc="scenes", unit="scene", disable=args.no_progress):
            name = f"scene_{i:05d}"
            seed = ds.scene_seed(i)
            with one_thread():
                make_scene(os.path.join(tmp, name), seed, (ds.seed, i, 2), args.size, args.views, args.ply)
            index.append({"folder": name, "scene_seed": seed})
        with open(os.path.join(tmp, "scenes.json"), "w") as f:
            json.dump({"split": args.split, "seed": ds.seed, "size": args.size, "views": args.views,
                       "scenes": index}, f, indent=2)
    out = os.path.abspath(args.out)
    print(f"wrote {args.scenes} scenes ({args.views} views of {args.size}x{args.size}) to {out}")
    return 0
