"""The ``fastvdm`` command.

Each subcommand lives beside the code it drives, in a module with ``add_parser(subparsers) -> parser`` and
``main(args) -> int | None``; this file only lists those modules. ``fastvdm info`` is defined here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Optional, Sequence

# Subcommand modules, in the order `--help` lists them. A module that does not exist in this install is skipped.
SUBCOMMAND_MODULES = (
    "fastvdm.demo_cli",
    "fastvdm.data.cli",
    "fastvdm.train.cli",
    "fastvdm.sample_cli",
    "fastvdm.eval_cli",
    "fastvdm.densify_cli",
    "fastvdm.recon.cli",
    "fastvdm.bench_cli",
)


def _info(args: argparse.Namespace) -> int:
    from fastvdm.info import environment_report, format_report

    report = environment_report()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


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
    info = sub.add_parser("info", help="print versions, devices, and which backends and extensions are active")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.set_defaults(func=_info)
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
