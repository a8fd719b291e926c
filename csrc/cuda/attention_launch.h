// Problem geometry, strided addressing and launch configuration of the attention kernels
// (csrc/cuda/attention.cu). Plain C++ (tested by csrc/tests/test_attention_launch.cpp).
//
// q, k, v, out, dout, dq, dk, dv are (B, T, S, heads, D) tensors with arbitrary element strides (Strides5), read
// and written in place. The per-token statistics (logsumexp, delta) are (B, T, S, heads) fp32 tensors, addressed
// by the same Strides5 with d unused. An attention problem is `nseq` independent sequences of `L` tokens:
//   spatial   seq = (b, t, h), L = S, token n -> s = n
//   temporal  seq = (b, s, h), L = T, token n -> t = n
//   joint     seq = (b, h),    L = T * S, token n -> (t, s) = (n / S, n % S)  (any stride_t: padded frames work)
// seq is decomposed with h fastest. Every kernel puts the sequences on grid.x (up to 2^31 - 1, so no 65,535 limit
// on the batch dimensions) and, for the flash kernels, the query / key blocks of one sequence on grid.y.
//
// Two kernel families:
//   short   (L <= 32, any axis; the temporal case of video models): one warp per sequence, one lane per token,
//           fp32 arithmetic from shared memory; `warps` sequences per block.
//   flash   (any L): tiled online-softmax forward (block_m x block_n tiles) and a key-block-parallel backward
//           (dk, dv per block; dq accumulated with fp32 atomics). Tile products run on tensor cores (WMMA,
//           16x16x16, fp32 accumulation) for bf16 / fp16 and as fp32 FMAs for fp32 inputs.
// Head dimension: D <= 128 (padded to Dp, a multiple of 16, with zeros in shared memory).
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/common.h"

namespace fastvdm {
namespace cuda {

enum class Axis : int { kSpatial = 0, kTemporal = 1, kJoint = 2 };

struct Strides5 {
  int64_t b, t, s, h, d;
};

// Contiguous strides of a (B, T, S, H, D) tensor (D = 1 for the (B, T, S, H) statistics: then d is unused).
inline Strides5 contiguous_strides(int64_t T, int64_t S, int64_t H, int64_t D) {
  return Strides5{T * S * H * D, S * H * D, H * D, D, 1};
}

constexpr int64_t kAttnMaxD = 128;
constexpr int64_t kShortMaxL = 32;

struct AttnProblem {
  int64_t B, T, S, H, D;
  Axis axis;
  int64_t nseq, L;
};

inline AttnProblem make_attn_problem(int64_t B, int64_t T, int64_t S, int64_t H, int64_t D, Axis axis) {
  check(B >= 1 && T >= 1 && S >= 1 && H >= 1 && D >= 1, "attention needs a non-empty (B, T, S, heads, D) input");
  check(D <= kAttnMaxD, "attention head dimension D must be <= 128");
  AttnProblem p{B, T, S, H, D, axis, 0, 0};
  switch (axis) {
    case Axis::kSpatial:
      p.nseq = B * T * H;
      p.L = S;
      break;
    case Axis::kTemporal:
      p.nseq = B * S * H;
      p.L = T;
      break;
    default:
      p.nseq = B * H;
      p.L = T * S;
  }
  check(p.nseq <= kMaxGridX, "too many attention sequences for one grid");
  check(p.L <= kMaxGridX, "attention sequence longer than 2^31 - 1 tokens");
  return p;
}

// Element offset of the first token of sequence `seq` in a tensor of strides `st`. 32-bit index arithmetic (the
// strides stay 64-bit): seq < nseq <= 2^31 - 1 and n < L <= 2^31 - 1 (make_attn_problem checks both).
FASTVDM_HD int64_t seq_offset(const AttnProblem& p, const Strides5& st, int64_t seq) {
  const uint32_t useq = static_cast<uint32_t>(seq), H = static_cast<uint32_t>(p.H);
  const uint32_t h = useq % H, r = useq / H;
  switch (p.axis) {
    case Axis::kSpatial: {
      const uint32_t T = static_cast<uint32_t>(p.T);
      return static_cast<int64_t>(r / T) * st.b + static_cast<int64_t>(r % T) * st.t + h * st.h;
    }
    case Axis::kTemporal: {
      const uint32_t S = static_cast<uint32_t>(p.S);
      return static_cast<int64_t>(r / S) * st.b + static_cast<int64_t>(r % S) * st.s + h * st.h;
    }
    default:
      return r * st.b + h * st.h;
  }
}

// Token n of a sequence -> element offset (n / inner) * outer_stride + (n % inner) * inner_stride, relative to the
// sequence's first token: spatial (inner = L, stride s), temporal (inner = L, stride t), joint (inner = S:
// (t, s) = (n / S, n % S)).
struct TokenMap {
  int64_t inner, inner_stride, outer_stride;
};

// TokenMap::inner of every tensor of a problem.
FASTVDM_HD int64_t token_inner(const AttnProblem& p) { return p.axis == Axis::kJoint ? p.S : p.L; }

FASTVDM_HD TokenMap token_map(const AttnProblem& p, const Strides5& st) {
  switch (p.axis) {
    case Axis::kSpatial:
      return TokenMap{p.L, st.s, 0};
    case Axis::kTemporal:
      return TokenMap{p.L, st.t, 0};
    default:
      return TokenMap{p.S, st.s, st.t};
  }
}

// Element offset of token n of a sequence, relative to the sequence's first token.
FASTVDM_HD int64_t token_offset(const AttnProblem& p, const Strides5& st, int64_t n) {
  const TokenMap m = token_map(p, st);
  const uint32_t un = static_cast<uint32_t>(n), inner = static_cast<uint32_t>(m.inner);
  return static_cast<int64_t>(un / inner) * m.outer_stride + static_cast<int64_t>(un % inner) * m.inner_stride;
}

// A token index n split as n = q * inner + s (TokenMap::inner; 32-bit: n < L <= 2^31 - 1).
struct TokenIndex {
  uint32_t q, s;
};

FASTVDM_HD TokenIndex token_index(int64_t n, int64_t inner) {
  const uint32_t un = static_cast<uint32_t>(n), ui = static_cast<uint32_t>(inner);
  return TokenIndex{un / ui, un % ui};
}

// The split of a + b from the splits of a and b, without a division.
FASTVDM_HD TokenIndex token_add(TokenIndex a, TokenIndex b, int64_t inner) {
  TokenIndex r{a.q + b.q, a.s + b.s};
  if (r.s >= static_cast<uint32_t>(inner)) {
    r.s -= static_cast<uint32_t>(inner);
    ++r.q;
  }
  return r;
}

// A thread's share of a tile of `cols` columns (runs of elements) walked in row-major order, idx = start,
// start + step, ...: its first position (r, c), the step (dr, dc) and r, dr as token indices. The same for every
// tile a kernel loads with that shape, so it is computed once per kernel (the only divisions of the walk).
struct RunPattern {
  int r, c;          // first position: start = r * cols + c
  int dr, dc, cols;  // step = dr * cols + dc, 0 <= dc < cols
  TokenIndex r_tok, dr_tok;
  FASTVDM_HD RunPattern(int cols_, int start, int step, int64_t inner)
      : r(start / cols_),
        c(start % cols_),
        dr(step / cols_),
        dc(step % cols_),
        cols(cols_),
        r_tok(token_index(start / cols_, inner)),
        dr_tok(token_index(step / cols_, inner)) {}
};

// A thread's walk over a tile whose row r is token row0 + r of a sequence: keeps (r, c) and the element offset
// of the row's token (token_offset(row0 + r)) up to date with adds and compares; no division (row0 comes split,
// as a TokenIndex, and the pattern holds the rest). Rows at or past L get offsets that must not be dereferenced.
struct TileWalk {
  int r, c, dr, dc, cols;
  uint32_t s, ds, inner;  // (row0 + r) % inner; dr % inner
  int64_t off;            // token_offset(row0 + r)
  int64_t doff;           // offset change of dr tokens, before the carry of s
  int64_t inner_stride;
  int64_t carry;          // offset change when s wraps: outer_stride - inner * inner_stride
  FASTVDM_HD TileWalk(const TokenMap& m, const RunPattern& pat, TokenIndex row0)
      : r(pat.r),
        c(pat.c),
        dr(pat.dr),
        dc(pat.dc),
        cols(pat.cols),
        s(0),
        ds(pat.dr_tok.s),
        inner(static_cast<uint32_t>(m.inner)),
        off(0),
        doff(pat.dr_tok.q * m.outer_stride + pat.dr_tok.s * m.inner_stride),
        inner_stride(m.inner_stride),
        carry(m.outer_stride - m.inner * m.inner_stride) {
    const TokenIndex n = token_add(row0, pat.r_tok, m.inner);
    s = n.s;
    off = n.q * m.outer_stride + n.s * m.inner_stride;
  }
  FASTVDM_HD void advance() {
    r += dr;
    c += dc;
    s += ds;
    off += doff;
    if (s >= inner) {
      s -= inner;
      off += carry;
    }
    if (c >= cols) {  // one more row
      c -= cols;
      ++r;
      ++s;
      off += inner_stride;
      if (s >= inner) {
        s -= inner;
        off += carry;
      }
    }
  }
};

// Whether the rows (d = 0 .. D - 1) of a (B, T, S, H, D) tensor at `ptr` with strides `st` can move as 16-byte
// vectors of 16 / elem_bytes elements: unit d stride, D a multiple of the vector width and every row start
// 16-byte aligned (the base address and the strides of every dimension of size > 1 are multiples of 16 bytes).
inline bool rows_vectorizable(const AttnProblem& p, const void* ptr, const Strides5& st, int elem_bytes) {
  const int64_t w = 16 / elem_bytes;
  if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0 || p.D % w != 0 || st.d != 1) return false;
  auto ok = [w](int64_t size, int64_t stride) { return size == 1 || stride % w == 0; };
  return ok(p.B, st.b) && ok(p.T, st.t) && ok(p.S, st.s) && ok(p.H, st.h);
}

FASTVDM_HD bool use_short_kernel(const AttnProblem& p) { return p.L <= kShortMaxL; }

// ----------------------------------------------------------------------------------------------- short kernel
struct ShortPlan {
  int L, D, ldd;      // tokens, head dim, shared-memory row stride (D + 1 floats: conflict-free per-lane rows)
  int warps;          // sequences (warps) per block
  int64_t grid;       // ceil(nseq / warps) blocks on grid.x
  size_t smem;        // dynamic shared memory per block, bytes
};

constexpr size_t kShortSmemBudget = 96 * 1024;  // opt-in dynamic shared memory aimed at (sm_80 allows 163 KB)
constexpr int kShortMaxWarps = 8;

// Per-warp shared memory: forward Q, K, V rows + the L x (L + 1) probabilities; backward Q, K, V, dO + P, dS.
inline size_t short_smem_per_warp(int64_t L, int64_t D, bool backward) {
  const int64_t rows = backward ? 4 : 3, mats = backward ? 2 : 1;
  return static_cast<size_t>((rows * L * (D + 1) + mats * L * (L + 1)) * 4);
}

inline ShortPlan plan_short(const AttnProblem& p, bool backward) {
  check(use_short_kernel(p), "the short attention kernel needs L <= 32");
  ShortPlan s{};
  s.L = static_cast<int>(p.L);
  s.D = static_cast<int>(p.D);
  s.ldd = s.D + 1;
  const size_t per_warp = short_smem_per_warp(p.L, p.D, backward);
  int warps = static_cast<int>(kShortSmemBudget / per_warp);
  warps = warps < 1 ? 1 : (warps > kShortMaxWarps ? kShortMaxWarps : warps);
  s.warps = warps;
  s.smem = per_warp * static_cast<size_t>(warps);
  s.grid = ceil_div(p.nseq, warps);
  check(s.grid <= kMaxGridX, "too many attention sequences for one grid");
  return s;
}

// ----------------------------------------------------------------------------------------------- flash kernels
// Shared-memory layout of one flash block: element-type tiles (Q, K, V, dO, P, dS) and fp32 tiles (scores, output
// and gradient accumulators). Row strides are padded (+8 elements for 16-bit tiles, +4 floats) to spread banks and
// keep the 16-element fragment columns 32-byte aligned; every region starts at a multiple of 128 bytes.
struct FlashLayout {
  int block_m, block_n, Dp;
  int ld;    // row stride of the Dp-wide element tiles
  int ldp;   // row stride of the block_n-wide element tiles (P, dS)
  int lds;   // row stride of the block_n-wide fp32 tiles (S, dP)
  int ldo;   // row stride of the Dp-wide fp32 tiles (O, dK, dV, dQ)
  // byte offsets
  size_t q, k, v, dout, p, ds, s, dp, o, dk, dv, dq, stat0, stat1, total;
};

inline size_t align128(size_t x) { return (x + 127) / 128 * 128; }

inline int padded_head_dim(int64_t D) { return static_cast<int>(round_up(D, 16)); }

// elem_bytes: 4 (fp32) or 2 (bf16 / fp16).
inline FlashLayout flash_layout(int elem_bytes, int64_t D, bool backward) {
  FlashLayout f{};
  const bool half = elem_bytes == 2;
  f.block_m = backward ? 32 : (half ? 64 : 32);
  f.block_n = backward ? 32 : (half ? 64 : 32);
  f.Dp = padded_head_dim(D);
  const int pad = half ? 8 : 4;
  f.ld = f.Dp + pad;
  f.ldp = f.block_n + pad;
  f.lds = f.block_n + 4;
  f.ldo = f.Dp + 4;
  size_t off = 0;
  auto take = [&off](size_t bytes) {
    const size_t at = off;
    off += align128(bytes);
    return at;
  };
  const size_t eb = static_cast<size_t>(elem_bytes);
  f.q = take(eb * f.block_m * f.ld);
  f.k = take(eb * f.block_n * f.ld);
  f.v = take(eb * f.block_n * f.ld);
  f.p = take(eb * f.block_m * f.ldp);
  f.s = take(4u * f.block_m * f.lds);
  if (backward) {
    f.dout = take(eb * f.block_m * f.ld);
    f.ds = take(eb * f.block_m * f.ldp);
    f.dp = take(4u * f.block_m * f.lds);
    f.dk = take(4u * f.block_n * f.ldo);
    f.dv = take(4u * f.block_n * f.ldo);
    f.dq = take(4u * f.block_m * f.ldo);
  } else {
    f.o = take(4u * f.block_m * f.ldo);
  }
  f.stat0 = take(4u * f.block_m);  // forward: running max m; backward: logsumexp
  f.stat1 = take(4u * f.block_m);  // forward: running sum l; backward: delta
  f.total = off;
  return f;
}

constexpr int kFlashThreads = 128;                  // 4 warps
constexpr size_t kFlashMaxSmem = 163 * 1024;        // opt-in limit of sm_80 (sm_90: 227 KB)

struct FlashPlan {
  FlashLayout layout;
  int64_t grid_x, grid_y;  // sequences; query blocks (forward) or key blocks (backward)
};

inline FlashPlan plan_flash(const AttnProblem& p, int elem_bytes, bool backward) {
  FlashPlan f{};
  f.layout = flash_layout(elem_bytes, p.D, backward);
  check(f.layout.total <= kFlashMaxSmem, "flash attention tile does not fit in shared memory");
  f.grid_x = p.nseq;
  f.grid_y = ceil_div(p.L, backward ? f.layout.block_n : f.layout.block_m);
  check(f.grid_x <= kMaxGridX, "too many attention sequences for one grid");
  check(f.grid_y <= kMaxGridYZ, "attention sequence too long for one grid");
  return f;
}

}  // namespace cuda
}  // namespace fastvdm
