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
