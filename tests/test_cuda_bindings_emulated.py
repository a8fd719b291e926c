"""The cuda backend end to end on the CPU: torch bindings + Python wrappers + autograd over the emulated kernels.

csrc/torch/cuda_*.cpp are built with ``-DFASTVDM_EMULATION`` (torch.utils.cpp_extension, CPU torch): the c10::cuda
stream / guard are stand-ins (csrc/tests/emu/torch_emu.h), the ops register for the CPU dispatch key, and the
kernels are csrc/cuda/*.cu compiled for the CPU emulator (csrc/tests/emu/cuda_emu.h). The unchanged wrappers of
fastvdm/ops/cuda are then imported against that library and checked against the float64 reference, gradients
included, and with ``torch.library.opcheck``.

Skipped where a GPU is present (the real backend suites run there) or where the build tools are missing. The
first run compiles for a few minutes on a 2-core machine; later runs reuse torch's extension cache.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import types
import zlib
from pathlib import Path

import pytest
import torch

from fastvdm.ops import reference
from oracle import ATTENTION_TOLERANCE, TOLERANCE, assert_rel_close

ROOT = Path(__file__).resolve().parents[1]
CUDA_INCLUDE = [p for p in ("/usr/local/cuda/include", "/usr/include") if (Path(p) / "cuda_bf16.h").exists()]

pytestmark = [
    pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the real cuda backend is tested instead"),
    pytest.mark.skipif(shutil.which("g++") is None or not CUDA_INCLUDE, reason="needs g++ and the CUDA headers"),
]


@pytest.fixture(scope="module")
def cuda_backend():
    """(attention, group_norm, losses) wrapper modules of fastvdm.ops.cuda over the emulated extension."""
    from torch.utils import cpp_extension

    sources = [ROOT / "csrc" / "tests" / "emu" / "emu_kernels.cpp"] + [
        ROOT / "csrc" / "torch" / f"cuda_{op}.cpp" for op in ("losses", "group_norm", "attention")
    ]
    cpp_extension.load(
        name="fastvdm_cuda_emulated",
        sources=[str(s) for s in sources],
        extra_cflags=["-std=c++20", "-O1", "-DFASTVDM_EMULATION", "-Wno-unknown-pragmas"],
        extra_include_paths=[str(ROOT / "csrc"), CUDA_INCLUDE[0]],
        extra_ldflags=["-pthread"],
        is_python_module=False,
        verbose=False,
    )
    names = ("fastvdm.ops.cuda.attention", "fastvdm.ops.cuda.group_norm", "fastvdm.ops.cuda.losses")
    with pytest.MonkeyPatch.context() as mp:
        # the ops are registered by the library loaded above; the wrappers only import the module for that
        mp.setitem(sys.modules, "fastvdm._C_cuda", types.ModuleType("fastvdm._C_cuda"))
        modules = tuple(importlib.import_module(n) for n in names)
    return modules


def _fused(shape, layout, dtype, gen):
    B, T, S, H, D = shape
    if layout == "fused":
        base, order = torch.randn((B, T, S, 3, H, D), generator=gen, dtype=torch.float64), (0, 1, 2, 3, 4, 5)
    else:  # scrambled
        base, order = torch.randn((3, H, B, D, S, T), generator=gen, dtype=torch.float64), (2, 5, 4, 0, 1, 3)
    return base.to(dtype).permute(order)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize(
    "axis,shape,layout",
    [
        ("spatial", (1, 2, 40, 2, 32), "fused"),  # flash
        ("temporal", (2, 7, 5, 2, 24), "scrambled"),  # short
        ("joint", (1, 3, 17, 1, 64), "fused"),  # flash over t * s
        ("temporal", (1, 40, 2, 1, 16), "fused"),  # flash over t
    ],
)
def test_cuda_attention_wrapper(cuda_backend, axis, shape, layout, dtype):
    attention = cuda_backend[0]
    gen = torch.Generator().manual_seed(zlib.crc32(repr((axis, shape)).encode()))
    qkv = _fused(shape, layout, dtype, gen).requires_grad_()
    q, k, v = qkv.unbind(3)
    out = attention.video_attention(q, k, v, axis)
    assert out.shape == shape and out.dtype == dtype and out.is_contiguous()
    grad_out = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    (dqkv,) = torch.autograd.grad(out, qkv, grad_out)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = reference.video_attention(q64, k64, v64, axis)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), grad_out.double())
    tol = ATTENTION_TOLERANCE[dtype]
    assert_rel_close(out, ref, tol, "output")
    for i, name in enumerate("qkv"):
        assert_rel_close(dqkv[:, :, :, i], ref_grads[i], tol, f"d{name}")
    assert attention.supports(q, k, v, axis) is not None  # CPU tensors: the real backend declines them


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last_3d"])
@pytest.mark.parametrize("with_input_bias", [False, True], ids=["modulated", "input_bias"])
def test_cuda_group_norm_wrapper(cuda_backend, dtype, layout, with_input_bias):
    group_norm = cuda_backend[1]
    gen = torch.Generator().manual_seed(11)
    B, C = 2, 8
    x = torch.randn((B, C, 3, 4, 5), generator=gen, dtype=torch.float64).to(dtype)
    if layout == "channels_last_3d":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_()
    weight, bias = (torch.randn(C, generator=gen).requires_grad_() for _ in range(2))
    scale, shift = (torch.randn(B, C, generator=gen).mul(0.3).requires_grad_() for _ in range(2))
    ib = torch.randn(B, C, generator=gen).mul(2).requires_grad_() if with_input_bias else None
    y = group_norm.group_norm(x, 4, weight, bias, 1e-5, scale, shift, "silu", ib)
    assert y.shape == x.shape and y.dtype == dtype
    if layout == "channels_last_3d":
        assert y.is_contiguous(memory_format=torch.channels_last_3d)
    dy = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype)
    leaves = [t for t in (x, weight, bias, scale, shift, ib) if t is not None]
    grads = torch.autograd.grad(y, leaves, dy)
    wrt = [t.detach().double().requires_grad_() for t in leaves]
    ref_ib = wrt[5] if ib is not None else None
    ref = reference.group_norm(wrt[0], 4, wrt[1], wrt[2], 1e-5, wrt[3], wrt[4], "silu", ref_ib)
    ref_grads = torch.autograd.grad(ref, wrt, dy.double())
    tol = TOLERANCE[dtype]
    assert_rel_close(y, ref, tol, "output")
    for g, rg, name in zip(grads, ref_grads, ("dx", "dweight", "dbias", "dscale", "dshift", "dinput_bias")):
        assert_rel_close(g, rg, tol, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_loss_wrappers(cuda_backend, dtype):
    losses = cuda_backend[2]
    gen = torch.Generator().manual_seed(5)
    shape = (3, 2, 5, 9)
    pred, x0, noise = (torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for _ in range(3))
    t = torch.rand(3, generator=gen)
    alpha, sigma, weight = torch.cos(t), torch.sin(t), torch.rand(3, generator=gen) + 0.5
    p = pred.clone().requires_grad_()
    loss = losses.denoising_loss(p, x0, noise, alpha, sigma, weight, "v")
    (grad,) = torch.autograd.grad(loss * 0.5, p)
    p64 = pred.double().requires_grad_()
    ref = reference.denoising_loss(p64, x0.double(), noise.double(), alpha.double(), sigma.double(), weight.double(), "v")
    (ref_grad,) = torch.autograd.grad(ref * 0.5, p64)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert_rel_close(loss, ref, TOLERANCE[dtype], "denoising loss")
    assert_rel_close(grad, ref_grad, TOLERANCE[dtype], "denoising gradient")

    x = noise.clone().requires_grad_()
    loss = losses.dmd_loss(x, x0, pred, weight)
    (grad,) = torch.autograd.grad(loss * 2.0, x)
    x64 = noise.double().requires_grad_()
    ref = reference.dmd_loss(x64, x0.double(), pred.double(), weight.double())
    (ref_grad,) = torch.autograd.grad(ref * 2.0, x64)
    assert_rel_close(loss, ref, TOLERANCE[dtype], "dmd loss")
    assert_rel_close(grad, ref_grad, TOLERANCE[dtype], "dmd gradient")


def test_cuda_wrappers_offset_views(cuda_backend):
    """Views one element into their storage (contiguous, misaligned bases: the kernels' scalar fallback) and eight
    elements in (aligned again: the 16-byte vector path) through the bindings, fp16, against the reference."""
    attention, _, losses = cuda_backend
    gen = torch.Generator().manual_seed(9)
    for shift in (1, 8):
        shape = (3, 5, 7)
        pred, x0, noise = (
            torch.randn(105 + shift, generator=gen, dtype=torch.float64).to(torch.float16)[shift:].view(shape)
            for _ in range(3)
        )
        assert pred.is_contiguous() and (pred.data_ptr() % 16 != 0) == (shift == 1)
        alpha, sigma = torch.rand(3, generator=gen), torch.rand(3, generator=gen)
        p = pred.detach().requires_grad_()
        loss = losses.denoising_loss(p, x0, noise, alpha, sigma, None, "x0")
        (grad,) = torch.autograd.grad(loss, p)
        p64 = pred.double().requires_grad_()
        ref = reference.denoising_loss(p64, x0.double(), noise.double(), alpha.double(), sigma.double(), None, "x0")
        (ref_grad,) = torch.autograd.grad(ref, p64)
        assert_rel_close(loss, ref, TOLERANCE[torch.float16], f"loss, shift {shift}")
        assert_rel_close(grad, ref_grad, TOLERANCE[torch.float16], f"gradient, shift {shift}")

        B, T, S, H, D = 1, 2, 33, 1, 16
        buf = torch.randn(B * T * S * 3 * H * D + shift, generator=gen, dtype=torch.float64).to(torch.float16)
        qkv = buf[shift:].view(B, T, S, 3, H, D).requires_grad_()
        q, k, v = qkv.unbind(3)
        out = attention.video_attention(q, k, v, "spatial")
        grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(torch.float16)
        (dqkv,) = torch.autograd.grad(out, qkv, grad_out)
        q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
        ref = reference.video_attention(q64, k64, v64, "spatial")
        ref_grads = torch.autograd.grad(ref, (q64, k64, v64), grad_out.double())
        tol = ATTENTION_TOLERANCE[torch.float16]
        assert_rel_close(out, ref, tol, f"attention, shift {shift}")
        for i, name in enumerate("qkv"):
            assert_rel_close(dqkv[:, :, :, i], ref_grads[i], tol, f"d{name}, shift {shift}")


def test_cuda_custom_ops_opcheck(cuda_backend):
    """Schema, fake (meta) implementations and autograd registration of the wrappers' custom ops."""
    attention, group_norm, losses = cuda_backend
    gen = torch.Generator().manual_seed(2)
    q, k, v = _fused((1, 2, 5, 1, 16), "fused", torch.float32, gen).requires_grad_().unbind(3)
    torch.library.opcheck(attention._attention_fwd, (q, k, v, "temporal", 0.25))
    x = torch.randn((2, 4, 3, 5), generator=gen, requires_grad=True)
    w = torch.randn(4, generator=gen, requires_grad=True)
    torch.library.opcheck(group_norm._forward, (x, 2, w, None, 1e-5, None, None, "silu"))
    ib = torch.randn((2, 4), generator=gen, requires_grad=True)
    torch.library.opcheck(group_norm._forward, (x, 2, w, None, 1e-5, None, None, "silu", ib))
    pred, x0, noise = (torch.randn((2, 7), generator=gen) for _ in range(3))
    a, s = torch.rand(2, generator=gen), torch.rand(2, generator=gen)
    torch.library.opcheck(losses.denoising_loss, (pred.requires_grad_(), x0, noise, a, s, None, "eps"))
    torch.library.opcheck(losses.dmd_loss_with_norm, (noise.clone().requires_grad_(), x0, pred.detach(), None))
