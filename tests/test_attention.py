"""video_attention: every backend against the float64 reference, forward and gradients; the reference itself
against an independent einsum formulation.

Inputs are non-contiguous views of one fused (B, T, S, 3, heads, D) QKV tensor (the layout of a fused
projection), and in some cases of a fused tensor with scrambled memory order or padding (arbitrary strides).

The (T, S, D) grid of the issue (T in {1, 2, 7, 16, 25}, S in {1, 17, 64, 300}, D in {32, 64}) is covered by a
representative subset, not the full cross-product (the Triton interpreter is slow): every T value appears with
the temporal axis, every S value with the spatial axis, both D values on every axis, T = 1 and S = 1 on every
axis; masked tails (flash: lengths 17, 34, 70, 119, 300 against the 32-wide interpreter tiles; temporal:
T = 2, 5, 7, 25 padded to 16 or 32) and exact tiles (flash: 64; temporal: T = 16); head dims that are not a
power of two (24, 40); T > 64 (temporal falls back to the flash kernel); a joint layout that needs the (t, s)
split addressing; a non-default scale.
"""

from __future__ import annotations

import math
import re
import zlib

import pytest
import torch

import fastvdm.ops as ops
from fastvdm.ops import reference
from oracle import ATTENTION_TOLERANCE, all_backends, assert_grad_close, assert_rel_close, device_for, dtypes_for

BACKENDS = all_backends("video_attention")

# (axis, B, T, S, heads, D, layout)
# layout "fused": q, k, v = qkv.unbind(3) of a contiguous (B, T, S, 3, heads, D) tensor;
# "scrambled": the same shape viewed from storage ordered (3, heads, B, D, S, T), so even D is strided;
# "padded": the slice [:, :, :S] of a fused tensor with S + 3 tokens per frame, so stride_t != S * stride_s
# (the joint kernel then addresses token n at (t, s) = (n // S, n % S)).
CASES = [
    ("spatial", 1, 2, 17, 2, 32, "fused"),
    ("spatial", 1, 1, 64, 2, 64, "fused"),
    ("spatial", 2, 2, 1, 2, 32, "scrambled"),
    ("spatial", 1, 1, 300, 1, 32, "fused"),
    ("temporal", 2, 7, 17, 2, 64, "fused"),
    ("temporal", 1, 16, 64, 2, 32, "scrambled"),
    ("temporal", 1, 25, 17, 1, 32, "padded"),
    ("temporal", 1, 1, 17, 2, 32, "fused"),
    ("temporal", 1, 2, 300, 1, 64, "fused"),
    ("temporal", 1, 70, 2, 1, 32, "fused"),  # T > 64: the flash kernel over t
    ("joint", 1, 2, 17, 2, 32, "fused"),
    ("joint", 1, 7, 17, 1, 64, "padded"),
    ("joint", 1, 16, 1, 2, 32, "scrambled"),
    ("joint", 2, 1, 17, 1, 64, "fused"),
    ("spatial", 1, 2, 33, 1, 40, "fused"),  # D = 40: padded to 64 with masks
    ("temporal", 1, 5, 1, 2, 24, "scrambled"),  # D = 24, S = 1
]


def _fused_qkv(B, T, S, H, D, layout, dtype, device, generator):
    """A random (B, T, S, 3, H, D) tensor (values ~ N(0, 1)) with the strides of ``layout``."""
    if layout == "fused":
        shape, order = (B, T, S, 3, H, D), (0, 1, 2, 3, 4, 5)
    elif layout == "scrambled":
        shape, order = (3, H, B, D, S, T), (2, 5, 4, 0, 1, 3)
    elif layout == "padded":
        shape, order = (B, T, S + 3, 3, H, D), (0, 1, 2, 3, 4, 5)
    else:
        raise ValueError(layout)
    base = torch.randn(shape, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    return base.permute(order)[:, :, :S]


def _reference_with_grads(q, k, v, axis, scale, grad_out):
    """float64 reference output and (dq, dk, dv)."""
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = reference.video_attention(q64, k64, v64, axis, scale)
    grads = torch.autograd.grad(out, (q64, k64, v64), grad_out.double())
    return out.detach(), grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_video_attention_matches_reference(backend, case):
    axis, B, T, S, H, D, layout = case
    device = device_for(backend)
    gen = torch.Generator().manual_seed(zlib.crc32(repr(case).encode()))
    for dtype in dtypes_for(backend):
        qkv = _fused_qkv(B, T, S, H, D, layout, dtype, device, gen).requires_grad_()
        q, k, v = qkv.unbind(3)
        assert not q.is_contiguous()
        with ops.use_backend(backend):
            out = ops.video_attention(q, k, v, axis)
        assert out.shape == (B, T, S, H, D) and out.dtype == dtype and out.is_contiguous()
        grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        (dqkv,) = torch.autograd.grad(out, qkv, grad_out)

        ref, ref_grads = _reference_with_grads(q, k, v, axis, None, grad_out)
        tol = ATTENTION_TOLERANCE[dtype]
        assert_rel_close(out, ref, tol, f"{backend} {dtype} output")
        for i, name in enumerate("qkv"):
            assert_grad_close(dqkv[:, :, :, i], ref_grads[i], grad_out, tol, f"{backend} {dtype} d{name}")


# Blocking edges of the cpu kernels (csrc/cpu/attention*.{cpp,inc}): micro-kernel tiles of 12 (AVX-512) / 6 (AVX2)
# rows and 16 / 8-wide vectors (6 / 3 rows of 4 vectors when the columns are a multiple of 4 vectors), query
# blocks of 48, key blocks of 256 (online softmax across blocks), key chunks of 512 in the backward when there are
# fewer than 8 sequences (partial dq summed), head dims padded to the vector width.
CPU_BLOCKING_CASES = [
    ("spatial", 1, 1, 257, 1, 80, "fused"),  # one key past a key block; 48-query blocks with a 17-row tail; D = 80
    ("spatial", 1, 2, 97, 2, 128, "scrambled"),  # D = 128, 97 = 8 * 12 + 1 rows
    ("spatial", 1, 1, 49, 3, 16, "fused"),  # D = 16 (one AVX-512 vector), 49 = 48 + 1 queries
    ("joint", 1, 3, 400, 1, 32, "padded"),  # L = 1200 with 1 sequence: 3 key chunks, 5 key blocks
    ("temporal", 1, 13, 6, 3, 64, "fused"),  # T = 13: a single partial tile per sequence
    ("spatial", 1, 1, 600, 1, 72, "fused"),  # D = 72 (4.5 AVX-512 vectors), 2 full key blocks + 88
    # sequences up to 64 tokens, a position's heads at a time: fp32 with D a multiple of the vector
    # width read and written in place, forward and backward (frames (S + 3) * 3 * H * D apart), else packed
    # per token (forward) or per sequence (backward)
    ("temporal", 1, 19, 5, 3, 64, "padded"),
    ("spatial", 1, 2, 61, 3, 40, "fused"),
    # at least 8 sequences longer than 64 tokens: a whole sequence per backward item (no key chunks)
    ("spatial", 1, 4, 100, 2, 64, "fused"),  # 100 = 2 * 48 + 4 queries, a 112-key block
    ("temporal", 1, 80, 3, 3, 32, "scrambled"),  # 9 sequences of 80 frames
]


@pytest.mark.parametrize("case", CPU_BLOCKING_CASES, ids=lambda c: "-".join(map(str, c)))
def test_cpu_attention_blocking_edges(case):
    if "cpu" not in BACKENDS:
        pytest.skip("the cpu backend is not built")
    axis, B, T, S, H, D, layout = case
    gen = torch.Generator().manual_seed(zlib.crc32(repr(case).encode()))
    for dtype in (torch.float32, torch.bfloat16):
        qkv = _fused_qkv(B, T, S, H, D, layout, dtype, "cpu", gen).requires_grad_()
        q, k, v = qkv.unbind(3)
        with ops.use_backend("cpu"):
            out = ops.video_attention(q, k, v, axis)
        grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(dtype=dtype)
        (dqkv,) = torch.autograd.grad(out, qkv, grad_out)
        ref, ref_grads = _reference_with_grads(q, k, v, axis, None, grad_out)
        tol = ATTENTION_TOLERANCE[dtype]
        assert_rel_close(out, ref, tol, f"cpu {dtype} output")
        for i, name in enumerate("qkv"):
            assert_grad_close(dqkv[:, :, :, i], ref_grads[i], grad_out, tol, f"cpu {dtype} d{name}")


@pytest.mark.parametrize("shape, axis", [((1, 3, 300, 2, 32), "joint"), ((1, 8, 64, 2, 32), "spatial"),
                                         ((1, 5, 21, 3, 24), "temporal"), ((1, 4, 130, 2, 32), "spatial")])
def test_cpu_attention_results_do_not_depend_on_threads(shape, axis):
    """The work split (query blocks, key chunks) depends on the shape only: 1 and 2 threads agree bit for bit
    (a long joint sequence split into key chunks; the tiny model's spatial call, ~8 MFLOP, parallel since the
    threshold is 2 MFLOP; a short temporal call under the threshold; 8 sequences of 130 tokens, a sequence per
    backward item)."""
    if "cpu" not in BACKENDS:
        pytest.skip("the cpu backend is not built")
    gen = torch.Generator().manual_seed(3)
    B, T, S, H, D = shape
    qkv = torch.randn(B, T, S, 3, H, D, generator=gen).requires_grad_()
    q, k, v = qkv.unbind(3)
    grad_out = torch.randn(*shape, generator=gen)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with ops.use_backend("cpu"):
                out = ops.video_attention(q, k, v, axis)
            results.append((out, *torch.autograd.grad(out, qkv, grad_out)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("axis", ["spatial", "temporal", "joint"])
def test_video_attention_explicit_scale_and_contiguous_inputs(backend, axis):
    """A non-default scale, separate contiguous q, k, v (not views), scores large enough to saturate softmax."""
    device = device_for(backend)
    B, T, S, H, D = 1, 5, 19, 2, 32
    q, k, v = (torch.randn(B, T, S, H, D, dtype=torch.float64) for _ in range(3))
    scale = 0.9  # 5x the default 32**-0.5: peaked attention rows
    for dtype in dtypes_for(backend):
        qd, kd, vd = (t.to(device=device, dtype=dtype).requires_grad_() for t in (q, k, v))
        with ops.use_backend(backend):
            out = ops.video_attention(qd, kd, vd, axis, scale)
        grad_out = torch.randn(out.shape, dtype=torch.float64).to(device=device, dtype=dtype)
        grads = torch.autograd.grad(out, (qd, kd, vd), grad_out)
        ref, ref_grads = _reference_with_grads(qd, kd, vd, axis, scale, grad_out)
        tol = ATTENTION_TOLERANCE[dtype]
        assert_rel_close(out, ref, tol, f"{backend} {dtype} output")
        for g, rg, name in zip(grads, ref_grads, "qkv"):
            assert_rel_close(g, rg, tol, f"{backend} {dtype} d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("axis", ["spatial", "temporal", "joint"])
def test_video_attention_fp16(backend, axis):
    """fp16 inputs (fp32 accumulation inside): the half-precision tolerance, output and gradients."""
    device = device_for(backend)
    gen = torch.Generator().manual_seed(11)
    qkv = _fused_qkv(1, 3, 20, 2, 32, "fused", torch.float16, device, gen).requires_grad_()
    q, k, v = qkv.unbind(3)
    try:
        with ops.use_backend(backend):
            out = ops.video_attention(q, k, v, axis)
    except ops.BackendUnavailableError as e:
        pytest.skip(str(e))
    assert out.dtype == torch.float16
    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=torch.float16)
    (dqkv,) = torch.autograd.grad(out, qkv, grad_out)
    ref, ref_grads = _reference_with_grads(q, k, v, axis, None, grad_out)
    tol = ATTENTION_TOLERANCE[torch.float16]
    assert_rel_close(out, ref, tol, f"{backend} fp16 output")
    for i, name in enumerate("qkv"):
        assert_rel_close(dqkv[:, :, :, i], ref_grads[i], tol, f"{backend} fp16 d{name}")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
def test_temporal_attention_huge_batch(backend):
    """B*S*heads = 98,304 > 65,535 sequences (where SDPA's fused kernels exceed a grid dimension)."""
    B, T, S, H, D = 3, 16, 4096, 8, 64
    gen = torch.Generator().manual_seed(7)
    for dtype in dtypes_for(backend):
        qkv = _fused_qkv(B, T, S, H, D, "fused", dtype, torch.device("cuda"), gen).requires_grad_()
        q, k, v = qkv.unbind(3)
        with ops.use_backend(backend):
            out = ops.video_attention(q, k, v, "temporal")
        grad_out = torch.randn(out.shape, device="cuda", dtype=dtype)
        (dqkv,) = torch.autograd.grad(out, qkv, grad_out)
        ref, ref_grads = _reference_with_grads(q, k, v, "temporal", None, grad_out)
        tol = ATTENTION_TOLERANCE[dtype]
        assert_rel_close(out, ref, tol, f"{backend} {dtype} output")
        for i, name in enumerate("qkv"):
            assert_rel_close(dqkv[:, :, :, i], ref_grads[i], tol, f"{backend} {dtype} d{name}")


@pytest.mark.gpu
@pytest.mark.parametrize("axis", ["spatial", "temporal", "joint"])
def test_triton_attention_compiles(axis):
    """torch.compile(fullgraph=True) of the Triton op (forward; its backward through AOTAutograd) equals the
    eager call. On a GPU only: on the CPU the interpreter cannot run under compile (DESIGN.md). The backend
    function is compiled directly: the facade's dispatcher reads a ContextVar, a graph break of its own."""
    if "triton" not in BACKENDS:
        pytest.skip("triton backend unavailable here")
    from fastvdm.ops.triton.attention import video_attention as triton_attention

    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(5)
    qkv = _fused_qkv(1, 8, 96, 2, 64, "fused", torch.bfloat16, torch.device("cuda"), gen)

    def fwd(qkv):
        return triton_attention(*qkv.unbind(3), axis)

    results = []
    for fn in (fwd, torch.compile(fwd, fullgraph=True)):
        x = qkv.detach().requires_grad_()
        out = fn(x)
        out.float().square().sum().backward()
        results.append((out.float(), x.grad.float()))
    (eager_out, eager_grad), (comp_out, comp_grad) = results
    assert_rel_close(comp_out, eager_out, 1e-2, "compiled output")
    assert_rel_close(comp_grad, eager_grad, 1e-2, "compiled gradient")


def test_triton_supports_reasons():
    """The Triton backend declines what it cannot run, with a reason (and accepts fp32 where it can run)."""
    if "triton" not in BACKENDS:
        pytest.skip("triton backend unavailable here")
    from fastvdm.ops.triton.attention import supports

    device = device_for("triton")
    x = torch.randn(1, 2, 3, 1, 32, device=device)
    assert supports(x, x, x, "spatial") is None
    big = torch.randn(1, 2, 3, 1, 160, device=device)
    assert "head dim" in supports(big, big, big, "spatial")
    x64 = x.double()
    assert "dtype" in supports(x64, x64, x64, "joint")
    with pytest.raises(ops.BackendUnavailableError, match="triton"):
        with ops.use_backend("triton"):
            ops.video_attention(x64, x64, x64, "joint")


# --------------------------------------------------------------------------- the reference vs an einsum oracle
def _einsum_attention(q, k, v, axis, scale):
    """softmax(scale * Q K^T) V written out with einsum on (B, T, S, H, D), independent of the reference."""
    B, T, S, H, D = q.shape
    if axis == "spatial":  # attend over s within (b, t, h)
        logits = torch.einsum("btshd,btrhd->bthsr", q, k) * scale
        return torch.einsum("bthsr,btrhd->btshd", logits.softmax(-1), v)
    if axis == "temporal":  # attend over t within (b, s, h)
        logits = torch.einsum("btshd,brshd->bshtr", q, k) * scale
        return torch.einsum("bshtr,brshd->btshd", logits.softmax(-1), v)
    # joint: attend over all (t, s) within (b, h)
    logits = torch.einsum("btshd,burhd->bhtsur", q, k) * scale
    weights = logits.reshape(B, H, T, S, T * S).softmax(-1).reshape(B, H, T, S, T, S)
    return torch.einsum("bhtsur,burhd->btshd", weights, v)


@pytest.mark.parametrize("axis", ["spatial", "temporal", "joint"])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_reference_matches_einsum(axis, scale):
    B, T, S, H, D = 2, 5, 7, 3, 16
    qkv = torch.randn(B, T, S, 3, H, D, dtype=torch.float64)
    q, k, v = qkv.unbind(3)
    assert not q.is_contiguous()
    out = reference.video_attention(q, k, v, axis, scale)
    expected = _einsum_attention(q, k, v, axis, D**-0.5 if scale is None else scale)
    assert out.is_contiguous()
    assert_rel_close(out, expected, 1e-12, f"reference {axis}")
    # Each token's output is a convex combination of value rows: a sanity bound that does not use softmax code.
    assert out.abs().max() <= v.abs().max() + 1e-12
    assert math.isfinite(out.sum().item())


# --------------------------------------------------------------------------- GPU code generation, without a GPU
_COMPILE_SCRIPT = r'''
import json, re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import fastvdm.kernels.flash_attention as FA
import fastvdm.kernels.temporal_attention as TA

def compile_sm90(fn, constexprs, floats, num_warps, num_stages):
    # The signature the JIT would specialize for bf16 views of a fused QKV tensor: pointers and strides
    # divisible by 16, the d strides equal to 1 (constexpr).
    sig, attrs, consts = {}, {}, dict(constexprs)
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif name in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV", "LSE", "DELTA"):
            sig[name] = "*fp32" if name in ("LSE", "DELTA") else "*bf16"
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in floats:
            sig[name] = "fp32"
        elif name.endswith("_d"):
            sig[name] = "constexpr"
            consts[name] = 1
        else:
            sig[name] = "i32"
            if name.startswith("s") or name in ("N", "INNER"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    kernel = triton.compile(ASTSource(fn, sig, consts, attrs), target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    ptx = kernel.asm["ptx"]
    return {"wgmma": len(re.findall(r"wgmma\.mma_async", ptx)), "mma": len(re.findall(r"\bmma\.sync", ptx)),
            "vector_loads": len(re.findall(r"ld\.global[\w.:]*\.v4|cp\.async\.cg", ptx))}

flash = dict(SPLIT=False, EVEN_D=True, BLOCK_D=64)
temporal = dict(EVEN_D=True, BLOCK_R=4, BLOCK_T=16, BLOCK_D=64)
out = {
    "flash_fwd": compile_sm90(FA._flash_fwd_kernel, dict(flash, BLOCK_M=128, BLOCK_N=64), ("qk_scale",), 8, 3),
    "flash_dkdv": compile_sm90(FA._flash_bwd_dkdv_kernel, dict(flash, BLOCK_M=64, BLOCK_N=128),
                               ("scale", "qk_scale"), 8, 3),
    "flash_dq": compile_sm90(FA._flash_bwd_dq_kernel, dict(flash, BLOCK_M=128, BLOCK_N=64),
                             ("scale", "qk_scale"), 8, 3),
    "temporal_fwd": compile_sm90(TA._temporal_fwd_kernel, temporal, ("qk_scale",), 4, 1),
    "temporal_bwd": compile_sm90(TA._temporal_bwd_kernel, temporal, ("scale", "qk_scale"), 4, 1),
}

# torch.compile tracing of the Triton op, forward + backward (the joint graph). torch's analysis of which kernel
# arguments a Triton kernel writes needs a target for TTIR: give it sm_90 (no launch happens).
import torch
from functorch.compile import min_cut_rematerialization_partition
from torch._dynamo.backends.common import aot_autograd
import fastvdm.ops.triton.attention as A

class Sm90Driver:
    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

triton.runtime.driver.set_active(Sm90Driver())

class Captured(Exception):
    pass

def trace(axis):
    graphs = []
    def capture(gm, example_inputs):
        graphs.append(gm.code)
        def run(*args):
            raise Captured
        return run
    backend = aot_autograd(fw_compiler=capture, bw_compiler=capture,
                           partition_fn=min_cut_rematerialization_partition)
    torch._dynamo.reset()
    x = torch.randn(1, 4, 24, 3, 2, 64, dtype=torch.bfloat16, requires_grad=True)
    try:
        torch.compile(lambda qkv: A.video_attention(*qkv.unbind(3), axis), backend=backend, fullgraph=True)(x)
    except Captured:
        pass
    code = "\n".join(graphs)
    return {"graphs": len(graphs), "kernels": code.count("triton_kernel_wrapper_functional("),
            "cloned": re.findall(r"tensors_to_clone = \[([^\]]*)\]", code)}

out["trace"] = {axis: trace(axis) for axis in ("spatial", "temporal")}  # flash / temporal kernels
print("RESULT" + json.dumps(out))
'''


def test_triton_kernels_compile_for_hopper():
    """The GPU path, which the interpreter does not exercise: every kernel compiles for sm_90 (Triton ->
    PTX -> cubin with the ptxas Triton ships; no GPU needed) in bf16 with the fused-layout specialization,
    uses tensor-core MMAs (wgmma for the flash kernels, mma.sync for the batched 3-D dots of the temporal
    kernels), and loads 128-bit vectors. And torch.compile(fullgraph=True) traces the op, forward and
    backward, with the kernels seen to write only their outputs (no launch: the compiled graph is captured)."""
    import json
    import os
    import subprocess
    import sys

    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        pytest.skip("this triton has no NVIDIA backend")
    # Triton's own cache (keyed by the kernel source, options and Triton version) spares recompiling.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_DEFAULT_FP_FUSION="1")
    proc = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    for axis, traced in result.pop("trace").items():
        # The forward graph holds the kernel launch, and the kernel writes only its outputs (O, LSE): the
        # q, k, v views of the fused tensor are not cloned as if mutated.
        assert traced["graphs"] >= 1 and traced["kernels"] >= 1, f"{axis}: no Triton kernel traced: {traced}"
        for cloned in traced["cloned"]:
            assert set(re.findall(r"'(\w+)'", cloned)) <= {"O", "LSE"}, f"{axis}: inputs treated as mutated: {traced}"
    for name, stats in result.items():
        mma = stats["wgmma"] if name.startswith("flash") else stats["mma"]
        assert mma > 0, f"{name}: no tensor-core MMA in the PTX: {stats}"
        assert stats["vector_loads"] > 0, f"{name}: no 128-bit loads in the PTX: {stats}"


@pytest.mark.parametrize("S", [40, 300])
def test_cpu_attention_underflowing_softmax(S):
    """Scores hundreds of nats apart (scale 12 at D = 32): most probabilities underflow the exp to exactly 0 (its
    2^n < 2^-126 lanes are zeroed), next to the keys past a sequence's end (S = 300: a partial last key block)
    and the short-sequence path (S = 40). Output and gradients against the float64 reference."""
    if "cpu" not in BACKENDS:
        pytest.skip("the cpu backend is not built")
    gen = torch.Generator().manual_seed(17)
    q, k, v = (torch.randn(1, 4, S, 2, 32, dtype=torch.float64, generator=gen) for _ in range(3))
    grad_out = torch.randn(1, 4, S, 2, 32, dtype=torch.float64, generator=gen)
    scale = 12.0
    with torch.no_grad():
        s = torch.einsum("bthd,bshd->bhts", q[:, 0] * scale, k[:, 0])
        p = torch.softmax(s, dim=-1)
    assert (p < 2.0**-150).float().mean() > 0.4, "the scores are not spread enough to underflow"
    qf, kf, vf = (t.float().requires_grad_() for t in (q, k, v))
    with ops.use_backend("cpu"):
        out = ops.video_attention(qf, kf, vf, "spatial", scale)
    grads = torch.autograd.grad(out, (qf, kf, vf), grad_out.float())
    ref, ref_grads = _reference_with_grads(qf, kf, vf, "spatial", scale, grad_out)
    tol = ATTENTION_TOLERANCE[torch.float32]
    assert_rel_close(out, ref, tol, "output")
    for g, rg, name in zip(grads, ref_grads, "qkv"):
        assert_rel_close(g, rg, tol, f"d{name}")


_ISA_SCRIPT = r"""
import json, sys
import torch
import fastvdm._C_cpu as C
import fastvdm.ops as ops
from fastvdm.ops import reference
errs = {}
gen = torch.Generator().manual_seed(23)
# (axis, B, T, S, H, D, dtype): the long path with a partial key block, the short in-place path, the joint axis,
# an odd head dim (packed short path), bf16, 8 long sequences (a sequence per backward item)
for axis, B, T, S, H, D, dtype in [("spatial", 1, 2, 300, 2, 64, torch.float32),
                                   ("temporal", 1, 16, 9, 2, 32, torch.float32),
                                   ("joint", 1, 3, 37, 1, 40, torch.float32),
                                   ("spatial", 1, 2, 50, 3, 24, torch.float32),
                                   ("spatial", 1, 2, 90, 2, 64, torch.bfloat16),
                                   ("spatial", 1, 4, 100, 2, 32, torch.float32)]:
    q, k, v, g = (torch.randn(B, T, S, H, D, dtype=torch.float64, generator=gen) for _ in range(4))
    x = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    with ops.use_backend("cpu"):
        out = ops.video_attention(*x, axis)
    grads = torch.autograd.grad(out, x, g.to(dtype))
    r = [t.to(dtype).double().requires_grad_() for t in (q, k, v)]
    ref = reference.video_attention(*r, axis)
    ref_grads = torch.autograd.grad(ref, r, g.to(dtype).double())
    rel = lambda a, b: float((a.detach().double() - b.detach()).norm() / b.detach().norm())
    errs[f"{axis}-{S}-{D}-{dtype}"] = [rel(out, ref)] + [rel(a, b) for a, b in zip(grads, ref_grads)]
print("RESULT" + json.dumps({"isa": C.attention_isa(), "errs": errs}))
"""


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_cpu_attention_lower_instruction_sets(isa):
    """The AVX2+FMA and baseline x86-64 builds of the kernels (the ones a CPU without AVX-512 runs), forced with
    FASTVDM_CPU_ISA in a fresh process: output and gradients against the float64 reference on the long, short,
    joint, odd-head-dim and bf16 paths."""
    import json
    import os
    import subprocess
    import sys

    if "cpu" not in BACKENDS:
        pytest.skip("the cpu backend is not built")
    env = dict(os.environ, FASTVDM_CPU_ISA=isa)
    proc = subprocess.run([sys.executable, "-c", _ISA_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    if result["isa"] != isa:
        pytest.skip(f"this CPU has no {isa}: the kernels ran with {result['isa']}")
    for case, errs in result["errs"].items():
        tol = ATTENTION_TOLERANCE[torch.bfloat16 if "bfloat16" in case else torch.float32]
        for what, err in zip(["output", "dq", "dk", "dv"], errs):
            assert err <= tol, f"{isa} {case} {what}: relative error {err:.2e} > {tol:.0e}"


def test_cpu_attention_propagates_nan_like_softmax():
    """A NaN query spoils its own output row only; a NaN key spoils every query of its sequence (the exp's clamp
    keeps NaN: x86 max/min return their second operand when one is NaN, and the kernel passes x second)."""
    if "cpu" not in BACKENDS:
        pytest.skip("the cpu backend is not built")
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, 40, 2, 16, generator=gen) for _ in range(3))
    q[0, 0, 3, 1, 5] = float("nan")
    k[0, 1, 7, 0, 2] = float("nan")
    with ops.use_backend("cpu"):
        out = ops.video_attention(q, k, v, "spatial")
    nan = torch.isnan(out)
    assert nan[0, 0, 3, 1].all() and nan[0, 1, :, 0].all()
    assert int(nan.sum()) == 16 + 40 * 16  # nothing else
