"""``fastvdm recon`` (fit a voxel-grid radiance field to a scene folder) and ``fastvdm eval-recon`` (the
held-out benchmark: inputs only vs. inputs + generated views).

    fastvdm recon SCENE_DIR --out DIR [--extra GEN_DIR ...] [--test TEST_DIR] [--iters 200] [--res 48]
    fastvdm eval-recon --out DIR [--scenes 10] [--inputs 2 3] [--gen NAME=SPEC ...] [--prepare-only]
"""

from __future__ import annotations

import argparse
import os

from fastvdm.errors import UserError

EVAL_DOC = """Held-out benchmark. Cases: test-split procedural scenes, each with a camera path of 2T - 1 poses; the
even poses are the T-frame clip a generator densifies, the odd ones the held-out test views (seen by no
condition); K input views (RGB + depth) sit at clip frames round(j (T - 1) / (K - 1)). Folders:
OUT/cases/scene_NNNNN_kK/{inputs,path,test} (inputs: what a user has; path: the clip cameras in
transforms.json, top-level "input_indices", ground-truth images read only by the oracle; test: held-out).
Every condition reconstructs the inputs (with depth) plus its generator's views (RGB only) with the same
settings; reported: held-out PSNR / SSIM, generation, reconstruction and total wall time.
"""


def _config_args(p: argparse.ArgumentParser) -> None:
    from fastvdm.recon.train import ReconConfig

    d = ReconConfig()
    p.add_argument("--iters", type=int, default=d.iters, help=f"optimization steps (default {d.iters})")
    p.add_argument("--res", type=int, default=d.max_res,
                   help=f"grid points along the longest side (default {d.max_res})")
    p.add_argument("--rays", type=int, default=d.batch_rays, help=f"rays per step (default {d.batch_rays})")
    p.add_argument("--depth-weight", type=float, default=d.depth_weight, help="weight of the depth loss")
    p.add_argument("--no-depth-init", action="store_true", help="start from an empty grid (not from the depth points)")
    p.add_argument("--threads", type=int, default=d.threads, help=f"torch threads (default {d.threads})")
    p.add_argument("--seed", type=int, default=d.seed, help="ray sampling seed")


def _config(args):
    from fastvdm.recon.train import ReconConfig

    if args.iters < 1 or args.res < 4 or args.rays < 1:
        raise UserError(f"--iters and --rays must be >= 1 and --res >= 4, got {args.iters}, {args.rays}, {args.res}")
    return ReconConfig(max_res=args.res, iters=args.iters, batch_rays=args.rays, depth_weight=args.depth_weight,
                       init_from_depth=not args.no_depth_init, threads=args.threads, seed=args.seed)


def add_parser(subparsers):
    rec = subparsers.add_parser(
        "recon", help="reconstruct a scene folder (transforms.json) as a voxel-grid radiance field on the CPU",
        description="Fit a voxel-grid radiance field (density + RGB grid, volume rendering) to the views of a "
        "nerfstudio-style scene folder (depth maps, where present, supervise and initialize it). Writes "
        "DIR/grid.safetensors, DIR/metrics.json and DIR/renders/ (renders of the training views, and of "
        "--test views).")
    rec.add_argument("scene", help="scene folder with transforms.json (its depth maps are used)")
    rec.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --force)")
    rec.add_argument("--force", action="store_true", help="replace a non-empty --out")
    rec.add_argument("--extra", nargs="*", default=[], help="more scene folders (e.g. generated views; RGB only)")
    rec.add_argument("--test", default=None, help="scene folder of held-out views to report PSNR/SSIM on")
    _config_args(rec)
    rec.add_argument("--progress", action="store_true", help="show a progress bar")
    rec.set_defaults(func=main)

    ev = subparsers.add_parser(
        "eval-recon", help="held-out benchmark: reconstruction from input views vs. input + generated views",
        description=EVAL_DOC + "\nGenerators (--gen NAME=SPEC; SPEC: inputs, warp, oracle, folder:PATTERN with {case}, "
        "py:MODULE:FUNCTION). Default: inputs=inputs warp=warp oracle=oracle. Results: OUT/results.json "
        "(written after every case; an existing one is resumed) and OUT/results.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("--out", required=True, help="benchmark folder (cases/ and results)")
    ev.add_argument("--scenes", type=int, default=10, help="held-out scenes (default 10)")
    ev.add_argument("--first", type=int, default=0, help="first test-split scene index (default 0)")
    ev.add_argument("--inputs", type=int, nargs="+", default=[2, 3], help="input view counts (default 2 3)")
    ev.add_argument("--size", type=int, default=64, help="image size in pixels (default 64)")
    ev.add_argument("--frames", type=int, default=16, help="clip frames T of the generated path (default 16)")
    ev.add_argument("--gen", nargs="*", default=None, help="conditions as NAME=SPEC")
    ev.add_argument("--prepare-only", action="store_true", help="only write the cases (for densify to run on)")
    _config_args(ev)
    ev.set_defaults(func=eval_main)
    return None


def main(args: argparse.Namespace) -> int:
    from fastvdm.outdir import check_output_dir, staged_output_dir
    from fastvdm.recon.train import reconstruct_folder

    inputs = [args.scene, args.test, *args.extra]
    check_output_dir(args.out, args.force, inputs)  # before any work
    cfg = _config(args)
    with staged_output_dir(args.out, args.force, inputs) as tmp:
        metrics = reconstruct_folder(args.scene, tmp, cfg, extra=args.extra, test=args.test, progress=args.progress)
    line = f"recon: {metrics['train_views']} views, {metrics['seconds']:.1f} s, train PSNR " \
           f"{metrics['train_psnr_mean']:.2f} dB"
    if args.test:
        line += f", test PSNR {metrics['test']['psnr_mean']:.2f} dB, SSIM {metrics['test']['ssim_mean']:.3f}"
    print(line + f" -> {args.out}")
    return 0


def eval_main(args: argparse.Namespace) -> int:
    from fastvdm.recon.evaluate import prepare_cases, run_benchmark
    from fastvdm.recon.generators import make_generator

    from fastvdm.outdir import check_output_dir

    # a benchmark folder is resumed, never replaced; a folder of other files is refused
    check_output_dir(args.out, resume=True, markers=("cases", "results.json", "results.md"))
    cfg = _config(args)
    specs = args.gen if args.gen else ["inputs=inputs", "warp=warp", "oracle=oracle"]
    conds = []
    for s in specs:
        name, eq, spec = s.partition("=")
        if not eq or not name:
            raise UserError(f"--gen {s!r}: expected NAME=SPEC")
        conds.append((name, make_generator(spec), spec))
    cases = prepare_cases(os.path.join(args.out, "cases"), range(args.first, args.first + args.scenes), args.inputs,
                          args.size, args.frames)
    print(f"eval-recon: {len(cases)} cases in {os.path.join(args.out, 'cases')}")
    if args.prepare_only:
        return 0
    print(run_benchmark(args.out, cases, conds, cfg))
    return 0
