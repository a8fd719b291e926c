"""Benchmark of video_attention (spatial and temporal) against PyTorch SDPA with the permutes it needs.

    python bench/bench_attention.py                          # GPU: the issue's shapes, bf16
    python bench/bench_attention.py --dtype fp16 --markdown
    python bench/bench_attention.py --threads 1 --markdown   # CPU: every CPU shape, cpu vs SDPA vs torch.compile

On the CPU (the default without a GPU) one run times every method on every CPU shape (``CPU_SHAPES``: the
--small shapes and the tiny preset's own; --large adds spatial S = 4096) in interleaved rounds (``timing.interleaved_medians``),
times this machine's fp32 GEMM ceiling (``torch.mm`` 2048^3 into an existing tensor) as one more entry of the
same interleaved rounds (column "GEMM GFLOP/s": its median in the forward rounds / in the forward+backward
rounds), and prints each method's GFLOP/s as a fraction of it ("fwd %GEMM", "f+b %GEMM"). The ceiling is also
measured between the shapes (before every shape and after the last, printed in the header); "%GEMM between" is
the fraction of the higher of the two around a shape, the harsher reference when the machine's speed drifts
(session 7's only one). Its speed against the best PyTorch peer
("vs peer": best of sdpa-flash, sdpa-math and compile, time ratio; > 1 = faster than all of them). Methods there:
``cpu``, ``reference``, ``sdpa-flash``, ``sdpa-math`` (S <= 1024) and ``compile`` (``torch.compile``, inductor,
of the permute + SDPA + permute function; --no-compile skips it). The process keeps freed memory by default
(``--allocator keep``, as in bench_diffusers.py): glibc otherwise returns every output and gradient of tens of MiB
to the system and page-faults it in again on the next call, seconds of system time per run for every method.

Shapes (a 16-frame video U-Net, D = 64, 8 heads; q, k, v are views of one fused (B, T, S, 3, 8, 64) QKV
tensor, as a fused projection produces them):
- spatial: B = 1, T = 16, S in {1024, 4096} (16 sequences of length S per head);
- temporal: T = 16, B*S in {8192, 65536} (B in {2, 16}, S = 4096: 65,536 and 524,288 sequences of 16).
``--small`` (for the CPU): spatial B = 1, T = 4, S in {256, 1024}; temporal T = 16, B*S in {512, 4096}.

Methods:
- ``triton``: fastvdm's Triton kernels, fed the fused views directly (GPU only: on the CPU Triton runs only
  under the interpreter, a test vehicle, and is not timed).
- ``cpu`` (CPU only): fastvdm's OpenMP kernels (csrc/cpu/attention.cpp).
- ``reference``: fastvdm's reference op (rearrange + SDPA with the default backend, in fp32 for bf16/fp16).
- ``sdpa-<backend>``: eager PyTorch as a model would write it: ``q.permute(...).reshape(...)`` of each of
  q, k, v into (sequences, heads, N, D) (a copy), ``F.scaled_dot_product_attention`` forced to one backend
  with ``torch.nn.attention.sdpa_kernel`` (flash, efficient, cudnn, math on a GPU; flash, math on the CPU), then the
  output permuted back to a contiguous (B, T, S, heads, D). The copies are part of the timing (and their
  backward of the fwd+bwd timing). A backend that raises (e.g. a grid-dimension limit at 524,288 sequences)
  is reported as ``fails`` with the error's first line.

Throughput: forward FLOPs = 4 * sequences * heads * N^2 * D; backward = 2.5x forward; "fwd+bwd" is
forward + backward (3.5x). Timing: ``bench/timing.py`` (GPU: triton.testing.do_bench median; CPU: median of
wall-clock repeats). "vs best SDPA" is the best successful SDPA method's time divided by this method's time.
"rel err" is ||out - oracle|| / ||oracle|| of the forward output, the oracle being the first of ``reference``,
``sdpa-math`` that runs (a sanity check that a fast number is not a wrong one; tests/ checks accuracy).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import format_table, keep_freed_memory, machine_name, median_seconds  # noqa: E402

import fastvdm.ops as ops  # noqa: E402

HEADS, HEAD_DIM = 8, 64
# (axis, B, T, S)
GPU_SHAPES = [
    ("spatial", 1, 16, 1024),
    ("spatial", 1, 16, 4096),
    ("temporal", 2, 16, 4096),
    ("temporal", 16, 16, 4096),
]
# The tiny preset's own attention (8 frames of 8x8 tokens, 2 heads of 32): with --tiny
TINY_SHAPES, TINY_HEADS, TINY_HEAD_DIM = [("spatial", 1, 8, 64), ("temporal", 1, 8, 64)], 2, 32
SMALL_SHAPES = [
    ("spatial", 1, 4, 256),
    ("spatial", 1, 4, 1024),
    ("temporal", 1, 16, 512),
    ("temporal", 1, 16, 4096),
]
# The CPU run: (axis, B, T, S, heads, D)
CPU_SHAPES = [
    ("spatial", 1, 4, 256, 8, 64),
    ("spatial", 1, 4, 1024, 8, 64),
    ("temporal", 1, 16, 512, 8, 64),
    ("temporal", 1, 16, 4096, 8, 64),
    ("spatial", 1, 8, 64, 2, 32),  # the tiny preset's own
    ("temporal", 1, 8, 64, 2, 32),
]
LARGE_CPU_SHAPES = [("spatial", 1, 1, 4096, 8, 64)]  # with --large
# Stable Video Diffusion's self-attentions for a 4-frame clip of 16x16 latents (heads of 64 channels at widths
# 320/640/1280/1280: 5/10/20/20 heads; latents 16x16 .. 2x2): with --svd
SVD_CPU_SHAPES = [(axis, 1, 4, s, h, 64) for axis in ("spatial", "temporal")
                  for s, h in ((256, 5), (64, 10), (16, 20), (4, 20))]
ORACLES = ("reference", "sdpa-math")  # fp32 compute (reference) or plain matmuls (math): the accuracy check
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------- eager SDPA
def _to_sequences(x: torch.Tensor, axis: str) -> torch.Tensor:
    """(B, T, S, H, D) -> (sequences, H, N, D), contiguous (a copy, as eager code's rearrange makes it)."""
    B, T, S, H, D = x.shape
    if axis == "spatial":
        return x.permute(0, 1, 3, 2, 4).reshape(B * T, H, S, D)
    return x.permute(0, 2, 3, 1, 4).reshape(B * S, H, T, D)


def _from_sequences(o: torch.Tensor, axis: str, shape) -> torch.Tensor:
    B, T, S, H, D = shape
    if axis == "spatial":
        return o.reshape(B, T, H, S, D).permute(0, 1, 3, 2, 4).contiguous()
    return o.reshape(B, S, H, T, D).permute(0, 3, 1, 2, 4).contiguous()


def sdpa_attention(q, k, v, axis, backend):
    from torch.nn.attention import sdpa_kernel

    qs, ks, vs = (_to_sequences(t, axis) for t in (q, k, v))
    with sdpa_kernel(backend):
        o = F.scaled_dot_product_attention(qs, ks, vs)
    return _from_sequences(o, axis, q.shape)


def sdpa_backends():
    from torch.nn.attention import SDPBackend

    names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
             "math": "MATH"}
    return {name: getattr(SDPBackend, attr) for name, attr in names.items() if hasattr(SDPBackend, attr)}


# ---------------------------------------------------------------------------------------------- measurement
def methods_for(device: str) -> dict:
    """name -> attention(q, k, v, axis)."""
    methods = {}
    if device == "cuda" and "triton" in ops.available_backends("video_attention"):
        methods["triton"] = ("triton", None)
    if device == "cpu" and "cpu" in ops.available_backends("video_attention"):
        methods["cpu"] = ("cpu", None)
    methods["reference"] = ("reference", None)
    for name, backend in sdpa_backends().items():
        if device == "cpu" and name in ("efficient", "cudnn"):
            continue  # CUDA-only SDPA backends
        methods[f"sdpa-{name}"] = ("sdpa", backend)
    return methods


def make_call(method, q, k, v, axis, grad_out):
    """A zero-argument callable: forward only (grad_out None) or forward + gradients in q, k, v."""
    kind, backend = method

    def forward():
        if kind == "sdpa":
            return sdpa_attention(q, k, v, axis, backend)
        with ops.use_backend(kind):
            return ops.video_attention(q, k, v, axis)

    if grad_out is None:
        def call():
            with torch.no_grad():
                return forward()
    else:
        def call():
            return torch.autograd.grad(forward(), (q, k, v), grad_out)
    return call


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (f"{type(e).__name__}: " + (text[0] if text else ""))[:80]


def run(shapes, dtype, device, repeats, only=None, heads=HEADS, head_dim=HEAD_DIM) -> list[dict]:
    rows = []
    for axis, B, T, S in shapes:
        g = torch.Generator().manual_seed(0)
        qkv = torch.randn(B, T, S, 3, heads, head_dim, generator=g).to(device=device, dtype=dtype)
        q, k, v = (t.requires_grad_() for t in qkv.unbind(3))
        grad_out = torch.randn(B, T, S, heads, head_dim, generator=g).to(device=device, dtype=dtype)
        sequences, N = (B * T, S) if axis == "spatial" else (B * S, T)
        fwd_flops = 4 * sequences * heads * N * N * head_dim
        shape_rows = []
        oracle = None  # the first output of reference / sdpa-math: each method's output is checked against it
        for name, method in sorted(methods_for(device).items(), key=lambda m: m[0] not in ORACLES):
            if only and name not in only and name not in ORACLES:
                continue
            row = {"axis": axis, "B,T,S": f"{B},{T},{S}", "seqs*heads": sequences * heads, "method": name}
            try:
                out = make_call(method, q, k, v, axis, None)().float()
                if oracle is None and name in ORACLES:
                    oracle = out
                if oracle is not None:
                    row["rel err"] = f"{((out - oracle).norm() / oracle.norm()).item():.1e}"
                del out
                if only and name not in only:
                    continue
                fwd_s = median_seconds(make_call(method, q, k, v, axis, None), device, repeats=repeats)
                both_s = median_seconds(make_call(method, q, k, v, axis, grad_out), device, repeats=repeats)
            except (RuntimeError, ValueError) as e:  # SDPA backends refuse shapes/dtypes with RuntimeError
                row["fwd ms"] = "fails"
                row["note"] = first_line(e)
                shape_rows.append(row)
                if device == "cuda":
                    torch.cuda.empty_cache()
                continue
            bwd_s = max(both_s - fwd_s, 1e-12)
            row.update({
                "fwd ms": f"{fwd_s * 1e3:.3f}",
                "fwd+bwd ms": f"{both_s * 1e3:.3f}",
                "fwd TFLOP/s": f"{fwd_flops / fwd_s / 1e12:.3g}",
                "bwd TFLOP/s": f"{2.5 * fwd_flops / bwd_s / 1e12:.3g}",
                "fwd+bwd TFLOP/s": f"{3.5 * fwd_flops / both_s / 1e12:.3g}",
                "_both": both_s,
            })
            shape_rows.append(row)
        sdpa_times = [r["_both"] for r in shape_rows if r["method"].startswith("sdpa") and "_both" in r]
        for r in shape_rows:
            if "_both" in r and sdpa_times:
                r["vs best SDPA"] = f"{min(sdpa_times) / r.pop('_both'):.2f}x"
            r.pop("_both", None)
        rows += shape_rows
        del qkv, q, k, v, grad_out, oracle
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def run_cpu(shapes, dtype, rounds, only=None, compile_=True) -> list[dict]:
    """The CPU table: every method on every shape, interleaved rounds, fractions of the GEMM ceiling."""
    from timing import cpu_limits, gemm_ceiling_call, interleaved_medians

    ceilings = [cpu_limits()["gemm_gflops"]]  # before the first shape, then after every shape
    rows = []
    for axis, B, T, S, heads, head_dim in shapes:
        g = torch.Generator().manual_seed(0)
        qkv = torch.randn(B, T, S, 3, heads, head_dim, generator=g).to(dtype=dtype)
        q, k, v = (t.requires_grad_() for t in qkv.unbind(3))
        grad_out = torch.randn(B, T, S, heads, head_dim, generator=g).to(dtype=dtype)
        sequences, N = (B * T, S) if axis == "spatial" else (B * S, T)
        fwd_flops = 4 * sequences * heads * N * N * head_dim
        methods = {"cpu": ("cpu", None), "reference": ("reference", None)}
        backends = sdpa_backends()
        methods["sdpa-flash"] = ("sdpa", backends["flash"])
        if N <= 1024:
            methods["sdpa-math"] = ("sdpa", backends["math"])
        methods = {n: m for n, m in methods.items() if not only or n in only or n in ORACLES}
        fwd, both = {}, {}
        for name, method in methods.items():
            fwd[name] = make_call(method, q, k, v, axis, None)
            both[name] = make_call(method, q, k, v, axis, grad_out)
        if compile_ and (not only or "compile" in only):
            torch._dynamo.reset()
            plain = lambda q, k, v: _from_sequences(  # noqa: E731
                F.scaled_dot_product_attention(_to_sequences(q, axis), _to_sequences(k, axis), _to_sequences(v, axis)),
                axis, q.shape)
            compiled = torch.compile(plain, dynamic=False)

            def c_fwd():
                with torch.no_grad():
                    return compiled(q, k, v)

            fwd["compile"] = c_fwd
            both["compile"] = lambda: torch.autograd.grad(compiled(q, k, v), (q, k, v), grad_out)
        with torch.no_grad():
            oracle = fwd["reference"]().float()
        errs = {}
        for name, fn in fwd.items():
            try:
                out = fn().float()
                errs[name] = f"{((out - oracle).norm() / oracle.norm()).item():.1e}"
            except (RuntimeError, ValueError) as e:
                errs[name] = first_line(e)
        # The GEMM ceiling is timed inside the same rounds: this shared VM's speed drifts by up to 1.5x within a
        # run (neighbours' load), and a ceiling measured at another moment can be far from the speed the shape ran
        # at, either way. Medians of the same rounds compare like with like.
        gemm, gemm_flops = gemm_ceiling_call()
        t_fwd = interleaved_medians({GEMM_ENTRY: gemm, **fwd}, rounds=rounds)
        t_both = interleaved_medians({GEMM_ENTRY: gemm, **both}, rounds=rounds)
        gemm_f = gemm_flops / t_fwd.pop(GEMM_ENTRY) / 1e9
        gemm_b = gemm_flops / t_both.pop(GEMM_ENTRY) / 1e9
        del gemm
        peers = [n for n in t_fwd if n.startswith("sdpa") or n == "compile"]
        best_f = min((t_fwd[n] for n in peers), default=None)
        best_b = min((t_both[n] for n in peers if n in t_both), default=None)
        for name in fwd:
            row = {"axis": axis, "B,T,S,H,D": f"{B},{T},{S},{heads},{head_dim}", "method": name,
                   "rel err": errs.get(name, "")}
            if name not in t_fwd or name not in t_both:
                row["fwd ms"] = "fails"
                rows.append(row)
                continue
            f_s, b_s = t_fwd[name], t_both[name]
            row.update({
                "fwd ms": f"{f_s * 1e3:.3f}", "fwd+bwd ms": f"{b_s * 1e3:.3f}",
                "fwd GFLOP/s": f"{fwd_flops / f_s / 1e9:.1f}", "_fwd": fwd_flops / f_s / 1e9,
                "f+b GFLOP/s": f"{3.5 * fwd_flops / b_s / 1e9:.1f}", "_fb": 3.5 * fwd_flops / b_s / 1e9,
                "GEMM GFLOP/s": f"{gemm_f:.0f} / {gemm_b:.0f}",
                "fwd %GEMM": f"{100 * fwd_flops / f_s / 1e9 / gemm_f:.0f}%",
                "f+b %GEMM": f"{100 * 3.5 * fwd_flops / b_s / 1e9 / gemm_b:.0f}%",
                "_shape": len(ceilings) - 1,
                "vs peer fwd": f"{best_f / f_s:.2f}x" if best_f else "",
                "vs peer f+b": f"{best_b / b_s:.2f}x" if best_b else "",
            })
            rows.append(row)
        del qkv, q, k, v, grad_out, oracle
        ceilings.append(cpu_limits()["gemm_gflops"])
    # "%GEMM between": against the higher of the ceilings measured just before and just after the shape.
    print(f"# measured fp32 GEMM ceiling (torch.mm 2048^3, {torch.get_num_threads()} threads) between the shapes, "
          f"before each and after the last: {', '.join(f'{c:.1f}' for c in ceilings)} GFLOP/s")
    for row in rows:
        if "_fwd" in row:
            i = row.pop("_shape")
            gemm = max(ceilings[i], ceilings[i + 1])
            row["%GEMM between"] = f"{100 * row.pop('_fwd') / gemm:.0f}% / {100 * row.pop('_fb') / gemm:.0f}%"
    return rows


CPU_COLUMNS = ["axis", "B,T,S,H,D", "method", "fwd ms", "fwd+bwd ms", "GEMM GFLOP/s", "fwd GFLOP/s", "fwd %GEMM",
               "f+b GFLOP/s", "f+b %GEMM", "%GEMM between", "vs peer fwd", "vs peer f+b", "rel err"]
GEMM_ENTRY = "gemm-ceiling"  # the ceiling's entry in the interleaved rounds (not a method)


COLUMNS = ["axis", "B,T,S", "seqs*heads", "method", "fwd ms", "fwd+bwd ms", "fwd TFLOP/s", "bwd TFLOP/s",
           "fwd+bwd TFLOP/s", "vs best SDPA", "rel err", "note"]


def markdown(rows, columns) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--small", action="store_true", help="the older CPU-sized table (per-method medians)")
    parser.add_argument("--tiny", action="store_true",
                        help="the tiny preset's shapes (B=1, T=8, S=64, 2 heads, D=32) instead")
    parser.add_argument("--svd", action="store_true",
                        help="CPU: Stable Video Diffusion's self-attention shapes (4 frames, 16x16 .. 2x2 latents, "
                             "5-20 heads of 64) instead")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--axis", choices=["spatial", "temporal"], action="append", help="default: both")
    parser.add_argument("--method", action="append", help="only these methods (repeatable), e.g. triton")
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table (for bench/RESULTS.md)")
    parser.add_argument("--large", action="store_true", help="CPU: add spatial S = 4096 (slow)")
    parser.add_argument("--no-compile", action="store_true", help="CPU: leave out the torch.compile method")
    parser.add_argument("--allocator", choices=("keep", "system"), default="keep",
                        help="CPU: keep (default): the process keeps freed memory (bench.timing.keep_freed_memory), "
                             "so outputs and gradients of tens of MiB are not page-faulted in again on every call "
                             "(seconds of system time per run otherwise, for every method alike); system: glibc's "
                             "defaults")
    args = parser.parse_args(argv)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES[args.dtype or ("bf16" if device == "cuda" else "fp32")]
    if args.threads:
        torch.set_num_threads(args.threads)
    if device == "cpu" and not args.small:
        allocator = keep_freed_memory() if args.allocator == "keep" else "allocator: system default"
        shapes = SVD_CPU_SHAPES if args.svd else CPU_SHAPES + (LARGE_CPU_SHAPES if args.large else [])
        if args.tiny:
            shapes = [s for s in shapes if s[4:] == (TINY_HEADS, TINY_HEAD_DIM)]
        if args.axis:
            shapes = [s for s in shapes if s[0] in args.axis]
        rows = run_cpu(shapes, dtype, args.repeats, args.method, not args.no_compile)
        print(f"# video_attention on {machine_name()}, {dtype}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}; {allocator}")
        print(markdown(rows, CPU_COLUMNS) if args.markdown else format_table(rows, CPU_COLUMNS))
        return rows
    shapes = SMALL_SHAPES if (args.small or device == "cpu") else GPU_SHAPES
    heads, head_dim = HEADS, HEAD_DIM
    if args.tiny:
        shapes, heads, head_dim = TINY_SHAPES, TINY_HEADS, TINY_HEAD_DIM
    if args.axis:
        shapes = [s for s in shapes if s[0] in args.axis]
    rows = run(shapes, dtype, device, args.repeats, args.method, heads, head_dim)
    print(f"# video_attention on {machine_name()}, {dtype}, heads={heads}, D={head_dim}, torch {torch.__version__}")
    print(markdown(rows, COLUMNS) if args.markdown else format_table(rows, COLUMNS))
    return rows


if __name__ == "__main__":
    main()
