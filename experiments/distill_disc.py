"""``fastvdm train distill`` with the experimental discriminator heads of :mod:`experiments.disc_heads`.

    python -m experiments.distill_disc [--multiscale] [--holes] [--pixels] -- TRAIN-DISTILL-OPTIONS...

e.g. ``python -m experiments.distill_disc --multiscale --holes --pixels -- --teacher runs/teacher_tiny --stage gan
--steps 300 --out runs/gan_px --data CACHE`` (run from the source checkout). Every other option is that of
``fastvdm train distill``; a KL stage from such a GAN run also goes through this script (it registers the head
kind its ``--init`` / ``--disc`` run needs).
"""

from __future__ import annotations

import argparse
import sys

import experiments.disc_heads  # noqa: F401  (registers the head kind "multiscale")
from fastvdm.cli import build_parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else ([], argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--multiscale", action="store_true", help="one head per encoder scale (every down level + middle)")
    p.add_argument("--holes", action="store_true", help="pool the logit maps weighted towards the render's holes")
    p.add_argument("--pixels", action="store_true", help="add a head on the noised clip itself (pixel branch)")
    opts = p.parse_args(ours)
    if (opts.holes or opts.pixels) and not opts.multiscale:
        p.error("--holes and --pixels need --multiscale")
    args = build_parser().parse_args(["train", "distill"] + rest)
    if opts.multiscale:
        args.head_options = {"kind": "multiscale", "hole_weighted": opts.holes, "pixel_branch": opts.pixels}
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
