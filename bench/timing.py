"""Timing helpers shared by the microbenchmarks in bench/ (ratios are always taken within one run).

GPU: ``triton.testing.do_bench`` (median over repeats, with L2 flush). CPU: warm-up calls, then the median of
``repeats`` wall-clock timings.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def median_seconds(fn: Callable[[], object], device: str = "cpu", warmup: int = 2, repeats: int = 7) -> float:
    """Median wall time of ``fn()`` in seconds."""
    if device == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e-3
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def keep_freed_memory() -> str:
    """Make glibc's malloc keep freed memory in the process instead of returning it to the kernel.

    By default glibc serves every allocation above a threshold (128 KiB, adapting up to 32 MiB) with its own
    ``mmap`` and unmaps it on ``free``: the next allocation of that size page-faults all its pages in again and
    the kernel zeroes them. Blocks with large weights pay this for every weight gradient and oneDNN scratch
    buffer on every call (a fwd+bwd of an SVD 1280-channel block spent half its time in page faults, in system
    time, with +-10% run to run). ``mallopt(M_MMAP_MAX, 0)`` serves everything from the heap and
    ``mallopt(M_TRIM_THRESHOLD, 2 GiB - 1)`` keeps it from shrinking, so after the warm-up round no call page-faults: what
    jemalloc / tcmalloc give PyTorch CPU training. Returns a line describing what was set (or why not)."""
    import ctypes
    import ctypes.util

    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)) == 1
    except (OSError, AttributeError):
        ok = False
    return ("allocator: glibc malloc keeps freed memory (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1)" if ok
            else "allocator: system default (mallopt not available here)")


def gbps(bytes_moved: int, seconds: float) -> float:
    return bytes_moved / seconds / 1e9


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table of ``rows`` (dicts) with the given column order."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(row) for row in cells])


def machine_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import os
    import platform

    return f"{platform.machine()} CPU, {os.cpu_count()} cores"


def interleaved_medians(fns: dict, rounds: int = 7, min_seconds: float = 0.02, warmup: int = 2) -> dict:
    """CPU: median seconds per call of each ``fns[name]()``, timed in interleaved rounds (every function once per
    round, in order, so a change of machine load hits all alike). One sample repeats the call until it has run
    ``min_seconds`` (at least once) and divides; a function that raises is left out of the result."""
    alive, reps = {}, {}
    for name, fn in fns.items():
        try:
            for _ in range(warmup):
                fn()
        except (RuntimeError, ValueError):
            continue
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
        alive[name], reps[name] = fn, max(1, int(min_seconds / once))
    samples = {name: [] for name in alive}
    for _ in range(rounds):
        for name, fn in alive.items():
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / reps[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def gemm_ceiling_call() -> tuple:
    """The call that measures the fp32 GEMM ceiling: ``torch.mm`` of two 2048 x 2048 matrices into an existing
    tensor. Returns (call, FLOPs per call)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    c = torch.empty(2048, 2048)
    return (lambda: torch.mm(a, b, out=c)), 2 * 2048**3


def cpu_limits(rounds: int = 5) -> dict:
    """This machine's measured limits with the current thread count (medians of ``rounds`` interleaved samples):
    ``gemm_gflops``: fp32 ``torch.mm`` 2048^3 (the compute ceiling for attention); ``copy_gbps``: a 64 MB copy into
    an existing tensor, counting read + write bytes (memory-bound ops; a freshly allocated output also pays
    page faults, which this deliberately excludes); ``exp_gelems``: ``torch.exp`` of 16 M fp32 values into an
    existing tensor, G elements/s (SiLU-bound cases)."""
    gemm, gemm_flops = gemm_ceiling_call()
    src, dst = torch.randn(16 * 2**20), torch.empty(16 * 2**20)
    t = interleaved_medians({
        "gemm": gemm,
        "copy": lambda: dst.copy_(src),
        "exp": lambda: torch.exp(src, out=dst),
    }, rounds=rounds, min_seconds=0.05)
    return {
        "gemm_gflops": gemm_flops / t["gemm"] / 1e9,
        "copy_gbps": 2 * src.numel() * 4 / t["copy"] / 1e9,
        "exp_gelems": src.numel() / t["exp"] / 1e9,
    }
