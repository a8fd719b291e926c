"""Triton kernels of the distillation losses: ``denoising_loss`` and ``dmd_loss``.

Both are memory-bound reductions over whole videos. Each is computed in

1. one reduction pass: grid (chunks, B); a program sums its chunk of one sample with fp32 accumulators and
   writes one partial per (sample, chunk) (no atomics: deterministic);
2. one tiny finishing kernel (one program) that adds the partials per sample, in a fixed order, and writes
   the scalar loss (and, for DMD, the per-sample normalizers the backward needs);
3. in the backward, one elementwise pass that writes the gradient directly (no autograd graph through
   full-size temporaries; the gradient is the only full-size allocation).

Math (B samples of N elements, numel = B * N, per-sample vectors alpha, sigma, weight of shape (B,)):

- denoising: target = noise ("eps"), x0 ("x0") or alpha_b * noise - sigma_b * x0 ("v");
  loss = sum_b weight_b * sum_i (pred - target)^2 / numel; d loss / d pred = (2 grad / numel) weight_b (pred - target).
- DMD: norm_b = max(mean_i |x - x0_real|, norm_eps); g = ((x0_fake - x0_real) / norm_b) * weight_b;
  loss = 0.5 * mean(g^2) = 0.5 * sum_b weight_b^2 sum_i (x0_fake - x0_real)^2 / norm_b^2 / numel;
  d loss / d x = g * (grad / numel), the division by norm_b rounded to nearest (``div_rn``) as in PyTorch.

Inputs: (B, ...) tensors of one shape, float32 or bfloat16 (fp16 too), on a CUDA device (or the CPU under
``TRITON_INTERPRET=1``, for tests). Non-contiguous inputs are copied to contiguous first. The ops, their
autograd (the glue every backend shares, :mod:`fastvdm.ops.losses_common`) and the dispatch registration are in
:mod:`fastvdm.ops.triton.losses`; this module imports nothing of fastvdm.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

TARGETS = {"eps": 0, "x0": 1, "v": 2}  # the TARGET constexpr of the denoising kernels

BLOCK = 1024  # elements per block of the reduction and elementwise passes
FINISH_BLOCK_C = 64  # chunk partials per step of the finishing kernels
TARGET_PROGRAMS = 1024  # the reduction grid aims at about this many programs (a few waves on a large GPU)


def _blocks_per_chunk(B: int, N: int) -> int:
    """Blocks summed by one reduction program: a power of two (few compiled variants), at most 64."""
    want = triton.cdiv(B * N, BLOCK * TARGET_PROGRAMS)
    return min(64, triton.next_power_of_2(max(1, want)))


# ---------------------------------------------------------------------------------------------- kernels
@triton.jit
def _denoising_target(x0_ptr, noise_ptr, offs, mask, alpha, sigma, TARGET: tl.constexpr):
    if TARGET == 0:
        t = tl.load(noise_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    elif TARGET == 1:
        t = tl.load(x0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        n = tl.load(noise_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        t = alpha * n - sigma * x
    return t


@triton.jit
def _denoising_loss_partial_kernel(
    pred_ptr, x0_ptr, noise_ptr, alpha_ptr, sigma_ptr, partial_ptr,  # partial: (B, chunks) fp32
    N, chunks,
    TARGET: tl.constexpr, BLOCK: tl.constexpr, BLOCKS_PER_CHUNK: tl.constexpr,
):
    """partial[b, c] = sum over chunk c of sample b of (pred - target)^2."""
    c = tl.program_id(0)
    b = tl.program_id(1)
    base = b.to(tl.int64) * N
    alpha = 0.0
    sigma = 0.0
    if TARGET == 2:
        alpha = tl.load(alpha_ptr + b).to(tl.float32)
        sigma = tl.load(sigma_ptr + b).to(tl.float32)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    start = c.to(tl.int64) * (BLOCK * BLOCKS_PER_CHUNK)
    for i in range(BLOCKS_PER_CHUNK):
        idx = start + i * BLOCK + tl.arange(0, BLOCK)
        mask = idx < N
        p = tl.load(pred_ptr + base + idx, mask=mask, other=0.0).to(tl.float32)
        t = _denoising_target(x0_ptr + base, noise_ptr + base, idx, mask, alpha, sigma, TARGET)
        d = p - t  # masked lanes: 0 - 0
        acc += d * d
    tl.store(partial_ptr + b * chunks + c, tl.sum(acc, axis=0))


@triton.jit
def _denoising_loss_finish_kernel(
    partial_ptr, weight_ptr, loss_ptr,
    B, chunks, numel_f,
    HAS_WEIGHT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """loss = sum_b weight_b * sum_c partial[b, c] / numel (one program)."""
    rows = tl.arange(0, BLOCK_B)
    acc = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    for c0 in range(0, chunks, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        m = (rows[:, None] < B) & (cols[None, :] < chunks)
        acc += tl.load(partial_ptr + rows[:, None] * chunks + cols[None, :], mask=m, other=0.0)
    per_sample = tl.sum(acc, axis=1)
    if HAS_WEIGHT:
        per_sample *= tl.load(weight_ptr + rows, mask=rows < B, other=0.0).to(tl.float32)
    tl.store(loss_ptr, tl.sum(per_sample, axis=0) / numel_f)


@triton.jit
def _denoising_loss_backward_kernel(
    grad_ptr, pred_ptr, x0_ptr, noise_ptr, alpha_ptr, sigma_ptr, weight_ptr, dpred_ptr,
    N, numel_f,
    TARGET: tl.constexpr, HAS_WEIGHT: tl.constexpr, BLOCK: tl.constexpr,
):
    """dpred = ((2 * grad / numel) * weight_b) * (pred - target); grid (cdiv(N, BLOCK), B)."""
    b = tl.program_id(1)
    base = b.to(tl.int64) * N
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < N
    coef = 2.0 * tl.load(grad_ptr).to(tl.float32) / numel_f
    if HAS_WEIGHT:
        coef *= tl.load(weight_ptr + b).to(tl.float32)
    alpha = 0.0
    sigma = 0.0
    if TARGET == 2:
        alpha = tl.load(alpha_ptr + b).to(tl.float32)
        sigma = tl.load(sigma_ptr + b).to(tl.float32)
    p = tl.load(pred_ptr + base + idx, mask=mask, other=0.0).to(tl.float32)
    t = _denoising_target(x0_ptr + base, noise_ptr + base, idx, mask, alpha, sigma, TARGET)
    d = coef * (p - t)
    tl.store(dpred_ptr + base + idx, d.to(dpred_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dmd_loss_partial_kernel(
    x_ptr, real_ptr, fake_ptr, partial_ptr,  # partial: (2, B, chunks) fp32: sum |x - real|, sum (fake - real)^2
    N, chunks, partial_stride,
    BLOCK: tl.constexpr, BLOCKS_PER_CHUNK: tl.constexpr,
):
    c = tl.program_id(0)
    b = tl.program_id(1)
    base = b.to(tl.int64) * N
    acc_abs = tl.zeros([BLOCK], dtype=tl.float32)
    acc_sq = tl.zeros([BLOCK], dtype=tl.float32)
    start = c.to(tl.int64) * (BLOCK * BLOCKS_PER_CHUNK)
    for i in range(BLOCKS_PER_CHUNK):
        idx = base + start + i * BLOCK + tl.arange(0, BLOCK)
        mask = idx < base + N
        x = tl.load(x_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        r = tl.load(real_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        f = tl.load(fake_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        acc_abs += tl.abs(x - r)
        acc_sq += (f - r) * (f - r)
    tl.store(partial_ptr + b * chunks + c, tl.sum(acc_abs, axis=0))
    tl.store(partial_ptr + partial_stride + b * chunks + c, tl.sum(acc_sq, axis=0))


@triton.jit
def _dmd_loss_finish_kernel(
    partial_ptr, weight_ptr, loss_ptr, norm_ptr,
    B, chunks, partial_stride, N_f, numel_f, norm_eps,
    HAS_WEIGHT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """norm_b = max(sum|x - r| / N, eps); loss = 0.5 * sum_b weight_b^2 * sum (f - r)^2 / norm_b^2 / numel."""
    rows = tl.arange(0, BLOCK_B)
    acc_abs = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    acc_sq = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    for c0 in range(0, chunks, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        m = (rows[:, None] < B) & (cols[None, :] < chunks)
        offs = rows[:, None] * chunks + cols[None, :]
        acc_abs += tl.load(partial_ptr + offs, mask=m, other=0.0)
        acc_sq += tl.load(partial_ptr + partial_stride + offs, mask=m, other=0.0)
    row_ok = rows < B
    norm = tl.maximum(tl.sum(acc_abs, axis=1) / N_f, norm_eps)
    tl.store(norm_ptr + rows, norm, mask=row_ok)
    per_sample = tl.sum(acc_sq, axis=1) / (norm * norm)
    if HAS_WEIGHT:
        w = tl.load(weight_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        per_sample *= w * w
    per_sample = tl.where(row_ok, per_sample, 0.0)
    tl.store(loss_ptr, 0.5 * tl.sum(per_sample, axis=0) / numel_f)


@triton.jit
def _dmd_loss_backward_kernel(
    grad_ptr, real_ptr, fake_ptr, norm_ptr, weight_ptr, dx_ptr,
    N, numel_f,
    HAS_WEIGHT: tl.constexpr, BLOCK: tl.constexpr,
):
    """dx = (((fake - real) / norm_b) * weight_b) * (grad / numel); grid (cdiv(N, BLOCK), B)."""
    b = tl.program_id(1)
    idx = b.to(tl.int64) * N + tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < (b.to(tl.int64) + 1) * N
    norm = tl.load(norm_ptr + b)
    scale = tl.math.div_rn(tl.load(grad_ptr).to(tl.float32), numel_f)
    r = tl.load(real_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    f = tl.load(fake_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    g = tl.math.div_rn(f - r, norm)
    if HAS_WEIGHT:
        g = g * tl.load(weight_ptr + b).to(tl.float32)
    tl.store(dx_ptr + idx, (g * scale).to(dx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------- ops
def _vector(t: Optional[Tensor], like: Tensor) -> Tensor:
    """A (B,) per-sample vector as a contiguous tensor (a 1-element placeholder when absent)."""
    return like.new_empty((1,), dtype=torch.float32) if t is None else t.contiguous()


# The contract of the C++ extensions' denoising_loss_forward/backward and dmd_loss_forward/backward
# (fastvdm.ops.losses_common): target as an int (TARGETS), the DMD normalizer's clamp passed in. Kernels are
# launched through wrap_triton, so the launchers run inside the triton ops of fastvdm/ops/triton/losses.py.
def denoising_loss_forward(pred: Tensor, x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor,
                           weight: Optional[Tensor], target: int) -> Tensor:
    """mean of weight_b * (pred - target)^2; pred, x0, noise (B, ...); alpha, sigma, weight (B,). -> 0-dim fp32."""
    pred, x0, noise = pred.contiguous(), x0.contiguous(), noise.contiguous()
    B = pred.shape[0]
    N = pred.numel() // B
    per_chunk = _blocks_per_chunk(B, N)
    chunks = triton.cdiv(N, BLOCK * per_chunk)
    partial = pred.new_empty((B, chunks), dtype=torch.float32)
    wrap_triton(_denoising_loss_partial_kernel)[(chunks, B)](
        pred, x0, noise, alpha.contiguous(), sigma.contiguous(), partial, N, chunks,
        TARGET=target, BLOCK=BLOCK, BLOCKS_PER_CHUNK=per_chunk,
    )
    loss = pred.new_empty((), dtype=torch.float32)
    wrap_triton(_denoising_loss_finish_kernel)[(1,)](
        partial, _vector(weight, pred), loss, B, chunks, float(pred.numel()),
        HAS_WEIGHT=weight is not None, BLOCK_B=triton.next_power_of_2(B), BLOCK_C=FINISH_BLOCK_C,
    )
    return loss


def denoising_loss_backward(grad: Tensor, pred: Tensor, x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor,
                            weight: Optional[Tensor], target: int) -> Tensor:
    """d loss / d pred = ((2 grad / numel) * weight_b) * (pred - target); (B, ...) contiguous in pred's dtype."""
    pred, x0, noise = pred.contiguous(), x0.contiguous(), noise.contiguous()
    B = pred.shape[0]
    N = pred.numel() // B
    dpred = torch.empty_like(pred)
    wrap_triton(_denoising_loss_backward_kernel)[(triton.cdiv(N, BLOCK), B)](
        grad, pred, x0, noise, alpha.contiguous(), sigma.contiguous(), _vector(weight, pred), dpred,
        N, float(pred.numel()),
        TARGET=target, HAS_WEIGHT=weight is not None, BLOCK=BLOCK,
    )
    return dpred


def dmd_loss_forward(x: Tensor, x0_real: Tensor, x0_fake: Tensor, weight: Optional[Tensor],
                     norm_eps: float) -> tuple[Tensor, Tensor]:
    """(loss, norm): loss = 0.5 * mean(g^2) (0-dim fp32), norm = (B,) fp32 mean |x - x0_real| clamped at norm_eps."""
    x, x0_real, x0_fake = x.contiguous(), x0_real.contiguous(), x0_fake.contiguous()
    B = x.shape[0]
    N = x.numel() // B
    per_chunk = _blocks_per_chunk(B, N)
    chunks = triton.cdiv(N, BLOCK * per_chunk)
    partial = x.new_empty((2, B, chunks), dtype=torch.float32)
    wrap_triton(_dmd_loss_partial_kernel)[(chunks, B)](
        x, x0_real, x0_fake, partial, N, chunks, B * chunks, BLOCK=BLOCK, BLOCKS_PER_CHUNK=per_chunk,
    )
    loss = x.new_empty((), dtype=torch.float32)
    norm = x.new_empty((B,), dtype=torch.float32)
    wrap_triton(_dmd_loss_finish_kernel)[(1,)](
        partial, _vector(weight, x), loss, norm,
        B, chunks, B * chunks, float(N), float(x.numel()), norm_eps,
        HAS_WEIGHT=weight is not None, BLOCK_B=triton.next_power_of_2(B), BLOCK_C=FINISH_BLOCK_C,
    )
    return loss, norm


def dmd_loss_backward(grad: Tensor, x0_real: Tensor, x0_fake: Tensor, norm: Tensor, weight: Optional[Tensor]) -> Tensor:
    """d loss / d x = (((x0_fake - x0_real) / norm_b) * weight_b) * (grad / numel); (B, ...) contiguous."""
    x0_real, x0_fake = x0_real.contiguous(), x0_fake.contiguous()
    B = x0_real.shape[0]
    N = x0_real.numel() // B
    dx = torch.empty_like(x0_real)
    wrap_triton(_dmd_loss_backward_kernel)[(triton.cdiv(N, BLOCK), B)](
        grad, x0_real, x0_fake, norm, _vector(weight, x0_real), dx, N, float(x0_real.numel()),
        HAS_WEIGHT=weight is not None, BLOCK=BLOCK,
    )
    return dx
