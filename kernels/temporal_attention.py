"""Temporal attention for short sequences (T <= 64): the whole T x T score tile of a row lives in registers.

A "row" is one (b, s, head) triple: T query tokens attending to the T key tokens of the same pixel
position across frames. Rows are flattened into one index r in [0, Z), Z = B*S*heads, with
``(b, s, h) = (r // (S*H), (r // H) % S, r % H)``; one program handles BLOCK_R consecutive rows (adjacent
heads of one pixel, then the next pixels: neighbouring memory in the fused QKV layout), and the grid is
``(cdiv(Z, BLOCK_R),)`` on axis 0 alone, so there is no batch size too large for it (SDPA's fused kernels put
batch*heads on a grid dimension limited to 65,535).

Per program the tiles are 3-D, (BLOCK_R, BLOCK_T, BLOCK_D), with T padded to BLOCK_T = next power of two >= 16
and D to BLOCK_D (>= 16, tl.dot's minimum); scores are one batched ``tl.dot`` (BLOCK_R, BLOCK_T, BLOCK_T), the
softmax is single-pass (the full row is there: no online rescaling), and the log-sum-exp (natural log, fp32,
shape (Z, T)) is saved for the backward pass.

The backward pass is one kernel too: it recomputes P from the LSE and needs neither O nor a separate
delta = rowsum(dO * O) pass, because rowsum(dO * O) = rowsum(P * dP) with dP = dO V^T, which is in registers:
    dV = P^T dO,  dS = P * (dP - rowsum(P * dP)),  dQ = scale * dS K,  dK = scale * dS^T Q.

Dots: input_precision="ieee" (exact fp32 for fp32 inputs; moot for bf16/fp16, which use tensor cores).

Addressing: token t, channel d of row r sits at ``base + b*stride_b + s*stride_s + h*stride_h + t*stride_t
+ d*stride_d`` with the tensor's own 5-D strides (no permute, no copy).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from fastvdm.kernels._autotune import autotune

LOG2E = 1.4426950408889634

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

MAX_T = 64  # longer temporal sequences go to the flash kernel
INTERPRETER_BLOCK_R = 8


@triton.jit
def _row_offsets(rows, S, H, stride_b, stride_s, stride_h):
    """(BLOCK_R,) int64 element offsets of rows r = (b, s, h)."""
    r = rows.to(tl.int64)
    h = r % H
    s = (r // H) % S
    b = r // (H * S)
    return b * stride_b + s * stride_s + h * stride_h


@triton.jit
def _tile_offsets(rows, S, H, offs_t, offs_d, stride_b, stride_t, stride_s, stride_h, stride_d):
    """(BLOCK_R, BLOCK_T, BLOCK_D) int64 element offsets of a tensor with 5-D strides. Every product is int64:
    t * stride_t passes 2**31 in a fused QKV tensor once S * heads * D * 3 * T does (e.g. 64 frames of
    128 x 128 tokens with 8 heads of 64)."""
    row = _row_offsets(rows, S, H, stride_b, stride_s, stride_h)
    t = offs_t.to(tl.int64)[None, :, None] * stride_t
    d = offs_d.to(tl.int64)[None, None, :] * stride_d
    return row[:, None, None] + t + d


@triton.jit
def _tile_ptrs(base, rows, S, H, offs_t, offs_d, stride_b, stride_t, stride_s, stride_h, stride_d):
    """(BLOCK_R, BLOCK_T, BLOCK_D) pointers of a tensor with 5-D strides."""
    return base + _tile_offsets(rows, S, H, offs_t, offs_d, stride_b, stride_t, stride_s, stride_h, stride_d)


@triton.jit
def _tile_mask(rows, offs_t, offs_d, Z, T, HEAD_DIM, EVEN_D: tl.constexpr):
    """(BLOCK_R, BLOCK_T, BLOCK_D) in-bounds mask; the d bound is left out at compile time when D == BLOCK_D
    (a runtime bound on d would hide that rows are contiguous and prevent vectorized loads)."""
    mask = (rows < Z)[:, None, None] & (offs_t < T)[None, :, None]
    if not EVEN_D:
        mask = mask & (offs_d < HEAD_DIM)[None, None, :]
    return mask


@triton.jit
def _temporal_fwd_kernel(
    Q, K, V, O, LSE,
    sq_b, sq_t, sq_s, sq_h, sq_d,
    sk_b, sk_t, sk_s, sk_h, sk_d,
    sv_b, sv_t, sv_s, sv_h, sv_d,
    so_b, so_t, so_s, so_h, so_d,
    Z, T, S, H, HEAD_DIM, qk_scale,
    EVEN_D: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """O[r] = softmax(scale * Q[r] K[r]^T) V[r] for BLOCK_R rows; LSE[r, t] saved (fp32, natural log).

    Grid: (cdiv(Z, BLOCK_R),). qk_scale = scale * log2(e).
    """
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_t = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    mask_t = offs_t < T
    mask = _tile_mask(rows, offs_t, offs_d, Z, T, HEAD_DIM, EVEN_D)

    q = tl.load(_tile_ptrs(Q, rows, S, H, offs_t, offs_d, sq_b, sq_t, sq_s, sq_h, sq_d), mask=mask, other=0.0)
    k = tl.load(_tile_ptrs(K, rows, S, H, offs_t, offs_d, sk_b, sk_t, sk_s, sk_h, sk_d), mask=mask, other=0.0)
    v = tl.load(_tile_ptrs(V, rows, S, H, offs_t, offs_d, sv_b, sv_t, sv_s, sv_h, sv_d), mask=mask, other=0.0)

    s = tl.dot(q, tl.trans(k, (0, 2, 1)), input_precision="ieee") * qk_scale  # (R, Tq, Tk), base 2
    s = tl.where(mask_t[None, None, :], s, float("-inf"))  # padded keys
    m = tl.max(s, 2)
    p = tl.exp2(s - m[:, :, None])
    l = tl.sum(p, 2)  # noqa: E741
    o = tl.dot(p.to(v.dtype), v, input_precision="ieee") / l[:, :, None]

    tl.store(_tile_ptrs(O, rows, S, H, offs_t, offs_d, so_b, so_t, so_s, so_h, so_d), o.to(O.dtype.element_ty),
             mask=mask)
    lse = (m + tl.log2(l)) * 0.6931471805599453
    lse_ptrs = LSE + rows.to(tl.int64)[:, None] * T + offs_t[None, :]
    tl.store(lse_ptrs, lse, mask=(rows < Z)[:, None] & mask_t[None, :])


@triton.jit
def _temporal_bwd_kernel(
    Q, K, V, DO, LSE, DQ, DK, DV,
    sq_b, sq_t, sq_s, sq_h, sq_d,
    sk_b, sk_t, sk_s, sk_h, sk_d,
    sv_b, sv_t, sv_s, sv_h, sv_d,
    sdo_b, sdo_t, sdo_s, sdo_h, sdo_d,
    sg_b, sg_t, sg_s, sg_h, sg_d,
    Z, T, S, H, HEAD_DIM, scale, qk_scale,
    EVEN_D: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dQ, dK, dV of BLOCK_R rows in one pass (see the module doc). DQ/DK/DV share the strides sg_*."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_t = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    mask_r = rows < Z
    mask_t = offs_t < T
    mask = _tile_mask(rows, offs_t, offs_d, Z, T, HEAD_DIM, EVEN_D)

    q = tl.load(_tile_ptrs(Q, rows, S, H, offs_t, offs_d, sq_b, sq_t, sq_s, sq_h, sq_d), mask=mask, other=0.0)
    k = tl.load(_tile_ptrs(K, rows, S, H, offs_t, offs_d, sk_b, sk_t, sk_s, sk_h, sk_d), mask=mask, other=0.0)
    v = tl.load(_tile_ptrs(V, rows, S, H, offs_t, offs_d, sv_b, sv_t, sv_s, sv_h, sv_d), mask=mask, other=0.0)
    do = tl.load(_tile_ptrs(DO, rows, S, H, offs_t, offs_d, sdo_b, sdo_t, sdo_s, sdo_h, sdo_d), mask=mask,
                 other=0.0)
    stat_mask = mask_r[:, None] & mask_t[None, :]
    lse2 = tl.load(LSE + rows.to(tl.int64)[:, None] * T + offs_t[None, :], mask=stat_mask, other=0.0)
    lse2 = lse2 * 1.4426950408889634

    s = tl.dot(q, tl.trans(k, (0, 2, 1)), input_precision="ieee") * qk_scale  # (R, Tq, Tk)
    p = tl.exp2(s - lse2[:, :, None])
    p = tl.where(stat_mask[:, :, None] & mask_t[None, None, :], p, 0.0)  # padded queries and keys
    dv = tl.dot(tl.trans(p, (0, 2, 1)).to(do.dtype), do, input_precision="ieee")  # (R, Tk, D)
    dp = tl.dot(do, tl.trans(v, (0, 2, 1)), input_precision="ieee")  # (R, Tq, Tk)
    delta = tl.sum(p * dp, 2)  # = rowsum(dO * O)
    ds = p * (dp - delta[:, :, None])
    dq = tl.dot(ds.to(k.dtype), k, input_precision="ieee") * scale
    dk = tl.dot(tl.trans(ds, (0, 2, 1)).to(q.dtype), q, input_precision="ieee") * scale

    tl.store(_tile_ptrs(DQ, rows, S, H, offs_t, offs_d, sg_b, sg_t, sg_s, sg_h, sg_d),
             dq.to(DQ.dtype.element_ty), mask=mask)
    tl.store(_tile_ptrs(DK, rows, S, H, offs_t, offs_d, sg_b, sg_t, sg_s, sg_h, sg_d),
             dk.to(DK.dtype.element_ty), mask=mask)
    tl.store(_tile_ptrs(DV, rows, S, H, offs_t, offs_d, sg_b, sg_t, sg_s, sg_h, sg_d),
             dv.to(DV.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------------ GPU tuning
def _configs(rows, warps):
    return [triton.Config({"BLOCK_R": r}, num_warps=w, num_stages=1) for r in rows for w in warps]


# Keyed on BLOCK_T (T rounded up to a power of two >= 16), not T: every T in a bucket runs the same tiles, so
# a model tunes once per bucket instead of once per sequence length. (The autotuner adds the dtypes.)
_TUNE_KEY = ["BLOCK_T", "HEAD_DIM", "EVEN_D"]


def _tile_budget(elements: int):
    """early_config_prune: keep the configs whose (BLOCK_R, BLOCK_T, BLOCK_D) tile has at most ``elements``
    elements (larger ones spill registers and take long to compile), and at least the one-row config."""

    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        tile = args["BLOCK_T"] * args["BLOCK_D"]
        kept = [c for c in configs if c.kwargs["BLOCK_R"] * tile <= elements]
        return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_R"])]

    return prune


def _tuned(kernel, rows, warps, elements):
    return autotune(
        _configs(rows, warps), key=_TUNE_KEY, prune_configs_by={"early_config_prune": _tile_budget(elements)}
    )(kernel)


# bf16/fp16: up to 16 rows of 16 x 64 per program (forward), 8 (backward: more tiles live at once).
# fp32 (IEEE dots on CUDA cores, the exact path): few rows per program, larger tiles spill.
_TUNED = {
    ("fwd", False): _tuned(_temporal_fwd_kernel, (1, 2, 4, 8, 16), (2, 4, 8), 16 * 16 * 64),
    ("bwd", False): _tuned(_temporal_bwd_kernel, (1, 2, 4, 8), (2, 4, 8), 8 * 16 * 64),
    ("fwd", True): _tuned(_temporal_fwd_kernel, (1, 2), (4,), 2 * 16 * 64),
    ("bwd", True): _tuned(_temporal_bwd_kernel, (1, 2), (4,), 2 * 16 * 64),
}


def _block_t(T: int) -> int:
    return max(16, triton.next_power_of_2(T))


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))



# ------------------------------------------------------------------------------------------------ launchers
def temporal_forward(q, k, v, o, lse, scale):
    """Fill ``o`` (B, T, S, H, D) and ``lse`` (B*S*H, T) fp32; q, k, v any strides, T <= MAX_T."""
    B, T, S, H, D = q.shape
    Z = B * S * H
    args = (q, k, v, o, lse, *q.stride(), *k.stride(), *v.stride(), *o.stride(), Z, T, S, H, D, scale * LOG2E)
    meta = dict(EVEN_D=_block_d(D) == D, BLOCK_T=_block_t(T), BLOCK_D=_block_d(D))
    if _INTERPRET:
        wrap_triton(_temporal_fwd_kernel)[(triton.cdiv(Z, INTERPRETER_BLOCK_R),)](
            *args, BLOCK_R=INTERPRETER_BLOCK_R, **meta
        )
    else:
        grid = lambda m: (triton.cdiv(Z, m["BLOCK_R"]),)  # noqa: E731
        wrap_triton(_TUNED["fwd", q.dtype == torch.float32])[grid](*args, **meta)


def temporal_backward(q, k, v, do, lse, dq, dk, dv, scale):
    """Fill dq, dk, dv (one shared stride set, e.g. all contiguous) given dO = ``do`` (any strides)."""
    B, T, S, H, D = q.shape
    Z = B * S * H
    assert dq.stride() == dk.stride() == dv.stride()
    args = (q, k, v, do, lse, dq, dk, dv, *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
            Z, T, S, H, D, scale, scale * LOG2E)
    meta = dict(EVEN_D=_block_d(D) == D, BLOCK_T=_block_t(T), BLOCK_D=_block_d(D))
    if _INTERPRET:
        wrap_triton(_temporal_bwd_kernel)[(triton.cdiv(Z, INTERPRETER_BLOCK_R),)](
            *args, BLOCK_R=INTERPRETER_BLOCK_R, **meta
        )
    else:
        grid = lambda m: (triton.cdiv(Z, m["BLOCK_R"]),)  # noqa: E731
        wrap_triton(_TUNED["bwd", q.dtype == torch.float32])[grid](*args, **meta)
