"""``fastvdm densify``: turn a sparse posed capture into a dense one, at the capture's own resolution.

    fastvdm densify SCENE_DIR --out OUT_DIR [--cameras FILE] [--views-per-gap N] [--ckpt tiny] [--steps 4] [--force]

SCENE_DIR is a nerfstudio folder (``transforms.json`` + photos; per-frame depth ``depth_file_path`` and/or a point
cloud ``ply_file_path`` if you have them) or a COLMAP model (``sparse/0`` with ``cameras``/``images``/``points3D``,
text or binary, photos in ``images/``). Every frame with a photo is an input. Geometry: the depth maps, the point
cloud, or else two-view stereo between the photos (``--stereo``). Target cameras (generated, never used as inputs):
``--cameras FILE`` (a transforms.json whose frames need no images), else the frames of SCENE_DIR without a
``file_path``, else ``--views-per-gap`` cameras interpolated between consecutive inputs.

Each target is rendered from the inputs' geometry at its full resolution (z-buffered surfel warp); the pixels the
inputs see are kept, and the student generates only the holes, at a working resolution where the holes have the
pixel scale it was trained on (at most ``--max-pixels`` pixels), upsampled into the holes.

OUT_DIR receives the dense capture as a nerfstudio folder, ready for NeRF / Gaussian-splatting trainers: every frame
at full resolution in ``images/`` with its camera in ``transforms.json`` (per frame ``fastvdm_input``: an input
photo; ``fastvdm_seen_fraction``: the part of a generated view the inputs saw), and ``sparse_pc.ply``
(``ply_file_path``): the point cloud the warps used, for splatting initialization. Top-level ``generation_seconds``
and ``nfe`` record the cost. A non-empty OUT_DIR is refused unless ``--force``; everything is written to a
temporary folder first, so an error leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os

from fastvdm.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("densify", help="densify a sparse posed capture (nerfstudio or COLMAP) with the student",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scene", metavar="SCENE_DIR", help="capture folder (transforms.json + photos, or a COLMAP model)")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --force)")
    p.add_argument("--cameras", default=None, help="a transforms.json with the target cameras to generate")
    p.add_argument("--views-per-gap", type=int, default=None,
                   help="without target cameras: new views between consecutive inputs (default: clip length - 2)")
    p.add_argument("--ckpt", default="tiny", help="shipped student name, run folder or checkpoint (default tiny)")
    p.add_argument("--steps", type=int, default=4, help="student steps (default 4)")
    p.add_argument("--stereo", choices=("auto", "always", "never"), default="auto",
                   help="two-view stereo depth for photos without depth: auto (when there is no point cloud either)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest working resolution of the model, in pixels per frame (default 128*128)")
    p.add_argument("--feather", type=float, default=0.0,
                   help="also mix seen pixels within this many pixels of a hole toward the model (default 0)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)
    return p


def densify(args) -> dict:
    from fastvdm.densify import DEFAULT_MAX_PIXELS
    from fastvdm.pipeline import densify_scene
    from fastvdm.outdir import check_output_dir

    inputs = [args.scene, args.cameras, args.ckpt if os.path.exists(args.ckpt) else None]
    check_output_dir(args.out, args.force, inputs)  # before any work: refused outputs fail in a second
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    if max_pixels < 64:
        raise UserError(f"--max-pixels must be >= 64, got {max_pixels}")
    if args.views_per_gap is not None and args.views_per_gap < 1:
        raise UserError(f"--views-per-gap must be >= 1, got {args.views_per_gap}")
    res = densify_scene(args.scene, args.out, args.cameras, model=args.ckpt, views_per_gap=args.views_per_gap,
                        seed=args.seed, num_steps=args.steps, stereo=args.stereo, max_pixels=max_pixels,
                        feather=args.feather, force=args.force, progress=not args.no_progress,
                        inputs=[i for i in inputs if i])
    sizes = sorted({f"{v.camera.width}x{v.camera.height}" for v in res.views})
    return {"out": os.path.abspath(args.out), "frames": len(res.views), "inputs": sum(res.is_input),
            "clips": res.clips, "seconds": res.seconds, "nfe": res.nfe, "sizes": sizes,
            "working": sorted({f"{s[1]}x{s[0]}" for s in res.working_sizes if s})}


def main(args: argparse.Namespace) -> int:
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    r = densify(args)
    print(f"wrote {r['frames']} views ({r['inputs']} inputs, {r['frames'] - r['inputs']} generated, "
          f"{', '.join(r['sizes'])}) to {r['out']}: {r['clips']} clip(s) (model at {', '.join(r['working']) or '-'}), "
          f"{r['nfe']} network evaluations, {r['seconds']:.1f} s")
    return 0
