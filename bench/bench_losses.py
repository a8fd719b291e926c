"""Benchmark of the fused distillation losses against eager PyTorch: time and peak memory (and, on a GPU,
bandwidth against a clone() copy baseline).

    python bench/bench_losses.py                      # fp32, the issue's two video shapes
    python bench/bench_losses.py --dtype bf16 --repeats 15
    python bench/bench_losses.py --shape 4,4,16,256,256   # a larger tensor (GPU bandwidth)

Methods (each runs loss + gradient w.r.t. pred / x, the distillation step's use):
- ``eager``: the plain PyTorch expressions with autograd, as a training script writes them (no custom op):
  denoising: ``(w * (pred - (alpha * noise - sigma * x0)) ** 2).mean()``; DMD: g under ``no_grad`` then
  ``0.5 * ((x - (x - g).detach()) ** 2).mean()``. bf16 inputs are upcast with ``.float()`` first.
- ``reference``: fastvdm's reference custom op (closed-form backward, still several temporaries).
- ``cpu`` / ``triton`` / ``cuda``: the kernel backends available on the device.

Peak memory: bytes allocated during one loss + gradient call above what was allocated before it, the returned
gradient included. CPU: ``torch.profiler.profile(profile_memory=True)`` records every allocation and free of
the CPU allocator as ``[memory]`` events (signed byte counts); the peak is the maximum of their running sum in
time order. CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. Reported in MB and in
units of one input tensor ("x input"): 1.0 means the gradient alone.

GPU bandwidth: the minimum traffic is denoising 7 tensors (forward reads pred, x0, noise; backward reads them
again and writes the gradient) and DMD 6 (forward reads x, x0_real, x0_fake; backward reads x0_real, x0_fake,
writes the gradient). Effective GB/s = that traffic / (forward + backward time), compared with the copy
bandwidth of ``clone()`` of one input tensor (2 tensors of traffic), timed the same way.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import format_table, gbps, machine_name, median_seconds  # noqa: E402

import fastvdm.ops as ops  # noqa: E402
from fastvdm.ops import reference  # noqa: E402

SHAPES = [(4, 3, 16, 64, 64), (4, 4, 16, 40, 64)]
# CPU default: also the large shape and the tiny model's clip (1 x 3 x 8 x 32 x 32: per-call overhead)
CPU_SHAPES = SHAPES + [(4, 3, 16, 256, 256), (1, 3, 8, 32, 32)]
TRAFFIC = {"denoising": 7, "dmd": 6}  # minimum full-tensor reads + writes of loss + gradient


def _bc(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


# ---------------------------------------------------------------------------------------------- eager baselines
def eager_denoising(pred, x0, noise, alpha, sigma, weight):
    pred, x0, noise = pred.float(), x0.float(), noise.float()
    target = _bc(alpha, pred) * noise - _bc(sigma, pred) * x0
    return (_bc(weight, pred) * (pred - target) ** 2).mean()


def eager_dmd(x, x0_real, x0_fake, weight):
    x, x0_real, x0_fake = x.float(), x0_real.float(), x0_fake.float()
    with torch.no_grad():
        norm = (x - x0_real).abs().flatten(1).mean(1).clamp_min(reference.DMD_NORM_EPS)
        g = (x0_fake - x0_real) / _bc(norm, x) * _bc(weight, x)
    return 0.5 * ((x - (x - g).detach()) ** 2).mean()


# ---------------------------------------------------------------------------------------------- measurement
_COMPILED: dict = {}


def make_call(loss: str, method: str, inputs: dict, grad: bool):
    """A zero-argument callable running one loss (and its gradient when ``grad``) with ``method``."""
    wrt = inputs["pred"].detach().requires_grad_(grad)
    if loss == "denoising":
        args = (wrt, inputs["x0"], inputs["noise"], inputs["alpha"], inputs["sigma"], inputs["weight"])
        eager, fused = eager_denoising, lambda *a: ops.denoising_loss(*a, target="v")
    else:
        args = (wrt, inputs["x0"], inputs["noise"], inputs["weight"])  # x, x0_real, x0_fake, weight
        eager, fused = eager_dmd, ops.dmd_loss

    if method == "compile":  # torch.compile (inductor) of the eager expressions, one per loss
        eager = _COMPILED.setdefault(loss, torch.compile(eager, dynamic=False))

    def call():
        if method in ("eager", "compile"):
            out = eager(*args)
        else:
            with ops.use_backend(method):
                out = fused(*args)
        if grad:
            return torch.autograd.grad(out, wrt)[0]
        return out

    return call


def peak_bytes(fn, device: str) -> int:
    """Peak bytes allocated by ``fn()`` above the allocation level before it (its result included)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del out
        return peak
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    del out
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    return peak


def methods_for(device: str) -> list[str]:
    """eager, then every backend serving the losses on ``device`` (Triton's CPU interpreter is for tests only)."""
    serves = {"reference": ("cpu", "cuda"), "cpu": ("cpu",), "triton": ("cuda",), "cuda": ("cuda",)}
    extra = ["compile"] if device == "cpu" else []
    return ["eager"] + extra + [b for b in ops.available_backends("dmd_loss") if device in serves[b]]


def make_inputs(shape, dtype, device) -> dict:
    g = torch.Generator().manual_seed(0)
    big = lambda: torch.randn(shape, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    theta = torch.rand(shape[0], generator=g) * (torch.pi / 2)
    return {
        "pred": big(),
        "x0": big(),
        "noise": big(),
        "alpha": theta.cos().to(device),
        "sigma": theta.sin().to(device),
        "weight": (0.5 + torch.rand(shape[0], generator=g)).to(device),
    }


def interleaved_seconds(fns: dict, device: str, repeats: int) -> dict:
    """Median seconds of each ``fns[name]()``.

    CUDA: ``triton.testing.do_bench`` per callable. CPU (shared, noisy machines): the callables are timed in
    interleaved rounds, so load changes hit all of them alike; each sample times enough back-to-back calls
    to last about 20 ms.
    """
    if device == "cuda":
        return {name: median_seconds(fn, device, repeats=repeats) for name, fn in fns.items()}
    import statistics
    import time

    inner = {}
    for name, fn in fns.items():
        fn()  # warm-up
        t0 = time.perf_counter()
        fn()
        inner[name] = max(1, int(0.02 / max(time.perf_counter() - t0, 1e-6)))
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / inner[name])
    return {name: statistics.median(v) for name, v in samples.items()}


def run(shapes, dtype, device, repeats) -> list[dict]:
    rows = []
    methods = methods_for(device)
    copy_gbps = None
    if device == "cpu":
        from timing import cpu_limits

        copy_gbps = cpu_limits()["copy_gbps"]
        print(f"# measured copy bandwidth into an existing tensor ({torch.get_num_threads()} threads): "
              f"{copy_gbps:.1f} GB/s")
    for shape in shapes:
        inputs = make_inputs(shape, dtype, device)
        tensor_bytes = inputs["pred"].numel() * inputs["pred"].element_size()
        for loss in ("denoising", "dmd"):
            fns = {}
            for method in methods:
                fns[(method, "fwd")] = make_call(loss, method, inputs, grad=False)
                fns[(method, "both")] = make_call(loss, method, inputs, grad=True)
            if device == "cuda":
                fns[("copy", "clone")] = lambda: inputs["pred"].clone()
            times = interleaved_seconds(fns, device, repeats)
            eager_s = times[("eager", "both")]
            for method in methods:
                both_s = times[(method, "both")]
                peak = peak_bytes(fns[(method, "both")], device)
                row = {
                    "shape": "x".join(map(str, shape)),
                    "loss": loss,
                    "method": method,
                    "fwd ms": f"{times[(method, 'fwd')] * 1e3:.2f}",
                    "fwd+bwd ms": f"{both_s * 1e3:.2f}",
                    "speedup": f"{eager_s / both_s:.2f}x",
                    "peak MB": f"{peak / 2**20:.1f}",
                    "peak / input": f"{peak / tensor_bytes:.2f}",
                }
                if copy_gbps:
                    eff = gbps(TRAFFIC[loss] * tensor_bytes, both_s)
                    row["f+b GB/s"] = f"{eff:.1f}"
                    row["% copy bw"] = f"{100 * eff / copy_gbps:.0f}%"
                    row["vs compile"] = f"{times[('compile', 'both')] / both_s:.2f}x"
                if device == "cuda":
                    eff = gbps(TRAFFIC[loss] * tensor_bytes, both_s)
                    copy = gbps(2 * tensor_bytes, times[("copy", "clone")])
                    row["GB/s"] = f"{eff:.0f}"
                    row["copy GB/s"] = f"{copy:.0f}"
                    row["% copy bw"] = f"{100 * eff / copy:.0f}%"
                rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--shape", action="append", help="B,C,T,H,W (repeatable); default: the issue's two shapes")
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads; also the kernels' OpenMP)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table (for bench/RESULTS.md)")
    args = parser.parse_args(argv)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)  # sets OpenMP's thread count for this thread: the kernels follow it
    default = CPU_SHAPES if device == "cpu" else SHAPES
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shape] if args.shape else default

    rows = run(shapes, dtype, device, args.repeats)
    columns = ["shape", "loss", "method", "fwd ms", "fwd+bwd ms", "speedup", "peak MB", "peak / input"]
    if device == "cpu":
        columns += ["f+b GB/s", "% copy bw", "vs compile"]
    if device == "cuda":
        columns += ["GB/s", "copy GB/s", "% copy bw"]
    threads = f"torch threads {torch.get_num_threads()}"
    if "cpu" in ops.available_backends("dmd_loss"):
        from fastvdm.ops.extensions import openmp_threads

        threads += f", OpenMP threads {openmp_threads()}"
    print(f"# bench_losses: {machine_name()}, {args.dtype}, {threads}, median of {args.repeats} (CPU: interleaved rounds)")
    print("# loss + gradient w.r.t. pred/x; speedup = eager fwd+bwd time / this; peak = bytes allocated by one")
    print("# loss+gradient call above the level before it, the returned gradient included (CPU: torch.profiler")
    print("# [memory] events, running sum; CUDA: max_memory_allocated); peak / input in units of one input tensor")
    if args.markdown:
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for r in rows:
            print("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    else:
        print(format_table(rows, columns))
    return rows


if __name__ == "__main__":
    main()
