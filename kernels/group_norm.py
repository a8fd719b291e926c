"""Triton backend of ``fastvdm.ops.group_norm``: fused GroupNorm + affine + modulation + SiLU, fwd + bwd.

x (B, C, *rest) is addressed as x[n, c, s] through three strides (a view (B, C, S), S = prod(rest)), so
contiguous and channels_last / channels_last_3d inputs are read in place (other layouts are copied to
contiguous first). Per (n, c): a = w * (1 + scale), b = bias * (1 + scale) + shift, and

    u = x + input_bias[n, c],   xhat = (u - mean[n, g]) * rstd[n, g],   z = a * xhat + b,   y = silu(z) or z.

u is formed in registers as each tile is loaded (HAS_IB; never stored). Statistics are those of u, fp32
(biased variance from sums of u - k, k the group's first element, so a large mean does not cancel). Tiles are
[BLOCK_C channels, BLOCK_S positions] of one group; a group of any size (Cg not a power of two, Cg * S larger
than a tile) is walked by loops over channel and position blocks.

Forward (launcher :func:`group_norm_forward` -> (y, mean, rstd)):
- ``_fwd_fused_kernel``, one program per (n, g): statistics loop, then the normalize/modulate/SiLU loop over
  the same group. When the whole group fits one tile it is loaded once (one read, one write); otherwise the
  second loop re-reads the group (from L2 where it fits).
- When B * G programs are too few to fill the GPU (e.g. B=2, G=32 on 132 SMs), each group is split along S
  over SPLIT programs: ``_fwd_stats_kernel`` writes per-split partial sums, ``_fwd_apply_kernel`` reduces the
  SPLIT partials of its group and applies. The apply kernel walks the programs in the reverse order of the
  stats kernel, so that its first reads find in L2 what the stats kernel read last; where x is larger than
  L2, x is still read twice from memory.
Backward (launcher :func:`group_norm_backward` -> (dx, sum_dz, sum_dzx)), dz = dy * act'(z), N = Cg * S:
- ``_bwd_sums_kernel`` (grid (B * G, SPLIT)): per-channel partial sums of dz and dz * xhat;
- ``_bwd_dx_kernel`` (grid (B * G, SPLIT)): reduces them, m1 = sum_c a * sum_dz / N,
  m2 = sum_c a * sum_dzx / N, and writes dx = rstd * (a * dz - m1 - xhat * m2); split 0 also stores the
  (B, C) fp32 sums, from which dweight, dbias, dscale, dshift are O(B * C) torch arithmetic
  (:func:`fastvdm.ops.group_norm_common.param_grads`).

Supported: fp32, bf16, fp16 inputs (parameters of any float dtype), fp32 statistics and arithmetic. CUDA
tensors, or CPU tensors under ``TRITON_INTERPRET=1`` (tests). The op, its autograd and its dispatch
registration are in :mod:`fastvdm.ops.triton.group_norm` (this module imports nothing of fastvdm).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

# Elements per tile (BLOCK_C * BLOCK_S) and channels per tile. Tests lower them (and force SPLIT) to exercise
# the multi-tile and split paths on small inputs under the interpreter.
MAX_TILE = 4096
MAX_BLOCK_C = 64
FORCE_SPLIT: Optional[int] = None  # None: choose from the device's SM count
MAX_SPLIT = 64


# ================================================================================================= kernels
@triton.jit
def _tile_offsets(c0, s0, Cg, s_end, stride_c, stride_s, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """Channel indices (within the group), offsets and mask of the tile starting at (c0, s0)."""
    offs_c = c0 + tl.arange(0, BLOCK_C)
    offs_s = s0 + tl.arange(0, BLOCK_S)
    mask = (offs_c < Cg)[:, None] & (offs_s < s_end)[None, :]
    offs = offs_c[:, None].to(tl.int64) * stride_c + offs_s[None, :].to(tl.int64) * stride_s
    return offs_c, offs, mask


@triton.jit
def _modulation(W, Bias, Scale, Shift, n, ch, C, cmask,
                HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr):
    """a = w * (1 + scale), b = bias * (1 + scale) + shift for channels ``ch`` of sample n (fp32)."""
    if HAS_W:
        a = tl.load(W + ch, mask=cmask, other=0.0).to(tl.float32)
    else:
        a = tl.full(ch.shape, 1.0, tl.float32)
    if HAS_B:
        b = tl.load(Bias + ch, mask=cmask, other=0.0).to(tl.float32)
    else:
        b = tl.zeros(ch.shape, tl.float32)
    if HAS_SCALE:
        m = 1.0 + tl.load(Scale + n * C + ch, mask=cmask, other=0.0).to(tl.float32)
        a = a * m
        b = b * m
    if HAS_SHIFT:
        b = b + tl.load(Shift + n * C + ch, mask=cmask, other=0.0).to(tl.float32)
    return a, b


@triton.jit
def _rstd(var, eps):
    """1 / sqrt(var + eps), var clamped at 0 against rounding; NaN when var is NaN or infinite (fp32 sums
    overflowed, e.g. inputs near 1e20), as the reference gives, never a finite wrong value."""
    return tl.where(var < float("inf"), tl.rsqrt(tl.maximum(var, 0.0) + eps), float("nan"))


@triton.jit
def _load_u(x_ptrs, mask, InBias, n, ch, C, cmask, HAS_IB: tl.constexpr):
    """A tile of u = x + input_bias[n, ch] in fp32 (x alone without an input bias)."""
    x = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_IB:
        x = x + tl.load(InBias + n * C + ch, mask=cmask, other=0.0).to(tl.float32)[:, None]
    return x


@triton.jit
def _first_u(x_base, InBias, n, g, Cg, C, HAS_IB: tl.constexpr):
    """The group's first element of u (the shift k of the shifted sums)."""
    k = tl.load(x_base).to(tl.float32)
    if HAS_IB:
        k = k + tl.load(InBias + n * C + g * Cg).to(tl.float32)
    return k


@triton.jit
def _shifted_sums(x_base, k, InBias, n, g, C, Cg, s_begin, s_end, stride_c, stride_s,
                  HAS_IB: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """sum(u - k) and sum((u - k)^2) over channels [0, Cg) and positions [s_begin, s_end) of one group."""
    acc1 = tl.zeros([BLOCK_C, BLOCK_S], tl.float32)
    acc2 = tl.zeros([BLOCK_C, BLOCK_S], tl.float32)
    for c0 in range(0, Cg, BLOCK_C):
        for s0 in range(s_begin, s_end, BLOCK_S):
            offs_c, offs, mask = _tile_offsets(c0, s0, Cg, s_end, stride_c, stride_s, BLOCK_C, BLOCK_S)
            x = _load_u(x_base + offs, mask, InBias, n, g * Cg + offs_c, C, offs_c < Cg, HAS_IB)
            d = tl.where(mask, x - k, 0.0)
            acc1 += d
            acc2 += d * d
    return tl.sum(tl.sum(acc1, axis=1), axis=0), tl.sum(tl.sum(acc2, axis=1), axis=0)


@triton.jit
def _apply(x_base, y_base, W, Bias, Scale, Shift, InBias, n, g, C, Cg, s_begin, s_end, mean, rstd,
           stride_xc, stride_xs, stride_yc, stride_ys,
           HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr,
           HAS_IB: tl.constexpr, SILU: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """y = act(a * rstd * (u - mean) + b) over channels [0, Cg) and positions [s_begin, s_end) of group g."""
    for c0 in range(0, Cg, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        cmask = offs_c < Cg
        a, b = _modulation(W, Bias, Scale, Shift, n, g * Cg + offs_c, C, cmask,
                           HAS_W, HAS_B, HAS_SCALE, HAS_SHIFT)
        a = a * rstd
        for s0 in range(s_begin, s_end, BLOCK_S):
            _, offs, mask = _tile_offsets(c0, s0, Cg, s_end, stride_xc, stride_xs, BLOCK_C, BLOCK_S)
            _, offs_y, _ = _tile_offsets(c0, s0, Cg, s_end, stride_yc, stride_ys, BLOCK_C, BLOCK_S)
            x = _load_u(x_base + offs, mask, InBias, n, g * Cg + offs_c, C, cmask, HAS_IB)
            z = a[:, None] * (x - mean) + b[:, None]
            if SILU:
                z = z * tl.sigmoid(z)
            tl.store(y_base + offs_y, z.to(y_base.dtype.element_ty), mask=mask)


@triton.jit
def _fwd_fused_kernel(
    X, Y, W, Bias, Scale, Shift, InBias, Mean, Rstd,
    C, S, G, Cg, eps,
    stride_xb, stride_xc, stride_xs, stride_yb, stride_yc, stride_ys,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr,
    HAS_IB: tl.constexpr, SILU: tl.constexpr, SINGLE_TILE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """One program per (n, g): statistics, then normalization, affine, modulation and SiLU."""
    pid = tl.program_id(0)
    n = pid // G
    g = pid % G
    x_base = X + n.to(tl.int64) * stride_xb + (g * Cg).to(tl.int64) * stride_xc
    y_base = Y + n.to(tl.int64) * stride_yb + (g * Cg).to(tl.int64) * stride_yc
    count = Cg * S * 1.0
    k = _first_u(x_base, InBias, n, g, Cg, C, HAS_IB)
    if SINGLE_TILE:  # the whole group in registers: one read, one write
        offs_c, offs, mask = _tile_offsets(0, 0, Cg, S, stride_xc, stride_xs, BLOCK_C, BLOCK_S)
        _, offs_y, _ = _tile_offsets(0, 0, Cg, S, stride_yc, stride_ys, BLOCK_C, BLOCK_S)
        x = _load_u(x_base + offs, mask, InBias, n, g * Cg + offs_c, C, offs_c < Cg, HAS_IB)
        d = tl.where(mask, x - k, 0.0)
        s1 = tl.sum(tl.sum(d, axis=1), axis=0)
        s2 = tl.sum(tl.sum(d * d, axis=1), axis=0)
        m = s1 / count
        mean = k + m
        rstd = _rstd(s2 / count - m * m, eps)
        a, b = _modulation(W, Bias, Scale, Shift, n, g * Cg + offs_c, C, offs_c < Cg,
                           HAS_W, HAS_B, HAS_SCALE, HAS_SHIFT)
        z = (a * rstd)[:, None] * (x - mean) + b[:, None]
        if SILU:
            z = z * tl.sigmoid(z)
        tl.store(y_base + offs_y, z.to(Y.dtype.element_ty), mask=mask)
    else:
        s1, s2 = _shifted_sums(x_base, k, InBias, n, g, C, Cg, 0, S, stride_xc, stride_xs,
                               HAS_IB, BLOCK_C, BLOCK_S)
        m = s1 / count
        mean = k + m
        rstd = _rstd(s2 / count - m * m, eps)
        _apply(x_base, y_base, W, Bias, Scale, Shift, InBias, n, g, C, Cg, 0, S, mean, rstd,
               stride_xc, stride_xs, stride_yc, stride_ys,
               HAS_W, HAS_B, HAS_SCALE, HAS_SHIFT, HAS_IB, SILU, BLOCK_C, BLOCK_S)
    tl.store(Mean + pid, mean)
    tl.store(Rstd + pid, rstd)


@triton.jit
def _fwd_stats_kernel(
    X, InBias, Partial, C, G, Cg, S, S_PER_SPLIT,
    stride_xb, stride_xc, stride_xs,
    HAS_IB: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Grid (B * G, SPLIT): partial shifted sums of group pid over positions [split * S_PER_SPLIT, ...)."""
    pid = tl.program_id(0)
    split = tl.program_id(1)
    nsplit = tl.num_programs(1)
    n = pid // G
    g = pid % G
    x_base = X + n.to(tl.int64) * stride_xb + (g * Cg).to(tl.int64) * stride_xc
    k = _first_u(x_base, InBias, n, g, Cg, C, HAS_IB)
    s_begin = split * S_PER_SPLIT
    s_end = tl.minimum(s_begin + S_PER_SPLIT, S)
    s1, s2 = _shifted_sums(x_base, k, InBias, n, g, C, Cg, s_begin, s_end, stride_xc, stride_xs,
                           HAS_IB, BLOCK_C, BLOCK_S)
    tl.store(Partial + (pid * nsplit + split) * 2, s1)
    tl.store(Partial + (pid * nsplit + split) * 2 + 1, s2)


@triton.jit
def _fwd_apply_kernel(
    X, Y, W, Bias, Scale, Shift, InBias, Mean, Rstd, Partial,
    C, S, G, Cg, S_PER_SPLIT, eps,
    stride_xb, stride_xc, stride_xs, stride_yb, stride_yc, stride_ys,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr,
    HAS_IB: tl.constexpr, SILU: tl.constexpr, SPLIT_P2: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Grid (B * G, SPLIT): reduce the group's partial sums to mean/rstd, apply to this split's positions."""
    # Reverse launch order: the first programs re-read what the previous kernel read last (still in L2).
    pid = tl.num_programs(0) - 1 - tl.program_id(0)
    split = tl.num_programs(1) - 1 - tl.program_id(1)
    nsplit = tl.num_programs(1)
    n = pid // G
    g = pid % G
    x_base = X + n.to(tl.int64) * stride_xb + (g * Cg).to(tl.int64) * stride_xc
    y_base = Y + n.to(tl.int64) * stride_yb + (g * Cg).to(tl.int64) * stride_yc
    offs = tl.arange(0, SPLIT_P2)
    pmask = offs < nsplit
    s1 = tl.sum(tl.load(Partial + (pid * nsplit + offs) * 2, mask=pmask, other=0.0), axis=0)
    s2 = tl.sum(tl.load(Partial + (pid * nsplit + offs) * 2 + 1, mask=pmask, other=0.0), axis=0)
    count = Cg * S * 1.0
    k = _first_u(x_base, InBias, n, g, Cg, C, HAS_IB)
    m = s1 / count
    mean = k + m
    rstd = _rstd(s2 / count - m * m, eps)
    s_begin = split * S_PER_SPLIT
    s_end = tl.minimum(s_begin + S_PER_SPLIT, S)
    _apply(x_base, y_base, W, Bias, Scale, Shift, InBias, n, g, C, Cg, s_begin, s_end, mean, rstd,
           stride_xc, stride_xs, stride_yc, stride_ys,
           HAS_W, HAS_B, HAS_SCALE, HAS_SHIFT, HAS_IB, SILU, BLOCK_C, BLOCK_S)
    if split == 0:
        tl.store(Mean + pid, mean)
        tl.store(Rstd + pid, rstd)


@triton.jit
def _dz(dy, x, mean, rstd, a, b, SILU: tl.constexpr):
    """xhat and dz = dy * act'(a * xhat + b) for a tile (a, b: per-channel column vectors)."""
    xhat = (x - mean) * rstd
    if SILU:
        z = a[:, None] * xhat + b[:, None]
        sig = tl.sigmoid(z)
        dz = dy * sig * (1.0 + z * (1.0 - sig))
    else:
        dz = dy
    return xhat, dz


@triton.jit
def _bwd_sums_kernel(
    DY, X, W, Bias, Scale, Shift, InBias, Mean, Rstd, Partial,
    C, S, G, Cg, S_PER_SPLIT,
    stride_xb, stride_xc, stride_xs, stride_gb, stride_gc, stride_gs,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr,
    HAS_IB: tl.constexpr, SILU: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Grid (B * G, SPLIT): per-channel partial sums of dz and dz * xhat over this split's positions.

    Partial: (B, C, SPLIT, 2) fp32.
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    nsplit = tl.num_programs(1)
    n = pid // G
    g = pid % G
    x_base = X + n.to(tl.int64) * stride_xb + (g * Cg).to(tl.int64) * stride_xc
    g_base = DY + n.to(tl.int64) * stride_gb + (g * Cg).to(tl.int64) * stride_gc
    mean = tl.load(Mean + pid)
    rstd = tl.load(Rstd + pid)
    s_begin = split * S_PER_SPLIT
    s_end = tl.minimum(s_begin + S_PER_SPLIT, S)
    for c0 in range(0, Cg, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        cmask = offs_c < Cg
        a, b = _modulation(W, Bias, Scale, Shift, n, g * Cg + offs_c, C, cmask,
                           HAS_W, HAS_B, HAS_SCALE, HAS_SHIFT)
        acc1 = tl.zeros([BLOCK_C, BLOCK_S], tl.float32)
        acc2 = tl.zeros([BLOCK_C, BLOCK_S], tl.float32)
        for s0 in range(s_begin, s_end, BLOCK_S):
            _, offs, mask = _tile_offsets(c0, s0, Cg, s_end, stride_xc, stride_xs, BLOCK_C, BLOCK_S)
            _, offs_g, _ = _tile_offsets(c0, s0, Cg, s_end, stride_gc, stride_gs, BLOCK_C, BLOCK_S)
            x = _load_u(x_base + offs, mask, InBias, n, g * Cg + offs_c, C, cmask, HAS_IB)
            dy = tl.load(g_base + offs_g, mask=mask, other=0.0).to(tl.float32)
            xhat, dz = _dz(dy, x, mean, rstd, a, b, SILU)
            acc1 += dz  # dy = 0 on masked lanes, so dz = 0 there
            acc2 += dz * xhat
        out = Partial + ((n * C + g * Cg + offs_c) * nsplit + split) * 2
        tl.store(out, tl.sum(acc1, axis=1), mask=cmask)
        tl.store(out + 1, tl.sum(acc2, axis=1), mask=cmask)


@triton.jit
def _bwd_dx_kernel(
    DY, X, DX, W, Bias, Scale, Shift, InBias, Mean, Rstd, Partial, SumDz, SumDzx,
    C, S, G, Cg, S_PER_SPLIT,
    stride_xb, stride_xc, stride_xs, stride_gb, stride_gc, stride_gs, stride_db, stride_dc, stride_ds,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr,
    HAS_IB: tl.constexpr, SILU: tl.constexpr, SPLIT_P2: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Grid (B * G, SPLIT): reduce the group's per-channel sums, then dx over this split's positions."""
    # Reverse launch order: the first programs re-read what the previous kernel read last (still in L2).
    pid = tl.num_programs(0) - 1 - tl.program_id(0)
    split = tl.num_programs(1) - 1 - tl.program_id(1)
    nsplit = tl.num_programs(1)
    n = pid // G
    g = pid % G
    mean = tl.load(Mean + pid)
    rstd = tl.load(Rstd + pid)
    # m1 = sum_c a * sum_dz / N, m2 = sum_c a * sum_dzx / N over the group's channels
    offs_p = tl.arange(0, SPLIT_P2)
    m1 = tl.sum(tl.zeros([BLOCK_C], tl.float32), axis=0)
    m2 = tl.sum(tl.zeros([BLOCK_C], tl.float32), axis=0)
    for c0 in range(0, Cg, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        cmask = offs_c < Cg
        a, b = _modulation(W, Bias, Scale, Shift, n, g * Cg + offs_c, C, cmask,
                           HAS_W, HAS_B, HAS_SCALE, HAS_SHIFT)
        ptr = Partial + (((n * C + g * Cg + offs_c) * nsplit)[:, None] + offs_p[None, :]) * 2
        pmask = cmask[:, None] & (offs_p < nsplit)[None, :]
        sdz = tl.sum(tl.load(ptr, mask=pmask, other=0.0), axis=1)
        sdzx = tl.sum(tl.load(ptr + 1, mask=pmask, other=0.0), axis=1)
        m1 += tl.sum(a * sdz, axis=0)
        m2 += tl.sum(a * sdzx, axis=0)
        if split == 0:
            tl.store(SumDz + n * C + g * Cg + offs_c, sdz, mask=cmask)
            tl.store(SumDzx + n * C + g * Cg + offs_c, sdzx, mask=cmask)
    count = Cg * S * 1.0
    m1 = m1 / count
    m2 = m2 / count
    # dx = rstd * a * dz - rstd^2 * m2 * (x - mean) - rstd * m1
    q = -rstd * rstd * m2
    r = -rstd * m1
    x_base = X + n.to(tl.int64) * stride_xb + (g * Cg).to(tl.int64) * stride_xc
    g_base = DY + n.to(tl.int64) * stride_gb + (g * Cg).to(tl.int64) * stride_gc
    d_base = DX + n.to(tl.int64) * stride_db + (g * Cg).to(tl.int64) * stride_dc
    s_begin = split * S_PER_SPLIT
    s_end = tl.minimum(s_begin + S_PER_SPLIT, S)
    for c0 in range(0, Cg, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        cmask = offs_c < Cg
        a, b = _modulation(W, Bias, Scale, Shift, n, g * Cg + offs_c, C, cmask,
                           HAS_W, HAS_B, HAS_SCALE, HAS_SHIFT)
        p = rstd * a
        for s0 in range(s_begin, s_end, BLOCK_S):
            _, offs, mask = _tile_offsets(c0, s0, Cg, s_end, stride_xc, stride_xs, BLOCK_C, BLOCK_S)
            _, offs_g, _ = _tile_offsets(c0, s0, Cg, s_end, stride_gc, stride_gs, BLOCK_C, BLOCK_S)
            _, offs_d, _ = _tile_offsets(c0, s0, Cg, s_end, stride_dc, stride_ds, BLOCK_C, BLOCK_S)
            x = _load_u(x_base + offs, mask, InBias, n, g * Cg + offs_c, C, cmask, HAS_IB)
            dy = tl.load(g_base + offs_g, mask=mask, other=0.0).to(tl.float32)
            _, dz = _dz(dy, x, mean, rstd, a, b, SILU)
            dx = p[:, None] * dz + q * (x - mean) + r
            tl.store(d_base + offs_d, dx.to(DX.dtype.element_ty), mask=mask)


# ================================================================================================= host side
def _blocks(Cg: int, S: int) -> tuple[int, int]:
    """Tile shape (BLOCK_C, BLOCK_S), powers of two, BLOCK_C * BLOCK_S <= MAX_TILE (or BLOCK_C alone)."""
    block_c = min(triton.next_power_of_2(Cg), MAX_BLOCK_C, MAX_TILE)
    block_s = min(triton.next_power_of_2(S), max(MAX_TILE // block_c, 1))
    return block_c, block_s


def _split(x: Tensor, groups: int, S: int, block_s: int) -> tuple[int, int]:
    """(SPLIT, S_PER_SPLIT): programs per group along S, enough for about 4 programs per SM."""
    if FORCE_SPLIT is not None:
        want = FORCE_SPLIT
    elif x.is_cuda:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        want = min(MAX_SPLIT, -(-4 * sms // groups))
    else:
        want = 1
    blocks = -(-S // block_s)
    per_split = -(-blocks // max(1, min(want, blocks))) * block_s  # a whole number of tiles per split
    return -(-S // per_split), per_split


def _num_warps(block_c: int, block_s: int) -> int:
    tile = block_c * block_s
    return 8 if tile >= 4096 else 4 if tile >= 1024 else 2


def _param_args(x3: Tensor, *params: Optional[Tensor]) -> list[Tensor]:
    """The kernels index weight/bias as (C,) and scale/shift/input_bias as (B, C) contiguous arrays: make them so
    (a no-op for contiguous ones; scale and shift are often chunks of one (B, 2C) embedding). x3 stands in for
    an absent parameter (never read: the HAS_* flags are constexpr)."""
    return [x3 if t is None else t.contiguous() for t in params]


def _flags(weight, bias, scale, shift, silu: bool, input_bias: Optional[Tensor] = None) -> dict:
    return dict(
        HAS_W=weight is not None,
        HAS_B=bias is not None,
        HAS_SCALE=scale is not None,
        HAS_SHIFT=shift is not None,
        HAS_IB=input_bias is not None,
        SILU=bool(silu),
    )


# ================================================================================================= launchers
# The contract of the C++ extensions' group_norm_forward / group_norm_backward (fastvdm.ops.group_norm_common):
# x3 is x seen as (B, C, S) (contiguous or channels-last strides), silu a bool. Kernels are launched through
# wrap_triton, so the launchers can run inside a torch.library.triton_op (fastvdm/ops/triton/group_norm.py).
def group_norm_forward(x3: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                       scale: Optional[Tensor], shift: Optional[Tensor], silu: bool,
                       input_bias: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (y3 of x3's shape and strides, mean (B, G) fp32, rstd (B, G) fp32), statistics of x3 + input_bias."""
    B, C, S = x3.shape
    G = num_groups
    Cg = C // G
    y3 = torch.empty_strided(x3.shape, x3.stride(), dtype=x3.dtype, device=x3.device)
    mean = torch.empty((B, G), dtype=torch.float32, device=x3.device)
    rstd = torch.empty((B, G), dtype=torch.float32, device=x3.device)
    params = _param_args(x3, weight, bias, scale, shift, input_bias)
    flags = _flags(weight, bias, scale, shift, silu, input_bias)
    block_c, block_s = _blocks(Cg, S)
    warps = _num_warps(block_c, block_s)
    split, per_split = _split(x3, B * G, S, block_s)
    strides = (*x3.stride(), *y3.stride())
    if split == 1:
        single = Cg <= block_c and S <= block_s
        wrap_triton(_fwd_fused_kernel)[(B * G,)](
            x3, y3, *params, mean, rstd, C, S, G, Cg, eps, *strides, **flags,
            SINGLE_TILE=single, BLOCK_C=block_c, BLOCK_S=block_s, num_warps=warps,
        )
    else:
        partial = torch.empty((B * G, split, 2), dtype=torch.float32, device=x3.device)
        wrap_triton(_fwd_stats_kernel)[(B * G, split)](
            x3, params[4], partial, C, G, Cg, S, per_split, *x3.stride(), HAS_IB=flags["HAS_IB"],
            BLOCK_C=block_c, BLOCK_S=block_s, num_warps=warps,
        )
        wrap_triton(_fwd_apply_kernel)[(B * G, split)](
            x3, y3, *params, mean, rstd, partial, C, S, G, Cg, per_split, eps, *strides, **flags,
            SPLIT_P2=triton.next_power_of_2(split), BLOCK_C=block_c, BLOCK_S=block_s, num_warps=warps,
        )
    return y3, mean, rstd


def group_norm_backward(grad3: Tensor, x3: Tensor, mean: Tensor, rstd: Tensor, num_groups: int,
                        weight: Optional[Tensor], bias: Optional[Tensor], scale: Optional[Tensor],
                        shift: Optional[Tensor], silu: bool,
                        input_bias: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (dx3 of x3's shape and strides, sum_dz (B, C) fp32, sum_dzx (B, C) fp32); grad3 any strides."""
    B, C, S = x3.shape
    G = num_groups
    Cg = C // G
    g3 = grad3  # any strides: addressed in place
    dx3 = torch.empty_strided(x3.shape, x3.stride(), dtype=x3.dtype, device=x3.device)
    sum_dz = torch.empty((B, C), dtype=torch.float32, device=x3.device)
    sum_dzx = torch.empty((B, C), dtype=torch.float32, device=x3.device)
    params = _param_args(x3, weight, bias, scale, shift, input_bias)
    flags = _flags(weight, bias, scale, shift, silu, input_bias)
    block_c, block_s = _blocks(Cg, S)
    warps = _num_warps(block_c, block_s)
    split, per_split = _split(x3, B * G, S, block_s)
    partial = torch.empty((B, C, split, 2), dtype=torch.float32, device=x3.device)
    wrap_triton(_bwd_sums_kernel)[(B * G, split)](
        g3, x3, *params, mean, rstd, partial, C, S, G, Cg, per_split, *x3.stride(), *g3.stride(), **flags,
        BLOCK_C=block_c, BLOCK_S=block_s, num_warps=warps,
    )
    wrap_triton(_bwd_dx_kernel)[(B * G, split)](
        g3, x3, dx3, *params, mean, rstd, partial, sum_dz, sum_dzx, C, S, G, Cg, per_split,
        *x3.stride(), *g3.stride(), *dx3.stride(), **flags,
        SPLIT_P2=triton.next_power_of_2(split), BLOCK_C=block_c, BLOCK_S=block_s, num_warps=warps,
    )
    return dx3, sum_dz, sum_dzx
