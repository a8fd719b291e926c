"""Flash attention (forward and backward) over one sequence axis of a strided (B, T, S, heads, D) tensor.

Used by :mod:`fastvdm.kernels.attention` for ``axis="spatial"`` and ``axis="joint"`` (and for ``"temporal"``
when T is too long for the register-resident kernel of :mod:`fastvdm.kernels.temporal_attention`).

Addressing (no permute, no copy). Every sequence problem is one of ``Z`` independent attention problems of
length ``N``; problem ``z`` is split into ``(b, g, h) = (z // (G*H), (z // H) % G, z % H)`` and token ``n`` of
it lives at::

    base + b*stride_b + g*stride_g + h*stride_h + seq(n) + d*stride_d
    seq(n) = (n // INNER) * stride_outer + (n % INNER) * stride_inner      if SPLIT
           = n * stride_inner                                               otherwise

spatial: G = T (stride_g = stride_t), N = S, seq stride stride_s.
joint:   G = 1, N = T*S, seq(n) = (n // S)*stride_t + (n % S)*stride_s (SPLIT), or n*stride_s when
         stride_t == S*stride_s (true for the fused QKV layout: then it is one stride; n*stride_t if S == 1).
temporal (long T): G = S (stride_g = stride_s), N = T, seq stride stride_t.

Every tensor (q, k, v, o, dO, and the gradients) carries its own 6 strides ``(b, g, h, outer, inner, d)``,
built by :func:`fastvdm.kernels.attention._flash_geometry`.

Numerics: scores in fp32, online softmax in base 2 (the scale is folded with log2(e)), the accumulator in
fp32; the log-sum-exp per query row (natural log, fp32, shape (Z, N)) is saved for the backward pass.
Backward is the FA2 recipe: delta = rowsum(dO * O) (``_bwd_preprocess``), one kernel per key block for dK, dV
(loops over all query blocks), one kernel per query block for dQ (loops over all key blocks): no atomics,
deterministic. Every dot asks for input_precision="ieee": fp32 inputs get exact fp32 products (no TF32), so
they meet the fp32 tolerance on a GPU too; for bf16/fp16 inputs the option is moot (tensor-core MMAs).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from fastvdm.kernels._autotune import autotune, tune_bucket

LOG2E = 1.4426950408889634

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# Under the interpreter every block op is a numpy call: small fixed tiles keep the masked-tail paths
# exercised and the tests fast. On a GPU the tiles are autotuned (configs below).
INTERPRETER_BLOCK_M = 32
INTERPRETER_BLOCK_N = 32


# ------------------------------------------------------------------------------------------------ addressing
@triton.jit
def _batch_offset(z, G, H, stride_b, stride_g, stride_h):
    """Element offset of problem z = (b, g, h) (int64: large fused tensors exceed 2**31 elements)."""
    z = z.to(tl.int64)
    h = z % H
    g = (z // H) % G
    b = z // (H * G)
    return b * stride_b + g * stride_g + h * stride_h


@triton.jit
def _seq_offset(n, INNER, stride_outer, stride_inner, SPLIT: tl.constexpr):
    """Element offsets of sequence positions n (a block of int32 indices)."""
    if SPLIT:
        return (n // INNER).to(tl.int64) * stride_outer + (n % INNER).to(tl.int64) * stride_inner
    else:
        return n.to(tl.int64) * stride_inner


@triton.jit
def _tile_mask(n, offs_d, N, HEAD_DIM, MASK_N: tl.constexpr, EVEN_D: tl.constexpr):
    """Mask of a (len(n), BLOCK_D) tile, or None when every element is in bounds.

    Masks that are compile-time absent (MASK_N False: a full block; EVEN_D: D == BLOCK_D) keep the loads
    vectorized: a runtime bound on d would hide that a row is contiguous.
    """
    if MASK_N:
        if EVEN_D:
            mask = (n < N)[:, None]
        else:
            mask = (n < N)[:, None] & (offs_d < HEAD_DIM)[None, :]
    else:
        if EVEN_D:
            mask = None
        else:
            mask = (offs_d < HEAD_DIM)[None, :]
    return mask


@triton.jit
def _load_tile(base, n, offs_d, N, HEAD_DIM, INNER, s_outer, s_inner, s_d,
               SPLIT: tl.constexpr, MASK_N: tl.constexpr, EVEN_D: tl.constexpr):
    """(len(n), BLOCK_D) tile of rows n; out-of-bounds rows (MASK_N) and columns (not EVEN_D) read as 0."""
    ptrs = base + _seq_offset(n, INNER, s_outer, s_inner, SPLIT)[:, None] + offs_d.to(tl.int64)[None, :] * s_d
    if MASK_N or not EVEN_D:
        x = tl.load(ptrs, mask=_tile_mask(n, offs_d, N, HEAD_DIM, MASK_N, EVEN_D), other=0.0)
    else:
        x = tl.load(ptrs)
    return x


@triton.jit
def _store_tile(base, x, n, offs_d, N, HEAD_DIM, INNER, s_outer, s_inner, s_d,
                SPLIT: tl.constexpr, EVEN_D: tl.constexpr):
    ptrs = base + _seq_offset(n, INNER, s_outer, s_inner, SPLIT)[:, None] + offs_d.to(tl.int64)[None, :] * s_d
    tl.store(ptrs, x, mask=_tile_mask(n, offs_d, N, HEAD_DIM, True, EVEN_D))


# ------------------------------------------------------------------------------------------------ forward
@triton.jit
def _fwd_block(
    acc, l_i, m_i, q, k_base, v_base, start_n, N, HEAD_DIM, INNER,
    sk_o, sk_i, sk_d, sv_o, sv_i, sv_d, qk_scale,
    SPLIT: tl.constexpr, MASK_N: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Online-softmax update of (acc, l_i, m_i) with keys/values [start_n, start_n + BLOCK_N)."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k = _load_tile(k_base, offs_n, offs_d, N, HEAD_DIM, INNER, sk_o, sk_i, sk_d, SPLIT, MASK_N, EVEN_D)
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale  # (BLOCK_M, BLOCK_N), base-2 logits
    if MASK_N:
        s = tl.where((offs_n < N)[None, :], s, float("-inf"))  # keys past the end
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)  # rescales what was accumulated under the old max
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    v = _load_tile(v_base, offs_n, offs_d, N, HEAD_DIM, INNER, sv_o, sv_i, sv_d, SPLIT, MASK_N, EVEN_D)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision="ieee")
    return acc, l_i, m_new


@triton.jit
def _flash_fwd_kernel(
    Q, K, V, O, LSE,
    sq_b, sq_g, sq_h, sq_o, sq_i, sq_d,
    sk_b, sk_g, sk_h, sk_o, sk_i, sk_d,
    sv_b, sv_g, sv_h, sv_o, sv_i, sv_d,
    so_b, so_g, so_h, so_o, so_i, so_d,
    N, INNER, G, H, HEAD_DIM, qk_scale, N_BUCKET,
    SPLIT: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program: BLOCK_M queries of problem z against all N keys (online softmax over key blocks).

    Grid: (cdiv(N, BLOCK_M) * Z,), flattened so that no batch size overflows a grid dimension; programs of
    one problem are adjacent (they share K/V in L2). qk_scale = scale * log2(e).
    Writes O (the softmax-weighted V, in O's dtype) and LSE[z, n] = log(sum_j exp(scale * q_n . k_j)).
    Full key blocks run without masks; the tail block (N % BLOCK_N keys) runs once, masked.
    """
    pid = tl.program_id(0)
    num_m = tl.cdiv(N, BLOCK_M)
    z = pid // num_m
    offs_m = (pid % num_m) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)

    q_base = Q + _batch_offset(z, G, H, sq_b, sq_g, sq_h)
    k_base = K + _batch_offset(z, G, H, sk_b, sk_g, sk_h)
    v_base = V + _batch_offset(z, G, H, sv_b, sv_g, sv_h)
    q = _load_tile(q_base, offs_m, offs_d, N, HEAD_DIM, INNER, sq_o, sq_i, sq_d, SPLIT, True, EVEN_D)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max of the (base-2) logits
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running sum of exp2(logit - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n_full = N - N % BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        acc, l_i, m_i = _fwd_block(acc, l_i, m_i, q, k_base, v_base, start_n, N, HEAD_DIM, INNER,
                                   sk_o, sk_i, sk_d, sv_o, sv_i, sv_d, qk_scale,
                                   SPLIT, False, EVEN_D, BLOCK_N, BLOCK_D)
    if n_full < N:
        acc, l_i, m_i = _fwd_block(acc, l_i, m_i, q, k_base, v_base, n_full, N, HEAD_DIM, INNER,
                                   sk_o, sk_i, sk_d, sv_o, sv_i, sv_d, qk_scale,
                                   SPLIT, True, EVEN_D, BLOCK_N, BLOCK_D)

    acc = acc / l_i[:, None]
    o_base = O + _batch_offset(z, G, H, so_b, so_g, so_h)
    _store_tile(o_base, acc.to(O.dtype.element_ty), offs_m, offs_d, N, HEAD_DIM, INNER, so_o, so_i, so_d,
                SPLIT, EVEN_D)
    lse = (m_i + tl.log2(l_i)) * 0.6931471805599453  # back to natural log
    tl.store(LSE + z.to(tl.int64) * N + offs_m, lse, mask=offs_m < N)


# ------------------------------------------------------------------------------------------------ backward
@triton.jit
def _bwd_preprocess(
    O, DO, DELTA,
    so_b, so_g, so_h, so_o, so_i, so_d,
    sdo_b, sdo_g, sdo_h, sdo_o, sdo_i, sdo_d,
    N, INNER, G, H, HEAD_DIM,
    SPLIT: tl.constexpr, EVEN_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """DELTA[z, n] = sum_d dO[z, n, d] * O[z, n, d] (fp32). Grid: (cdiv(N, BLOCK_M) * Z,)."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(N, BLOCK_M)
    z = pid // num_m
    offs_m = (pid % num_m) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    o = _load_tile(O + _batch_offset(z, G, H, so_b, so_g, so_h), offs_m, offs_d, N, HEAD_DIM, INNER,
                   so_o, so_i, so_d, SPLIT, True, EVEN_D)
    do = _load_tile(DO + _batch_offset(z, G, H, sdo_b, sdo_g, sdo_h), offs_m, offs_d, N, HEAD_DIM, INNER,
                    sdo_o, sdo_i, sdo_d, SPLIT, True, EVEN_D)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + z.to(tl.int64) * N + offs_m, delta, mask=offs_m < N)


@triton.jit
def _dkdv_block(
    dk, dv, k, v, q_base, do_base, lse_row, delta_row, start_m, N, HEAD_DIM, INNER,
    sq_o, sq_i, sq_d, sdo_o, sdo_i, sdo_d, qk_scale,
    SPLIT: tl.constexpr, MASK_M: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Accumulate into dk, dv (BLOCK_N keys) the contribution of queries [start_m, start_m + BLOCK_M)."""
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q = _load_tile(q_base, offs_m, offs_d, N, HEAD_DIM, INNER, sq_o, sq_i, sq_d, SPLIT, MASK_M, EVEN_D)
    do = _load_tile(do_base, offs_m, offs_d, N, HEAD_DIM, INNER, sdo_o, sdo_i, sdo_d, SPLIT, MASK_M, EVEN_D)
    if MASK_M:
        lse2 = tl.load(lse_row + offs_m, mask=offs_m < N, other=0.0) * 1.4426950408889634
        delta = tl.load(delta_row + offs_m, mask=offs_m < N, other=0.0)
    else:
        lse2 = tl.load(lse_row + offs_m) * 1.4426950408889634
        delta = tl.load(delta_row + offs_m)

    s_t = tl.dot(k, tl.trans(q), input_precision="ieee") * qk_scale  # (BLOCK_N, BLOCK_M), base 2
    p_t = tl.exp2(s_t - lse2[None, :])
    if MASK_M:
        p_t = tl.where((offs_m < N)[None, :], p_t, 0.0)  # queries past the end
    dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision="ieee")
    dp_t = tl.dot(v, tl.trans(do), input_precision="ieee")
    ds_t = p_t * (dp_t - delta[None, :])
    dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision="ieee")
    return dk, dv


@triton.jit
def _flash_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    sq_b, sq_g, sq_h, sq_o, sq_i, sq_d,
    sk_b, sk_g, sk_h, sk_o, sk_i, sk_d,
    sv_b, sv_g, sv_h, sv_o, sv_i, sv_d,
    sdo_b, sdo_g, sdo_h, sdo_o, sdo_i, sdo_d,
    sg_b, sg_g, sg_h, sg_o, sg_i, sg_d,
    N, INNER, G, H, HEAD_DIM, scale, qk_scale, N_BUCKET,
    SPLIT: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program: dK, dV of BLOCK_N keys of problem z, looping over all query blocks.

    With P^T = exp(scale * K Q^T - lse) (recomputed from the saved LSE):
        dV = P^T dO,   dS^T = P^T * (V dO^T - delta),   dK = scale * dS^T Q.
    Keys past the end load as zeros and are not stored (they cannot affect valid rows).
    Grid: (cdiv(N, BLOCK_N) * Z,). DK and DV share the strides sg_* (contiguous outputs).
    """
    pid = tl.program_id(0)
    num_n = tl.cdiv(N, BLOCK_N)
    z = pid // num_n
    offs_n = (pid % num_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)

    q_base = Q + _batch_offset(z, G, H, sq_b, sq_g, sq_h)
    do_base = DO + _batch_offset(z, G, H, sdo_b, sdo_g, sdo_h)
    k = _load_tile(K + _batch_offset(z, G, H, sk_b, sk_g, sk_h), offs_n, offs_d, N, HEAD_DIM, INNER,
                   sk_o, sk_i, sk_d, SPLIT, True, EVEN_D)
    v = _load_tile(V + _batch_offset(z, G, H, sv_b, sv_g, sv_h), offs_n, offs_d, N, HEAD_DIM, INNER,
                   sv_o, sv_i, sv_d, SPLIT, True, EVEN_D)
    lse_row = LSE + z.to(tl.int64) * N
    delta_row = DELTA + z.to(tl.int64) * N

    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    m_full = N - N % BLOCK_M
    for start_m in range(0, m_full, BLOCK_M):
        dk, dv = _dkdv_block(dk, dv, k, v, q_base, do_base, lse_row, delta_row, start_m, N, HEAD_DIM, INNER,
                             sq_o, sq_i, sq_d, sdo_o, sdo_i, sdo_d, qk_scale,
                             SPLIT, False, EVEN_D, BLOCK_M, BLOCK_D)
    if m_full < N:
        dk, dv = _dkdv_block(dk, dv, k, v, q_base, do_base, lse_row, delta_row, m_full, N, HEAD_DIM, INNER,
                             sq_o, sq_i, sq_d, sdo_o, sdo_i, sdo_d, qk_scale,
                             SPLIT, True, EVEN_D, BLOCK_M, BLOCK_D)

    g_off = _batch_offset(z, G, H, sg_b, sg_g, sg_h)
    _store_tile(DK + g_off, (dk * scale).to(DK.dtype.element_ty), offs_n, offs_d, N, HEAD_DIM, INNER,
                sg_o, sg_i, sg_d, SPLIT, EVEN_D)
    _store_tile(DV + g_off, dv.to(DV.dtype.element_ty), offs_n, offs_d, N, HEAD_DIM, INNER,
                sg_o, sg_i, sg_d, SPLIT, EVEN_D)


@triton.jit
def _dq_block(
    dq, q, do, lse2, delta, k_base, v_base, start_n, N, HEAD_DIM, INNER,
    sk_o, sk_i, sk_d, sv_o, sv_i, sv_d, qk_scale,
    SPLIT: tl.constexpr, MASK_N: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Accumulate into dq (BLOCK_M queries) the contribution of keys [start_n, start_n + BLOCK_N)."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k = _load_tile(k_base, offs_n, offs_d, N, HEAD_DIM, INNER, sk_o, sk_i, sk_d, SPLIT, MASK_N, EVEN_D)
    v = _load_tile(v_base, offs_n, offs_d, N, HEAD_DIM, INNER, sv_o, sv_i, sv_d, SPLIT, MASK_N, EVEN_D)
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
    p = tl.exp2(s - lse2[:, None])
    if MASK_N:
        p = tl.where((offs_n < N)[None, :], p, 0.0)  # keys past the end
    dp = tl.dot(do, tl.trans(v), input_precision="ieee")
    ds = p * (dp - delta[:, None])
    return tl.dot(ds.to(k.dtype), k, dq, input_precision="ieee")


@triton.jit
def _flash_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    sq_b, sq_g, sq_h, sq_o, sq_i, sq_d,
    sk_b, sk_g, sk_h, sk_o, sk_i, sk_d,
    sv_b, sv_g, sv_h, sv_o, sv_i, sv_d,
    sdo_b, sdo_g, sdo_h, sdo_o, sdo_i, sdo_d,
    sg_b, sg_g, sg_h, sg_o, sg_i, sg_d,
    N, INNER, G, H, HEAD_DIM, scale, qk_scale, N_BUCKET,
    SPLIT: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program: dQ of BLOCK_M queries of problem z, looping over all key blocks.

    dS = P * (dO V^T - delta),  dQ = scale * dS K.  Grid: (cdiv(N, BLOCK_M) * Z,).
    """
    pid = tl.program_id(0)
    num_m = tl.cdiv(N, BLOCK_M)
    z = pid // num_m
    offs_m = (pid % num_m) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < N

    k_base = K + _batch_offset(z, G, H, sk_b, sk_g, sk_h)
    v_base = V + _batch_offset(z, G, H, sv_b, sv_g, sv_h)
    q = _load_tile(Q + _batch_offset(z, G, H, sq_b, sq_g, sq_h), offs_m, offs_d, N, HEAD_DIM, INNER,
                   sq_o, sq_i, sq_d, SPLIT, True, EVEN_D)
    do = _load_tile(DO + _batch_offset(z, G, H, sdo_b, sdo_g, sdo_h), offs_m, offs_d, N, HEAD_DIM, INNER,
                    sdo_o, sdo_i, sdo_d, SPLIT, True, EVEN_D)
    row_stats = z.to(tl.int64) * N
    lse2 = tl.load(LSE + row_stats + offs_m, mask=mask_m, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + row_stats + offs_m, mask=mask_m, other=0.0)

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n_full = N - N % BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        dq = _dq_block(dq, q, do, lse2, delta, k_base, v_base, start_n, N, HEAD_DIM, INNER,
                       sk_o, sk_i, sk_d, sv_o, sv_i, sv_d, qk_scale,
                       SPLIT, False, EVEN_D, BLOCK_N, BLOCK_D)
    if n_full < N:
        dq = _dq_block(dq, q, do, lse2, delta, k_base, v_base, n_full, N, HEAD_DIM, INNER,
                       sk_o, sk_i, sk_d, sv_o, sv_i, sv_d, qk_scale,
                       SPLIT, True, EVEN_D, BLOCK_N, BLOCK_D)

    _store_tile(DQ + _batch_offset(z, G, H, sg_b, sg_g, sg_h), (dq * scale).to(DQ.dtype.element_ty), offs_m,
                offs_d, N, HEAD_DIM, INNER, sg_o, sg_i, sg_d, SPLIT, EVEN_D)


# ------------------------------------------------------------------------------------------------ GPU tuning
def _configs(blocks, warps=(4, 8), stages=(2, 3, 4)):
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn in blocks
        for w in warps
        for s in stages
    ]


# Keyed on N_BUCKET = N rounded up to a power of two (an argument the kernels carry only for this), not on N:
# every U-Net level and every resolution in a bucket shares one tuning instead of re-running the sweep for
# each sequence length. (The autotuner adds the tensors' dtypes.)
_TUNE_KEY = ["N_BUCKET", "HEAD_DIM", "SPLIT", "EVEN_D"]
# bf16 / fp16: tensor-core tiles. fp32 runs IEEE fp32 dots (CUDA-core FMAs, no TF32) for its 2e-4 tolerance:
# it is the exact path, not the fast one, so it gets a few small tiles (it spills at large ones and a full
# sweep of spilling configs would cost minutes of compilation).
_TILES = {  # kernel, (BLOCK_M, BLOCK_N) for bf16/fp16, for fp32
    "fwd": (_flash_fwd_kernel, [(64, 64), (128, 64), (128, 128), (128, 32)], [(32, 32), (64, 32)]),
    "dkdv": (_flash_bwd_dkdv_kernel, [(32, 64), (64, 64), (32, 128), (64, 128)], [(16, 32), (32, 32)]),
    "dq": (_flash_bwd_dq_kernel, [(64, 32), (64, 64), (128, 32), (128, 64)], [(32, 16), (32, 32)]),
}
_TUNED = {
    (name, fp32): autotune(
        _configs(fp32_blocks, warps=(4,), stages=(2,)) if fp32 else _configs(blocks), key=_TUNE_KEY
    )(kernel)
    for name, (kernel, blocks, fp32_blocks) in _TILES.items()
    for fp32 in (False, True)
}


def _block_d(head_dim: int) -> int:
    """D padded to a power of two >= 16 (tl.dot needs every block dim >= 16)."""
    return max(16, triton.next_power_of_2(head_dim))



# ------------------------------------------------------------------------------------------------ launchers
# ``geom`` = (Z, N, INNER, G, H, SPLIT) and each ``s*`` = the 6 strides of one tensor (see the module doc).
def flash_forward(q, k, v, o, lse, sq, sk, sv, so, geom, head_dim, scale):
    """Fill ``o`` (strided like ``so``) and ``lse`` ((Z, N) fp32) with the attention of q, k, v."""
    Z, N, INNER, G, H, SPLIT = geom
    block_d = _block_d(head_dim)
    common = dict(SPLIT=SPLIT, EVEN_D=block_d == head_dim, BLOCK_D=block_d)
    args = (q, k, v, o, lse, *sq, *sk, *sv, *so, N, INNER, G, H, head_dim, scale * LOG2E, tune_bucket(N))
    if _INTERPRET:
        grid = (triton.cdiv(N, INTERPRETER_BLOCK_M) * Z,)
        wrap_triton(_flash_fwd_kernel)[grid](
            *args, BLOCK_M=INTERPRETER_BLOCK_M, BLOCK_N=INTERPRETER_BLOCK_N, **common
        )
    else:
        grid = lambda meta: (triton.cdiv(N, meta["BLOCK_M"]) * Z,)  # noqa: E731
        wrap_triton(_TUNED["fwd", q.dtype == torch.float32])[grid](*args, **common)


def flash_backward(q, k, v, o, do, lse, dq, dk, dv, sq, sk, sv, so, sdo, sg, geom, head_dim, scale):
    """Fill dq, dk, dv (all strided like ``sg``) with the gradients of the attention given dO = ``do``."""
    Z, N, INNER, G, H, SPLIT = geom
    block_d = _block_d(head_dim)
    delta = torch.empty_like(lse)
    pre_m = INTERPRETER_BLOCK_M if _INTERPRET else 64
    wrap_triton(_bwd_preprocess)[(triton.cdiv(N, pre_m) * Z,)](
        o, do, delta, *so, *sdo, N, INNER, G, H, head_dim,
        SPLIT=SPLIT, EVEN_D=block_d == head_dim, BLOCK_M=pre_m, BLOCK_D=block_d,
    )
    common = dict(SPLIT=SPLIT, EVEN_D=block_d == head_dim, BLOCK_D=block_d)
    strides = (*sq, *sk, *sv, *sdo, *sg, N, INNER, G, H, head_dim, scale, scale * LOG2E, tune_bucket(N))
    if _INTERPRET:
        blocks = dict(BLOCK_M=INTERPRETER_BLOCK_M, BLOCK_N=INTERPRETER_BLOCK_N, **common)
        wrap_triton(_flash_bwd_dkdv_kernel)[(triton.cdiv(N, INTERPRETER_BLOCK_N) * Z,)](
            q, k, v, do, lse, delta, dk, dv, *strides, **blocks
        )
        wrap_triton(_flash_bwd_dq_kernel)[(triton.cdiv(N, INTERPRETER_BLOCK_M) * Z,)](
            q, k, v, do, lse, delta, dq, *strides, **blocks
        )
    else:
        grid_n = lambda meta: (triton.cdiv(N, meta["BLOCK_N"]) * Z,)  # noqa: E731
        grid_m = lambda meta: (triton.cdiv(N, meta["BLOCK_M"]) * Z,)  # noqa: E731
        fp32 = q.dtype == torch.float32
        wrap_triton(_TUNED["dkdv", fp32])[grid_n](q, k, v, do, lse, delta, dk, dv, *strides, **common)
        wrap_triton(_TUNED["dq", fp32])[grid_m](q, k, v, do, lse, delta, dq, *strides, **common)
