// Attention kernels (see attention.h for the math and attention_launch.h for geometry and tile layouts).
//
// Short kernels (L <= 32): one warp per sequence, lane t owns token t. The warp stages its sequence's rows in
// shared memory as fp32 (row stride D + 1: lane t's row starts in bank t), lane t computes its score row and
// softmax from shared memory, writes the output row; the backward recomputes P from lse, gets delta as
// rowsum(P * dP) and then switches roles (lane j owns key j) for dk and dv.
//
// Flash kernels: 128 threads (4 warps). Tile products C (+)= A B go through block_gemm, which runs on tensor
// cores (nvcuda::wmma 16x16x16, fp32 accumulators in shared memory) for bf16 / fp16 tiles and as fp32 FMAs for
// fp32 tiles; softmax bookkeeping is a warp per row. Forward: grid (nseq, query blocks), online softmax over the
// key blocks. Backward: grid (nseq, key blocks); each block walks all query blocks, accumulates dk, dv in shared
// memory and adds its dq contribution to the fp32 dq_accum with atomics.
//
// Global memory: a tensor whose rows are rows_vectorizable (unit d stride, D a whole number of 16-byte vectors,
// every row start 16-byte aligned; decided per tensor and call on the host) moves them as 16-byte vectors
// (ld/st.global.v4: 8 bf16 / fp16 or 4 fp32), copied unconverted into the shared-memory tiles of the flash
// kernels; any other tensor (offset views, odd strides or D) falls back to scalar elements. Index math: a thread
// walks its share of every tile with a TileWalk (token offsets by adds and compares); the few 32-bit divisions
// that set the walks up run once per kernel, outside the loops (RowPlan, TokenIndex cursors).
#include <mma.h>

#include <cmath>
#include <type_traits>

#include "cuda/attention.h"
#include "cuda/device_utils.cuh"

namespace fastvdm {
namespace cuda {
namespace {

// ============================================================================================= row access
// Which tensors move their rows as 16-byte vectors (rows_vectorizable, decided on the host per call).
struct VecFlags {
  bool q, k, v, dout, o, dq, dk, dv;
};

// How one thread walks the rows of one tensor's tiles: runs of W = kVecWidth<T> (vec) or 1 elements, and the
// thread's RunPattern over the tile's runs (built once per kernel: the walk's only divisions).
struct RowPlan {
  bool vec;
  RunPattern pat;
};

template <typename T>
__device__ __forceinline__ RowPlan row_plan(const AttnProblem& p, bool vec, int elems, int start, int step) {
  return RowPlan{vec, RunPattern(vec ? elems / kVecWidth<T> : elems, start, step, token_inner(p))};
}

// Calls f(r, d, off) for the thread's runs of W elements (d = 0, W, 2W, ...) of rows [0, rows) of a tile whose row r
// is token row0 + r of a sequence (off: token_offset(row0 + r) through m). No division.
template <int W, typename F>
__device__ __forceinline__ void for_each_row_run(const TokenMap& m, const RunPattern& pat, TokenIndex row0, int rows,
                                                 F&& f) {
  for (TileWalk w(m, pat, row0); w.r < rows; w.advance()) f(w.r, w.c * W, w.off);
}

// Element offset of d within a row: runs of W > 1 only exist for unit d stride.
template <int W>
__device__ __forceinline__ int64_t col_offset(int d, int64_t stride_d) {
  return W == 1 ? d * stride_d : d;
}

// ============================================================================================= short kernels
struct ShortArgs {
  AttnProblem p;
  ShortPlan plan;
  AttnIn q, k, v, dout;
  AttnOut o, dq, dk, dv;
  float* lse;
  const float* lse_in;
  Strides5 stat;
  float scale;
  VecFlags vec;
};

// Stage rows [0, L) x [0, D) of one sequence of `src` into dst[t * ldd + d] (fp32).
template <typename T>
__device__ __forceinline__ void short_load(const ShortArgs& a, const AttnIn& src, bool vec, int64_t seq, float* dst,
                                           int lane) {
  const T* base = static_cast<const T*>(src.ptr) + seq_offset(a.p, src.st, seq);
  const TokenMap m = token_map(a.p, src.st);
  const int L = a.plan.L, D = a.plan.D, ldd = a.plan.ldd;
  const RowPlan rp = row_plan<T>(a.p, vec, D, lane, 32);
  with_run_width<T>(vec, [&](auto width) {
    constexpr int W = decltype(width)::value;
    for_each_row_run<W>(m, rp.pat, TokenIndex{0, 0}, L, [&](int t, int d, int64_t off) {
      float v[W];
      load_run<W>(base + off + col_offset<W>(d, src.st.d), v);
#pragma unroll
      for (int k = 0; k < W; ++k) dst[t * ldd + d + k] = v[k];
    });
  });
}

// Row t (D elements, stride_d apart) of a tensor = f(d), written in runs of W.
template <int W, typename T, typename F>
__device__ __forceinline__ void write_row(T* row, int64_t stride_d, int D, F&& f) {
  for (int d = 0; d < D; d += W) {
    float v[W];
#pragma unroll
    for (int k = 0; k < W; ++k) v[k] = f(d + k);
    store_run<W>(row + col_offset<W>(d, stride_d), v);
  }
}

__device__ __forceinline__ float dot_rows(const float* a, const float* b, int D) {
  float acc = 0.f;
  for (int d = 0; d < D; ++d) acc = fmaf(a[d], b[d], acc);
  return acc;
}

template <typename T>
__global__ void short_fwd_kernel(ShortArgs a) {
  FASTVDM_DYNAMIC_SMEM(smem);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t seq = static_cast<int64_t>(blockIdx.x) * a.plan.warps + warp;
  if (seq >= a.p.nseq) return;  // whole warps only; no block-level barrier below
  const int L = a.plan.L, D = a.plan.D, ldd = a.plan.ldd;
  float* Q = reinterpret_cast<float*>(smem) + static_cast<size_t>(warp) * (3 * L * ldd + L * (L + 1));
  float* K = Q + L * ldd;
  float* V = K + L * ldd;
  float* P = V + L * ldd;  // L x (L + 1)
  short_load<T>(a, a.q, a.vec.q, seq, Q, lane);
  short_load<T>(a, a.k, a.vec.k, seq, K, lane);
  short_load<T>(a, a.v, a.vec.v, seq, V, lane);
  __syncwarp();
  if (lane < L) {
    const int t = lane;
    float* prow = P + t * (L + 1);
    float mx = -INFINITY;
    for (int j = 0; j < L; ++j) {
      const float s = dot_rows(Q + t * ldd, K + j * ldd, D) * a.scale;
      prow[j] = s;
      mx = fmaxf(mx, s);
    }
    float sum = 0.f;
    for (int j = 0; j < L; ++j) {
      const float e = __expf(prow[j] - mx);
      prow[j] = e;
      sum += e;
    }
    const float inv = 1.f / sum;
    // lane t alone reads row t of Q, so it may overwrite it with its output row
    for (int d = 0; d < D; ++d) {
      float acc = 0.f;
      for (int j = 0; j < L; ++j) acc = fmaf(prow[j], V[j * ldd + d], acc);
      Q[t * ldd + d] = acc * inv;
    }
    a.lse[seq_offset(a.p, a.stat, seq) + token_offset(a.p, a.stat, t)] = mx + __logf(sum);
  }
  __syncwarp();
  T* out = static_cast<T*>(a.o.ptr) + seq_offset(a.p, a.o.st, seq);
  const TokenMap m = token_map(a.p, a.o.st);
  const RowPlan rp = row_plan<T>(a.p, a.vec.o, D, lane, 32);
  with_run_width<T>(a.vec.o, [&](auto width) {
    constexpr int W = decltype(width)::value;
    for_each_row_run<W>(m, rp.pat, TokenIndex{0, 0}, L, [&](int t, int d, int64_t off) {
      float v[W];
#pragma unroll
      for (int k = 0; k < W; ++k) v[k] = Q[t * ldd + d + k];
      store_run<W>(out + off + col_offset<W>(d, a.o.st.d), v);
    });
  });
}

template <typename T>
__global__ void short_bwd_kernel(ShortArgs a) {
  FASTVDM_DYNAMIC_SMEM(smem);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t seq = static_cast<int64_t>(blockIdx.x) * a.plan.warps + warp;
  if (seq >= a.p.nseq) return;
  const int L = a.plan.L, D = a.plan.D, ldd = a.plan.ldd;
  float* Q = reinterpret_cast<float*>(smem) + static_cast<size_t>(warp) * (4 * L * ldd + 2 * L * (L + 1));
  float* K = Q + L * ldd;
  float* V = K + L * ldd;
  float* dO = V + L * ldd;
  float* P = dO + L * ldd;     // L x (L + 1): probabilities
  float* dS = P + L * (L + 1);  // L x (L + 1): dP, then dS
  short_load<T>(a, a.q, a.vec.q, seq, Q, lane);
  short_load<T>(a, a.k, a.vec.k, seq, K, lane);
  short_load<T>(a, a.v, a.vec.v, seq, V, lane);
  short_load<T>(a, a.dout, a.vec.dout, seq, dO, lane);
  __syncwarp();
  if (lane < L) {  // query role: row t of P and dS, then dq_t
    const int t = lane;
    const float lse = a.lse_in[seq_offset(a.p, a.stat, seq) + token_offset(a.p, a.stat, t)];
    float delta = 0.f;
    for (int j = 0; j < L; ++j) {
      const float p = __expf(dot_rows(Q + t * ldd, K + j * ldd, D) * a.scale - lse);
      const float dp = dot_rows(dO + t * ldd, V + j * ldd, D);
      P[t * (L + 1) + j] = p;
      dS[t * (L + 1) + j] = dp;
      delta = fmaf(p, dp, delta);
    }
    for (int j = 0; j < L; ++j) dS[t * (L + 1) + j] = P[t * (L + 1) + j] * (dS[t * (L + 1) + j] - delta);
    T* dq = static_cast<T*>(a.dq.ptr) + seq_offset(a.p, a.dq.st, seq) + token_offset(a.p, a.dq.st, t);
    with_run_width<T>(a.vec.dq, [&](auto width) {
      write_row<decltype(width)::value>(dq, a.dq.st.d, D, [&](int d) {
        float acc = 0.f;
        for (int j = 0; j < L; ++j) acc = fmaf(dS[t * (L + 1) + j], K[j * ldd + d], acc);
        return acc * a.scale;
      });
    });
  }
  __syncwarp();
  if (lane < L) {  // key role: dk_j, dv_j
    const int j = lane;
    T* dk = static_cast<T*>(a.dk.ptr) + seq_offset(a.p, a.dk.st, seq) + token_offset(a.p, a.dk.st, j);
    T* dv = static_cast<T*>(a.dv.ptr) + seq_offset(a.p, a.dv.st, seq) + token_offset(a.p, a.dv.st, j);
    with_run_width<T>(a.vec.dk, [&](auto width) {
      write_row<decltype(width)::value>(dk, a.dk.st.d, D, [&](int d) {
        float acc = 0.f;
        for (int t = 0; t < L; ++t) acc = fmaf(dS[t * (L + 1) + j], Q[t * ldd + d], acc);
        return acc * a.scale;
      });
    });
    with_run_width<T>(a.vec.dv, [&](auto width) {
      write_row<decltype(width)::value>(dv, a.dv.st.d, D, [&](int d) {
        float acc = 0.f;
        for (int t = 0; t < L; ++t) acc = fmaf(P[t * (L + 1) + j], dO[t * ldd + d], acc);
        return acc;
      });
    });
  }
}

// ============================================================================================= tile products
// C[M x N] (+)= A[M x K] * B[K x N], all operands in shared memory, every thread of the block participating.
// A(m, k) = kTransA ? A[k * lda + m] : A[m * lda + k];  B(k, n) = kTransB ? B[n * ldb + k] : B[k * ldb + n].
// M, N, K are multiples of 16. fp32 operands: FMAs; bf16 / fp16: WMMA 16x16x16 with fp32 accumulation (each
// warp owns whole 16x16 output tiles, loading / storing the accumulator from / to C).
template <typename T, bool kTransA, bool kTransB, bool kAccum>
__device__ __forceinline__ void gemm_scalar(int M, int N, int K, const T* A, int lda, const T* B, int ldb, float* C,
                                            int ldc) {
  const int dm = blockDim.x / N, dn = blockDim.x - dm * N;  // the thread's step over (m, n): once per call
  for (int m = threadIdx.x / N, n = threadIdx.x - m * N; m < M; m += dm, n += dn) {
    if (n >= N) {
      n -= N;
      ++m;
      if (m >= M) break;
    }
    float acc = kAccum ? C[m * ldc + n] : 0.f;
    for (int k = 0; k < K; ++k) {
      const float av = to_f32(kTransA ? A[k * lda + m] : A[m * lda + k]);
      const float bv = to_f32(kTransB ? B[n * ldb + k] : B[k * ldb + n]);
      acc = fmaf(av, bv, acc);
    }
    C[m * ldc + n] = acc;
  }
}

template <typename T, bool kTransA, bool kTransB, bool kAccum>
__device__ __forceinline__ void block_gemm(int M, int N, int K, const T* A, int lda, const T* B, int ldb, float* C,
                                           int ldc) {
#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800) || defined(FASTVDM_EMULATE_WMMA)
  if constexpr (!std::is_same<T, float>::value) {
    namespace wmma = nvcuda::wmma;
    using LayoutA = typename std::conditional<kTransA, wmma::col_major, wmma::row_major>::type;
    using LayoutB = typename std::conditional<kTransB, wmma::col_major, wmma::row_major>::type;
    const int warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int tiles_n = N / 16;
    // the warp's output tiles (mi, ni), row-major from tile `warp` in steps of nwarps (no division: both < 32)
    int mi = 0, ni = warp;
    while (ni >= tiles_n) {
      ni -= tiles_n;
      ++mi;
    }
    while (mi < M / 16) {
      float* cp = C + mi * 16 * ldc + ni * 16;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      if (kAccum) {
        wmma::load_matrix_sync(acc, cp, ldc, wmma::mem_row_major);
      } else {
        wmma::fill_fragment(acc, 0.f);
      }
      for (int ki = 0; ki < K / 16; ++ki) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, LayoutA> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, LayoutB> fb;
        const T* ap = kTransA ? A + ki * 16 * lda + mi * 16 : A + mi * 16 * lda + ki * 16;
        const T* bp = kTransB ? B + ni * 16 * ldb + ki * 16 : B + ki * 16 * ldb + ni * 16;
        wmma::load_matrix_sync(fa, ap, lda);
        wmma::load_matrix_sync(fb, bp, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(cp, acc, ldc, wmma::mem_row_major);
      ni += nwarps;
      while (ni >= tiles_n) {
        ni -= tiles_n;
        ++mi;
      }
    }
    return;
  }
#endif
  gemm_scalar<T, kTransA, kTransB, kAccum>(M, N, K, A, lda, B, ldb, C, ldc);
}

// ============================================================================================= flash kernels
struct FlashArgs {
  AttnProblem p;
  FlashLayout f;
  AttnIn q, k, v, dout;
  AttnOut o, dk, dv, dq;  // dq.ptr: fp32 accumulator (backward)
  float* lse;
  const float* lse_in;
  const float* delta;
  Strides5 stat;
  float scale;
  VecFlags vec;
};

// A tensor's sequence: its first token's address and strides.
template <typename T>
struct SeqRows {
  const T* base;
  Strides5 st;
};

template <typename T>
__device__ __forceinline__ SeqRows<T> seq_rows(const AttnProblem& p, const AttnIn& src, int64_t seq) {
  return SeqRows<T>{static_cast<const T*>(src.ptr) + seq_offset(p, src.st, seq), src.st};
}

// Rows [row0, row0 + rows) x [0, Dp) of a sequence `src` into dst (row stride ld), zeros outside L x D; row0_tok:
// row0 split by token_index; rp: row_plan<T>(p, vec, Dp, threadIdx.x, blockDim.x). Runs are copied unconverted
// (16-byte vectors for vectorizable rows: Dp, ld and the tile bases keep every shared-memory run aligned).
template <typename T>
__device__ __forceinline__ void flash_load(const AttnProblem& p, const SeqRows<T>& src, const RowPlan& rp,
                                           int64_t row0, TokenIndex row0_tok, int rows, T* dst, int ld) {
  const T* base = src.base;
  const TokenMap m = token_map(p, src.st);
  const int valid = static_cast<int>(min64(rows, p.L - row0)), D = static_cast<int>(p.D);
  with_run_width<T>(rp.vec, [&](auto width) {
    constexpr int W = decltype(width)::value;
    for_each_row_run<W>(m, rp.pat, row0_tok, rows, [&](int r, int d, int64_t off) {
      copy_run<W>(dst + r * ld + d, r < valid && d < D ? base + off + col_offset<W>(d, src.st.d) : nullptr);
    });
  });
}

// Rows [row0, row0 + rows) x [0, D) of a sequence of `dst` = src[r * lds + d] / row_div[r] (row_div given) or
// src[r * lds + d] * mul, in runs of W (one call per kernel: the row plan is built here).
template <typename T>
__device__ __forceinline__ void flash_store(const AttnProblem& p, const AttnOut& dst, bool vec, int64_t seq,
                                            int64_t row0, int rows, const float* src, int lds, const float* row_div,
                                            float mul) {
  T* base = static_cast<T*>(dst.ptr) + seq_offset(p, dst.st, seq);
  const TokenMap m = token_map(p, dst.st);
  const RowPlan rp = row_plan<T>(p, vec, static_cast<int>(p.D), threadIdx.x, blockDim.x);
  with_run_width<T>(vec, [&](auto width) {
    constexpr int W = decltype(width)::value;
    for_each_row_run<W>(m, rp.pat, token_index(row0, token_inner(p)), rows, [&](int r, int d, int64_t off) {
      const float* row = src + r * lds + d;
      float v[W];
      if (row_div) {
        const float div = row_div[r];
#pragma unroll
        for (int k = 0; k < W; ++k) v[k] = row[k] / div;
      } else {
#pragma unroll
        for (int k = 0; k < W; ++k) v[k] = row[k] * mul;
      }
      store_run<W>(base + off + col_offset<W>(d, dst.st.d), v);
    });
  });
}

template <typename T>
__global__ void __launch_bounds__(kFlashThreads) flash_fwd_kernel(FlashArgs a) {
  FASTVDM_DYNAMIC_SMEM(smem);
  const FlashLayout& f = a.f;
  const int BM = f.block_m, BN = f.block_n, Dp = f.Dp;
  T* Q = reinterpret_cast<T*>(smem + f.q);
  T* K = reinterpret_cast<T*>(smem + f.k);
  T* V = reinterpret_cast<T*>(smem + f.v);
  T* P = reinterpret_cast<T*>(smem + f.p);
  float* S = reinterpret_cast<float*>(smem + f.s);
  float* O = reinterpret_cast<float*>(smem + f.o);
  float* row_max = reinterpret_cast<float*>(smem + f.stat0);
  float* row_sum = reinterpret_cast<float*>(smem + f.stat1);
  const int64_t seq = blockIdx.x, row0 = static_cast<int64_t>(blockIdx.y) * BM;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  const int64_t L = a.p.L;

  const int64_t inner = token_inner(a.p);
  flash_load<T>(a.p, seq_rows<T>(a.p, a.q, seq), row_plan<T>(a.p, a.vec.q, Dp, threadIdx.x, blockDim.x), row0,
                token_index(row0, inner), BM, Q, f.ld);
  for (int idx = threadIdx.x; idx < BM * f.ldo; idx += blockDim.x) O[idx] = 0.f;  // padding columns too
  for (int r = threadIdx.x; r < BM; r += blockDim.x) {
    row_max[r] = -INFINITY;
    row_sum[r] = 0.f;
  }
  // one row plan for K and V (vector runs only when both allow them: fewer live registers in the loop)
  const RowPlan plan_kv = row_plan<T>(a.p, a.vec.k && a.vec.v, Dp, threadIdx.x, blockDim.x);
  const SeqRows<T> k_rows = seq_rows<T>(a.p, a.k, seq), v_rows = seq_rows<T>(a.p, a.v, seq);
  const TokenIndex bn_tok = token_index(BN, inner);
  TokenIndex col0_tok{0, 0};
  for (int64_t col0 = 0; col0 < L; col0 += BN, col0_tok = token_add(col0_tok, bn_tok, inner)) {
    __syncthreads();  // the previous iteration is done with K, V, P
    flash_load<T>(a.p, k_rows, plan_kv, col0, col0_tok, BN, K, f.ld);
    flash_load<T>(a.p, v_rows, plan_kv, col0, col0_tok, BN, V, f.ld);
    __syncthreads();
    block_gemm<T, false, true, false>(BM, BN, Dp, Q, f.ld, K, f.ld, S, f.lds);  // S = Q K^T
    __syncthreads();
    const int valid = static_cast<int>(min64(BN, L - col0));
    for (int r = warp; r < BM; r += nwarps) {  // online softmax, one warp per row
      float* srow = S + r * f.lds;
      float mx = -INFINITY;
      for (int j = lane; j < valid; j += 32) mx = fmaxf(mx, srow[j] * a.scale);
      mx = warp_max(mx);
      const float m_old = row_max[r], m_new = fmaxf(m_old, mx);
      float sum = 0.f;
      for (int j = lane; j < BN; j += 32) {
        const float e = j < valid ? __expf(srow[j] * a.scale - m_new) : 0.f;
        P[r * f.ldp + j] = from_f32<T>(e);
        sum += e;
      }
      sum = warp_sum(sum);
      const float alpha = __expf(m_old - m_new);  // 0 on the first block (m_old = -inf)
      for (int d = lane; d < Dp; d += 32) O[r * f.ldo + d] *= alpha;
      __syncwarp();
      if (lane == 0) {
        row_max[r] = m_new;
        row_sum[r] = row_sum[r] * alpha + sum;
      }
    }
    __syncthreads();
    block_gemm<T, false, false, true>(BM, Dp, BN, P, f.ldp, V, f.ld, O, f.ldo);  // O += P V
  }
  __syncthreads();
  const int valid_rows = static_cast<int>(min64(BM, L - row0));
  flash_store<T>(a.p, a.o, a.vec.o, seq, row0, valid_rows, O, f.ldo, row_sum, 1.f);
  float* lse = a.lse + seq_offset(a.p, a.stat, seq);
  for_each_row_run<1>(token_map(a.p, a.stat), RunPattern(1, threadIdx.x, blockDim.x, inner), token_index(row0, inner),
                      valid_rows, [&](int r, int, int64_t off) { lse[off] = row_max[r] + __logf(row_sum[r]); });
}

template <typename T>
__global__ void __launch_bounds__(kFlashThreads) flash_bwd_kernel(FlashArgs a) {
  FASTVDM_DYNAMIC_SMEM(smem);
  const FlashLayout& f = a.f;
  const int BM = f.block_m, BN = f.block_n, Dp = f.Dp;
  T* Q = reinterpret_cast<T*>(smem + f.q);
  T* K = reinterpret_cast<T*>(smem + f.k);
  T* V = reinterpret_cast<T*>(smem + f.v);
  T* dO = reinterpret_cast<T*>(smem + f.dout);
  T* P = reinterpret_cast<T*>(smem + f.p);
  T* dS = reinterpret_cast<T*>(smem + f.ds);
  float* Pf = reinterpret_cast<float*>(smem + f.s);   // P in fp32
  float* dPf = reinterpret_cast<float*>(smem + f.dp);  // dO V^T
  float* dK = reinterpret_cast<float*>(smem + f.dk);
  float* dV = reinterpret_cast<float*>(smem + f.dv);
  float* dQ = reinterpret_cast<float*>(smem + f.dq);
  float* lse = reinterpret_cast<float*>(smem + f.stat0);
  float* delta = reinterpret_cast<float*>(smem + f.stat1);
  const int64_t seq = blockIdx.x, col0 = static_cast<int64_t>(blockIdx.y) * BN;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  const int64_t L = a.p.L;
  const int D = static_cast<int>(a.p.D);
  const int valid_cols = static_cast<int>(min64(BN, L - col0));

  const int64_t inner = token_inner(a.p);
  const TokenIndex col0_tok = token_index(col0, inner);
  flash_load<T>(a.p, seq_rows<T>(a.p, a.k, seq), row_plan<T>(a.p, a.vec.k, Dp, threadIdx.x, blockDim.x), col0,
                col0_tok, BN, K, f.ld);
  flash_load<T>(a.p, seq_rows<T>(a.p, a.v, seq), row_plan<T>(a.p, a.vec.v, Dp, threadIdx.x, blockDim.x), col0,
                col0_tok, BN, V, f.ld);
  for (int idx = threadIdx.x; idx < BN * f.ldo; idx += blockDim.x) {  // padding columns too
    dK[idx] = 0.f;
    dV[idx] = 0.f;
  }
  const int64_t stat_base = seq_offset(a.p, a.stat, seq);
  const TokenMap stat_map = token_map(a.p, a.stat), dq_map = token_map(a.p, a.dq.st);
  float* dq_acc = static_cast<float*>(a.dq.ptr) + seq_offset(a.p, a.dq.st, seq);
  // the thread's walks of the query-block tiles, set up once (no division in the loop)
  const RowPlan plan_q = row_plan<T>(a.p, a.vec.q, Dp, threadIdx.x, blockDim.x);
  const RowPlan plan_do = row_plan<T>(a.p, a.vec.dout, Dp, threadIdx.x, blockDim.x);
  const SeqRows<T> q_rows = seq_rows<T>(a.p, a.q, seq), do_rows = seq_rows<T>(a.p, a.dout, seq);
  const RunPattern stat_pat(1, threadIdx.x, blockDim.x, inner), dq_pat(D, threadIdx.x, blockDim.x, inner);
  const TokenIndex bm_tok = token_index(BM, inner);
  TokenIndex row0_tok{0, 0};
  for (int64_t row0 = 0; row0 < L; row0 += BM, row0_tok = token_add(row0_tok, bm_tok, inner)) {
    __syncthreads();  // the previous iteration is done with Q, dO, dS, dQ
    flash_load<T>(a.p, q_rows, plan_q, row0, row0_tok, BM, Q, f.ld);
    flash_load<T>(a.p, do_rows, plan_do, row0, row0_tok, BM, dO, f.ld);
    const int valid_rows = static_cast<int>(min64(BM, L - row0));
    for_each_row_run<1>(stat_map, stat_pat, row0_tok, BM, [&](int r, int, int64_t off) {
      const bool ok = r < valid_rows;
      lse[r] = ok ? a.lse_in[stat_base + off] : INFINITY;  // exp(s - inf) = 0
      delta[r] = ok ? a.delta[stat_base + off] : 0.f;
    });
    __syncthreads();
    block_gemm<T, false, true, false>(BM, BN, Dp, Q, f.ld, K, f.ld, Pf, f.lds);  // S = Q K^T
    __syncthreads();
    for (int r = warp; r < BM; r += nwarps) {
      for (int c = lane; c < BN; c += 32) {
        const float p = c < valid_cols ? __expf(Pf[r * f.lds + c] * a.scale - lse[r]) : 0.f;
        Pf[r * f.lds + c] = p;
        P[r * f.ldp + c] = from_f32<T>(p);
      }
    }
    __syncthreads();
    block_gemm<T, true, false, true>(BN, Dp, BM, P, f.ldp, dO, f.ld, dV, f.ldo);    // dV += P^T dO
    block_gemm<T, false, true, false>(BM, BN, Dp, dO, f.ld, V, f.ld, dPf, f.lds);  // dP = dO V^T
    __syncthreads();
    for (int r = warp; r < BM; r += nwarps) {
      for (int c = lane; c < BN; c += 32) {
        dS[r * f.ldp + c] = from_f32<T>(Pf[r * f.lds + c] * (dPf[r * f.lds + c] - delta[r]));
      }
    }
    __syncthreads();
    block_gemm<T, true, false, true>(BN, Dp, BM, dS, f.ldp, Q, f.ld, dK, f.ldo);   // dK += dS^T Q
    block_gemm<T, false, false, false>(BM, Dp, BN, dS, f.ldp, K, f.ld, dQ, f.ldo);  // dQ_blk = dS K
    __syncthreads();
    for_each_row_run<1>(dq_map, dq_pat, row0_tok, valid_rows, [&](int r, int d, int64_t off) {
      atomicAdd(dq_acc + off + d * a.dq.st.d, dQ[r * f.ldo + d] * a.scale);
    });
  }
  __syncthreads();
  flash_store<T>(a.p, a.dk, a.vec.dk, seq, col0, valid_cols, dK, f.ldo, nullptr, a.scale);
  flash_store<T>(a.p, a.dv, a.vec.dv, seq, col0, valid_cols, dV, f.ldo, nullptr, 1.f);
}

int elem_bytes(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

// The per-tensor choice between 16-byte vector rows and scalar elements (null tensors: scalar, unused).
VecFlags vec_flags(DType dtype, const AttnProblem& p, const AttnIn& q, const AttnIn& k, const AttnIn& v,
                   const AttnIn* dout, const AttnOut* o, const AttnOut* dq, const AttnOut* dk, const AttnOut* dv) {
  const int eb = elem_bytes(dtype);
  auto ok = [&](const void* ptr, const Strides5& st) { return ptr != nullptr && rows_vectorizable(p, ptr, st, eb); };
  return VecFlags{ok(q.ptr, q.st),
                  ok(k.ptr, k.st),
                  ok(v.ptr, v.st),
                  dout && ok(dout->ptr, dout->st),
                  o && ok(o->ptr, o->st),
                  dq && ok(dq->ptr, dq->st),
                  dk && ok(dk->ptr, dk->st),
                  dv && ok(dv->ptr, dv->st)};
}

// Raise the dynamic shared-memory limit of `kernel` when a launch needs more than the default 48 KB.
template <typename... Args>
cudaError_t allow_smem(void (*kernel)(Args...), size_t smem) {
  if (smem <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(smem));
}

}  // namespace

cudaError_t attention_forward(DType dtype, const AttnProblem& problem, AttnIn q, AttnIn k, AttnIn v, AttnOut o,
                              float* lse, Strides5 stat, float scale, cudaStream_t stream) {
  if (use_short_kernel(problem)) {
    ShortArgs a{};
    a.p = problem;
    a.plan = plan_short(problem, false);
    a.q = q;
    a.k = k;
    a.v = v;
    a.o = o;
    a.lse = lse;
    a.stat = stat;
    a.scale = scale;
    a.vec = vec_flags(dtype, problem, q, k, v, nullptr, &o, nullptr, nullptr, nullptr);
    const dim3 grid(static_cast<unsigned>(a.plan.grid)), block(32 * a.plan.warps);
    cudaError_t err = cudaSuccess;
    FASTVDM_DISPATCH_DTYPE(dtype, T, {
      err = allow_smem(short_fwd_kernel<T>, a.plan.smem);
      if (err == cudaSuccess) FASTVDM_LAUNCH(short_fwd_kernel<T>, grid, block, a.plan.smem, stream, a);
    });
    return err != cudaSuccess ? err : cudaGetLastError();
  }
  FlashArgs a{};
  a.p = problem;
  const FlashPlan plan = plan_flash(problem, elem_bytes(dtype), false);
  a.f = plan.layout;
  a.q = q;
  a.k = k;
  a.v = v;
  a.o = o;
  a.lse = lse;
  a.stat = stat;
  a.scale = scale;
  a.vec = vec_flags(dtype, problem, q, k, v, nullptr, &o, nullptr, nullptr, nullptr);
  const dim3 grid(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.grid_y));
  cudaError_t err = cudaSuccess;
  FASTVDM_DISPATCH_DTYPE(dtype, T, {
    err = allow_smem(flash_fwd_kernel<T>, a.f.total);
    if (err == cudaSuccess) FASTVDM_LAUNCH(flash_fwd_kernel<T>, grid, kFlashThreads, a.f.total, stream, a);
  });
  return err != cudaSuccess ? err : cudaGetLastError();
}

cudaError_t attention_backward(DType dtype, const AttnProblem& problem, AttnIn q, AttnIn k, AttnIn v, AttnIn dout,
                               const float* lse, const float* delta, Strides5 stat, AttnOut dq, float* dq_accum,
                               AttnOut dk, AttnOut dv, float scale, cudaStream_t stream) {
  if (use_short_kernel(problem)) {
    ShortArgs a{};
    a.p = problem;
    a.plan = plan_short(problem, true);
    a.q = q;
    a.k = k;
    a.v = v;
    a.dout = dout;
    a.dq = dq;
    a.dk = dk;
    a.dv = dv;
    a.lse_in = lse;
    a.stat = stat;
    a.scale = scale;
    a.vec = vec_flags(dtype, problem, q, k, v, &dout, nullptr, &dq, &dk, &dv);
    const dim3 grid(static_cast<unsigned>(a.plan.grid)), block(32 * a.plan.warps);
    cudaError_t err = cudaSuccess;
    FASTVDM_DISPATCH_DTYPE(dtype, T, {
      err = allow_smem(short_bwd_kernel<T>, a.plan.smem);
      if (err == cudaSuccess) FASTVDM_LAUNCH(short_bwd_kernel<T>, grid, block, a.plan.smem, stream, a);
    });
    return err != cudaSuccess ? err : cudaGetLastError();
  }
  if (delta == nullptr || dq_accum == nullptr) return cudaErrorInvalidValue;
  FlashArgs a{};
  a.p = problem;
  const FlashPlan plan = plan_flash(problem, elem_bytes(dtype), true);
  a.f = plan.layout;
  a.q = q;
  a.k = k;
  a.v = v;
  a.dout = dout;
  a.dk = dk;
  a.dv = dv;
  a.dq = AttnOut{dq_accum, dq.st};
  a.lse_in = lse;
  a.delta = delta;
  a.stat = stat;
  a.scale = scale;
  a.vec = vec_flags(dtype, problem, q, k, v, &dout, nullptr, nullptr, &dk, &dv);  // dq: fp32 atomics
  const dim3 grid(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.grid_y));
  cudaError_t err = cudaSuccess;
  FASTVDM_DISPATCH_DTYPE(dtype, T, {
    err = allow_smem(flash_bwd_kernel<T>, a.f.total);
    if (err == cudaSuccess) FASTVDM_LAUNCH(flash_bwd_kernel<T>, grid, kFlashThreads, a.f.total, stream, a);
  });
  return err != cudaSuccess ? err : cudaGetLastError();
}

}  // namespace cuda
}  // namespace fastvdm
