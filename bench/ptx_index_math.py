"""Index math and memory instructions of the CUDA kernels, read from their PTX (no GPU needed).

Compiles csrc/cuda/*.cu to PTX with nvcc (the flags of the CMake build: -O3 --use_fast_math, C++17) for each
architecture and counts, per kernel entry, the 64-bit integer divisions / remainders (div|rem .s64|.u64: each
expands to a ~70-instruction subroutine in SASS), the 32-bit ones, and the 16-byte vector global loads / stores
(ld.global[.nc].v4, st.global.v4). "in loops": inside a loop body of the PTX (from a label to a later branch
back to it; an inlined helper's own loops count). --rev REV reads the .cu files of a git revision instead of the
work tree (the "before" rows of bench/RESULTS.md).

    python bench/ptx_index_math.py [--rev REV] [--arch sm_80 sm_90] [--per-kernel]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("attention.cu", "losses.cu", "group_norm.cu")
PATTERNS = {
    "div/rem.64": re.compile(r"^\s*(?:@%p\d+\s+)?(?:div|rem)\.[su]64\b"),
    "div/rem.32": re.compile(r"^\s*(?:@%p\d+\s+)?(?:div|rem)\.[su]32\b"),
    "ld.global.v4": re.compile(r"^\s*(?:@%p\d+\s+)?ld\.global(?:\.nc)?(?:\.L\w+::\w+)*\.v4\."),
    "st.global.v4": re.compile(r"^\s*(?:@%p\d+\s+)?st\.global\.v4\."),
    "ld.global scalar 16-bit": re.compile(r"^\s*(?:@%p\d+\s+)?ld\.global(?:\.nc)?\.[bu]16\b"),
}


def ptx_counts(src_dir: Path, name: str, arch: str, out_dir: Path) -> dict[str, Counter]:
    """{kernel entry: Counter of PATTERNS} of csrc/cuda/<name> compiled for `arch`."""
    ptx = out_dir / f"{name}.{arch}.ptx"
    cmd = [
        "nvcc", "-ptx", f"-arch={arch}", "-std=c++17", "-O3", "--use_fast_math",
        "-I", str(src_dir), str(src_dir / "cuda" / name), "-o", str(ptx),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    lines = ptx.read_text().splitlines()
    # loop bodies: the lines from a label to a later branch back to it
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^(\$\w+):", line))}
    in_loop = [False] * len(lines)
    for i, line in enumerate(lines):
        m = re.search(r"\bbra(?:\.uni)?\s+(\$\w+);", line)
        if m and labels.get(m.group(1), len(lines)) < i:
            for k in range(labels[m.group(1)], i + 1):
                in_loop[k] = True
    per_kernel: dict[str, Counter] = {}
    current = None
    for i, line in enumerate(lines):
        m = re.match(r"^(?:\.visible\s+|\.weak\s+)?\.entry\s+(\w+)\(", line)
        if m:
            current = m.group(1)
            per_kernel[current] = Counter()
            continue
        if current is None:
            continue
        for key, pat in PATTERNS.items():
            if pat.match(line):
                per_kernel[current][key] += 1
                if key.startswith("div/rem") and in_loop[i]:
                    per_kernel[current][f"{key} in loops"] += 1
    return per_kernel


def demangle(names: list[str]) -> dict[str, str]:
    if shutil.which("c++filt") is None:
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return {n: re.sub(r"\(anonymous namespace\)::|fastvdm::cuda::", "", d) for n, d in zip(names, out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", help="git revision whose csrc/cuda to compile (default: the work tree)")
    ap.add_argument("--arch", nargs="+", default=["sm_80", "sm_90"])
    ap.add_argument("--per-kernel", action="store_true", help="one row per kernel entry")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.rev:
            src = tmp / "src"
            (src / "cuda").mkdir(parents=True)
            for f in subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", args.rev, "csrc/cuda/"],
                                    check=True, capture_output=True, text=True).stdout.split():
                blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.rev}:{f}"], check=True,
                                      capture_output=True).stdout
                (src / "cuda" / Path(f).name).write_bytes(blob)
        else:
            src = ROOT / "csrc"
        keys = ["div/rem.64", "div/rem.64 in loops", "div/rem.32", "div/rem.32 in loops", *list(PATTERNS)[2:]]
        print(f"source: {args.rev or 'work tree'}; columns: {', '.join(keys)}")
        for arch in args.arch:
            for name in FILES:
                per_kernel = ptx_counts(src, name, arch, tmp)
                total = sum(per_kernel.values(), Counter())
                print(f"{arch} {name:14s} " + "  ".join(f"{k}={total[k]}" for k in keys))
                if args.per_kernel:
                    names = demangle(sorted(per_kernel))
                    for k in sorted(per_kernel):
                        c = per_kernel[k]
                        print(f"    {names[k][:90]:90s} " + " ".join(f"{c[x]:4d}" for x in keys))


if __name__ == "__main__":
    main()
