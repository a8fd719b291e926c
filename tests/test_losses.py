"""denoising_loss and dmd_loss on every backend against the float64 reference (values and gradients).

One suite, parametrized over ``all_backends(op)`` x ``dtypes_for(backend)``: a new backend (CUDA C++) joins by
registering. Inputs are fresh random tensors in the tested dtype; the reference runs in float64 on exactly
those values (so input rounding is not counted as error). Gradients come from autograd with a random
upstream gradient. Small shapes: the Triton kernels run under the interpreter here.
"""

from __future__ import annotations

import pytest
import torch

import fastvdm.ops as ops
from fastvdm.ops import reference
from oracle import TOLERANCE, all_backends, assert_rel_close, device_for, dtypes_for


def _cases(op: str):
    return [
        pytest.param(b, dt, id=f"{b}-{str(dt).removeprefix('torch.')}")
        for b in all_backends(op)
        for dt in dtypes_for(b)
    ]


def _rand(shape, dtype, device, scale=1.0):
    """Gaussian values rounded to ``dtype`` (the reference then sees exactly the same values)."""
    return (scale * torch.randn(shape, dtype=torch.float64)).to(device=device, dtype=dtype)


def _schedule(B, device):
    """alpha, sigma of random timesteps (alpha^2 + sigma^2 = 1) and positive per-sample weights, fp32 (B,)."""
    theta = torch.rand(B, dtype=torch.float64) * (torch.pi / 2)
    weight = 0.5 + torch.rand(B, dtype=torch.float64)
    return (t.float().to(device) for t in (theta.cos(), theta.sin(), weight))


WRT = object()  # placeholder for the differentiated argument in an argument list


def _loss_and_grad(backend, fn, wrt, args, gout):
    """(loss, d(gout * loss)/d wrt) with ``backend`` forced for the forward; ``WRT`` in ``args`` marks wrt."""
    wrt = wrt.detach().requires_grad_(True)
    args = [wrt if a is WRT else a for a in args]
    with ops.use_backend(backend):
        loss = fn(*args)
    (grad,) = torch.autograd.grad(loss, wrt, grad_outputs=gout.to(loss.dtype))
    return loss, grad


def _double(t):
    return None if t is None else t.detach().double()


# ---------------------------------------------------------------------------------------------- denoising
@pytest.mark.parametrize("backend,dtype", _cases("denoising_loss"))
@pytest.mark.parametrize("target", ["eps", "x0", "v"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_denoising_loss_matches_reference(backend, dtype, target, weighted):
    device = device_for(backend)
    shape = (3, 3, 4, 6, 5)
    pred, x0, noise = (_rand(shape, dtype, device) for _ in range(3))
    alpha, sigma, weight = _schedule(shape[0], device)
    weight = weight if weighted else None
    gout = 0.5 + torch.rand((), dtype=torch.float64)

    loss, grad = _loss_and_grad(
        backend, ops.denoising_loss, pred, [WRT, x0, noise, alpha, sigma, weight, target], gout
    )
    ref_loss, ref_grad = _loss_and_grad(
        "reference",
        reference.denoising_loss,
        pred.double(),
        [WRT, x0.double(), noise.double(), alpha.double(), sigma.double(), _double(weight), target],
        gout,
    )
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert grad.dtype == dtype and grad.shape == pred.shape
    assert_rel_close(loss, ref_loss, TOLERANCE[dtype], "loss")
    assert_rel_close(grad, ref_grad, TOLERANCE[dtype], "d loss / d pred")


# ---------------------------------------------------------------------------------------------- DMD
def _dmd_check(backend, dtype, x, x0_real, x0_fake, weight, gout=None):
    gout = (0.5 + torch.rand((), dtype=torch.float64)) if gout is None else gout
    loss, grad = _loss_and_grad(backend, ops.dmd_loss, x, [WRT, x0_real, x0_fake, weight], gout)
    ref_loss, ref_grad = _loss_and_grad(
        "reference", reference.dmd_loss, x.double(), [WRT, x0_real.double(), x0_fake.double(), _double(weight)], gout
    )
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert grad.dtype == dtype and grad.shape == x.shape
    assert_rel_close(loss, ref_loss, TOLERANCE[dtype], "loss")
    assert_rel_close(grad, ref_grad, TOLERANCE[dtype], "d loss / d x")
    return loss, grad


@pytest.mark.parametrize("backend,dtype", _cases("dmd_loss"))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_dmd_loss_matches_reference(backend, dtype, weighted):
    device = device_for(backend)
    shape = (3, 3, 4, 6, 5)
    x, x0_real, x0_fake = (_rand(shape, dtype, device) for _ in range(3))
    weight = torch.rand(shape[0], device=device) if weighted else None
    _dmd_check(backend, dtype, x, x0_real, x0_fake, weight)


@pytest.mark.parametrize("backend,dtype", _cases("dmd_loss"))
def test_dmd_loss_clamps_zero_normalizer(backend, dtype):
    """A sample whose x equals x0_real has mean|x - x0_real| = 0: the normalizer is clamped at DMD_NORM_EPS.

    The loss and gradient stay finite and equal the reference (which clamps the same way); the gradient of
    that sample is exactly (x0_fake - x0_real) / DMD_NORM_EPS / numel (up to fp32 rounding).
    """
    device = device_for(backend)
    shape = (3, 2, 4, 5, 6)
    x, x0_real, x0_fake = (_rand(shape, dtype, device) for _ in range(3))
    x[1] = x0_real[1]  # sample 1: normalizer 0
    x0_fake = x0_fake * 1e-3  # keep (x0_fake - x0_real) / 1e-6 well inside the bf16/fp32 range
    weight = torch.rand(shape[0], device=device) + 0.5
    loss, grad = _dmd_check(backend, dtype, x, x0_real, x0_fake, weight, gout=torch.tensor(1.0, dtype=torch.float64))
    assert torch.isfinite(loss)
    expected = (x0_fake[1].double() - x0_real[1].double()) / reference.DMD_NORM_EPS * weight[1].double() / x.numel()
    assert_rel_close(grad[1], expected, TOLERANCE[dtype], "gradient of the clamped sample")


def _ulp_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise distance in units in the last place between two float32 (or bfloat16) tensors."""
    assert a.dtype == b.dtype and a.dtype in (torch.float32, torch.bfloat16)
    view = torch.int32 if a.dtype == torch.float32 else torch.int16
    ia, ib = a.contiguous().view(view).long(), b.contiguous().view(view).long()
    # map the sign-magnitude bit patterns onto a monotone integer line
    sign = 1 << (31 if a.dtype == torch.float32 else 15)
    ia = torch.where(ia < 0, -(ia + sign), ia)
    ib = torch.where(ib < 0, -(ib + sign), ib)
    return (ia - ib).abs()


@pytest.mark.parametrize("backend,dtype", _cases("dmd_loss"))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_dmd_gradient_is_exactly_g_over_numel(backend, dtype, weighted):
    """d loss / d x is written as g / numel, not obtained through the surrogate's x - (x - g).

    Comparison (documented): the expected gradient is ``reference.dmd_direction(x, x0_real, x0_fake, weight)
    / numel`` computed in float32, the precision the kernels compute in (cast to the input dtype at the end).
    Only its normalizer, a reduction, may be rounded differently by another summation order; so the inputs are
    multiples of 2^-8 in [-1, 1] and each sample has 2^9 elements: every partial sum of |x - x0_real| is exact
    in float32 and so is the mean, whatever the order. Then g is rounded in the same order by every backend
    and the gradients must be **bitwise** equal. The same check on the eager surrogate's autograd gradient
    (x - (x - g)) / numel fails (it differs in many elements), so the comparison discriminates.
    """
    device = device_for(backend)
    shape = (2, 2, 4, 8, 8)  # 512 = 2^9 elements per sample, numel 2^10

    def dyadic():
        return (torch.randint(-256, 257, shape, dtype=torch.int32).to(torch.float32) / 256).to(device, dtype)

    x, x0_real, x0_fake = dyadic(), dyadic(), dyadic()
    weight = torch.rand(shape[0], device=device) if weighted else None
    _, grad = _loss_and_grad(backend, ops.dmd_loss, x, [WRT, x0_real, x0_fake, weight], torch.tensor(1.0))

    g = reference.dmd_direction(x, x0_real, x0_fake, weight)  # float32 for float32 and bfloat16 inputs
    assert g.dtype == torch.float32
    expected = (g / x.numel()).to(dtype)
    assert torch.equal(grad, expected), f"max ulp distance {_ulp_distance(grad, expected).max().item()}"

    # the surrogate's own autograd gradient is not exactly g / numel: the check above can fail
    xs = x.float().detach().requires_grad_(True)
    surrogate = 0.5 * (xs - (xs - g).detach()).square().mean()
    (eager_grad,) = torch.autograd.grad(surrogate, xs)
    assert not torch.equal(eager_grad, g / x.numel())  # in float32, before any rounding to bfloat16


@pytest.mark.parametrize("backend,dtype", _cases("dmd_loss"))
def test_dmd_gradient_is_g_over_numel_on_random_inputs(backend, dtype):
    """On generic inputs the gradient equals the float64 g / numel up to a few float32 roundings, elementwise.

    Kernel error sources: the normalizer (an fp32-accumulated reduction), then f - r, / norm, * weight, * (grad /
    numel), each rounded once. Bound: 8 float32 half-ulps (8 * 2^-24 relative) per element, plus the final
    rounding to the input dtype (2^-8 for bfloat16). Differentiating the surrogate instead loses the small
    g against x (cancellation in x - (x - g)) by orders of magnitude more; asserted too.
    """
    device = device_for(backend)
    shape = (3, 3, 4, 6, 5)
    x = _rand(shape, dtype, device, scale=10.0)  # |x| >> |g / numel|: cancellation would show
    x0_real, x0_fake = _rand(shape, dtype, device), _rand(shape, dtype, device)
    weight = torch.rand(shape[0], device=device) + 0.5
    _, grad = _loss_and_grad(backend, ops.dmd_loss, x, [WRT, x0_real, x0_fake, weight], torch.tensor(1.0))

    exact = reference.dmd_direction(x.double(), x0_real.double(), x0_fake.double(), weight.double()) / x.numel()
    bound = 8 * 2.0**-24 + (2.0**-8 if dtype == torch.bfloat16 else 0.0)
    zero = exact == 0  # x0_fake == x0_real (happens in bfloat16)
    assert (grad[zero] == 0).all()
    rel = ((grad.double() - exact).abs() / exact.abs())[~zero].max().item()
    assert rel <= bound, f"max elementwise relative error {rel:.3e} > {bound:.3e}"

    xs = x.float().detach().requires_grad_(True)
    g32 = reference.dmd_direction(x, x0_real, x0_fake, weight)
    (eager_grad,) = torch.autograd.grad(0.5 * (xs - (xs - g32).detach()).square().mean(), xs)
    assert ((eager_grad.double() - exact).abs() / exact.abs())[~zero].max().item() > 100 * 8 * 2.0**-24  # fp32, no bf16 rounding


# ---------------------------------------------------------------------------------------------- structure
def _force_small_chunks(backend, monkeypatch):
    """Make the Triton reduction use several blocks per chunk and several finishing steps on a small input."""
    if backend == "triton":
        from fastvdm.kernels import losses as triton_losses

        monkeypatch.setattr(triton_losses, "TARGET_PROGRAMS", 2)
        monkeypatch.setattr(triton_losses, "FINISH_BLOCK_C", 2)


@pytest.mark.parametrize("backend", all_backends("dmd_loss"))
def test_losses_across_chunks(backend, monkeypatch):
    """Ragged sizes spanning several reduction chunks (the CPU kernel cuts samples into 16384-element chunks;
    the Triton one, forced here to many blocks per chunk, into BLOCK * blocks_per_chunk)."""
    _force_small_chunks(backend, monkeypatch)
    device = device_for(backend)
    shape = (3, 5, 4, 33, 31) if backend != "triton" else (3, 7, 3, 37, 41)
    x, x0_real, x0_fake = (_rand(shape, torch.float32, device) for _ in range(3))
    alpha, sigma, weight = _schedule(shape[0], device)
    _dmd_check(backend, torch.float32, x, x0_real, x0_fake, weight)
    gout = torch.tensor(1.25, dtype=torch.float64)
    loss, grad = _loss_and_grad(backend, ops.denoising_loss, x, [WRT, x0_real, x0_fake, alpha, sigma, weight, "v"], gout)
    ref_loss, ref_grad = _loss_and_grad(
        "reference",
        reference.denoising_loss,
        x.double(),
        [WRT, x0_real.double(), x0_fake.double(), alpha.double(), sigma.double(), weight.double(), "v"],
        gout,
    )
    assert_rel_close(loss, ref_loss, TOLERANCE[torch.float32], "denoising loss")
    assert_rel_close(grad, ref_grad, TOLERANCE[torch.float32], "denoising gradient")


@pytest.mark.parametrize("backend", all_backends("dmd_loss"))
def test_losses_accept_non_contiguous_inputs(backend):
    device = device_for(backend)
    base = [_rand((4, 3, 5, 6), torch.float32, device) for _ in range(3)]
    x, x0_real, x0_fake = (t.transpose(1, 3) for t in base)  # (4, 6, 5, 3), non-contiguous
    alpha, sigma, weight = _schedule(4, device)
    _dmd_check(backend, torch.float32, x, x0_real, x0_fake, weight)
    loss, grad = _loss_and_grad(backend, ops.denoising_loss, x, [WRT, x0_real, x0_fake, alpha, sigma, None, "v"], torch.tensor(1.0))
    ref_loss, ref_grad = _loss_and_grad(
        "reference",
        reference.denoising_loss,
        x.double(),
        [WRT, x0_real.double(), x0_fake.double(), alpha.double(), sigma.double(), None, "v"],
        torch.tensor(1.0),
    )
    assert_rel_close(loss, ref_loss, TOLERANCE[torch.float32], "denoising loss")
    assert_rel_close(grad, ref_grad, TOLERANCE[torch.float32], "denoising gradient")


def test_cpu_backend_selection_and_errors():
    """auto serves fp32/bf16 CPU losses with the cpu kernels; a forced backend rejects what it cannot run."""
    if "cpu" not in ops.available_backends("dmd_loss"):
        pytest.skip("the cpu extension is not built")
    x = torch.randn(2, 8)
    assert ops.selected_backend("dmd_loss", x, x, x, None) == "cpu"
    assert ops.selected_backend("denoising_loss", x, x, x, x[:, 0], x[:, 0], None, "v") == "cpu"
    xd = x.double()
    assert ops.selected_backend("dmd_loss", xd, xd, xd, None) == "reference"
    with ops.use_backend("cpu"), pytest.raises(ops.BackendUnavailableError, match="float64"):
        ops.dmd_loss(xd, xd, xd)


def test_cpu_losses_compile():
    """The cpu custom ops (fake impls, autograd, backward ops) trace into one graph under torch.compile.

    The backend functions are compiled directly: the facade's dispatcher reads a ContextVar, which dynamo
    cannot trace with fullgraph=True (a graph break there, not in these ops). aot_eager keeps it fast.
    """
    if "cpu" not in ops.available_backends("dmd_loss"):
        pytest.skip("the cpu extension is not built")
    from fastvdm.ops.cpu import losses as cpu_losses

    shape = (2, 3, 4, 5)
    x = torch.randn(shape, requires_grad=True)
    x0_real, x0_fake, noise = torch.randn(shape), torch.randn(shape), torch.randn(shape)
    alpha, sigma, weight = _schedule(2, "cpu")

    def both(x):
        return cpu_losses.dmd_loss(x, x0_real, x0_fake, weight) + cpu_losses.denoising_loss(
            x, x0_real, noise, alpha, sigma, weight, "v"
        )

    loss = torch.compile(both, backend="aot_eager", fullgraph=True)(x)
    (grad,) = torch.autograd.grad(loss, x)
    xd = x.detach().double().requires_grad_(True)
    ref = reference.dmd_loss(xd, x0_real.double(), x0_fake.double(), weight.double()) + reference.denoising_loss(
        xd, x0_real.double(), noise.double(), alpha.double(), sigma.double(), weight.double()
    )
    (ref_grad,) = torch.autograd.grad(ref, xd)
    assert_rel_close(loss, ref, TOLERANCE[torch.float32], "compiled loss")
    assert_rel_close(grad, ref_grad, TOLERANCE[torch.float32], "compiled gradient")


def _peak_cpu_bytes(fn) -> int:
    """Peak bytes held by CPU allocations made during ``fn()`` (its result included): the running sum of the
    profiler's [memory] events (signed sizes of every allocation and free), in time order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    del out
    level = peak = 0
    for _, nbytes in sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    ):
        level += nbytes
        peak = max(peak, level)
    return peak


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_cpu_losses_allocate_only_the_gradient(dtype):
    """Loss + gradient on the cpu backend allocates one full-size tensor (the gradient) and O(B) scalars; the
    eager expression (measured the same way, as a control) holds several full-size temporaries at once."""
    if "cpu" not in ops.available_backends("dmd_loss"):
        pytest.skip("the cpu extension is not built")
    shape = (2, 3, 4, 16, 16)
    x, x0_real, x0_fake = (_rand(shape, dtype, "cpu") for _ in range(3))
    alpha, sigma, weight = _schedule(2, "cpu")
    grad_bytes = x.numel() * x.element_size()
    xr = x.detach().requires_grad_(True)

    def dmd():
        with ops.use_backend("cpu"):
            return torch.autograd.grad(ops.dmd_loss(xr, x0_real, x0_fake, weight), xr)[0]

    def denoising():
        with ops.use_backend("cpu"):
            return torch.autograd.grad(ops.denoising_loss(xr, x0_real, x0_fake, alpha, sigma, weight), xr)[0]

    def eager():
        target = alpha.view(-1, 1, 1, 1, 1) * x0_fake.float() - sigma.view(-1, 1, 1, 1, 1) * x0_real.float()
        loss = (weight.view(-1, 1, 1, 1, 1) * (xr.float() - target) ** 2).mean()
        return torch.autograd.grad(loss, xr)[0]

    small = 4096  # scalars, (B,) vectors, (B, chunks) partials: far below one tensor
    for fn in (dmd, denoising):
        assert grad_bytes <= _peak_cpu_bytes(fn) <= grad_bytes + small
    assert _peak_cpu_bytes(eager) >= 3 * grad_bytes


@pytest.mark.gpu
@pytest.mark.parametrize("backend", [b for b in ("triton", "cuda") if b in all_backends("dmd_loss")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_losses_large_video_on_gpu(backend, dtype):
    """A 16M-element video: several blocks per reduction program and a multi-step finish on the device."""
    shape = (4, 4, 16, 256, 256)
    x, x0_real, x0_fake = (_rand(shape, dtype, "cuda") for _ in range(3))
    alpha, sigma, weight = _schedule(shape[0], "cuda")
    _dmd_check(backend, dtype, x, x0_real, x0_fake, weight)
    gout = torch.tensor(0.8, dtype=torch.float64)
    loss, grad = _loss_and_grad(backend, ops.denoising_loss, x, [WRT, x0_real, x0_fake, alpha, sigma, weight, "v"], gout)
    ref_loss, ref_grad = _loss_and_grad(
        "reference",
        reference.denoising_loss,
        x.double(),
        [WRT, x0_real.double(), x0_fake.double(), alpha.double(), sigma.double(), weight.double(), "v"],
        gout,
    )
    assert_rel_close(loss, ref_loss, TOLERANCE[dtype], "denoising loss")
    assert_rel_close(grad, ref_grad, TOLERANCE[dtype], "denoising gradient")


def test_cpu_losses_do_not_depend_on_the_thread_count():
    """Chunk partials are added in a fixed order: 1 and 2 OpenMP threads give bitwise equal losses."""
    if "cpu" not in ops.available_backends("dmd_loss"):
        pytest.skip("the cpu extension is not built")
    shape = (2, 5, 4, 33, 31)  # > 2 chunks per sample, above the parallel threshold
    x, x0_real, x0_fake = (_rand(shape, torch.float32, "cpu") for _ in range(3))
    alpha, sigma, weight = _schedule(2, "cpu")
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with ops.use_backend("cpu"):
                results.append(
                    (ops.dmd_loss(x, x0_real, x0_fake, weight), ops.denoising_loss(x, x0_real, x0_fake, alpha, sigma))
                )
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


_COMPILE_FOR_SM90 = r'''
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import fastvdm.kernels.losses as L

target = GPUTarget("cuda", 90, 32)
aligned = lambda n: {(i,): [["tt.divisibility", 16]] for i in range(n)}  # noqa: E731 (what the launcher infers)


def ptx(kernel, signature, constexprs, n_aligned):
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=aligned(n_aligned))
    compiled = triton.compile(src, target=target)
    assert len(compiled.asm["cubin"]) > 0
    return compiled.asm["ptx"]


bf, f32 = "*bf16", "*fp32"
ptx(L._denoising_loss_partial_kernel,
    dict(pred_ptr=bf, x0_ptr=bf, noise_ptr=bf, alpha_ptr=f32, sigma_ptr=f32, partial_ptr=f32, N="i32", chunks="i32",
         TARGET="constexpr", BLOCK="constexpr", BLOCKS_PER_CHUNK="constexpr"),
    dict(TARGET=2, BLOCK=1024, BLOCKS_PER_CHUNK=4), 7)
ptx(L._denoising_loss_finish_kernel,
    dict(partial_ptr=f32, weight_ptr=f32, loss_ptr=f32, B="i32", chunks="i32", numel_f="fp32",
         HAS_WEIGHT="constexpr", BLOCK_B="constexpr", BLOCK_C="constexpr"),
    dict(HAS_WEIGHT=True, BLOCK_B=1, BLOCK_C=64), 3)
ptx(L._denoising_loss_backward_kernel,
    dict(grad_ptr=f32, pred_ptr=bf, x0_ptr=bf, noise_ptr=bf, alpha_ptr=f32, sigma_ptr=f32, weight_ptr=f32, dpred_ptr=bf,
         N="i32", numel_f="fp32", TARGET="constexpr", HAS_WEIGHT="constexpr", BLOCK="constexpr"),
    dict(TARGET=2, HAS_WEIGHT=True, BLOCK=1024), 9)
partial = ptx(L._dmd_loss_partial_kernel,
    dict(x_ptr=f32, real_ptr=f32, fake_ptr=f32, partial_ptr=f32, N="i32", chunks="i32", partial_stride="i32",
         BLOCK="constexpr", BLOCKS_PER_CHUNK="constexpr"),
    dict(BLOCK=1024, BLOCKS_PER_CHUNK=4), 5)
ptx(L._dmd_loss_finish_kernel,
    dict(partial_ptr=f32, weight_ptr=f32, loss_ptr=f32, norm_ptr=f32, B="i32", chunks="i32", partial_stride="i32",
         N_f="fp32", numel_f="fp32", norm_eps="fp32", HAS_WEIGHT="constexpr", BLOCK_B="constexpr", BLOCK_C="constexpr"),
    dict(HAS_WEIGHT=True, BLOCK_B=4, BLOCK_C=64), 4)
backward = ptx(L._dmd_loss_backward_kernel,
    dict(grad_ptr=f32, real_ptr=f32, fake_ptr=f32, norm_ptr=f32, weight_ptr=f32, dx_ptr=f32, N="i32", numel_f="fp32",
         HAS_WEIGHT="constexpr", BLOCK="constexpr"),
    dict(HAS_WEIGHT=True, BLOCK=1024), 7)
assert "div.rn.f32" in backward and "div.full" not in backward, "g must be divided with IEEE rounding"
assert "ld.global.v4" in partial and "st.global.v4" in backward, "expected 128-bit loads/stores"
print("compiled")
'''


def test_triton_loss_kernels_compile_for_a_gpu():
    """Compile every loss kernel for sm_90 (to cubin, with the bundled ptxas) on this GPU-less machine: catches
    compiled-mode errors the interpreter does not see, checks that the DMD gradient divides with IEEE rounding
    (div.rn, so it is bitwise the reference's g / numel on a GPU too) and that aligned inputs get 128-bit
    accesses. Runs in a subprocess without TRITON_INTERPRET."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except ImportError:
        pytest.skip("this triton has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    run = subprocess.run(
        [sys.executable, "-c", _COMPILE_FOR_SM90], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0 and "compiled" in run.stdout, run.stderr[-3000:]


@pytest.mark.parametrize("backend", all_backends("dmd_loss"))
@pytest.mark.parametrize("shape", [(1, 7), (5, 1), (5,)], ids=["one-sample", "one-element-per-sample", "flat"])
def test_losses_degenerate_shapes(backend, shape):
    device = device_for(backend)
    x, x0_real, x0_fake = (_rand(shape, torch.float32, device) for _ in range(3))
    alpha, sigma, weight = _schedule(shape[0], device)
    _dmd_check(backend, torch.float32, x, x0_real, x0_fake, weight)
    gout = torch.tensor(1.0, dtype=torch.float64)
    loss, grad = _loss_and_grad(backend, ops.denoising_loss, x, [WRT, x0_real, x0_fake, alpha, sigma, weight, "v"], gout)
    ref_loss, ref_grad = _loss_and_grad(
        "reference",
        reference.denoising_loss,
        x.double(),
        [WRT, x0_real.double(), x0_fake.double(), alpha.double(), sigma.double(), weight.double(), "v"],
        gout,
    )
    assert_rel_close(loss, ref_loss, TOLERANCE[torch.float32], "denoising loss")
    assert_rel_close(grad, ref_grad, TOLERANCE[torch.float32], "denoising gradient")


@pytest.mark.gpu
def test_triton_losses_compile_on_gpu():
    """The triton_op losses (autograd, backward ops) trace into one graph under torch.compile on a GPU."""
    if "triton" not in all_backends("dmd_loss"):
        pytest.skip("triton is not available")
    from fastvdm.kernels import losses as triton_losses

    shape = (2, 3, 4, 40, 64)
    x = torch.randn(shape, device="cuda", requires_grad=True)
    x0_real, x0_fake, noise = (torch.randn(shape, device="cuda") for _ in range(3))
    alpha, sigma, weight = _schedule(2, "cuda")

    def both(x):
        return triton_losses.dmd_loss(x, x0_real, x0_fake, weight) + triton_losses.denoising_loss(
            x, x0_real, noise, alpha, sigma, weight, "v"
        )

    loss = torch.compile(both, fullgraph=True)(x)
    (grad,) = torch.autograd.grad(loss, x)
    xd = x.detach().double().requires_grad_(True)
    ref = reference.dmd_loss(xd, x0_real.double(), x0_fake.double(), weight.double()) + reference.denoising_loss(
        xd, x0_real.double(), noise.double(), alpha.double(), sigma.double(), weight.double()
    )
    (ref_grad,) = torch.autograd.grad(ref, xd)
    assert_rel_close(loss, ref, TOLERANCE[torch.float32], "compiled loss")
    assert_rel_close(grad, ref_grad, TOLERANCE[torch.float32], "compiled gradient")


@pytest.mark.skipif("cpu" not in all_backends("dmd_loss"), reason="the cpu extension is not built")
def test_cpu_losses_gradients_of_outputs_past_the_huge_page_size():
    """Gradients of >= 32 MiB, the size from which the cpu bindings advise huge pages for a fresh output
    (csrc/torch/cpu_output.h): still the reference's values, both losses."""
    shape = (2, 4, 4, 1024, 264)  # 8.65 M elements, 33 MiB in fp32
    pred, x0, noise = (_rand(shape, torch.float32, "cpu") for _ in range(3))
    alpha, sigma, weight = _schedule(shape[0], "cpu")
    gout = torch.tensor(1.3, dtype=torch.float64)
    loss, grad = _loss_and_grad("cpu", ops.denoising_loss, pred, [WRT, x0, noise, alpha, sigma, weight, "v"], gout)
    ref_loss, ref_grad = _loss_and_grad("reference", reference.denoising_loss, pred.double(),
                                        [WRT, x0.double(), noise.double(), alpha.double(), sigma.double(),
                                         weight.double(), "v"], gout)
    assert_rel_close(loss, ref_loss, TOLERANCE[torch.float32], "denoising loss")
    assert_rel_close(grad, ref_grad, TOLERANCE[torch.float32], "d denoising / d pred")
    del grad, ref_grad
    _dmd_check("cpu", torch.float32, pred, x0, noise, weight, gout)


@pytest.mark.skipif("cpu" not in all_backends("denoising_loss"), reason="the cpu extension is not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_cpu_denoising_backward_twice_through_one_graph(dtype):
    """fp32 eager: the first backward scales the forward's saved residual in place into the gradient; a
    second backward through the same graph (retain_graph) must recompute it, not scale the first gradient."""
    shape = (3, 2, 5, 7)
    pred, x0, noise = (_rand(shape, dtype, "cpu") for _ in range(3))
    alpha, sigma, weight = _schedule(shape[0], "cpu")
    p = pred.detach().requires_grad_(True)
    with ops.use_backend("cpu"):
        loss = ops.denoising_loss(p, x0, noise, alpha, sigma, weight, "v")
    (g1,) = torch.autograd.grad(loss, p, torch.tensor(0.7), retain_graph=True)
    (g2,) = torch.autograd.grad(loss, p, torch.tensor(1.9))
    _, ref = _loss_and_grad("reference", reference.denoising_loss, pred.double(),
                            [WRT, x0.double(), noise.double(), alpha.double(), sigma.double(), weight.double(), "v"],
                            torch.tensor(1.0, dtype=torch.float64))
    assert_rel_close(g1, 0.7 * ref, TOLERANCE[dtype], "first backward")
    assert_rel_close(g2, 1.9 * ref, TOLERANCE[dtype], "second backward")
