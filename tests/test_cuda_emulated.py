"""The CUDA kernels of csrc/cuda, run on the CPU by a small emulator of the CUDA execution model.

No GPU is needed: csrc/tests/emu/cuda_emu.h lets g++ compile csrc/cuda/*.cu as C++ (one std::thread per CUDA
thread, real barriers for __syncthreads / __syncwarp, emulated warp shuffles and atomics), and
csrc/tests/emu/emu_api.cpp exposes the unchanged host launch functions to ctypes. These tests feed them CPU
tensors and compare against the float64 reference ops, like the backend suites do on a GPU.

What this verifies: the kernels' indexing, strides, tails, tiling, online softmax, reductions, barriers, the
launch functions' plans, and the WMMA tile products of the bf16 / fp16 flash kernels (operand layouts, ldm and
32-byte pointer alignment, checked by the emulated nvcuda::wmma; fp32 uses the FMA path). What it does not:
the hardware's fragment-to-lane mapping and exact fast-math intrinsics, real-hardware timing, races that the
barrier-ordered emulation cannot produce, and the torch bindings (csrc/torch/cuda_*.cpp), which need a CUDA
build of torch.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest
import torch

from fastvdm.ops import reference
from oracle import ATTENTION_TOLERANCE, TOLERANCE, assert_grad_close, assert_rel_close

ROOT = Path(__file__).resolve().parents[1]
CUDA_INCLUDE = [p for p in ("/usr/local/cuda/include", "/usr/include") if (Path(p) / "cuda_bf16.h").exists()]
DTYPE_CODE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}

pytestmark = pytest.mark.skipif(
    shutil.which("g++") is None or not CUDA_INCLUDE, reason="needs g++ and the CUDA headers (cuda_bf16.h)"
)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    lib = tmp_path_factory.mktemp("cuda_emu") / "libfastvdm_cuda_emu.so"
    cmd = [
        "g++", "-std=c++20", "-O1", "-pthread", "-fPIC", "-shared", "-Wno-unknown-pragmas",
        "-I", str(ROOT / "csrc"), "-I", CUDA_INCLUDE[0],
        "-include", str(ROOT / "csrc" / "tests" / "emu" / "cuda_emu.h"),
        "-x", "c++", str(ROOT / "csrc" / "tests" / "emu" / "emu_api.cpp"), "-o", str(lib),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lib = ctypes.CDLL(str(lib))
    lib.emu_take_vector_accesses.restype = ctypes.c_longlong
    return lib


def _p(t):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _i64(values):
    return (ctypes.c_int64 * len(values))(*values)


def _L(*values):
    """int64_t arguments (ctypes passes plain ints as 32-bit C ints)."""
    return tuple(ctypes.c_int64(v) for v in values)


# ---------------------------------------------------------------------------------------------- attention
# (axis, B, T, S, heads, D, layout): the cases of tests/test_attention.py (short and flash kernels, tails,
# fused / scrambled / padded strides, D not a multiple of 16)
CASES = [
    ("spatial", 1, 2, 17, 2, 32, "fused"),
    ("spatial", 1, 1, 64, 2, 64, "fused"),
    ("spatial", 2, 2, 1, 2, 32, "scrambled"),
    ("spatial", 1, 1, 100, 1, 32, "fused"),
    ("temporal", 2, 7, 17, 2, 64, "fused"),
    ("temporal", 1, 16, 16, 2, 32, "scrambled"),
    ("temporal", 1, 25, 17, 1, 32, "padded"),
    ("temporal", 1, 1, 17, 2, 32, "fused"),
    ("temporal", 1, 70, 2, 1, 32, "fused"),  # T > 32: the flash kernels over t
    ("joint", 1, 2, 17, 2, 32, "fused"),
    ("joint", 1, 7, 17, 1, 64, "padded"),
    ("joint", 1, 16, 1, 2, 32, "scrambled"),
    ("joint", 2, 1, 17, 1, 64, "fused"),
    ("spatial", 1, 2, 33, 1, 40, "fused"),  # D = 40
    ("temporal", 1, 5, 6, 2, 24, "scrambled"),  # D = 24
    ("spatial", 1, 1, 45, 1, 128, "fused"),  # D = 128, the largest head
]
AXIS_CODE = {"spatial": 0, "temporal": 1, "joint": 2}


def _fused_qkv(B, T, S, H, D, layout, dtype, gen):
    if layout == "fused":
        shape, order = (B, T, S, 3, H, D), (0, 1, 2, 3, 4, 5)
    elif layout == "scrambled":
        shape, order = (3, H, B, D, S, T), (2, 5, 4, 0, 1, 3)
    else:  # padded
        shape, order = (B, T, S + 3, 3, H, D), (0, 1, 2, 3, 4, 5)
    base = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    return base.permute(order)[:, :, :S]


def _emu_attention(emu, q, k, v, axis, scale, grad_out):
    B, T, S, H, D = q.shape
    code, ax = DTYPE_CODE[q.dtype], AXIS_CODE[axis]
    out = torch.empty((B, T, S, H, D), dtype=q.dtype)
    lse = torch.empty((B, T, S, H), dtype=torch.float32)
    args = (code, *_L(B, T, S, H, D), ax, _p(q), _i64(q.stride()), _p(k), _i64(k.stride()), _p(v), _i64(v.stride()))
    assert emu.emu_attention_forward(*args, _p(out), _p(lse), ctypes.c_float(scale)) == 0
    delta = (grad_out.float() * out.float()).sum(-1).contiguous()
    dq, dk, dv = (torch.empty((B, T, S, H, D), dtype=q.dtype) for _ in range(3))
    dq_accum = torch.zeros((B, T, S, H, D), dtype=torch.float32)
    rc = emu.emu_attention_backward(
        *args, _p(grad_out), _i64(grad_out.stride()), _p(lse), _p(delta), _p(dq), _p(dq_accum), _p(dk), _p(dv),
        ctypes.c_float(scale),
    )
    assert rc in (0, 3), rc
    if rc == 0:  # flash path: dq accumulated in fp32
        dq = dq_accum.to(q.dtype)
    return out, lse, (dq, dk, dv)


def _check_attention(emu, q, k, v, grad_out, axis):
    """The emulated forward and backward against the float64 reference (output, lse, dq, dk, dv)."""
    B, T, S, H, D = q.shape
    dtype = q.dtype
    scale = D**-0.5
    out, lse, grads = _emu_attention(emu, q, k, v, axis, scale, grad_out)

    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    ref = reference.video_attention(q64, k64, v64, axis, scale)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), grad_out.double())
    tol = ATTENTION_TOLERANCE[dtype]
    assert_rel_close(out, ref, tol, f"{dtype} output")
    for g, rg, name in zip(grads, ref_grads, "qkv"):
        assert_grad_close(g, rg, grad_out, tol, f"{dtype} d{name}")
    # lse is the logsumexp of the scaled scores per query token
    qs, ks = (reference._to_sequences(t, axis) for t in (q64.detach(), k64.detach()))
    ref_lse = torch.logsumexp(scale * qs @ ks.transpose(-1, -2), dim=-1)  # (sequences, H, L)
    if axis == "spatial":
        ref_lse = ref_lse.reshape(B, T, H, S).permute(0, 1, 3, 2)
    elif axis == "temporal":
        ref_lse = ref_lse.reshape(B, S, H, T).permute(0, 3, 1, 2)
    else:
        ref_lse = ref_lse.permute(0, 2, 1).reshape(B, T, S, H)
    assert_rel_close(lse, ref_lse, 1e-5 if dtype == torch.float32 else 1e-3, "lse")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_emulated_attention_matches_reference(emu, case, dtype):
    axis, B, T, S, H, D, layout = case
    gen = torch.Generator().manual_seed(zlib.crc32(repr(case).encode()))
    q, k, v = _fused_qkv(B, T, S, H, D, layout, dtype, gen).unbind(3)
    grad_out = torch.randn((B, T, S, H, D), generator=gen, dtype=torch.float64).to(dtype)
    _check_attention(emu, q, k, v, grad_out, axis)


def _shifted(t, shift, row_pad=0):
    """A copy of t (contiguous layout, the last dimension padded by row_pad unused elements) placed `shift`
    elements into a fresh buffer: an offset view whose base is misaligned unless shift * itemsize % 16 == 0."""
    shape = (*t.shape[:-1], t.shape[-1] + row_pad)
    numel = 1
    for n in shape:
        numel *= n
    buf = torch.full((numel + shift,), float("nan"), dtype=t.dtype)
    view = buf[shift:].view(shape)
    view[..., : t.shape[-1]] = t
    return view[..., : t.shape[-1]]


# (axis, B, T, S, heads, D, layout, dtype): the 16-byte vector rows and the scalar fallback of attention.cu.
# layouts: "fused" (aligned QKV rows: vector path), "shift1" (q, k, v and dout one element into their buffers:
# misaligned bases, scalar loads), "shift8" (8 elements in: a storage offset that keeps 16-byte alignment for
# 16-bit types), "dpad1" (rows of D + 1 elements: row starts misaligned), "scrambled" (d stride != 1).
VEC_CASES = [
    ("spatial", 1, 2, 40, 2, 32, "fused", torch.float16),  # flash, vector rows
    ("spatial", 1, 2, 40, 2, 32, "shift1", torch.float16),  # flash, misaligned inputs, vector output stores
    ("joint", 1, 3, 7, 2, 24, "shift1", torch.bfloat16),  # tiles across frames, misaligned
    ("joint", 1, 4, 9, 1, 20, "fused", torch.float32),  # D = 20: 5 fp32 vectors a row, tiles across frames
    ("temporal", 1, 40, 3, 2, 16, "shift8", torch.bfloat16),  # flash over t, offset but aligned
    ("temporal", 2, 5, 3, 2, 24, "fused", torch.float16),  # short kernel, vector rows
    ("temporal", 2, 5, 3, 2, 24, "shift1", torch.float32),  # short kernel, misaligned by 4 bytes
    ("spatial", 1, 3, 33, 1, 16, "dpad1", torch.bfloat16),  # odd row stride
    ("spatial", 1, 2, 17, 1, 32, "scrambled", torch.float16),  # d stride != 1
    ("temporal", 2, 5, 3, 2, 20, "fused", torch.float16),  # D = 20: no whole 8-element runs, all scalar
    ("spatial", 1, 1, 45, 1, 20, "fused", torch.bfloat16),  # flash, D = 20: all scalar
    ("joint", 1, 3, 11, 1, 3, "shift1", torch.float32),  # D = 3: all scalar
]


@pytest.mark.parametrize("case", VEC_CASES, ids=lambda c: "-".join(map(str, c)).replace("torch.", ""))
def test_emulated_attention_vector_and_scalar_rows(emu, case):
    axis, B, T, S, H, D, layout, dtype = case
    gen = torch.Generator().manual_seed(zlib.crc32(repr(case).encode()))
    if layout == "scrambled":
        q, k, v = _fused_qkv(B, T, S, H, D, "scrambled", dtype, gen).unbind(3)
        grad_out = torch.randn((B, T, S, H, D), generator=gen, dtype=torch.float64).to(dtype)
    else:
        shift = {"shift1": 1, "shift8": 8}.get(layout, 0)
        qkv = torch.randn((B, T, S, 3, H, D), generator=gen, dtype=torch.float64).to(dtype)
        qkv = _shifted(qkv, shift, row_pad=1 if layout == "dpad1" else 0)
        q, k, v = qkv.unbind(3)
        grad_out = _shifted(torch.randn((B, T, S, H, D), generator=gen, dtype=torch.float64).to(dtype), shift)
    if layout in ("shift1", "dpad1"):
        assert q.data_ptr() % 16 != 0 or q.stride(2) * q.element_size() % 16 != 0
    emu.emu_take_vector_accesses()
    _check_attention(emu, q, k, v, grad_out, axis)
    vector_accesses = emu.emu_take_vector_accesses()
    width = 16 // q.element_size()
    if D % width != 0:  # no tensor can take the vector path
        assert vector_accesses == 0
    else:  # at least the contiguous outputs (out, dq, dk, dv) do; misaligned inputs did not (the emulator aborts)
        assert vector_accesses > 0


def test_emulated_attention_peaked_softmax(emu):
    """A large explicit scale (peaked rows) on the flash and the short kernels, fp32."""
    for axis, shape in (("spatial", (1, 1, 70, 2, 32)), ("temporal", (1, 9, 3, 2, 32))):
        q, k, v = (torch.randn(shape, dtype=torch.float64).float() for _ in range(3))
        grad_out = torch.randn(shape)
        out, _, grads = _emu_attention(emu, q, k, v, axis, 0.9, grad_out)
        q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
        ref = reference.video_attention(q64, k64, v64, axis, 0.9)
        ref_grads = torch.autograd.grad(ref, (q64, k64, v64), grad_out.double())
        assert_rel_close(out, ref, 2e-4, f"{axis} output")
        for g, rg, name in zip(grads, ref_grads, "qkv"):
            assert_rel_close(g, rg, 2e-4, f"{axis} d{name}")


# ---------------------------------------------------------------------------------------------- group norm
def _gn_param_grads(sum_dz, sum_dzx, weight, bias, scale):
    """The formulas of fastvdm/ops/cuda/group_norm.py:param_grads (all parameters present)."""
    mod = 1.0 + scale.float()
    return (
        (sum_dzx * mod).sum(0),
        (sum_dz * mod).sum(0),
        sum_dzx * weight.float() + sum_dz * bias.float(),
        sum_dz,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last_3d"])
@pytest.mark.parametrize(
    "shape,groups,sms,modulated",
    [
        ((2, 12, 3, 5, 7), 4, 132, True),  # fused (one read) path
        ((2, 12, 3, 5, 7), 4, 132, False),
        ((1, 8, 4, 16, 16), 2, 132, True),  # fused, 4096 elements per group
        ((3, 6, 1, 3, 1), 3, 1, True),  # fused, tiny
        ((1, 4, 4, 48, 48), 2, 132, True),  # split path: 18432 elements per group in 9 chunks
        ((1, 4, 4, 48, 48), 2, 132, False),
        ((2, 4, 2, 48, 48), 2, 1, True),  # split path, one SM: one chunk per group
        ((2, 12, 3, 5, 7), 4, 132, "input_bias"),  # GroupNorm(x + input_bias), everything else too
        ((1, 4, 4, 48, 48), 2, 132, "input_bias"),
    ],
    ids=["fused", "fused-plain", "fused4096", "tiny", "split9", "split9-plain", "split_1sm", "fused-ib", "split9-ib"],
)
def test_emulated_group_norm_matches_reference(emu, dtype, layout, shape, groups, sms, modulated):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, groups, layout, modulated)).encode()))
    B, C = shape[:2]
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 3).to(dtype)  # a mean far from 0
    if layout == "channels_last_3d":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    weight = bias = scale = shift = input_bias = None
    activation = None
    if modulated:
        weight, bias = (torch.randn(C, generator=gen, dtype=torch.float64) for _ in range(2))
        scale, shift = (torch.randn(B, C, generator=gen, dtype=torch.float64) * 0.5 for _ in range(2))
        activation = "silu"
    if modulated == "input_bias":  # the per-channel bias moves the groups' means away from x's (3)
        input_bias = torch.randn(B, C, generator=gen, dtype=torch.float64) * 2 - 5
    x3 = x.reshape(B, C, -1)
    S = x3.shape[2]
    assert x3.is_contiguous() or x3.transpose(1, 2).is_contiguous()
    f32 = lambda t: None if t is None else t.float().contiguous()  # noqa: E731
    y = torch.empty_strided(x3.shape, x3.stride(), dtype=dtype)
    mean = torch.empty(B, groups)
    rstd = torch.empty(B, groups)
    keep = [f32(t) for t in (weight, bias, scale, shift, input_bias)]  # keep the fp32 copies alive
    params = [_p(t) for t in keep[:4]]
    rc = emu.emu_group_norm_forward(
        DTYPE_CODE[dtype], _p(x3), _i64(x3.stride()), *_L(B, C, S, groups), *params, ctypes.c_float(1e-5),
        int(bool(modulated)), sms, _p(y), _p(mean), _p(rstd), _p(keep[4]),
    )
    assert rc == 0
    x64 = x.double().requires_grad_()
    p64 = [None if t is None else t.double().requires_grad_() for t in (weight, bias, scale, shift, input_bias)]
    ref = reference.group_norm(x64, groups, p64[0], p64[1], 1e-5, p64[2], p64[3], activation, p64[4])
    tol = TOLERANCE[dtype]
    assert_rel_close(y.view(shape), ref, tol, "output")
    u = x.double() if input_bias is None else x.double() + keep[4].double().view(B, C, 1, 1, 1)
    ref_mean = u.reshape(B, groups, -1).mean(-1)
    assert_rel_close(mean, ref_mean, 1e-5, "mean")

    dy = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    dy3 = torch.empty_strided(x3.shape, x3.stride(), dtype=dtype).copy_(dy.reshape(B, C, -1))
    dx = torch.empty_strided(x3.shape, x3.stride(), dtype=dtype)
    sum_dz, sum_dzx = torch.empty(B, C), torch.empty(B, C)
    rc = emu.emu_group_norm_backward(
        DTYPE_CODE[dtype], _p(dy3), _p(x3), _i64(x3.stride()), *_L(B, C, S, groups), _p(mean), _p(rstd), *params,
        int(bool(modulated)), sms, _p(dx), _p(sum_dz), _p(sum_dzx), _p(keep[4]),
    )
    assert rc == 0
    wrt = [x64] + [t for t in p64 if t is not None]
    ref_grads = torch.autograd.grad(ref, wrt, dy.double())
    assert_rel_close(dx.view(shape), ref_grads[0], tol, "dx")
    if modulated:
        got = list(_gn_param_grads(sum_dz, sum_dzx, *keep[:3]))
        names = ["dw", "db", "dscale", "dshift"]
        if input_bias is not None:  # d input_bias = sum_s dx (fastvdm/ops/group_norm_common.py:input_bias_grad)
            got.append(dx.view(B, C, -1).double().sum(-1))
            names.append("dinput_bias")
        for g, want, name in zip(got, ref_grads[1:], names):
            assert_rel_close(g, want, tol, name)


def _gn_tensor(t, layout, shift):
    """A (B, C, S) copy of t in `layout`: "contiguous", "shift" (contiguous, `shift` elements into a fresh buffer),
    "padded" (rows of S + 2 elements: not dense), "channels_last" (memory (B, S, C))."""
    if layout == "padded":
        return _shifted(t, shift, row_pad=2)
    if layout == "channels_last":
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    return _shifted(t, shift)


def _gn_vectors(t, groups, width):
    """16-byte vectors of one pass over t (B, C, S) on the vector path: per group (a dense run of Cg * S elements
    at t's group base), the whole vectors after the elements before its first 16-byte boundary."""
    B, C, S = t.shape
    N, total = C // groups * S, 0
    for n in range(B):
        for g in range(groups):
            addr = t.data_ptr() + (n * t.stride(0) + g * (C // groups) * t.stride(1)) * t.element_size()
            lead = min((16 - addr % 16) % 16 // t.element_size(), N)
            total += (N - lead) // width
    return total


# (B, C, S, groups, layout, shift, dtype, sms, modulated, vector): the 16-byte vector runs and the scalar fallback
# of group_norm.cu. "shift" > 0 offsets every tensor (x, y, dy, dx) by that many elements (misaligned bases, one
# shared 16-byte phase: vector path with scalar heads); "x_only" offsets x alone (phases differ: scalar path).
# Odd S (1, 3, 7, 33) gives groups at different phases and vectors spanning two channels.
GN_VEC_CASES = [
    (2, 24, 1, 2, "contiguous", 0, torch.float16, 132, True, True),  # S = 1: runs of channels, group 2 at phase 8
    (2, 6, 1, 2, "shift", 1, torch.float32, 132, True, True),  # S = 1, N = 3 < 4: no whole vector
    (2, 4, 3, 2, "shift", 1, torch.bfloat16, 132, True, True),  # S = 3, N = 6 < 8: scalar heads and tails only
    (2, 6, 7, 3, "contiguous", 0, torch.float32, 132, "input_bias", True),  # S = 7: sample 2 at phase 8
    (2, 4, 33, 2, "shift", 3, torch.float16, 132, True, True),  # S = 33, misaligned by 6 bytes
    (1, 8, 33, 8, "shift", 1, torch.float32, 132, False, True),  # Cg = 1, S = 33
    (3, 12, 7, 4, "shift", 5, torch.bfloat16, 132, "input_bias", True),
    (2, 12, 35, 4, "x_only", 1, torch.bfloat16, 132, True, False),  # x misaligned, y aligned: scalar
    (2, 12, 33, 4, "padded", 0, torch.float16, 132, True, False),  # rows of S + 2: not dense, scalar
    (2, 16, 33, 1, "channels_last", 0, torch.float16, 132, True, True),  # one group: dense
    (2, 16, 7, 4, "channels_last", 0, torch.float32, 132, "input_bias", False),  # several groups: scalar
    (1, 2, 8281, 2, "shift", 1, torch.bfloat16, 132, True, True),  # split path: Cg = 1, S = 91^2 (9 chunks)
    (1, 4, 4225, 2, "shift", 3, torch.float32, 132, "input_bias", True),  # split path, N = 8450, odd S
    (2, 4, 4225, 2, "contiguous", 0, torch.float16, 1, False, True),  # split path, one chunk per group
    (1, 4, 4225, 2, "padded", 1, torch.float32, 132, True, False),  # split path, not dense: scalar
]


@pytest.mark.parametrize("case", GN_VEC_CASES, ids=lambda c: "-".join(map(str, c)).replace("torch.", ""))
def test_emulated_group_norm_vector_and_scalar_runs(emu, case):
    B, C, S, groups, layout, shift, dtype, sms, modulated, vector = case
    gen = torch.Generator().manual_seed(zlib.crc32(repr(case).encode()))
    width = 16 // torch.empty((), dtype=dtype).element_size()
    x_layout = "shift" if layout == "x_only" else layout
    out_layout, out_shift = ("contiguous", 0) if layout == "x_only" else (layout, shift)
    x = _gn_tensor((torch.randn(B, C, S, generator=gen, dtype=torch.float64) * 2 + 3).to(dtype), x_layout, shift)
    y = _gn_tensor(torch.empty(B, C, S, dtype=dtype), out_layout, out_shift)
    assert y.stride() == x.stride()
    if layout == "x_only":
        assert x.data_ptr() % 16 != y.data_ptr() % 16
    weight = bias = scale = shift_t = input_bias = None
    if modulated:
        weight, bias = (torch.randn(C, generator=gen, dtype=torch.float64) for _ in range(2))
        scale, shift_t = (torch.randn(B, C, generator=gen, dtype=torch.float64) * 0.5 for _ in range(2))
    if modulated == "input_bias":
        input_bias = torch.randn(B, C, generator=gen, dtype=torch.float64) * 2 - 5
    keep = [None if t is None else t.float().contiguous() for t in (weight, bias, scale, shift_t, input_bias)]
    params = [_p(t) for t in keep[:4]]
    mean, rstd = torch.empty(B, groups), torch.empty(B, groups)
    emu.emu_take_vector_accesses()
    rc = emu.emu_group_norm_forward(
        DTYPE_CODE[dtype], _p(x), _i64(x.stride()), *_L(B, C, S, groups), *params, ctypes.c_float(1e-5),
        int(bool(modulated)), sms, _p(y), _p(mean), _p(rstd), _p(keep[4]),
    )  # fmt: skip
    assert rc == 0
    forward_vectors = emu.emu_take_vector_accesses()
    x64 = x.double().requires_grad_()
    p64 = [None if t is None else t.double().requires_grad_() for t in (weight, bias, scale, shift_t, input_bias)]
    act = "silu" if modulated else None
    ref = reference.group_norm(x64, groups, p64[0], p64[1], 1e-5, p64[2], p64[3], act, p64[4])
    tol = TOLERANCE[dtype]
    assert_rel_close(y, ref, tol, "output")

    dy = _gn_tensor(torch.randn(B, C, S, generator=gen, dtype=torch.float64).to(dtype), out_layout, out_shift)
    dx = _gn_tensor(torch.empty(B, C, S, dtype=dtype), out_layout, out_shift)
    sum_dz, sum_dzx = torch.empty(B, C), torch.empty(B, C)
    rc = emu.emu_group_norm_backward(
        DTYPE_CODE[dtype], _p(dy), _p(x), _i64(x.stride()), *_L(B, C, S, groups), _p(mean), _p(rstd), *params,
        int(bool(modulated)), sms, _p(dx), _p(sum_dz), _p(sum_dzx), _p(keep[4]),
    )  # fmt: skip
    assert rc == 0
    backward_vectors = emu.emu_take_vector_accesses()
    wrt = [x64] + [t for t in p64 if t is not None]
    ref_grads = torch.autograd.grad(ref, wrt, dy.double())
    assert_rel_close(dx, ref_grads[0], tol, "dx")
    if modulated:
        got = list(_gn_param_grads(sum_dz, sum_dzx, *keep[:3]))
        if input_bias is not None:
            got.append(dx.double().sum(-1))
        for g, want, name in zip(got, ref_grads[1:], ["dw", "db", "dscale", "dshift", "dinput_bias"]):
            assert_rel_close(g, want, tol, name)

    # which path ran: every vector of x (and y / dy, dx) exactly once per pass, or none at all
    per_pass = _gn_vectors(x, groups, width) if vector else 0
    fused = C // groups * S <= 8192
    assert forward_vectors == (2 if fused else 3) * per_pass  # fused: x, y; split: x twice, y
    assert backward_vectors == 5 * per_pass  # sums: x, dy; dx: x, dy, dx
    if vector and C // groups * S >= 2 * width:
        assert per_pass > 0


# ---------------------------------------------------------------------------------------------- losses
def _schedule(B, gen):
    t = torch.rand(B, generator=gen, dtype=torch.float64)
    return torch.cos(t * 1.5), torch.sin(t * 1.5), torch.rand(B, generator=gen, dtype=torch.float64) + 0.5


@pytest.mark.parametrize("shape,groups", [((2, 12, 3, 5, 7), 4), ((1, 4, 4, 48, 48), 2)], ids=["fused", "split"])
def test_emulated_group_norm_overflow_gives_nan(emu, shape, groups):
    """Inputs near 1e25 overflow the fp32 sums: NaN statistics and outputs, never a finite value (the variance
    used to be clamped to 0, or rsqrt(inf) = 0 gave zeros; issue 17)."""
    B, C = shape[:2]
    x3 = (torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 1e25).reshape(B, C, -1)
    y, mean, rstd = torch.empty_like(x3), torch.empty(B, groups), torch.empty(B, groups)
    rc = emu.emu_group_norm_forward(
        DTYPE_CODE[torch.float32], _p(x3), _i64(x3.stride()), *_L(B, C, x3.shape[2], groups), None, None, None, None,
        ctypes.c_float(1e-5), 0, 132, _p(y), _p(mean), _p(rstd), None,  # no input bias
    )
    assert rc == 0
    assert rstd.isnan().all() and y.isnan().all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("target", ["eps", "x0", "v"])
@pytest.mark.parametrize("shape,sms", [((3, 2, 5, 7, 11), 132), ((2, 3000), 1), ((5, 1), 132)])
def test_emulated_denoising_loss(emu, dtype, target, shape, sms):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, target)).encode()))
    pred, x0, noise = (torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for _ in range(3))
    alpha, sigma, weight = _schedule(shape[0], gen)
    B, N = shape[0], pred.numel() // shape[0]
    a32, s32, w32 = alpha.float(), sigma.float(), weight.float()
    loss = torch.empty((), dtype=torch.float32)
    code = DTYPE_CODE[dtype]
    t = {"eps": 0, "x0": 1, "v": 2}[target]
    args = (code, _p(pred), _p(x0), _p(noise), _p(a32), _p(s32), _p(w32), t, *_L(B, N), sms)
    assert emu.emu_denoising_forward(*args, _p(loss)) == 0
    ref = reference.denoising_loss(pred.double(), x0.double(), noise.double(), alpha, sigma, weight, target)
    assert_rel_close(loss, ref, TOLERANCE[dtype], "loss")
    grad = torch.tensor([0.7], dtype=torch.float32)
    dpred = torch.empty_like(pred)
    assert emu.emu_denoising_backward(code, _p(grad), *args[1:], _p(dpred)) == 0
    p64 = pred.double().requires_grad_()
    ref = reference.denoising_loss(p64, x0.double(), noise.double(), alpha, sigma, weight, target)
    (ref_grad,) = torch.autograd.grad(ref, p64, torch.tensor(0.7, dtype=torch.float64))
    assert_rel_close(dpred, ref_grad, TOLERANCE[dtype], "gradient")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape,sms", [((3, 2, 5, 7, 11), 132), ((2, 3000), 1)])
def test_emulated_dmd_loss(emu, dtype, weighted, shape, sms):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, weighted)).encode()))
    x, real, fake = (torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for _ in range(3))
    weight = torch.rand(shape[0], generator=gen, dtype=torch.float64) + 0.5 if weighted else None
    w32 = None if weight is None else weight.float()
    B, N = shape[0], x.numel() // shape[0]
    loss, norm = torch.empty((), dtype=torch.float32), torch.empty(B)
    code = DTYPE_CODE[dtype]
    eps = ctypes.c_float(reference.DMD_NORM_EPS)
    assert emu.emu_dmd_forward(code, _p(x), _p(real), _p(fake), _p(w32), eps, *_L(B, N), sms, _p(loss), _p(norm)) == 0
    x64 = x.double().requires_grad_()
    ref = reference.dmd_loss(x64, real.double(), fake.double(), weight)
    assert_rel_close(loss, ref, TOLERANCE[dtype], "loss")
    grad = torch.tensor([1.3], dtype=torch.float32)
    dx = torch.empty_like(x)
    assert emu.emu_dmd_backward(code, _p(grad), _p(real), _p(fake), _p(norm), _p(w32), *_L(B, N), sms, _p(dx)) == 0
    (ref_grad,) = torch.autograd.grad(ref, x64, torch.tensor(1.3, dtype=torch.float64))
    assert_rel_close(dx, ref_grad, TOLERANCE[dtype], "gradient")


def test_emulated_dmd_gradient_is_exactly_g_over_numel(emu):
    """The bitwise check of tests/test_losses.py: dyadic inputs make the normalizer exact in any order."""
    shape = (2, 2, 4, 8, 8)
    gen = torch.Generator().manual_seed(3)

    def dyadic():
        return torch.randint(-256, 257, shape, generator=gen, dtype=torch.int32).to(torch.float32) / 256

    x, real, fake = dyadic(), dyadic(), dyadic()
    weight = torch.rand(shape[0], generator=gen)
    B, N = shape[0], x.numel() // shape[0]
    loss, norm = torch.empty((), dtype=torch.float32), torch.empty(B)
    eps = ctypes.c_float(reference.DMD_NORM_EPS)
    assert emu.emu_dmd_forward(0, _p(x), _p(real), _p(fake), _p(weight), eps, *_L(B, N), 132, _p(loss), _p(norm)) == 0
    dx = torch.empty_like(x)
    grad = torch.tensor([1.0])
    assert emu.emu_dmd_backward(0, _p(grad), _p(real), _p(fake), _p(norm), _p(weight), *_L(B, N), 132, _p(dx)) == 0
    g = reference.dmd_direction(x, real, fake, weight)
    assert torch.equal(dx, g / x.numel())


# (shape, (pred, x0, noise, gradient) element shifts, dtype, sms): the 16-byte vector runs of losses.cu (taken when
# every big tensor sits at the same offset from a 16-byte boundary: a scalar head, whole vectors, a scalar tail,
# vectors that straddle two samples in the backward) and the scalar path (offsets differ).
LOSS_VEC_CASES = [
    ((3, 3001), (0, 0, 0, 0), torch.float16, 132),  # odd N: backward vectors cross samples
    ((3, 3001), (1, 1, 1, 1), torch.bfloat16, 132),  # all misaligned alike: a scalar head aligns them all
    ((2, 7, 5), (3, 3, 3, 3), torch.float32, 132),  # fp32, 12 bytes off
    ((2, 3000), (5, 5, 5, 5), torch.bfloat16, 1),  # one chunk per sample
    ((5, 1), (0, 0, 0, 0), torch.float32, 132),  # N = 1: a vector spans 4 samples
    ((4, 2, 3), (2, 2, 2, 2), torch.float16, 132),  # N = 6 < 8
    ((3, 3001), (1, 0, 0, 1), torch.float16, 132),  # offsets differ: scalar path
    ((2, 7, 5), (0, 0, 0, 2), torch.float32, 132),  # gradient output offset differs: scalar backward
]


def _shifted_randn(shape, shift, dtype, gen):
    return _shifted(torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype), shift)


@pytest.mark.parametrize("case", LOSS_VEC_CASES, ids=lambda c: "-".join(map(str, c)).replace("torch.", ""))
def test_emulated_losses_vector_and_scalar_runs(emu, case):
    shape, shifts, dtype, sms = case
    gen = torch.Generator().manual_seed(zlib.crc32(repr(case).encode()))
    pred, x0, noise = (_shifted_randn(shape, s, dtype, gen) for s in shifts[:3])
    alpha, sigma, weight = _schedule(shape[0], gen)
    a32, s32, w32 = alpha.float(), sigma.float(), weight.float()
    B, N = shape[0], pred.numel() // shape[0]
    code = DTYPE_CODE[dtype]
    tol = TOLERANCE[dtype]
    width = 16 // pred.element_size()
    phases = [(t.data_ptr() % 16) for t in (pred, x0, noise)]
    out_phase = (_shifted(torch.empty(shape, dtype=dtype), shifts[3]).data_ptr()) % 16

    # denoising loss, v target: forward (pred, x0, noise), backward (pred, x0, noise, dpred)
    emu.emu_take_vector_accesses()
    loss = torch.empty((), dtype=torch.float32)
    args = (code, _p(pred), _p(x0), _p(noise), _p(a32), _p(s32), _p(w32), 2, *_L(B, N), sms)
    assert emu.emu_denoising_forward(*args, _p(loss)) == 0
    forward_vectors = emu.emu_take_vector_accesses()
    p64 = pred.double().requires_grad_()
    ref = reference.denoising_loss(p64, x0.double(), noise.double(), alpha, sigma, weight, "v")
    assert_rel_close(loss, ref, tol, "denoising loss")
    dpred = _shifted(torch.empty(shape, dtype=dtype), shifts[3])
    grad = torch.tensor([0.7], dtype=torch.float32)
    assert emu.emu_denoising_backward(code, _p(grad), *args[1:], _p(dpred)) == 0
    backward_vectors = emu.emu_take_vector_accesses()
    (ref_grad,) = torch.autograd.grad(ref, p64, torch.tensor(0.7, dtype=torch.float64))
    assert_rel_close(dpred, ref_grad, tol, "denoising gradient")
    assert (forward_vectors > 0) == (len(set(phases)) == 1 and N >= 2 * width)
    assert (backward_vectors > 0) == (len({*phases, out_phase}) == 1)

    # DMD loss, weighted: forward (x, real, fake) = (noise, x0, pred), backward (real, fake, dx)
    x, real, fake = noise, x0, pred
    loss, norm = torch.empty((), dtype=torch.float32), torch.empty(B)
    eps = ctypes.c_float(reference.DMD_NORM_EPS)
    assert emu.emu_dmd_forward(code, _p(x), _p(real), _p(fake), _p(w32), eps, *_L(B, N), sms, _p(loss), _p(norm)) == 0
    x64 = x.double().requires_grad_()
    ref = reference.dmd_loss(x64, real.double(), fake.double(), weight)
    assert_rel_close(loss, ref, tol, "dmd loss")
    dx = _shifted(torch.empty(shape, dtype=dtype), shifts[3])
    emu.emu_take_vector_accesses()
    grad = torch.tensor([1.3], dtype=torch.float32)
    assert emu.emu_dmd_backward(code, _p(grad), _p(real), _p(fake), _p(norm), _p(w32), *_L(B, N), sms, _p(dx)) == 0
    dmd_backward_vectors = emu.emu_take_vector_accesses()
    (ref_grad,) = torch.autograd.grad(ref, x64, torch.tensor(1.3, dtype=torch.float64))
    assert_rel_close(dx, ref_grad, tol, "dmd gradient")
    assert (dmd_backward_vectors > 0) == (len({phases[0], phases[1], out_phase}) == 1)
