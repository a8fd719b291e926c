// Video attention on the CPU (OpenMP) on register-blocked GEMM micro-kernels. See attention.h for the math,
// layouts and guarantees.
//
// Structure. A work item is (sequence, range of query blocks) in the forward and (sequence, range of keys) in the
// backward. The item packs what it reads of its sequence from the strided (B, T, S, heads, D) tensors into fp32
// buffers (any dtype, any token strides): K^T and (backward) V^T as panels of W keys, K, V, Q, dO as rows; then
// runs the block routines of attention_tiles.inc, in which all the arithmetic happens:
//   forward, per block of up to kQB queries: s2 = q' K^T a key block at a time (micro-kernel tiles), online
//     softmax on the tile (vectorized exp2), o += p V (micro-kernel tiles); o and the logsumexp are written out.
//   backward, per block of queries and key block: s2 = q' K^T and dP = dO V^T (tiles), P and dS on the tile,
//     dq += dS K, dk += dS^T q', dv += P^T dO (tiles; the transposed operand is read in place).
// Sequences of up to kShortMax tokens (temporal attention: 4-16 frames) are one query block; an item is then the
// heads of one position (forward_heads / backward_heads), and fp32 tensors whose D is a multiple of W are read
// and written where they lie: only the K^T (V^T) panels are built, with the scale folded into K^T.
// The tile routines are compiled three times (AVX-512, AVX2+FMA, baseline x86-64), picked once at run time.
//
// Threads. Items are handed to the OpenMP threads one at a time as they free up (a dynamic schedule: on a shared
// VM a worker thread can start milliseconds late, and a static split then waits for it); every item writes
// disjoint output rows (the forward) or owns its keys' dk/dv and a private partial dq (the backward, when a
// sequence's keys are split into chunks because there are fewer sequences than needed to feed the threads: the
// partial dq are summed in chunk order afterwards). How a sequence is split depends on the shape only, never on
// the thread count, so results do not depend on the thread count. Every thread's buffers are its own heap
// allocations.
//
// Floating-point trapping is off for this file only (as in group_norm.cpp), and multiply-adds are contracted
// to FMAs where the target has them (-std=c++17 turns contraction off).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "fp-contract=fast")
#endif

#include "cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#endif

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(__GNUC__)
#define FASTVDM_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FASTVDM_ALWAYS_INLINE inline
#endif

namespace fastvdm {
namespace {

// ------------------------------------------------------------------------------------ geometry and packing
constexpr int64_t kQB = 48;         // queries per block (forward and backward)
constexpr int64_t kKB = 256;        // keys per block of the online softmax / backward tile (a multiple of W)
constexpr int64_t kKeyChunk = 512;  // backward: keys per chunk when a sequence is split (a multiple of kKB)
constexpr int64_t kShortMax = 64;   // sequences up to this length: one query block, a position's heads at a time

constexpr int64_t kPrefetchMaxLen = 64;  // backward: sequences up to this length prefetch the rows of the next
constexpr int64_t kPrefetchAhead = 2;    // sequences, this many ahead (the packed path: bf16/fp16, odd D)

// Calls with fewer FLOPs than this run on the calling thread: below it an OpenMP region (a few microseconds when
// the other cores are idle) costs more than it saves. ~20-40 us of work on one core.
constexpr double kParallelMinFlops = 2e6;

constexpr double kLog2e = 1.4426950408889634;

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

int64_t seq_len(const AttnGeometry& g) { return g.axis == 0 ? g.S : g.axis == 1 ? g.T : g.T * g.S; }

int64_t num_sequences(const AttnGeometry& g) {
  return g.axis == 0 ? g.B * g.T * g.H : g.axis == 1 ? g.B * g.S * g.H : g.B * g.H;
}

// Element offset of token l of sequence n in a tensor with strides st (at d = 0). Sequences are numbered
// ((b * T + t) * H + h) (spatial), ((b * S + s) * H + h) (temporal), (b * H + h) (joint).
inline int64_t offset(const AttnGeometry& g, int64_t n, int64_t l, const AttnStrides& st) {
  const int64_t h = n % g.H, r = n / g.H;
  int64_t b, t, s;
  if (g.axis == 0) {
    t = r % g.T, b = r / g.T, s = l;
  } else if (g.axis == 1) {
    s = r % g.S, b = r / g.S, t = l;
  } else {
    b = r, t = l / g.S, s = l % g.S;
  }
  return b * st.b + t * st.t + s * st.s + h * st.h;
}

// Element stride between consecutive tokens of a sequence on the spatial (s) and temporal (t) axes; the joint axis
// has none (its tokens step over s, then t).
inline int64_t token_stride(const AttnGeometry& g, const AttnStrides& st) { return g.axis == 0 ? st.s : st.t; }

// Calls f(i, element offset of token l0 + i of sequence n) for i < rows, without a division per token.
template <typename F>
FASTVDM_ALWAYS_INLINE void for_tokens(const AttnGeometry& g, int64_t n, int64_t l0, int64_t rows,
                                      const AttnStrides& st, F&& f) {
  if (g.axis != 2) {
    const int64_t base = offset(g, n, l0, st), step = g.axis == 0 ? st.s : st.t;
    for (int64_t i = 0; i < rows; ++i) f(i, base + i * step);
    return;
  }
  const int64_t base = offset(g, n, 0, st);
  int64_t t = l0 / g.S, s = l0 % g.S;
  for (int64_t i = 0; i < rows; ++i) {
    f(i, base + t * st.t + s * st.s);
    if (++s == g.S) s = 0, ++t;
  }
}

int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// ------------------------------------------------------------------------------------ the ISA-specific code
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTVDM_ATTN_X86 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c,bmi,bmi2")
namespace avx512 {
constexpr int W = 16, MR = 12;
#define FASTVDM_ATTN_W 16
#define FASTVDM_ATTN_X86_SIMD 512
#include "cpu/attention_tiles.inc"
#undef FASTVDM_ATTN_X86_SIMD
#undef FASTVDM_ATTN_W
}  // namespace avx512
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
namespace avx2 {
constexpr int W = 8, MR = 6;
#define FASTVDM_ATTN_W 8
#define FASTVDM_ATTN_X86_SIMD 256
#include "cpu/attention_tiles.inc"
#undef FASTVDM_ATTN_X86_SIMD
#undef FASTVDM_ATTN_W
}  // namespace avx2
#pragma GCC pop_options
#endif
namespace baseline {
constexpr int W = 8, MR = 4;
#define FASTVDM_ATTN_W 8
#include "cpu/attention_tiles.inc"
#undef FASTVDM_ATTN_W
}  // namespace baseline

// The instruction set the kernels run with, chosen once: the best this CPU supports, or a lower one named by the
// environment variable FASTVDM_CPU_ISA (avx512, avx2, baseline; a higher one than the CPU supports is ignored,
// an unknown one ignored with a line on stderr), which is how the tests run the AVX2 and baseline code on an
// AVX-512 machine.
enum class Isa { kBaseline, kAvx2, kAvx512 };

Isa isa() {
  static const Isa chosen = [] {
    Isa best = Isa::kBaseline;
#if defined(FASTVDM_ATTN_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
      best = Isa::kAvx512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      best = Isa::kAvx2;
#endif
    const char* want = std::getenv("FASTVDM_CPU_ISA");
    Isa asked = best;
    if (want != nullptr && *want != '\0') {
      if (std::strcmp(want, "avx2") == 0)
        asked = Isa::kAvx2;
      else if (std::strcmp(want, "baseline") == 0)
        asked = Isa::kBaseline;
      else if (std::strcmp(want, "avx512") != 0)
        std::fprintf(stderr, "fastvdm: FASTVDM_CPU_ISA=%s is not one of avx512, avx2, baseline; ignored\n", want);
    }
    return std::min(asked, best);
  }();
  return chosen;
}

}  // namespace

const char* attention_isa() {
  switch (isa()) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "baseline";
  }
}

template <typename T>
void attention_forward(const AttnGeometry& g, const T* q, AttnStrides q_st, const T* k, AttnStrides k_st,
                       const T* v, AttnStrides v_st, T* out, AttnStrides out_st, float* lse, AttnStrides lse_st,
                       float scale) {
#if defined(FASTVDM_ATTN_X86)
  if (isa() == Isa::kAvx512)
    return avx512::forward(g, q, q_st, k, k_st, v, v_st, out, out_st, lse, lse_st, scale);
  if (isa() == Isa::kAvx2) return avx2::forward(g, q, q_st, k, k_st, v, v_st, out, out_st, lse, lse_st, scale);
#endif
  baseline::forward(g, q, q_st, k, k_st, v, v_st, out, out_st, lse, lse_st, scale);
}

template <typename T>
void attention_backward(const AttnGeometry& g, const T* q, AttnStrides q_st, const T* k, AttnStrides k_st,
                        const T* v, AttnStrides v_st, const T* out, AttnStrides out_st, const T* dout,
                        AttnStrides dout_st, const float* lse, AttnStrides lse_st, T* dq, AttnStrides dq_st, T* dk,
                        AttnStrides dk_st, T* dv, AttnStrides dv_st, float scale) {
#if defined(FASTVDM_ATTN_X86)
  if (isa() == Isa::kAvx512)
    return avx512::backward(g, q, q_st, k, k_st, v, v_st, out, out_st, dout, dout_st, lse, lse_st, dq, dq_st, dk,
                            dk_st, dv, dv_st, scale);
  if (isa() == Isa::kAvx2)
    return avx2::backward(g, q, q_st, k, k_st, v, v_st, out, out_st, dout, dout_st, lse, lse_st, dq, dq_st, dk,
                          dk_st, dv, dv_st, scale);
#endif
  baseline::backward(g, q, q_st, k, k_st, v, v_st, out, out_st, dout, dout_st, lse, lse_st, dq, dq_st, dk, dk_st,
                     dv, dv_st, scale);
}

#define FASTVDM_INSTANTIATE_ATTENTION(T)                                                                        \
  template void attention_forward<T>(const AttnGeometry&, const T*, AttnStrides, const T*, AttnStrides, const T*, \
                                     AttnStrides, T*, AttnStrides, float*, AttnStrides, float);                 \
  template void attention_backward<T>(const AttnGeometry&, const T*, AttnStrides, const T*, AttnStrides,         \
                                      const T*, AttnStrides, const T*, AttnStrides, const T*, AttnStrides,       \
                                      const float*, AttnStrides, T*, AttnStrides, T*, AttnStrides, T*,           \
                                      AttnStrides, float);
FASTVDM_INSTANTIATE_ATTENTION(float)
FASTVDM_INSTANTIATE_ATTENTION(bf16)
FASTVDM_INSTANTIATE_ATTENTION(fp16)
#undef FASTVDM_INSTANTIATE_ATTENTION

}  // namespace fastvdm
