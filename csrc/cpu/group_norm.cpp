// Fused GroupNorm + affine + modulation + SiLU, CPU (OpenMP). See group_norm.h for the math and layout.
//
// Structure: the OpenMP loops (this file's templates) walk rows of the tensor and hand fp32 chunks to small
// leaf functions that hold all the arithmetic (group_norm_leaves.inc: explicit vectors, vectorized exp).
// The leaves are compiled three times, AVX-512 (16 floats a vector), AVX2+FMA and baseline x86-64 (8), each
// under its own `#pragma GCC target`, and one set is chosen once at run time. bf16/fp16 and strided rows are
// converted to/from an fp32 stack buffer per chunk; contiguous fp32 rows are used in place.
#include "cpu/group_norm.h"
#include "cpu/vec_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastvdm {
namespace {

constexpr int64_t kChunk = 2048;  // fp32 elements per leaf call (8 KiB: stays in L1 with its output)

// ------------------------------------------------------------------------------------------ the leaves
#define FASTVDM_GN_INLINE inline __attribute__((always_inline))
#define FASTVDM_GN_LAMBDA __attribute__((always_inline))
// The leaves pass W-float vectors only between always-inlined helpers: no vector crosses a call boundary.
#pragma GCC diagnostic ignored "-Wpsabi"
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTVDM_GN_X86 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
namespace avx512 {
constexpr int W = 16;
#include "cpu/group_norm_leaves.inc"
}  // namespace avx512
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
constexpr int W = 8;
#include "cpu/group_norm_leaves.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif
namespace baseline {
constexpr int W = 8;
#include "cpu/group_norm_leaves.inc"
}  // namespace baseline

// One instruction set's leaves.
struct Leaves {
  decltype(&baseline::chunk_sums) chunk_sums;
  decltype(&baseline::chunk_apply) chunk_apply;
  decltype(&baseline::chunk_grad_sums) chunk_grad_sums;
  decltype(&baseline::chunk_dx) chunk_dx;
  decltype(&baseline::channel_sums) channel_sums;
  decltype(&baseline::channel_apply) channel_apply;
  decltype(&baseline::channel_grad_sums) channel_grad_sums;
  decltype(&baseline::channel_dx) channel_dx;
};
#define FASTVDM_GN_LEAVES(ns)                                                                                 \
  Leaves {                                                                                                    \
    ns::chunk_sums, ns::chunk_apply, ns::chunk_grad_sums, ns::chunk_dx, ns::channel_sums, ns::channel_apply, \
        ns::channel_grad_sums, ns::channel_dx                                                                 \
  }

// The widest set this CPU runs, chosen once.
const Leaves& leaves() {
  static const Leaves chosen = [] {
#if defined(FASTVDM_GN_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
      return FASTVDM_GN_LEAVES(avx512);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return FASTVDM_GN_LEAVES(avx2);
#endif
    return FASTVDM_GN_LEAVES(baseline);
  }();
  return chosen;
}
#undef FASTVDM_GN_LEAVES

// ------------------------------------------------------------------------------------------ load / store
// Contiguous 16-bit <-> fp32 conversions, multiversioned so that they vectorize like the leaves.
FASTVDM_MULTIVERSION
void convert_n(const bf16* __restrict p, int64_t n, float* __restrict out) {
  for (int64_t i = 0; i < n; ++i) out[i] = to_float(p[i]);
}
FASTVDM_MULTIVERSION
void convert_n(const fp16* __restrict p, int64_t n, float* __restrict out) {
  for (int64_t i = 0; i < n; ++i) out[i] = to_float(p[i]);
}
FASTVDM_MULTIVERSION
void convert_n(const float* __restrict in, int64_t n, bf16* __restrict p) {
  for (int64_t i = 0; i < n; ++i) p[i] = from_float<bf16>(in[i]);
}
FASTVDM_MULTIVERSION
void convert_n(const float* __restrict in, int64_t n, fp16* __restrict p) {
  for (int64_t i = 0; i < n; ++i) p[i] = from_float<fp16>(in[i]);
}

// A row segment of n elements at stride `stride` as fp32: in place when it already is contiguous fp32,
// otherwise converted into buf (n <= the buffer's size).
template <typename T>
inline const float* load_chunk(const T* p, int64_t stride, int64_t n, float* buf) {
  if constexpr (std::is_same_v<T, float>) {
    if (stride == 1) return p;
  } else {
    if (stride == 1) {
      convert_n(p, n, buf);
      return buf;
    }
  }
  for (int64_t i = 0; i < n; ++i) buf[i] = to_float(p[i * stride]);
  return buf;
}

// Where a leaf should write n fp32 results destined for p: p itself when contiguous fp32, else buf.
template <typename T>
inline float* out_chunk(T* p, int64_t stride, float* buf) {
  if constexpr (std::is_same_v<T, float>) {
    if (stride == 1) return p;
  }
  return buf;
}

template <typename T>
inline void store_chunk(const float* src, T* p, int64_t stride, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    if (stride == 1) return;  // the leaf wrote in place
  } else {
    if (stride == 1) {
      convert_n(src, n, p);
      return;
    }
  }
  for (int64_t i = 0; i < n; ++i) p[i * stride] = from_float<T>(src[i]);
}

// ------------------------------------------------------------------------------------------ helpers
bool channels_last_path(const GroupNormGeometry& g) {
  return g.stride_c == 1 && g.stride_s != 1 && g.S > 1 && g.C > 1;
}

// Modulated affine coefficients per (n, c): a = w * (1 + scale), b = bias * (1 + scale) + shift.
void modulation(const GroupNormGeometry& geo, const GroupNormParams& p, std::vector<float>& a,
                std::vector<float>& b) {
  a.resize(geo.B * geo.C);
  b.resize(geo.B * geo.C);
  for (int64_t n = 0; n < geo.B; ++n) {
    for (int64_t c = 0; c < geo.C; ++c) {
      const int64_t nc = n * geo.C + c;
      const float m = 1.0f + (p.scale ? p.scale[nc] : 0.0f);
      a[nc] = (p.weight ? p.weight[c] : 1.0f) * m;
      b[nc] = (p.bias ? p.bias[c] : 0.0f) * m + (p.shift ? p.shift[nc] : 0.0f);
    }
  }
}

// The input bias of row (n, c) (0 without one). The kernels never form u = x + input_bias: they subtract
// (mean - input_bias) and (k - input_bias) from x instead, per row, so the leaves are unchanged.
inline float input_bias_at(const GroupNormParams& p, int64_t nc) { return p.input_bias ? p.input_bias[nc] : 0.0f; }

// Channels-last rows are processed in blocks of kRowsPerTask positions s per OpenMP task.
constexpr int64_t kRowsPerTask = 64;
// Channels-last reductions split the positions of each sample into this many parts (fewer when S is smaller).
constexpr int64_t kParts = 64;

// Per-(n, c) sums over all positions s for the channels-last path: s1, s2 (B * C) = sums over s of the
// per-channel values that row_fn(n, s, acc1, acc2, scratch) adds into acc1[c], acc2[c] (scratch: 2 * C
// floats). Deterministic and independent of the thread count: the positions of each sample are cut into a
// fixed number of parts, each summed in order (fp32 over kRowsPerTask rows, then fp64), parts added in order.
template <typename RowFn>
void channels_last_sums(int64_t B, int64_t C, int64_t S, bool parallel, std::vector<double>& s1,
                        std::vector<double>& s2, RowFn row_fn) {
  const int64_t parts = std::min(kParts, S);
  std::vector<double> p1(B * parts * C, 0.0), p2(B * parts * C, 0.0);
#pragma omp parallel if (parallel)
  {
    std::vector<float> acc1(C), acc2(C), scratch(2 * C);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < B * parts; ++task) {
      const int64_t n = task / parts, part = task % parts;
      const int64_t s_begin = S * part / parts, s_end = S * (part + 1) / parts;
      double* d1 = p1.data() + task * C;
      double* d2 = p2.data() + task * C;
      for (int64_t s0 = s_begin; s0 < s_end; s0 += kRowsPerTask) {
        std::fill(acc1.begin(), acc1.end(), 0.0f);
        std::fill(acc2.begin(), acc2.end(), 0.0f);
        for (int64_t s = s0; s < std::min(s_end, s0 + kRowsPerTask); ++s)
          row_fn(n, s, acc1.data(), acc2.data(), scratch.data());
        for (int64_t c = 0; c < C; ++c) {
          d1[c] += acc1[c];
          d2[c] += acc2[c];
        }
      }
    }
  }
  for (int64_t n = 0; n < B; ++n)
    for (int64_t part = 0; part < parts; ++part)
      for (int64_t c = 0; c < C; ++c) {
        s1[n * C + c] += p1[(n * parts + part) * C + c];
        s2[n * C + c] += p2[(n * parts + part) * C + c];
      }
}

}  // namespace

// Below this many elements a call runs on the calling thread: no OpenMP region, whose fork/join (and, on a
// loaded machine, the wait for a second core) costs more than the work it would share.
constexpr int64_t kParallelMin = int64_t{1} << 16;

// Rows path: whole (n, g) groups per OpenMP task when there are enough of them for the threads (or one
// thread), so that the second pass over a group re-reads it from cache, not memory (one memory read and one
// write per element). Both orders give bitwise the same results.
static bool group_major(int64_t groups, bool parallel) {
#ifdef _OPENMP
  return !parallel || groups >= 4 * static_cast<int64_t>(omp_get_max_threads());
#else
  return true;
#endif
}

// f(nc, ng) for every channel nc = n * C + c in order, with its group ng = n * G + c / Cg, without a division
// per channel (two 64-bit divisions per channel cost more than a short row's whole work).
template <typename F>
static void for_channels(int64_t B, int64_t C, int64_t G, F f) {
  const int64_t Cg = C / G;
  for (int64_t n = 0, nc = 0; n < B; ++n)
    for (int64_t g = 0; g < G; ++g)
      for (int64_t j = 0; j < Cg; ++j, ++nc) f(nc, n * G + g);
}

// Short rows (S < kShortRow, e.g. SVD's 2x2 and 4x4 latents at 1280 channels): one leaf call per row costs
// more than the row's work, so when the rows of a group are adjacent in memory (dense (B, C, S)), a group is
// handled as spans of whole channels with the channels-last leaves over per-element parameters (each
// channel's value repeated S times): a few leaf calls per group instead of two per channel.
constexpr int64_t kShortRow = 64;

static bool short_rows(const GroupNormGeometry& g) {
  return g.S < kShortRow && g.stride_s == 1 && g.stride_c == g.S && g.S > 0;
}

// s1[j] = sum of acc1[j * S + s] over s < S (fp64, in order of s), s2 likewise, for j < nch: per-channel sums
// of a span. kLanes channels at a time, so that their 2 * kLanes sums are independent chains of adds (one
// channel at a time was a chain of dependent fp64 adds: 40% of a 4x1280x4x4 forward, `perf annotate`).
static void channel_totals(const float* acc1, const float* acc2, int64_t nch, int64_t S, double* s1, double* s2) {
  constexpr int64_t kLanes = 8;
  int64_t j0 = 0;
  for (; j0 + kLanes <= nch; j0 += kLanes) {
    double a1[kLanes] = {}, a2[kLanes] = {};
    for (int64_t t = 0; t < S; ++t)
      for (int64_t u = 0; u < kLanes; ++u) {
        a1[u] += acc1[(j0 + u) * S + t];
        a2[u] += acc2[(j0 + u) * S + t];
      }
    for (int64_t u = 0; u < kLanes; ++u) s1[j0 + u] = a1[u], s2[j0 + u] = a2[u];
  }
  for (int64_t j = j0; j < nch; ++j) {
    double a1 = 0.0, a2 = 0.0;
    for (int64_t t = 0; t < S; ++t) {
      a1 += acc1[j * S + t];
      a2 += acc2[j * S + t];
    }
    s1[j] = a1;
    s2[j] = a2;
  }
}

// out[j * S + s] = v[j] for j < nch, s < S.
static void repeat_per_row(const float* v, int64_t nch, int64_t S, float* out) {
  for (int64_t j = 0; j < nch; ++j)
    for (int64_t s = 0; s < S; ++s) out[j * S + s] = v[j];
}

// ====================================================================================== forward
template <typename T>
void group_norm_forward(const T* x, T* y, float* mean, float* rstd, const GroupNormGeometry& geo,
                        const GroupNormParams& params, float eps, bool silu) {
  const int64_t B = geo.B, C = geo.C, S = geo.S, G = geo.G, Cg = C / G;
  const int64_t sb = geo.stride_b, sc = geo.stride_c, ss = geo.stride_s;
  const bool cl = channels_last_path(geo);
  const Leaves& L = leaves();
  const bool parallel = B * C * S >= kParallelMin;
  std::vector<float> a, b;
  modulation(geo, params, a, b);

  // Shift per (n, g): the group's first element of u = x + input_bias. Sums of (u - k) keep the variance
  // accurate when |mean| >> std (no catastrophic cancellation in sum(u^2) - sum(u)^2).
  std::vector<float> shift_k(B * G);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t g = 0; g < G; ++g)
      shift_k[n * G + g] = to_float(x[n * sb + g * Cg * sc]) + input_bias_at(params, n * C + g * Cg);
  std::vector<double> s1(B * C, 0.0), s2(B * C, 0.0);  // per-(n, c) shifted sums

  // Shifted sums of row (n, c) over s.
  auto row_sums = [&](int64_t nc, int64_t ng) {
    const int64_t n = ng / G, c = nc - n * C;
    const T* row = x + n * sb + c * sc;
    const float k = shift_k[ng] - input_bias_at(params, nc);  // sums of u - k = x - (k - ib)
    float buf[kChunk];
    double a1 = 0.0, a2 = 0.0;
    for (int64_t s0 = 0; s0 < S; s0 += kChunk) {
      const int64_t len = std::min(kChunk, S - s0);
      L.chunk_sums(load_chunk(row + s0 * ss, ss, len, buf), len, k, &a1, &a2);
    }
    s1[nc] = a1;
    s2[nc] = a2;
  };
  // mean and rstd of group ng from its channels' sums.
  const double count = static_cast<double>(Cg * S);
  auto group_stats = [&](int64_t ng) {
    const int64_t c0 = (ng / G) * C + (ng % G) * Cg;
    double a1 = 0.0, a2 = 0.0;
    for (int64_t nc = c0; nc < c0 + Cg; ++nc) {
      a1 += s1[nc];
      a2 += s2[nc];
    }
    const double m = a1 / count;
    const double var = std::max(a2 / count - m * m, 0.0);
    mean[ng] = static_cast<float>(shift_k[ng] + m);
    // NaN, as the reference gives, when the fp32 partial sums overflowed (|x| near 1e19): never a finite 0
    rstd[ng] = std::isfinite(var) ? static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)))
                                  : std::numeric_limits<float>::quiet_NaN();
  };
  // y = act(a * rstd * (x - mean) + b) on row (n, c).
  auto row_apply = [&](int64_t nc, int64_t ng) {
    const int64_t n = ng / G, c = nc - n * C;
    const T* xrow = x + n * sb + c * sc;
    T* yrow = y + n * sb + c * sc;
    float xbuf[kChunk], ybuf[kChunk];
    for (int64_t s0 = 0; s0 < S; s0 += kChunk) {
      const int64_t len = std::min(kChunk, S - s0);
      float* out = out_chunk(yrow + s0 * ss, ss, ybuf);
      L.chunk_apply(load_chunk(xrow + s0 * ss, ss, len, xbuf), len, mean[ng] - input_bias_at(params, nc),
                  a[nc] * rstd[ng], b[nc], silu, out);
      store_chunk(out, yrow + s0 * ss, ss, len);
    }
  };

  if (short_rows(geo)) {
    const int64_t span = std::max<int64_t>(1, kChunk / S);  // channels per leaf call
    std::vector<float> kc(B * C), mc(B * C), ac(B * C);
    for_channels(B, C, G, [&](int64_t nc, int64_t ng) { kc[nc] = shift_k[ng] - input_bias_at(params, nc); });
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t ng = 0; ng < B * G; ++ng) {
      const int64_t n = ng / G, c0 = (ng % G) * Cg, nc0 = n * C + c0;
      float xbuf[kChunk], ybuf[kChunk], p1[kChunk], p2[kChunk], p3[kChunk];
      for (int64_t j0 = 0; j0 < Cg; j0 += span) {  // sums of x - k per channel (k repeated over its S values)
        const int64_t nch = std::min(span, Cg - j0), len = nch * S;
        repeat_per_row(kc.data() + nc0 + j0, nch, S, p1);
        std::fill(p2, p2 + len, 0.0f);
        std::fill(p3, p3 + len, 0.0f);
        L.channel_sums(load_chunk(x + n * sb + (c0 + j0) * sc, 1, len, xbuf), len, p1, p2, p3);
        channel_totals(p2, p3, nch, S, s1.data() + nc0 + j0, s2.data() + nc0 + j0);
      }
      group_stats(ng);
      for (int64_t nc = nc0; nc < nc0 + Cg; ++nc) {
        mc[nc] = mean[ng] - input_bias_at(params, nc);
        ac[nc] = a[nc] * rstd[ng];
      }
      for (int64_t j0 = 0; j0 < Cg; j0 += span) {  // y = act(a * rstd * (x - mean) + b), parameters repeated
        const int64_t nch = std::min(span, Cg - j0), len = nch * S;
        repeat_per_row(mc.data() + nc0 + j0, nch, S, p1);
        repeat_per_row(ac.data() + nc0 + j0, nch, S, p2);
        repeat_per_row(b.data() + nc0 + j0, nch, S, p3);
        T* dst = y + n * sb + (c0 + j0) * sc;
        float* out = out_chunk(dst, 1, ybuf);
        L.channel_apply(load_chunk(x + n * sb + (c0 + j0) * sc, 1, len, xbuf), len, p1, p2, p3, silu, out);
        store_chunk(out, dst, 1, len);
      }
    }
    return;
  }
  if (!cl && group_major(B * G, parallel)) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t ng = 0; ng < B * G; ++ng) {
      const int64_t c0 = (ng / G) * C + (ng % G) * Cg;
      for (int64_t nc = c0; nc < c0 + Cg; ++nc) row_sums(nc, ng);
      group_stats(ng);
      for (int64_t nc = c0; nc < c0 + Cg; ++nc) row_apply(nc, ng);
    }
    return;
  }

  // 1. per-(n, c) shifted sums.
  if (!cl) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t nc = 0; nc < B * C; ++nc) row_sums(nc, (nc / C) * G + (nc % C) / Cg);
  } else {
    std::vector<float> kc(B * C);  // shift per channel
    for_channels(B, C, G, [&](int64_t nc, int64_t ng) { kc[nc] = shift_k[ng] - input_bias_at(params, nc); });
    channels_last_sums(B, C, S, parallel, s1, s2, [&](int64_t n, int64_t s, float* acc1, float* acc2, float* scratch) {
      L.channel_sums(load_chunk(x + n * sb + s * ss, 1, C, scratch), C, kc.data() + n * C, acc1, acc2);
    });
  }
  // 2. group statistics.
  for (int64_t ng = 0; ng < B * G; ++ng) group_stats(ng);
  // 3. y = act(a * rstd * (x - mean) + b).
  if (!cl) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t nc = 0; nc < B * C; ++nc) row_apply(nc, (nc / C) * G + (nc % C) / Cg);
  } else {
    std::vector<float> mc(B * C), ac(B * C);  // per-channel mean and a * rstd
    for_channels(B, C, G, [&](int64_t nc, int64_t ng) {
      mc[nc] = mean[ng] - input_bias_at(params, nc);
      ac[nc] = a[nc] * rstd[ng];
    });
    const int64_t blocks = (S + kRowsPerTask - 1) / kRowsPerTask;
#pragma omp parallel if (parallel)
    {
      std::vector<float> xbuf(C), ybuf(C);
#pragma omp for schedule(static)
      for (int64_t task = 0; task < B * blocks; ++task) {
        const int64_t n = task / blocks, s_begin = (task % blocks) * kRowsPerTask;
        const int64_t s_end = std::min(S, s_begin + kRowsPerTask);
        for (int64_t s = s_begin; s < s_end; ++s) {
          T* yrow = y + n * sb + s * ss;
          float* out = out_chunk(yrow, 1, ybuf.data());
          L.channel_apply(load_chunk(x + n * sb + s * ss, 1, C, xbuf.data()), C, mc.data() + n * C,
                        ac.data() + n * C, b.data() + n * C, silu, out);
          store_chunk(out, yrow, 1, C);
        }
      }
    }
  }
}

// ====================================================================================== backward
template <typename T>
void group_norm_backward(const T* dy, const T* x, const float* mean, const float* rstd, T* dx, float* sum_dz,
                         float* sum_dzx, const GroupNormGeometry& geo, const GroupNormParams& params, bool silu) {
  const int64_t B = geo.B, C = geo.C, S = geo.S, G = geo.G, Cg = C / G;
  const int64_t sb = geo.stride_b, sc = geo.stride_c, ss = geo.stride_s;
  const bool cl = channels_last_path(geo);
  const Leaves& L = leaves();
  const bool parallel = B * C * S >= kParallelMin;
  std::vector<float> a, b;
  modulation(geo, params, a, b);
  // per-channel copies of the group statistics (mc: the mean of u = x + input_bias, minus input_bias)
  std::vector<float> mc(B * C), rc(B * C);
  for_channels(B, C, G, [&](int64_t nc, int64_t ng) {
    mc[nc] = mean[ng] - input_bias_at(params, nc);
    rc[nc] = rstd[ng];
  });
  std::vector<double> s1(B * C, 0.0), s2(B * C, 0.0);  // per-(n, c) sums of dz and dz * xhat
  std::vector<float> p(B * C), q(B * C), r(B * C);      // dx = p * dz + q * (x - mean) + r

  // Sums of dz and dz * xhat over row (n, c).
  auto row_grad_sums = [&](int64_t nc, int64_t ng) {
    const int64_t n = ng / G, c = nc - n * C, off = n * sb + c * sc;
    float xbuf[kChunk], gbuf[kChunk];
    double a1 = 0.0, a2 = 0.0;
    for (int64_t s0 = 0; s0 < S; s0 += kChunk) {
      const int64_t len = std::min(kChunk, S - s0);
      L.chunk_grad_sums(load_chunk(dy + off + s0 * ss, ss, len, gbuf), load_chunk(x + off + s0 * ss, ss, len, xbuf),
                      len, mc[nc], rc[nc], a[nc], b[nc], silu, &a1, &a2);
    }
    s1[nc] = a1;
    s2[nc] = a2;
  };
  // dx coefficients of group ng: m1 = mean over the group of a * dz, m2 = mean of a * dz * xhat.
  const double count = static_cast<double>(Cg * S);
  auto group_coefficients = [&](int64_t ng) {
    const int64_t c0 = (ng / G) * C + (ng % G) * Cg;
    double m1 = 0.0, m2 = 0.0;
    for (int64_t nc = c0; nc < c0 + Cg; ++nc) {
      m1 += a[nc] * s1[nc];
      m2 += a[nc] * s2[nc];
      sum_dz[nc] = static_cast<float>(s1[nc]);
      sum_dzx[nc] = static_cast<float>(s2[nc]);
    }
    m1 /= count;
    m2 /= count;
    const double rs = rstd[ng];
    for (int64_t nc = c0; nc < c0 + Cg; ++nc) {
      p[nc] = static_cast<float>(rs * a[nc]);
      q[nc] = static_cast<float>(-rs * rs * m2);
      r[nc] = static_cast<float>(-rs * m1);
    }
  };
  // dx on row (n, c).
  auto row_dx = [&](int64_t nc, int64_t ng) {
    const int64_t n = ng / G, c = nc - n * C, off = n * sb + c * sc;
    float xbuf[kChunk], gbuf[kChunk], obuf[kChunk];
    for (int64_t s0 = 0; s0 < S; s0 += kChunk) {
      const int64_t len = std::min(kChunk, S - s0);
      T* dst = dx + off + s0 * ss;
      float* out = out_chunk(dst, ss, obuf);
      L.chunk_dx(load_chunk(dy + off + s0 * ss, ss, len, gbuf), load_chunk(x + off + s0 * ss, ss, len, xbuf), len,
               mc[nc], rc[nc], a[nc], b[nc], p[nc], q[nc], r[nc], silu, out);
      store_chunk(out, dst, ss, len);
    }
  };

  if (short_rows(geo)) {
    const int64_t span = std::max<int64_t>(1, kChunk / S);  // channels per leaf call
#pragma omp parallel if (parallel)
    {
    // one buffer of kChunk floats per operand and per repeated parameter (7), per thread
    std::vector<float> buf(12 * kChunk);
#pragma omp for schedule(static)
    for (int64_t ng = 0; ng < B * G; ++ng) {
      const int64_t n = ng / G, c0 = (ng % G) * Cg, nc0 = n * C + c0;
      float *gbuf = buf.data(), *xbuf = gbuf + kChunk, *obuf = xbuf + kChunk, *acc1 = obuf + kChunk,
            *acc2 = acc1 + kChunk, *pm = acc2 + kChunk, *pr = pm + kChunk, *pa = pr + kChunk, *pb = pa + kChunk,
            *pp = pb + kChunk, *pq = pp + kChunk, *px = pq + kChunk;
      for (int64_t j0 = 0; j0 < Cg; j0 += span) {  // sums of dz and dz * xhat per channel
        const int64_t nch = std::min(span, Cg - j0), len = nch * S, k = nc0 + j0, off = n * sb + (c0 + j0) * sc;
        repeat_per_row(mc.data() + k, nch, S, pm);
        repeat_per_row(rc.data() + k, nch, S, pr);
        repeat_per_row(a.data() + k, nch, S, pa);
        repeat_per_row(b.data() + k, nch, S, pb);
        std::fill(acc1, acc1 + len, 0.0f);
        std::fill(acc2, acc2 + len, 0.0f);
        L.channel_grad_sums(load_chunk(dy + off, 1, len, gbuf), load_chunk(x + off, 1, len, xbuf), len, pm, pr, pa,
                            pb, silu, acc1, acc2);
        channel_totals(acc1, acc2, nch, S, s1.data() + k, s2.data() + k);
      }
      group_coefficients(ng);
      for (int64_t j0 = 0; j0 < Cg; j0 += span) {  // dx = p * dz + q * (x - mean) + r, parameters repeated
        const int64_t nch = std::min(span, Cg - j0), len = nch * S, k = nc0 + j0, off = n * sb + (c0 + j0) * sc;
        repeat_per_row(mc.data() + k, nch, S, pm);
        repeat_per_row(rc.data() + k, nch, S, pr);
        repeat_per_row(a.data() + k, nch, S, pa);
        repeat_per_row(b.data() + k, nch, S, pb);
        repeat_per_row(p.data() + k, nch, S, pp);
        repeat_per_row(q.data() + k, nch, S, pq);
        repeat_per_row(r.data() + k, nch, S, px);
        float* out = out_chunk(dx + off, 1, obuf);
        L.channel_dx(load_chunk(dy + off, 1, len, gbuf), load_chunk(x + off, 1, len, xbuf), len, pm, pr, pa, pb, pp,
                     pq, px, silu, out);
        store_chunk(out, dx + off, 1, len);
      }
    }
    }
    return;
  }
  if (!cl && group_major(B * G, parallel)) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t ng = 0; ng < B * G; ++ng) {
      const int64_t c0 = (ng / G) * C + (ng % G) * Cg;
      for (int64_t nc = c0; nc < c0 + Cg; ++nc) row_grad_sums(nc, ng);
      group_coefficients(ng);
      for (int64_t nc = c0; nc < c0 + Cg; ++nc) row_dx(nc, ng);
    }
    return;
  }

  // 1. per-(n, c) sums of dz and dz * xhat.
  if (!cl) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t nc = 0; nc < B * C; ++nc) row_grad_sums(nc, (nc / C) * G + (nc % C) / Cg);
  } else {
    channels_last_sums(B, C, S, parallel, s1, s2, [&](int64_t n, int64_t s, float* acc1, float* acc2, float* scratch) {
      const int64_t off = n * sb + s * ss, k = n * C;
      L.channel_grad_sums(load_chunk(dy + off, 1, C, scratch), load_chunk(x + off, 1, C, scratch + C), C,
                        mc.data() + k, rc.data() + k, a.data() + k, b.data() + k, silu, acc1, acc2);
    });
  }
  // 2. dx coefficients.
  for (int64_t ng = 0; ng < B * G; ++ng) group_coefficients(ng);
  // 3. dx.
  if (!cl) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t nc = 0; nc < B * C; ++nc) row_dx(nc, (nc / C) * G + (nc % C) / Cg);
  } else {
    const int64_t blocks = (S + kRowsPerTask - 1) / kRowsPerTask;
#pragma omp parallel if (parallel)
    {
      std::vector<float> xbuf(C), gbuf(C), obuf(C);
#pragma omp for schedule(static)
      for (int64_t task = 0; task < B * blocks; ++task) {
        const int64_t n = task / blocks, s_begin = (task % blocks) * kRowsPerTask;
        const int64_t s_end = std::min(S, s_begin + kRowsPerTask);
        for (int64_t s = s_begin; s < s_end; ++s) {
          const int64_t off = n * sb + s * ss;
          float* out = out_chunk(dx + off, 1, obuf.data());
          const int64_t k = n * C;
          L.channel_dx(load_chunk(dy + off, 1, C, gbuf.data()), load_chunk(x + off, 1, C, xbuf.data()), C,
                     mc.data() + k, rc.data() + k, a.data() + k, b.data() + k, p.data() + k, q.data() + k,
                     r.data() + k, silu, out);
          store_chunk(out, dx + off, 1, C);
        }
      }
    }
  }
}

#define FASTVDM_INSTANTIATE(T)                                                                                  \
  template void group_norm_forward<T>(const T*, T*, float*, float*, const GroupNormGeometry&,                  \
                                      const GroupNormParams&, float, bool);                                    \
  template void group_norm_backward<T>(const T*, const T*, const float*, const float*, T*, float*, float*,     \
                                       const GroupNormGeometry&, const GroupNormParams&, bool);
FASTVDM_INSTANTIATE(float)
FASTVDM_INSTANTIATE(bf16)
FASTVDM_INSTANTIATE(fp16)
#undef FASTVDM_INSTANTIATE

}  // namespace fastvdm
