"""Procedural scenes written to disk as nerfstudio-style scene folders (what ``fastvdm data make`` does).

    export_scenes("DIR", count=10, seed=0, size=64, views=8, split="train")   # DIR/scene_00000/ ..., scenes.json

The scene seeds are those of ``ClipDataset(split, seed=seed)`` items 0..count-1, so ``split="test"`` exports
the held-out scenes every evaluation uses.
"""

from __future__ import annotations

import json
import os
from fastvdm.errors import UserError


def write_random_scene(folder: str, scene_seed: int, rng_seed: tuple, size: int, views: int, ply: bool) -> None:
    """Render procedural scene ``scene_seed`` along a camera path sampled with ``rng_seed`` (views poses, a field
    of view in [50, 75] degrees, size x size pixels) and write it as a scene folder (images, 16-bit depth, and
    with ``ply`` a point cloud unprojected from the depth maps)."""
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


def export_scenes(folder: str, count: int, seed: int = 0, size: int = 64, views: int = 8, split: str = "train",
                  ply: bool = False, progress: bool = False) -> list[dict]:
    """Write ``count`` procedural scenes into the existing folder ``folder`` (scene_00000, ... and scenes.json
    listing them with their scene seeds); returns that list. Raises ValueError on counts/sizes out of range."""
    from tqdm import tqdm

    from fastvdm.data.dataset import ClipDataset, one_thread

    if count < 1 or size < 8 or views < 1:
        raise UserError(f"scenes and views must be >= 1 and size >= 8, got {count}, {views}, {size}")
    ds = ClipDataset(split, seed=seed, num_clips=count)
    index = []
    for i in tqdm(range(count), desc="scenes", unit="scene", disable=not progress):
        name = f"scene_{i:05d}"
        scene_seed = ds.scene_seed(i)
        with one_thread():
            write_random_scene(os.path.join(folder, name), scene_seed, (ds.seed, i, 2), size, views, ply)
        index.append({"folder": name, "scene_seed": scene_seed})
    with open(os.path.join(folder, "scenes.json"), "w") as f:
        json.dump({"split": split, "seed": ds.seed, "size": size, "views": views, "scenes": index}, f, indent=2)
    return index


__all__ = ["write_random_scene", "export_scenes"]
