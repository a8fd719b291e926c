"""Benchmark of the fused group_norm (GroupNorm + affine + modulation + SiLU), forward and forward+backward.

    python bench/bench_group_norm.py                       # this machine's device, U-Net shapes
    python bench/bench_group_norm.py --dtype bfloat16 --no-compile --repeats 5

Compared on each shape, in one run (ratios are within the run):
- ``eager``: F.group_norm, then x * (1 + scale) + shift, then F.silu (what a video U-Net does today);
- ``compile``: torch.compile of that same eager function (inductor; skipped with --no-compile);
- every fastvdm kernel backend available on the device (CPU: ``cpu``; GPU: ``triton``, ``cuda``);
- forward only, ``<backend> out=``: the same backend writing into a preallocated output (``out=``): the
  saving of not allocating (and first-touching) a fresh output on every call.
All variants compute with weight, bias, scale and shift, SiLU on, and (fwd+bwd) gradients of x and of all
four parameters through autograd.

GB/s counts the minimal traffic of the big tensors: forward = read x + write y (2 * numel * itemsize);
fwd+bwd = that plus read x, read dy, write dx (5 * numel * itemsize). ``copy`` is x.clone() (read + write,
2 * numel * itemsize): the device's measured copy bandwidth, and ``% copy`` is a pass's GB/s relative to it.
On the CPU the limits are measured once per run instead (``timing.cpu_limits``): ``% copy`` is relative to a
64 MB copy into an existing tensor (a clone also pays its output's page faults, which is not a limit), and
``% exp`` is the pass's elements/s (numel; fwd+bwd: 2 * numel, the SiLU's exp in each direction) relative
to ``torch.exp`` into an existing tensor: which of the two a small shape is bound by. ``vs compile`` = the
inductor time / this time.
On CUDA, ``fwd`` is timed as called from Python (dispatch and launch overhead included) and ``fwd graph``
replays each forward from a CUDA graph (device time: the number the bandwidth target is about).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastvdm.ops as ops  # noqa: E402
from bench.timing import format_table, gbps, machine_name, median_seconds  # noqa: E402
from bench.timing import interleaved_medians as cpu_interleaved_medians  # noqa: E402

SHAPES = [(2, 128, 16, 64, 64), (2, 512, 16, 16, 16)]
# CPU default: also the tiny model's own (one clip, 8 frames at 32x32 and 16x16): per-call overhead and SiLU bound
CPU_SHAPES = SHAPES + [(1, 32, 8, 32, 32), (1, 64, 8, 32, 32), (1, 64, 8, 16, 16)]
GROUPS = 32
EPS = 1e-5


def eager_group_norm(x, weight, bias, scale, shift):
    """The unfused baseline: three to five passes over x."""
    bc = scale.shape + (1,) * (x.dim() - 2)
    y = F.group_norm(x, GROUPS, weight, bias, EPS)
    y = y * (1 + scale.reshape(bc)) + shift.reshape(bc)
    return F.silu(y)


def fastvdm_group_norm(backend):
    def fn(x, weight, bias, scale, shift):
        with ops.use_backend(backend):
            return ops.group_norm(x, GROUPS, weight, bias, EPS, scale, shift, "silu")

    return fn


def fastvdm_group_norm_out(backend, like):
    """The backend's forward into one preallocated output (``out=``, no autograd)."""
    out = torch.empty_like(like)

    def fn(x, weight, bias, scale, shift):
        with ops.use_backend(backend), torch.no_grad():
            return ops.group_norm(x, GROUPS, weight, bias, EPS, scale, shift, "silu", out=out)

    return fn


def interleaved_medians(fns: dict, device: str, repeats: int, warmup: int = 2, graph: bool = False) -> dict:
    """Median seconds of each fn. On the CPU the fns are timed in interleaved rounds (``bench.timing``: every
    fn once per round, each sample repeating its call for >= 20 ms), so that load from other processes on a
    shared machine hits every variant alike. On CUDA:
    ``triton.testing.do_bench``, or with ``graph`` ``do_bench_cudagraph`` (fn captured in a CUDA graph and
    replayed: device time without the Python/launch overhead; a fn that cannot be captured is left out)."""
    if device == "cuda" and graph:
        from triton.testing import do_bench_cudagraph

        out = {}
        for name, fn in fns.items():
            try:
                out[name] = do_bench_cudagraph(fn, rep=100, return_mode="median") * 1e-3
            except Exception as e:  # noqa: BLE001 - report and go on with the other variants
                print(f"  {name}: CUDA graph capture failed: {e}", file=sys.stderr)
        return out
    if device == "cuda":
        return {name: median_seconds(fn, device="cuda") for name, fn in fns.items()}
    return cpu_interleaved_medians(fns, rounds=repeats, warmup=warmup)


def make_inputs(shape, dtype, device):
    B, C = shape[:2]
    g = torch.Generator(device="cpu").manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    return rand(*shape), rand(C), rand(C), 0.5 * rand(B, C), rand(B, C), rand(*shape)


def forward_fn(fn, inputs):
    x, w, b, scale, shift, _ = inputs
    return lambda: fn(x, w, b, scale, shift)


def forward_backward_fn(fn, inputs):
    x, w, b, scale, shift, dy = inputs
    leaves = [t.detach().requires_grad_(True) for t in (x, w, b, scale, shift)]

    def run():
        y = fn(*leaves)
        return torch.autograd.grad(y, leaves, dy)

    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="comma-separated: float32,bfloat16,float16")
    p.add_argument("--shapes", default=None, help="e.g. 2x128x16x64x64,2x512x16x16x16")
    p.add_argument("--repeats", type=int, default=7, help="CPU timing rounds (median)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch and the OpenMP kernels)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--channels-last", action="store_true", help="x (and dy) in channels_last_3d")
    args = p.parse_args(argv)

    device = args.device
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # the same OpenMP runtime drives the cpu kernels
    dtypes = args.dtype or ("float32,bfloat16" if device == "cuda" else "float32")
    dtypes = [getattr(torch, d) for d in dtypes.split(",")]
    default = CPU_SHAPES if device == "cpu" else SHAPES
    shapes = default if args.shapes is None else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    backends = [b for b in ops.available_backends("group_norm") if b != "reference"]
    if device == "cpu":
        backends = [b for b in backends if b == "cpu"]
    else:
        backends = [b for b in backends if b in ("triton", "cuda")]
    threads = torch.get_num_threads()
    print(f"# group_norm benchmark on {machine_name()} ({device}, torch threads {threads}), groups={GROUPS}, "
          f"weight+bias+scale+shift, SiLU{', channels_last_3d' if args.channels_last else ''}")

    limits = None
    if device == "cpu":
        from bench.timing import cpu_limits

        limits = cpu_limits()
        print(f"# measured limits ({threads} threads): copy into existing memory {limits['copy_gbps']:.1f} GB/s, "
              f"exp {limits['exp_gelems']:.2f} G elements/s")
    compiled = None
    if not args.no_compile:
        compiled = torch.compile(eager_group_norm, dynamic=False)

    rows = []
    for shape in shapes:
        for dtype in dtypes:
            inputs = make_inputs(shape, dtype, device)
            if args.channels_last:
                inputs = tuple(
                    t.contiguous(memory_format=torch.channels_last_3d) if t.dim() == 5 else t for t in inputs
                )
            x = inputs[0]
            nbytes = x.numel() * x.element_size()
            name = f"{'x'.join(map(str, shape))} {str(dtype).removeprefix('torch.')}"
            impls = [("eager", eager_group_norm)]
            if compiled is not None:
                impls.append(("compile", compiled))
            impls += [(b, fastvdm_group_norm(b)) for b in backends]
            copy_gbps = None
            passes = [("fwd", forward_fn, 2, False), ("fwd+bwd", forward_backward_fn, 5, False)]
            if device == "cuda":  # device time of the forward, without Python and launch overhead
                passes.insert(1, ("fwd graph", forward_fn, 2, True))
            for pass_name, make, traffic, graph in passes:
                pass_impls = list(impls)
                if pass_name == "fwd":
                    pass_impls += [(f"{b} out=", fastvdm_group_norm_out(b, x)) for b in backends]
                fns = {impl_name: make(fn, inputs) for impl_name, fn in pass_impls}
                if pass_name.startswith("fwd") and pass_name != "fwd+bwd":
                    fns = {"copy": lambda: x.clone(), **fns}
                med = interleaved_medians(fns, device, args.repeats, graph=graph)
                if "copy" in med:
                    copy_gbps = limits["copy_gbps"] if limits else gbps(2 * nbytes, med["copy"])
                    rows.append({"shape dtype": name, "pass": pass_name, "impl": "copy (x.clone())",
                                 "ms": f"{med['copy'] * 1e3:.3f}", "GB/s": f"{copy_gbps:.1f}", "% copy": "100",
                                 "vs eager": ""})
                for impl_name, _ in pass_impls:
                    if impl_name not in med:
                        continue
                    t = med[impl_name]
                    rate = gbps(traffic * nbytes, t)
                    rows.append({
                        "shape dtype": name, "pass": pass_name, "impl": impl_name, "ms": f"{t * 1e3:.3f}",
                        "GB/s": f"{rate:.1f}", "% copy": f"{100 * rate / copy_gbps:.0f}",
                        "vs eager": f"{med['eager'] / t:.2f}x" if "eager" in med else "",
                        "vs compile": f"{med['compile'] / t:.2f}x" if "compile" in med else "",
                        "% exp": (f"{100 * (traffic // 2) * x.numel() / t / 1e9 / limits['exp_gelems']:.0f}"
                                  if limits else ""),
                    })
                    print(f"  {name} {pass_name:9s} {impl_name:8s} {t * 1e3:9.3f} ms", file=sys.stderr, flush=True)
    print(format_table(rows, ["shape dtype", "pass", "impl", "ms", "GB/s", "% copy", "% exp", "vs eager",
                              "vs compile"]))
    return rows


if __name__ == "__main__":
    main()
