"""``fastvdm sample``: complete a scene folder's point-cloud renders into a video with a trained model.

    fastvdm sample --ckpt runs/teacher_tiny --scene DIR --steps 25 [--inputs 1] [--out OUT] [--force] [--seed 0]

DIR is a nerfstudio-style scene folder (``fastvdm data make`` writes them): T views evenly spaced along its
camera list (T = the frame count the model was trained on) form the camera path; ``--inputs K`` of them
(evenly spaced, the first always) are the input views, whose RGB-D (or the scene's point cloud) is rendered
into every frame. Writes (whole or not at all; OUT defaults to DIR_samples beside DIR)
OUT/frames/frame_XXXXX.png (generated), OUT/video.mp4 (or video.gif when no mp4
encoder is installed) and OUT/grid.png with three rows: condition render / generated / ground truth.
"""

from __future__ import annotations

import argparse
import os


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sample", help="generate the views of a scene folder's camera path with a checkpoint",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="run folder (latest checkpoint) or checkpoint / model file")
    p.add_argument("--scene", required=True, help="scene folder (transforms.json, images, depth or point cloud)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    p.add_argument("--sampler", choices=("ddim", "few-step"), default="ddim", help="default ddim")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance (default 1 = off)")
    p.add_argument("--inputs", type=int, default=1, help="number of input views (default 1)")
    p.add_argument("--frames", type=int, default=None, help="frames (default: the training config)")
    p.add_argument("--size", type=int, default=None, help="frame size (default: the training config)")
    p.add_argument("--out", default=None, help="output folder (default SCENE_samples, beside the scene folder; "
                   "never inside an input)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--model", default=None, help="model name in the checkpoint (default unet)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--scale", type=int, default=4, help="upscaling of the grid image (default 4)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    import torch

    from fastvdm.data.dataset import clip_from_scene
    from fastvdm.diffusion import DDIMSampler, FewStepSampler, count_nfe
    from fastvdm.media import write_clip_outputs
    from fastvdm.models import drop_condition, make_cond
    from fastvdm.outdir import check_output_dir, staged_output_dir
    from fastvdm.pipeline import check_finite_condition
    from fastvdm.train import load_model

    dest = args.out if args.out is not None else os.path.normpath(args.scene) + "_samples"
    inputs = [args.scene, args.ckpt]
    check_output_dir(dest, args.force, inputs)  # before any work
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, meta = load_model(args.ckpt, args.model, device=device)
    run_cfg = meta.get("run", {}).get("config", {})
    frames = args.frames or int(run_cfg.get("frames", 8))
    size = args.size or int(run_cfg.get("size", 32))
    clip, gt = clip_from_scene(args.scene, frames, size, args.inputs)
    batch = torch.utils.data.default_collate([clip])
    x0, cond = make_cond(batch, device)
    check_finite_condition(cond, f"scene {args.scene}: condition")
    if args.sampler == "ddim":
        sampler = DDIMSampler(num_steps=args.steps, guidance=args.guidance, uncond=drop_condition)
    else:
        sampler = FewStepSampler()
    g = torch.Generator().manual_seed(args.seed)
    net = count_nfe(model)
    out = sampler(net, cond, tuple(x0.shape), generator=g, progress=args.progress, num_steps=args.steps)[0].cpu()
    with staged_output_dir(dest, args.force, inputs) as tmp:
        paths = write_clip_outputs(tmp, out, batch["cond_rgb"][0], gt, args.scale)
    paths = [os.path.join(dest, os.path.relpath(p, tmp)) for p in paths]
    print(f"{net.calls} network evaluations; wrote {len(paths) - 2} frames, {paths[-2]} and {paths[-1]}")
    return 0
