"""group_norm (GroupNorm + affine + modulation + SiLU) on every backend against the float64 reference.

One suite, parametrized over ``all_backends("group_norm")`` x dtypes: a new backend (CUDA C++) joins by
registering. Inputs are fresh random tensors rounded to the tested dtype; the reference runs in float64 on
exactly those values. Gradients of x, weight, bias, scale, shift and input_bias come from autograd with a
random upstream gradient and are compared with the float64 reference's autograd gradients. Triton runs under the
interpreter here (fp32 only; bf16/fp16 Triton tests are marked ``gpu``), so shapes are small; the
``multi_tile`` cases shrink the Triton tile so that groups span several tiles (channel and position loops)
and, with split=3, exercise the split-S kernels.
"""

from __future__ import annotations

import pytest
import torch

import fastvdm.ops as ops
from fastvdm.ops import _dispatch, reference
from oracle import TOLERANCE, all_backends, assert_rel_close, device_for, kernel_backends

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ALL_PARAMS = ("weight", "bias", "scale", "shift")
PARAM_NAMES = ALL_PARAMS + ("input_bias",)  # input_bias: GroupNorm(x + input_bias), (B, C)
WITH_IB = ALL_PARAMS + ("input_bias",)


def _backend_dtypes():
    params = []
    for backend in all_backends("group_norm"):
        for dtype in DTYPES:
            marks = ()
            if backend == "triton" and dtype != torch.float32 and not torch.cuda.is_available():
                marks = (pytest.mark.gpu,)  # the interpreter tests run fp32
            name = f"{backend}-{str(dtype).removeprefix('torch.')}"
            params.append(pytest.param(backend, dtype, id=name, marks=marks))
    return params


# id: (shape, num_groups, parameters present, activation, memory format, offset of x)
CASES = {
    "video_C96_G32": ((1, 96, 2, 3, 4), 32, ALL_PARAMS, "silu", None, 0.0),
    "T1": ((2, 16, 1, 5, 6), 4, ALL_PARAMS, "silu", None, 0.0),
    "HW1": ((2, 16, 3, 1, 1), 4, ("weight", "bias"), None, None, 0.0),
    "B1_image": ((1, 12, 7, 9), 3, ("scale", "shift"), "silu", None, 0.0),
    "bare": ((2, 8, 2, 3, 4), 2, (), None, None, 0.0),
    "scale_only_silu": ((2, 8, 3, 5), 4, ("scale",), "silu", None, 0.0),
    "channels_last_3d": ((2, 12, 2, 3, 5), 4, ALL_PARAMS, "silu", torch.channels_last_3d, 0.0),
    "channels_last_image": ((2, 12, 5, 6), 3, ("weight", "shift"), "silu", torch.channels_last, 0.0),
    "large_mean": ((2, 8, 3, 4, 4), 2, ALL_PARAMS, "silu", None, 30.0),
    # input_bias (a ResNet block's GroupNorm(h + temb)): alone, with everything, diffusers' "default" mode,
    # channels-last, and a mean far from 0 reached through the bias
    "ib_only": ((2, 8, 3, 5), 2, ("input_bias",), None, None, 0.0),
    "ib_all_C96": ((1, 96, 2, 3, 4), 32, WITH_IB, "silu", None, 0.0),
    "ib_default_mode": ((3, 12, 2, 3, 5), 3, ("weight", "bias", "input_bias"), "silu", None, 0.0),
    "ib_channels_last_3d": ((2, 12, 2, 3, 5), 4, WITH_IB, "silu", torch.channels_last_3d, 0.0),
    "ib_channels_last_image": ((2, 12, 5, 6), 3, ("weight", "input_bias"), "silu", torch.channels_last, 0.0),
    "ib_large_mean": ((2, 8, 3, 4, 4), 2, ("weight", "bias", "input_bias"), "silu", None, -30.0),
    # the cpu kernel's paths: rows of >= 64 values (one leaf call per row) and short rows (a group's channels as
    # spans of repeated per-channel parameters), here split over two spans (40 channels x 63 > 2048 values)
    "rows_S80": ((2, 8, 80), 2, ALL_PARAMS, "silu", None, 0.0),
    "rows_ib_S100": ((2, 12, 4, 5, 5), 3, WITH_IB, "silu", None, 0.0),
    "short_rows_two_spans": ((1, 80, 63), 2, WITH_IB, "silu", None, 0.5),
}


def _rand(shape, dtype, device, scale=1.0, offset=0.0):
    """Gaussian values rounded to ``dtype`` (the reference then sees exactly these values)."""
    return (offset + scale * torch.randn(shape, dtype=torch.float64)).to(device=device, dtype=dtype)


def _make_inputs(shape, present, dtype, device, memory_format, offset):
    B, C = shape[:2]
    x = _rand(shape, dtype, device, scale=1.5, offset=offset)
    if memory_format is not None:
        x = x.contiguous(memory_format=memory_format)
    params = {
        "weight": _rand((C,), dtype, device, offset=1.0) if "weight" in present else None,
        "bias": _rand((C,), dtype, device) if "bias" in present else None,
        "scale": _rand((B, C), dtype, device, scale=0.5) if "scale" in present else None,
        "shift": _rand((B, C), dtype, device) if "shift" in present else None,
        # large_mean cases shift the bias instead of x when there is one: u = x + ib has the large mean
        "input_bias": _rand((B, C), dtype, device, scale=2.0, offset=-offset) if "input_bias" in present else None,
    }
    if "input_bias" in present and offset:
        x = _rand(shape, dtype, device, scale=1.5, offset=2 * offset)
        if memory_format is not None:
            x = x.contiguous(memory_format=memory_format)
    return x, params


def _run(backend, x, num_groups, params, activation, grad_out, eps=1e-5):
    """Output and gradients (x, then the present parameters) of group_norm on ``backend``."""
    leaves = [x] + [params[k] for k in PARAM_NAMES if params.get(k) is not None]
    leaves = [t.detach().requires_grad_(True) for t in leaves]
    it = iter(leaves[1:])
    p = {k: (next(it) if params.get(k) is not None else None) for k in PARAM_NAMES}
    args = (leaves[0], num_groups, p["weight"], p["bias"], eps, p["scale"], p["shift"], activation)
    if p["input_bias"] is not None:
        args = args + (p["input_bias"],)
    if backend is None:
        y = reference.group_norm(*args)
    else:
        with ops.use_backend(backend):
            y = ops.group_norm(*args)
    grads = torch.autograd.grad(y, leaves, grad_outputs=grad_out.to(y.dtype))
    return y, grads


def _check_against_reference(backend, dtype, shape, num_groups, present, activation, memory_format, offset):
    device = device_for(backend)
    x, params = _make_inputs(shape, present, dtype, device, memory_format, offset)
    grad_out = torch.randn(shape, dtype=torch.float64, device=device)  # contiguous, whatever x's layout
    y, grads = _run(backend, x, num_groups, params, activation, grad_out)
    y_ref, grads_ref = _run(
        None, x.double(), num_groups, {k: (None if v is None else v.double()) for k, v in params.items()},
        activation, grad_out,
    )
    tol = TOLERANCE[dtype]
    assert y.dtype == dtype
    assert_rel_close(y, y_ref, tol, "output")
    names = ["x"] + [k for k in PARAM_NAMES if params[k] is not None]
    for name, g, g_ref, leaf in zip(names, grads, grads_ref, [x] + [params[k] for k in names[1:]]):
        assert g.dtype == leaf.dtype, f"d{name} has dtype {g.dtype}, expected {leaf.dtype}"
        assert_rel_close(g, g_ref, tol, f"d{name}")
    return x, y


@pytest.mark.parametrize("backend,dtype", _backend_dtypes())
@pytest.mark.parametrize("case", list(CASES))
def test_group_norm_matches_reference(backend, dtype, case):
    shape, groups, present, activation, memory_format, offset = CASES[case]
    x, y = _check_against_reference(backend, dtype, shape, groups, present, activation, memory_format, offset)
    if backend != "reference" and memory_format is not None:
        assert y.stride() == x.stride(), "kernel backends keep the input's memory layout"


@pytest.fixture
def small_triton_tiles(monkeypatch, request):
    """Shrink the Triton tiles (groups span several tiles in both channels and positions); force SPLIT."""
    if "triton" in all_backends("group_norm"):
        import fastvdm.kernels.group_norm as tk

        monkeypatch.setattr(tk, "MAX_TILE", 32)
        monkeypatch.setattr(tk, "MAX_BLOCK_C", 4)
        monkeypatch.setattr(tk, "FORCE_SPLIT", request.param)
    return request.param


@pytest.mark.parametrize("backend", all_backends("group_norm"))
@pytest.mark.parametrize(
    "small_triton_tiles,memory_format",
    [(1, None), (3, None), (1, torch.channels_last_3d)],
    ids=["fused-contiguous", "split3-contiguous", "fused-channels_last_3d"],
    indirect=["small_triton_tiles"],
)
@pytest.mark.parametrize("present", [ALL_PARAMS, WITH_IB], ids=["modulated", "input_bias"])
def test_group_larger_than_a_tile(backend, small_triton_tiles, memory_format, present):
    # Cg = 6 channels (two channel tiles of 4), S = 2*3*4 = 24 positions (three position tiles of 8, split 3)
    _check_against_reference(backend, torch.float32, (2, 12, 2, 3, 4), 2, present, "silu", memory_format, 0.5)


@pytest.mark.parametrize("backend", all_backends("group_norm"))
def test_non_dense_input_and_grad(backend):
    """A strided slice as x and a transposed upstream gradient (copied / addressed through strides)."""
    device = device_for(backend)
    B, C, T, H, W = 2, 8, 3, 4, 5
    base = torch.randn(B, C, T, H, 2 * W, dtype=torch.float64)
    x = base.float().to(device)[..., ::2]  # stride 2 along W: neither contiguous nor channels-last
    w, b = torch.randn(C, device=device), torch.randn(C, device=device)
    scale, shift = 0.5 * torch.randn(B, C, device=device), torch.randn(B, C, device=device)
    input_bias = torch.randn(2 * C, B, device=device).t()[:, ::2]  # strided (B, C)
    grad_out = torch.randn(B, C, T, W, H, dtype=torch.float64, device=device).transpose(3, 4)
    params = {"weight": w, "bias": b, "scale": scale, "shift": shift, "input_bias": input_bias}
    y, grads = _run(backend, x, 4, params, "silu", grad_out)
    y_ref, grads_ref = _run(None, x.double(), 4, {k: v.double() for k, v in params.items()}, "silu", grad_out)
    assert_rel_close(y, y_ref, TOLERANCE[torch.float32], "output")
    for name, g, g_ref in zip(("x",) + PARAM_NAMES, grads, grads_ref):
        assert_rel_close(g, g_ref, TOLERANCE[torch.float32], f"d{name}")


@pytest.mark.parametrize("backend", all_backends("group_norm"))
def test_chunked_modulation_and_sum_loss(backend):
    """scale/shift as strided chunks of one (B, 2C) embedding (as a U-Net makes them), weight/bias as strided
    views, and y.sum() as the loss (an expanded, zero-stride upstream gradient)."""
    device = device_for(backend)
    B, C = 2, 12
    x = torch.randn(B, C, 2, 3, 4, device=device)
    emb = torch.randn(B, 2 * C, device=device)
    wb = torch.randn(C, 2, device=device)
    params = {"weight": wb[:, 0], "bias": wb[:, 1], "scale": emb[:, :C], "shift": emb[:, C:]}
    assert not params["scale"].is_contiguous() and not params["weight"].is_contiguous()
    leaves = [t.detach().requires_grad_(True) for t in (x, *params.values())]
    with ops.use_backend(backend):
        y = ops.group_norm(leaves[0], 4, leaves[1], leaves[2], 1e-5, leaves[3], leaves[4], "silu")
    grads = torch.autograd.grad(y.sum(), leaves)
    ref_leaves = [t.detach().double().requires_grad_(True) for t in (x, *params.values())]
    y_ref = reference.group_norm(ref_leaves[0], 4, *ref_leaves[1:3], 1e-5, *ref_leaves[3:], "silu")
    grads_ref = torch.autograd.grad(y_ref.sum(), ref_leaves)
    assert_rel_close(y, y_ref, TOLERANCE[torch.float32], "output")
    for name, g, g_ref in zip(("x",) + ALL_PARAMS, grads, grads_ref):
        assert_rel_close(g, g_ref, TOLERANCE[torch.float32], f"d{name}")


@pytest.mark.parametrize("backend", kernel_backends("group_norm"))
def test_forced_backend_rejects_float64(backend):
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, device=device_for(backend))
    with ops.use_backend(backend), pytest.raises(ops.BackendUnavailableError, match=backend):
        ops.group_norm(x, 2)


def test_auto_picks_cpu_backend_and_falls_back_for_float64():
    if "cpu" not in all_backends("group_norm"):
        pytest.skip("the CPU extension is not built")
    x = torch.randn(2, 8, 40)  # rows of >= 32 values (shorter ones go to PyTorch: test_cpu_auto)
    args = (2, None, None, 1e-5, None, None, None)
    assert ops.selected_backend("group_norm", x, *args) == "cpu"
    assert ops.selected_backend("group_norm", x.double(), *args) == "reference"


@pytest.mark.parametrize("backend", [b for b in ("reference", "cpu") if b in all_backends("group_norm")])
def test_torch_compile(backend):
    """The backend's op traces into one graph (fake impls, autograd, backward op) under torch.compile.

    The backend function is compiled directly: the facade's dispatcher reads a ContextVar, which dynamo
    cannot trace with fullgraph=True (a graph break there, not in these ops). aot_eager keeps it fast.
    """
    B, C = 2, 12
    x = torch.randn(B, C, 2, 3, 4)
    w, b = torch.randn(C), torch.randn(C)
    scale, shift, ib = 0.5 * torch.randn(B, C), torch.randn(B, C), torch.randn(B, C)
    with ops.use_backend(backend):
        impl = _dispatch.resolve("group_norm", x.device, x, 3, w, b, 1e-5, scale, shift, "silu", ib)
    assert impl.backend == backend

    def f(x, w, b, scale, shift, ib):
        return impl.fn(x, 3, w, b, 1e-5, scale, shift, "silu", ib)

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, b, scale, shift, ib)]
    y = compiled(*leaves)
    grad_out = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, grad_out)
    ref_leaves = [t.double().requires_grad_(True) for t in (x, w, b, scale, shift, ib)]
    y_ref = reference.group_norm(ref_leaves[0], 3, *ref_leaves[1:3], 1e-5, *ref_leaves[3:5], "silu", ref_leaves[5])
    grads_ref = torch.autograd.grad(y_ref, ref_leaves, grad_out.double())
    assert_rel_close(y, y_ref, TOLERANCE[torch.float32], "output")
    for name, g, g_ref in zip(("x",) + PARAM_NAMES, grads, grads_ref):
        assert_rel_close(g, g_ref, TOLERANCE[torch.float32], f"d{name}")


_AOT_SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import fastvdm.kernels.group_norm as tk

def arg_type(name):
    if name in ("X", "Y", "DY", "DX"):
        return "*bf16"
    if name in ("W", "Bias", "Scale", "Shift", "InBias", "Mean", "Rstd", "Partial", "SumDz", "SumDzx"):
        return "*fp32"
    return "fp32" if name == "eps" else "i32"

flags = dict(HAS_W=True, HAS_B=True, HAS_SCALE=True, HAS_SHIFT=True, HAS_IB=True, SILU=True, BLOCK_C=4, BLOCK_S=256)
kernels = [
    (tk._fwd_fused_kernel, dict(flags, SINGLE_TILE=False)),
    (tk._fwd_fused_kernel, dict(flags, SINGLE_TILE=True)),
    (tk._fwd_stats_kernel, dict(HAS_IB=True, BLOCK_C=4, BLOCK_S=256)),
    (tk._fwd_apply_kernel, dict(flags, SPLIT_P2=8)),
    (tk._bwd_sums_kernel, flags),
    (tk._bwd_dx_kernel, dict(flags, SPLIT_P2=8)),
]
for fn, constexprs in kernels:
    names = fn.arg_names
    signature = {n: ("constexpr" if n in constexprs else arg_type(n)) for n in names}
    source = ASTSource(fn, signature, constexprs={(names.index(k),): v for k, v in constexprs.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    assert ".entry" in compiled.asm["ptx"], fn.__name__
    print("compiled", fn.__name__)
"""


def test_triton_kernels_compile_for_sm90_bf16():
    """The Triton kernels compile ahead of time to sm_90 code in bf16 (no GPU needed): catches what the
    interpreter, which runs the fp32 tests here, does not check (typing, loop-carried values, lowering).
    In a subprocess: the kernels must be real JIT functions, not the interpreter's."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    out = subprocess.run([sys.executable, "-c", _AOT_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("compiled") == 6


@pytest.mark.parametrize("memory_format", [None, torch.channels_last_3d], ids=["contiguous", "channels_last_3d"])
def test_cpu_results_do_not_depend_on_thread_count(memory_format):
    """The OpenMP kernels reduce in a fixed order: bitwise identical results with 1 and 2 threads (B * G = 6
    groups: the contiguous case runs group by group on 1 thread and pass by pass on 2; 157k elements, above
    the size from which the kernels open an OpenMP region)."""
    if "cpu" not in all_backends("group_norm"):
        pytest.skip("the CPU extension is not built")
    x, params = _make_inputs((2, 12, 4, 40, 41), ALL_PARAMS, torch.float32, "cpu", memory_format, 0.3)
    grad_out = torch.randn(x.shape, dtype=torch.float64)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(_run("cpu", x, 3, params, "silu", grad_out))
    finally:
        torch.set_num_threads(threads)
    (y1, g1), (y2, g2) = results
    assert torch.equal(y1, y2)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # the Triton interpreter's numpy
def test_silu_far_into_saturation():
    """z = a * xhat + b out to |z| ~ 300 (weight ~ 60): the vectorized exp's clamp (|arg| <= 80), both tails
    of the SiLU and of its derivative against float64, on every backend, fwd and grads."""
    for backend in all_backends("group_norm"):
        device = device_for(backend)
        x, params = _make_inputs((2, 16, 3, 5, 7), ALL_PARAMS, torch.float32, device, None, 0.0)
        params["weight"] = params["weight"] * 60.0
        grad_out = torch.randn(x.shape, dtype=torch.float64, device=device)
        y, grads = _run(backend, x, 4, params, "silu", grad_out)
        y_ref, grads_ref = _run(None, x.double(), 4, {k: (None if v is None else v.double())
                                                       for k, v in params.items()}, "silu", grad_out)
        assert y.abs().max() > 100 and torch.isfinite(y).all()
        assert_rel_close(y, y_ref, TOLERANCE[torch.float32], f"{backend} output")
        for name, g, g_ref in zip(("x",) + ALL_PARAMS, grads, grads_ref):
            assert_rel_close(g, g_ref, TOLERANCE[torch.float32], f"{backend} d{name}")


# ---------------------------------------------------------------------------------------------- out=
OUT_CASES = {
    "contiguous_silu": ((2, 16, 3, 5, 7), ALL_PARAMS, "silu", None),
    "channels_last_3d": ((2, 12, 2, 3, 5), WITH_IB, "silu", torch.channels_last_3d),
    "image_no_act": ((3, 12, 5, 6), ("weight", "bias"), None, None),
}


@pytest.mark.parametrize("backend,dtype", [p for p in _backend_dtypes() if p.values[1] != torch.float16])
@pytest.mark.parametrize("case", list(OUT_CASES))
def test_out_matches_reference(backend, dtype, case):
    """out= (a NaN-filled buffer, and x itself: in place) gives the reference's result, returned as out."""
    shape, present, activation, memory_format = OUT_CASES[case]
    device = device_for(backend)
    x, params = _make_inputs(shape, present, dtype, device, memory_format, 0.2)
    args = (4 if shape[1] % 4 == 0 else 3, params["weight"], params["bias"], 1e-5, params["scale"], params["shift"],
            activation, params["input_bias"])
    y_ref = reference.group_norm(x.double(), args[0], *[None if t is None else t.double() for t in args[1:3]], 1e-5,
                                 *[None if t is None else t.double() for t in args[4:6]], activation,
                                 None if args[7] is None else args[7].double())
    out = torch.full_like(x, float("nan"))
    with ops.use_backend(backend), torch.no_grad():
        got = ops.group_norm(x, *args, out=out)
        assert got is out and got.stride() == x.stride()
        assert_rel_close(out, y_ref, TOLERANCE[dtype], "out")
        x_inplace = x.clone()
        ops.group_norm(x_inplace, *args, out=x_inplace)
    assert_rel_close(x_inplace, y_ref, TOLERANCE[dtype], "in place (out=x)")


def test_out_of_a_non_dense_input_is_contiguous():
    x = torch.randn(2, 8, 3, 4, 10)[..., ::2]
    out = torch.empty(x.shape)
    with torch.no_grad():
        ops.group_norm(x, 4, activation="silu", out=out)
    assert_rel_close(out, reference.group_norm(x.double(), 4, activation="silu"), TOLERANCE[torch.float32], "out")
    with pytest.raises(ValueError, match="contiguous"):
        ops.group_norm(x, 4, out=out.transpose(3, 4).contiguous().transpose(3, 4))


def test_out_is_refused_under_autograd_and_gradients_still_work_without_it():
    x = torch.randn(2, 8, 3, 5, requires_grad=True)
    w = torch.randn(8, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        ops.group_norm(x, 4, w, out=torch.empty(x.shape))
    with pytest.raises(RuntimeError, match="not differentiable"):  # an out that requires grad counts too
        ops.group_norm(x.detach(), 4, out=torch.empty(x.shape, requires_grad=True))
    y = ops.group_norm(x, 4, w, activation="silu")  # the same call without out= is differentiable
    gx, gw = torch.autograd.grad(y.square().sum(), (x, w))
    xr, wr = x.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    gx_ref, gw_ref = torch.autograd.grad(reference.group_norm(xr, 4, wr, activation="silu").square().sum(), (xr, wr))
    assert_rel_close(gx, gx_ref, TOLERANCE[torch.float32], "dx")
    assert_rel_close(gw, gw_ref, TOLERANCE[torch.float32], "dweight")


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda x: torch.empty(2, 8, 3, 4), "shape"),
        (lambda x: torch.empty(x.shape, dtype=torch.float64), "dtype"),
        (lambda x: torch.empty(x.shape).contiguous(memory_format=torch.channels_last), "strides"),
        (lambda x: x.numpy(), "torch.Tensor"),
    ],
    ids=["shape", "dtype", "layout", "not_a_tensor"],
)
def test_out_validation(bad, match):
    x = torch.randn(2, 8, 3, 5)
    with pytest.raises((ValueError, TypeError), match=match):
        ops.group_norm(x, 4, out=bad(x))


def test_cpu_output_past_the_huge_page_size():
    """y and dx of >= 32 MiB, the size from which the cpu binding advises huge pages for a fresh output
    (csrc/torch/cpu_output.h): the reference's values, and out= on the same size."""
    if "cpu" not in all_backends("group_norm"):
        pytest.skip("the CPU extension is not built")
    x, params = _make_inputs((1, 32, 4, 256, 260), ALL_PARAMS, torch.float32, "cpu", None, 0.1)  # 33 MiB
    grad_out = torch.randn(x.shape, dtype=torch.float64)
    y, grads = _run("cpu", x, 8, params, "silu", grad_out)
    y_ref, grads_ref = _run(None, x.double(), 8, {k: (None if v is None else v.double()) for k, v in params.items()},
                            "silu", grad_out)
    assert_rel_close(y, y_ref, TOLERANCE[torch.float32], "output")
    assert_rel_close(grads[0], grads_ref[0], TOLERANCE[torch.float32], "dx")
    out = torch.full_like(x, float("nan"))
    with torch.no_grad(), ops.use_backend("cpu"):
        ops.group_norm(x, 8, params["weight"], params["bias"], 1e-5, params["scale"], params["shift"], "silu", out=out)
    assert torch.equal(out, y.detach())
