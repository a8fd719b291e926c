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
    "fastvdm.cli.export",
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
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also accepted after the command)")
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


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command. Expected errors (:class:`fastvdm.errors.UserError`, ``OSError``: bad input, a refused or
    unwritable output, a full disk) print one line ``fastvdm COMMAND: error: ...`` and return 2; ``--debug``
    (anywhere on the line) or ``FASTVDM_DEBUG=1`` prints the traceback too. Any other exception is a bug and
    propagates with its traceback. Ctrl-C / SIGTERM clean up staged outputs and return 130."""
    import os
    import signal
    import traceback

    from fastvdm.errors import UserError, describe_os_error

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("FASTVDM_DEBUG", "").strip() not in ("", "0")
    if "--debug" in argv:
        debug = True
        argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    name = " ".join(str(getattr(args, k)) for k in ("command", "data_command", "train_command")
                    if getattr(args, k, None))
    # a terminated run cleans up like Ctrl-C (unless SIGTERM is ignored or handled by whoever started us)
    old_handler = signal.getsignal(signal.SIGTERM) if threading_main() else None
    if old_handler is not signal.SIG_DFL:
        old_handler = None
    if old_handler is not None:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if args.command != "info":  # a bad FASTVDM_BACKEND fails now, not after the work (info reports it)
            from fastvdm.ops._dispatch import env_backend

            env_backend()
        return int(args.func(args) or 0)
    except UserError as e:
        msg, exc = str(e), e
    except OSError as e:
        msg, exc = describe_os_error(e), e
    except KeyboardInterrupt:
        print(f"fastvdm {name}: interrupted; no partial output was left", file=sys.stderr)
        return 130
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    if debug:
        traceback.print_exception(exc)
    print(f"fastvdm {name}: error: {_one_line(msg)}", file=sys.stderr)
    return 2


def threading_main() -> bool:
    """Whether this is the main thread of the main interpreter (where signal handlers can be installed)."""
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
