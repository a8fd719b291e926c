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
// The tile routines are compiled three times (AVX-512, AVX2+FMA, baseline x86-64), picked once at run time.
//
// Threads. Items are spread over the OpenMP threads with a static schedule; every item writes disjoint output
// rows (the forward) or owns its keys' dk/dv and a private partial dq (the backward, when a sequence's keys are
// split into chunks because there are fewer sequences than needed to feed the threads: the partial dq are summed
// in chunk order afterwards). How a sequence is split depends on the shape only, never on the thread count, so
// results do not depend on the thread count. Every thread's buffers are its own heap allocations.
//
// Floating-point trapping is off for this file only (as in group_norm.cpp), and multiply-adds are contracted
// to FMAs where the target has them (-std=c++17 turns contraction off).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "fp-contract=fast")
#endif

#include "cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

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

// ------------------------------------------------------------------------------------ the ISA-specific tiles
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTVDM_ATTN_X86 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,bmi,bmi2")
namespace avx512 {
constexpr int W = 16, MR = 12;
#include "cpu/attention_tiles.inc"
}  // namespace avx512
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2")
namespace avx2 {
constexpr int W = 8, MR = 6;
#include "cpu/attention_tiles.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif
namespace baseline {
constexpr int W = 8, MR = 4;
#include "cpu/attention_tiles.inc"
}  // namespace baseline

// The instruction set the tiles run with: its vector width and block routines.
struct Isa {
  int W;
  decltype(&baseline::forward_block) forward_block;
  decltype(&baseline::backward_block) backward_block;
};

const Isa& isa() {
  static const Isa chosen = [] {
#if defined(FASTVDM_ATTN_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
      return Isa{avx512::W, avx512::forward_block, avx512::backward_block};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return Isa{avx2::W, avx2::forward_block, avx2::backward_block};
#endif
    return Isa{baseline::W, baseline::forward_block, baseline::backward_block};
  }();
  return chosen;
}

// ------------------------------------------------------------------------------------ geometry and packing
constexpr int64_t kQB = 48;         // queries per block (forward and backward)
constexpr int64_t kKB = 256;        // keys per block of the online softmax / backward tile (a multiple of W)
constexpr int64_t kKeyChunk = 512;  // backward: keys per chunk when a sequence is split (a multiple of kKB)

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

// Rows [l0, l0 + rows) of sequence n, times mul, into dst (row stride ld); columns >= D are left as they are.
template <typename T>
void pack_rows(const AttnGeometry& g, int64_t n, int64_t l0, int64_t rows, const T* src, const AttnStrides& st,
               float mul, float* dst, int64_t ld) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* row = src + offset(g, n, l0 + i, st);
    float* o = dst + i * ld;
    for (int64_t d = 0; d < g.D; ++d) o[d] = to_float(row[d]) * mul;
  }
}

// All L tokens of sequence n as panels of W keys (group j / W, a D x W block; key j at column j % W). The
// buffer's keys past L stay zero.
template <typename T>
void pack_panels(const AttnGeometry& g, int64_t n, int64_t L, int W, const T* src, const AttnStrides& st,
                 float* dst) {
  for (int64_t j = 0; j < L; ++j) {
    const T* row = src + offset(g, n, j, st);
    float* o = dst + (j / W) * g.D * W + (j % W);
    for (int64_t d = 0; d < g.D; ++d) o[d * W] = to_float(row[d]);
  }
}

template <typename T>
void unpack_rows(const AttnGeometry& g, int64_t n, int64_t l0, int64_t rows, const float* src, int64_t ld,
                 float mul, T* dst, const AttnStrides& st) {
  for (int64_t i = 0; i < rows; ++i) {
    T* row = dst + offset(g, n, l0 + i, st);
    const float* s = src + i * ld;
    for (int64_t d = 0; d < g.D; ++d) row[d] = from_float<T>(s[d] * mul);
  }
}

int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

template <typename T>
void attention_forward(const AttnGeometry& g, const T* q, AttnStrides q_st, const T* k, AttnStrides k_st,
                       const T* v, AttnStrides v_st, T* out, AttnStrides out_st, float* lse, AttnStrides lse_st,
                       float scale) {
  const Isa& cpu = isa();
  const int W = cpu.W;
  const int64_t N = num_sequences(g), L = seq_len(g), D = g.D, Dp = round_up(D, W), Lw = round_up(L, W);
  const int64_t qb = std::min(kQB, L), nqb = (L + qb - 1) / qb;
  const int64_t nc = std::min(kKB, Lw);
  // Query blocks per item: a whole sequence when there are enough sequences for the threads, else split.
  const int threads = num_threads();
  const int64_t per_item = N >= 2 * threads ? nqb : std::max<int64_t>(1, nqb * N / (2 * threads));
  const int64_t chunks = (nqb + per_item - 1) / per_item, items = N * chunks;
  const float qmul = static_cast<float>(scale * kLog2e);
  const float ln2 = static_cast<float>(1.0 / kLog2e);
  if (N == 0 || L == 0) return;
#pragma omp parallel if (items > 1)
  {
    std::vector<float> kp(Lw * D, 0.0f), vr(L * Dp, 0.0f), qr(qb * Dp, 0.0f), o(qb * Dp), l2(qb), s(qb * nc),
        l(qb);
    int64_t packed = -1;
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t n = it / chunks, c = it % chunks;
      if (packed != n) {
        pack_panels(g, n, L, W, k, k_st, kp.data());
        pack_rows(g, n, 0, L, v, v_st, 1.0f, vr.data(), Dp);
        packed = n;
      }
      const int64_t b_end = std::min(nqb, (c + 1) * per_item);
      for (int64_t b = c * per_item; b < b_end; ++b) {
        const int64_t i0 = b * qb, rows = std::min(qb, L - i0);
        pack_rows(g, n, i0, rows, q, q_st, qmul, qr.data(), Dp);
        cpu.forward_block(rows, L, D, Dp, nc, qr.data(), kp.data(), vr.data(), o.data(), l2.data(), s.data(),
                          l.data());
        unpack_rows(g, n, i0, rows, o.data(), Dp, 1.0f, out, out_st);
        for (int64_t i = 0; i < rows; ++i) lse[offset(g, n, i0 + i, lse_st)] = l2[i] * ln2;
      }
    }
  }
}

template <typename T>
void attention_backward(const AttnGeometry& g, const T* q, AttnStrides q_st, const T* k, AttnStrides k_st,
                        const T* v, AttnStrides v_st, const T* out, AttnStrides out_st, const T* dout,
                        AttnStrides dout_st, const float* lse, AttnStrides lse_st, T* dq, AttnStrides dq_st, T* dk,
                        AttnStrides dk_st, T* dv, AttnStrides dv_st, float scale) {
  const Isa& cpu = isa();
  const int W = cpu.W;
  const int64_t N = num_sequences(g), L = seq_len(g), D = g.D, Dp = round_up(D, W), Lw = round_up(L, W);
  const int64_t qb = std::min(kQB, L), nqb = (L + qb - 1) / qb;
  const int64_t nc = std::min(kKB, Lw);
  if (N == 0 || L == 0) return;
  // Key chunks per sequence: 1 when there are many sequences; otherwise long sequences are split into chunks
  // of kKeyChunk keys (a function of the shape only, so the sum order of dq never depends on the threads).
  const int64_t chunks = N >= 8 ? 1 : std::min<int64_t>(16, (L + kKeyChunk - 1) / kKeyChunk);
  const int64_t chunk_keys = round_up((L + chunks - 1) / chunks, nc), items = N * chunks;
  const float qmul = static_cast<float>(scale * kLog2e);
  const float ln2 = static_cast<float>(1.0 / kLog2e);
  // Partial dq of every (sequence, chunk) when chunks > 1: items x L x Dp floats.
  std::vector<float> dq_parts(chunks > 1 ? items * L * Dp : 0);
#pragma omp parallel if (items > 1)
  {
    std::vector<float> kp(Lw * D, 0.0f), vp(Lw * D, 0.0f), kr(L * Dp, 0.0f), qr(L * Dp, 0.0f), dor(L * Dp, 0.0f),
        orow(qb * Dp, 0.0f), lse2(L), delta(L), dqb(chunks > 1 ? 0 : L * Dp), dkb((Lw + 16) * Dp),
        dvb((Lw + 16) * Dp), s(qb * nc), dp(qb * nc);
    int64_t packed = -1;
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t n = it / chunks, c = it % chunks;
      const int64_t k0 = std::min(L, c * chunk_keys), k1 = std::min(L, k0 + chunk_keys);
      if (packed != n) {
        pack_panels(g, n, L, W, k, k_st, kp.data());
        pack_panels(g, n, L, W, v, v_st, vp.data());
        pack_rows(g, n, 0, L, k, k_st, 1.0f, kr.data(), Dp);
        pack_rows(g, n, 0, L, q, q_st, qmul, qr.data(), Dp);
        pack_rows(g, n, 0, L, dout, dout_st, 1.0f, dor.data(), Dp);
        for (int64_t i0 = 0; i0 < L; i0 += qb) {  // delta = rowsum(dout * out), lse in base 2
          const int64_t rows = std::min(qb, L - i0);
          pack_rows(g, n, i0, rows, out, out_st, 1.0f, orow.data(), Dp);
          for (int64_t i = 0; i < rows; ++i) {
            float acc = 0.0f;
            const float* a = dor.data() + (i0 + i) * Dp;
            const float* b = orow.data() + i * Dp;
            for (int64_t d = 0; d < D; ++d) acc += a[d] * b[d];
            delta[i0 + i] = acc;
            lse2[i0 + i] = lse[offset(g, n, i0 + i, lse_st)] * static_cast<float>(kLog2e);
          }
        }
        packed = n;
      }
      if (k0 >= k1) continue;
      float* dqa = chunks > 1 ? dq_parts.data() + it * L * Dp : dqb.data();
      std::fill(dqa, dqa + L * Dp, 0.0f);
      std::fill(dkb.begin() + k0 * Dp, dkb.begin() + k1 * Dp, 0.0f);
      std::fill(dvb.begin() + k0 * Dp, dvb.begin() + k1 * Dp, 0.0f);
      for (int64_t i0 = 0; i0 < L; i0 += qb) {
        const int64_t rows = std::min(qb, L - i0);
        cpu.backward_block(rows, k0, k1, D, Dp, nc, qr.data() + i0 * Dp, dor.data() + i0 * Dp, lse2.data() + i0,
                           delta.data() + i0, kp.data(), vp.data(), kr.data(), dqa + i0 * Dp, dkb.data(),
                           dvb.data(), s.data(), dp.data());
      }
      unpack_rows(g, n, k0, k1 - k0, dkb.data() + k0 * Dp, Dp, ln2, dk, dk_st);  // dk = ln 2 * dS^T q'
      unpack_rows(g, n, k0, k1 - k0, dvb.data() + k0 * Dp, Dp, 1.0f, dv, dv_st);
      if (chunks == 1) unpack_rows(g, n, 0, L, dqa, Dp, scale, dq, dq_st);
    }
  }
  if (chunks > 1) {  // dq = scale * sum of the chunks' partial dq, in chunk order
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      std::vector<float> acc(L * Dp);
      std::copy(dq_parts.begin() + n * chunks * L * Dp, dq_parts.begin() + (n * chunks + 1) * L * Dp, acc.begin());
      for (int64_t c = 1; c < chunks; ++c) {
        const float* part = dq_parts.data() + (n * chunks + c) * L * Dp;
        for (int64_t i = 0; i < L * Dp; ++i) acc[i] += part[i];
      }
      unpack_rows(g, n, 0, L, acc.data(), Dp, scale, dq, dq_st);
    }
  }
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
