"""The ``fastvdm`` command.

Each subcommand is a module of this package with ``add_parser(subparsers) -> parser`` and
``main(args) -> int | None``, a thin shell over library functions; this file only lists those modules.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# Subcommand modules, in the order `--help` lists them. A module that does not exist in this install is skipped.
SUBCOMMAND_MODULES = (
    "fastvdm.cli.info",
    "fastvdm.cli.demo",
    "fastvdm.cli.data",
    "fastvdm.cli.train",
    "fastvdm.cli.sample",
    "fastvdm.cli.eval",
    "fastvdm.cli.densify",
    "fastvdm.cli.recon",
    "fastvdm.cli.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastvdm",
        description="Fast video-diffusion novel-view synthesis: turn a few photos (with depth) into a dense, "
        "reconstruction-ready set of views with a 4-step distilled video diffusion model (FVGen), on "
        "hand-written Triton and CUDA C++ kernels.",
        epilog="Run `fastvdm COMMAND --help` for the options of a command.",
    )
    from fastvdm import __version__

    parser.add_argument("--version", action="version", version=f"fastvdm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if name == e.name or name.startswith(f"{e.name}."):  # not part of this install
                continue
            raise
        p = module.add_parser(sub)
        if p is not None and p.get_default("func") is None:
            p.set_defaults(func=module.main)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError) as e:  # user errors: one clear line, no traceback
        print(f"fastvdm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
