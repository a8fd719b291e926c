"""``fastvdm info``: versions, devices, backends and extensions of this install."""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

import fastvdm
from fastvdm.ops import BACKENDS, OPS, available_backends, backend_status
from fastvdm.ops import extensions


def _env_backend_status() -> str:
    """What the ``FASTVDM_BACKEND`` environment variable does here: "unset (auto)", "<name> (forces ...)", or
    why its value is refused."""
    from fastvdm.ops._dispatch import env_backend

    raw = os.environ.get("FASTVDM_BACKEND")
    if raw is None or not raw.strip():
        return "unset (auto)"
    try:
        name = env_backend()
    except Exception as e:  # noqa: BLE001 - report the problem instead of failing the report
        return f"{raw!r}: INVALID ({e})"
    return "auto" if name is None else f"{name} (forces this backend for every op)"


def environment_report() -> dict:
    """A JSON-serializable description of this install (also recorded beside benchmark results)."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cuda = torch.cuda.is_available()
    return {
        "fastvdm": fastvdm.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda_available": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
        "extensions": {
            "cpu": extensions.cpu_status() or f"built (OpenMP threads: {extensions.openmp_threads()})",
            "cuda": extensions.cuda_status() or "built",
        },
        "backends": {b: backend_status(b) or "available" for b in BACKENDS},
        "FASTVDM_BACKEND": _env_backend_status(),
        "ops": {op: available_backends(op) for op in OPS},
    }


def format_report(report: dict) -> str:
    lines = [
        f"fastvdm {report['fastvdm']}  (python {report['python']}, torch {report['torch']}, "
        f"triton {report['triton'] or 'not installed'})",
        f"device: {report['device']}  (CUDA {'available' if report['cuda_available'] else 'not available'}"
        f"{', TRITON_INTERPRET=1' if report['triton_interpret'] else ''})",
        "extensions:",
    ]
    lines += [f"  {name:<10} {status}" for name, status in report["extensions"].items()]
    lines.append(f"FASTVDM_BACKEND: {report.get('FASTVDM_BACKEND', 'unset (auto)')}")
    lines.append("backends:")
    lines += [f"  {name:<10} {status}" for name, status in report["backends"].items()]
    lines.append("ops (available backends):")
    lines += [f"  {op:<16} {', '.join(b)}" for op, b in report["ops"].items()]
    return "\n".join(lines)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="print versions, devices, and which backends and extensions are active")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--verify",
        action="store_true",
        help="also check every kernel backend available here against the float64 reference (forward and "
        "gradients, small random inputs, each dtype it serves) on the GPU if there is one, else the CPU, and "
        "print the table; exit 1 if any check fails (what auto does once per kernel on a GPU)",
    )
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    report = environment_report()
    if not getattr(args, "verify", False):
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        return 0
    from dataclasses import asdict

    from fastvdm.ops import _verify

    rows = _verify.verify_all()
    if args.json:
        print(json.dumps({**report, "verification": [asdict(v) for v in rows]}, indent=2))
    else:
        print(format_report(report))
        print("verification against the float64 reference (DESIGN.md tolerances):")
        print(_verify.format_table(rows))
    return 0 if all(v.ok for v in rows) else 1
