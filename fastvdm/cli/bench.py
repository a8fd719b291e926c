"""``fastvdm bench``: run the benchmarks of ``bench/`` and append a JSON record of what they printed.

    fastvdm bench kernels [--op group_norm|video_attention|losses|conv3d] [--device cpu|cuda]
    fastvdm bench e2e [--preset tiny]

The benchmark scripts live in the source checkout's ``bench/`` folder (they are not part of the installed
package): this command finds them beside the package of an editable install / source checkout and runs each in
its own Python process (its tables stream through; its ``main(argv)`` rows come back as JSON), so the installed
package never imports ``bench/`` or touches ``sys.path``. Every record
appended to the JSON-lines file (default ``bench/results.jsonl``) holds the date, the command, the machine,
card and versions (``fastvdm info``), and exactly the rows of the printed tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from fastvdm.errors import UserError

# op name -> (bench script in the checkout, arguments for a default run under 5 minutes on a 2-core CPU)
KERNEL_BENCHES = {
    "group_norm": ("bench/bench_group_norm.py", {"cpu": ["--repeats", "3"], "cuda": []}),
    "video_attention": ("bench/bench_attention.py", {"cpu": ["--repeats", "3"], "cuda": []}),
    "losses": ("bench/bench_losses.py", {"cpu": ["--repeats", "5"], "cuda": []}),
    "conv3d": ("bench/bench_conv.py", {"cpu": ["--repeats", "5"]}),  # the op's only kernel backend is cpu
}
E2E_BENCH = "bench/bench_e2e.py"

# Runs in the child process: execute the script's top level (not its __main__ block), call main(argv), and write
# the rows it returns as JSON. argv: script, rows file, script arguments.
_DRIVER = (
    "import json, runpy, sys\n"
    "script, rows_file, argv = sys.argv[1], sys.argv[2], sys.argv[3:]\n"
    "rows = runpy.run_path(script, run_name='fastvdm_bench')['main'](argv)\n"
    "with open(rows_file, 'w') as f:\n"
    "    json.dump(rows, f, default=str)\n"
)


def repo_root() -> Path:
    """The source checkout holding ``bench/`` (raises a clear error for a non-editable install)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "timing.py").is_file():
        raise FileNotFoundError(
            f"the benchmark scripts (bench/) are not beside this install ({root}); run `fastvdm bench` from an "
            "editable install of a source checkout (pip install --no-build-isolation -e .)"
        )
    return root


def run_bench_script(script: str, argv: list[str]) -> list[dict]:
    """Run ``script`` (a path relative to the checkout, e.g. ``bench/bench_losses.py``) in a child Python process
    with the checkout as working directory; its output streams to ours; returns the rows its ``main(argv)``
    returned. Raises RuntimeError naming the script when it fails."""
    root = repo_root()
    path = root / script
    if not path.is_file():
        raise FileNotFoundError(f"benchmark script {path} does not exist in this checkout")
    fd, rows_file = tempfile.mkstemp(prefix="fastvdm-bench-", suffix=".json")
    os.close(fd)
    try:
        sys.stdout.flush()
        proc = subprocess.run([sys.executable, "-c", _DRIVER, str(path), rows_file, *argv], cwd=root)
        if proc.returncode != 0:
            raise RuntimeError(f"{script} {' '.join(argv)} failed (exit code {proc.returncode}); its output is above")
        with open(rows_file) as f:
            return json.load(f)
    finally:
        os.unlink(rows_file)


def append_record(path: Path, kind: str, name: str, argv: list[str], rows: list[dict]) -> dict:
    """Append one JSON record (one line) describing a benchmark run to ``path``; returns the record."""
    from fastvdm.cli.info import environment_report

    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,
        "bench": name,
        "command": " ".join(["fastvdm"] + sys.argv[1:]),
        "bench_argv": argv,
        "environment": environment_report(),
        "rows": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:  # one line per record: an interrupted write never corrupts earlier records
        f.write(json.dumps(record, default=str) + "\n")
    return record


def _check_json(path) -> None:
    from fastvdm.outdir import check_output_file

    check_output_file(str(path), what="--json")  # before the benchmarks run


def run_kernels(args: argparse.Namespace) -> int:
    _check_json(args.json)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked, but torch sees no CUDA device")
    names = [args.op] if args.op else [n for n, (_, d) in KERNEL_BENCHES.items() if device in d]
    for name in names:
        script, defaults = KERNEL_BENCHES[name]
        if device not in defaults:
            raise UserError(f"--op {name} has no {device} kernel to benchmark (devices: {', '.join(defaults)})")
        argv = ["--device", device] + defaults[device] + (["--repeats", str(args.repeats)] if args.repeats else [])
        print(f"== fastvdm bench kernels: {name} ({script} {' '.join(argv)})", flush=True)
        rows = run_bench_script(script, argv)
        append_record(Path(args.json), "kernels", name, argv, rows)
    print(f"appended {len(names)} record(s) to {args.json}")
    return 0


def run_e2e(args: argparse.Namespace) -> int:
    _check_json(args.json)
    argv = ["--preset", args.preset]
    for flag in ("device", "frames", "size", "repeats", "teacher_steps"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if getattr(args, "no_compile", False):
        argv.append("--no-compile")
    rows = run_bench_script(E2E_BENCH, argv)
    append_record(Path(args.json), "e2e", args.preset, argv, rows)
    print(f"appended 1 record to {args.json}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    default_json = os.path.join("bench", "results.jsonl")
    p = subparsers.add_parser(
        "bench",
        help="run kernel microbenchmarks or end-to-end benchmarks; append a JSON record",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    k = sub.add_parser(
        "kernels",
        help="per-op microbenchmarks: every backend against eager and torch.compile, in one process",
        description="Per-op microbenchmarks (bench/bench_*.py): time, GB/s or TFLOP/s and the ratio to eager.",
    )
    k.add_argument("--op", choices=list(KERNEL_BENCHES), help="only this op (default: all)")
    k.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available, else cpu")
    k.add_argument("--repeats", type=int, help="timing repeats (median); default per benchmark")
    k.add_argument("--json", default=default_json, help="JSON-lines file to append to (default: %(default)s)")
    k.set_defaults(func=run_kernels)
    e = sub.add_parser(
        "e2e",
        help="one sampling call of teacher (50 steps) and student (4 steps), one distillation step: auto vs reference",
    )
    e.add_argument("--preset", default="tiny", choices=["tiny", "base"])
    e.add_argument("--device", choices=["cpu", "cuda"])
    e.add_argument("--frames", type=int, help="frames per clip (default: 8 on the CPU, 16 on a GPU)")
    e.add_argument("--size", type=int, help="frame size in pixels (default: 32 on the CPU, 64 on a GPU)")
    e.add_argument("--repeats", type=int, help="timing repeats of the student and distillation rows (median)")
    e.add_argument("--teacher-steps", type=int, help="DDIM steps of the teacher row (default 50)")
    e.add_argument("--no-compile", action="store_true",
                   help="leave out the torch.compile rows (compiling the models takes minutes on a CPU)")
    e.add_argument("--json", default=default_json, help="JSON-lines file to append to (default: %(default)s)")
    e.set_defaults(func=run_e2e)
    return p


def main(args: argparse.Namespace) -> int:  # pragma: no cover - argparse always sets func
    return args.func(args)

