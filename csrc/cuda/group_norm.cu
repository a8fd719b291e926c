// GroupNorm kernels (see group_norm.h for the math, group_norm_launch.h for the grid and addressing).
//
// Forward, small groups (plan.fused, N <= 8192): gn_fused_kernel, one 512-thread block per group holds the group in
// registers (16 elements per thread): statistics, then y = act(A * x + Bc) from the registers (one read of x,
// one write of y). Larger groups, grid (B * G, split), 256 threads:
//   gn_stats_kernel   block (group, j): partial shifted sums sum(x - k), sum((x - k)^2) over chunk j (double);
//   gn_apply_kernel   every block combines its group's partials in a fixed order (mean, rstd), folds the
//                     per-channel coefficients A = a * rstd, Bc = b - A * mean into shared memory and writes
//                     y = act(A * x + Bc) over its chunk; chunk 0 stores mean and rstd.
// Backward, same grid:
//   gn_bwd_sums_kernel  per-channel partial sums of dz and dz * xhat over the chunk (per-thread running sums,
//                       flushed to shared memory when the channel changes: rare for both dense layouts);
//   gn_bwd_dx_kernel    combines them per channel, m1 and m2 for the group, writes dx over the chunk; chunk 0
//                       stores sum_dz and sum_dzx (B, C).
// Memory access: every kernel comes in two run widths. W = kVecWidth<T> (8 bf16 / fp16, 4 fp32 elements: one
// 16-byte ld/st.global.v4) when every group is one dense run of memory (group_is_dense: contiguous NC*, or
// channels-last with one group) and the pass's tensors (x, y / dy, x, dx) sit at the same offset from a 16-byte
// boundary: each group's elements before its first boundary go one by one (the scalar head, chunk 0), then whole
// vectors, then the scalar tail (last chunk); the split path moves its inner chunk boundaries onto vector starts.
// W = 1 (strided or channels-last with several groups, misaligned or mixed phases) is the scalar path. Channels
// are tracked per element inside a vector (a vector may span two channels when S is not a multiple of W).
#include "cuda/device_utils.cuh"
#include "cuda/group_norm.h"

namespace fastvdm {
namespace cuda {
namespace {

// a = w * (1 + scale), b = bias * (1 + scale) + shift for channel c of sample n.
__device__ __forceinline__ void modulation(const GroupNormParamsDev& p, int64_t C, int64_t n, int64_t c, float* a,
                                           float* b) {
  const float mod = p.scale ? 1.f + p.scale[n * C + c] : 1.f;
  const float w = p.weight ? p.weight[c] : 1.f;
  const float bias = p.bias ? p.bias[c] : 0.f;
  *a = w * mod;
  *b = bias * mod + (p.shift ? p.shift[n * C + c] : 0.f);
}

// input_bias[n, c] (0 without one): u = x + input_bias is formed in registers, never stored.
__device__ __forceinline__ float input_bias_at(const GroupNormParamsDev& p, int64_t C, int64_t n, int64_t c) {
  return p.input_bias ? p.input_bias[n * C + c] : 0.f;
}

__device__ __forceinline__ float sigmoid(float z) { return 1.f / (1.f + __expf(-z)); }

// 1 / sqrt(var + eps), var clamped at 0 against rounding; NaN when var is NaN or does not fit fp32 (the fp32
// partial sums overflowed, |x| near 1e19), as the reference gives, never a finite wrong value.
__device__ __forceinline__ float rstd_of(double var, float eps) {
  const float v = static_cast<float>(var > 0.0 ? var : (var == var ? 0.0 : var));
  return v <= 3.402823466e38f ? rsqrtf(v + eps) : nanf("");  // false for NaN and inf
}

// ------------------------------------------------------------------------------------ runs of a group
// Channel of the group element at position (q, r), e = q * inner + r, and the position of element e + 1.
__device__ __forceinline__ int64_t channel_at(const GroupNormPlan& p, int64_t q, int64_t r) {
  return p.channel_inner ? r : q;
}
__device__ __forceinline__ void next_pos(const GroupNormPlan& p, int64_t& q, int64_t& r) {
  if (++r == p.inner) {
    r = 0;
    ++q;
  }
}

// [begin, end) of chunk sp of a group and the scalar head of that range. W > 1 (a dense group whose first `lead`
// elements precede its first 16-byte boundary): the inner chunk boundaries move up to lead + a multiple of W, so
// only chunk 0 has a scalar head and only the last a scalar tail; a chunk may come out empty (zero partial sums).
template <int W>
__device__ __forceinline__ void group_run_range(const GroupNormPlan& p, int64_t sp, int64_t lead, int64_t* begin,
                                                int64_t* end, int64_t* head) {
  if constexpr (W == 1) {
    group_chunk_range(p, sp, begin, end);
    *head = 0;
  } else {
    const auto bound = [&](int64_t j) {
      if (j == 0) return int64_t{0};
      if (j >= p.split) return p.N;
      return min64(p.N, lead + ((j * p.chunk + W - 1) & ~int64_t{W - 1}));
    };
    *begin = bound(sp);
    *end = bound(sp + 1);
    *head = sp == 0 ? lead : 0;
  }
}

// Calls f(RunWidth<w>{}, off, q, r) for the runs of group elements [begin, end) that thread t of nt owns: off is
// the run's offset from the group's base, (q, r) the position of its first element. W = 1: every element, by a
// GroupWalk (any layout). W > 1 (dense group, off = e): `head` scalar elements, runs of W, then the scalar tail
// (for_each_run); the runs' positions come from a GroupWalk, the at most two scalars' by one division each.
template <int W, typename F>
__device__ __forceinline__ void for_each_group_run(const GroupNormPlan& p, int64_t begin, int64_t end, int64_t head,
                                                   int64_t t, int64_t nt, F&& f) {
  if constexpr (W == 1) {
    GroupWalk w(p, begin + t, nt);
    for (int64_t e = begin + t; e < end; e += nt, w.advance()) f(RunWidth<1>{}, w.offset(), w.q, w.r);
  } else {
    head = min64(head, end - begin);
    GroupWalk w(p, begin + head + t * W, nt * W);
    for_each_run<W>(end - begin, head, t, nt, [&](auto width, int64_t i) {
      const int64_t e = begin + i;
      if constexpr (decltype(width)::value == W) {
        f(width, e, w.q, w.r);
        w.advance();
      } else {
        const int64_t q = e / p.inner;
        f(width, e, q, e - q * p.inner);
      }
    });
  }
}

// Elements of a W-run group pass before the first 16-byte boundary of the group's data (0 for W = 1).
template <int W, typename T>
__device__ __forceinline__ int64_t group_lead(const GroupNormPlan& p, const T* g) {
  return W > 1 ? min64(vec_misalignment(g), p.N) : 0;
}

// ------------------------------------------------------------------------------------ kernels
// Every kernel is instantiated for a run width W: kVecWidth<T> for dense groups whose tensors share one 16-byte
// phase (16-byte ld/st.global.v4 with a scalar head and tail per group), 1 for any other layout (scalar).
template <typename T, int W>
__global__ void gn_stats_kernel(const T* __restrict__ x, GroupNormPlan plan, GroupNormParamsDev params,
                                double* __restrict__ partial) {
  __shared__ double scratch[32];
  const int64_t pid = blockIdx.x, sp = blockIdx.y;
  const int64_t n = pid / plan.G, g = pid % plan.G;
  const T* xg = x + group_base(plan, n, g);
  const int64_t c0 = g * plan.Cg;
  const float k = to_f32(xg[0]) + input_bias_at(params, plan.C, n, c0);
  int64_t begin, end, head;
  group_run_range<W>(plan, sp, group_lead<W>(plan, xg), &begin, &end, &head);
  float s1 = 0.f, s2 = 0.f;
  for_each_group_run<W>(plan, begin, end, head, threadIdx.x, blockDim.x,
                        [&](auto width, int64_t off, int64_t q, int64_t r) {
                          constexpr int w = decltype(width)::value;
                          float v[w];
                          load_run<w>(xg + off, v);
#pragma unroll
                          for (int i = 0; i < w; ++i) {
                            const float ib = params.input_bias
                                                 ? input_bias_at(params, plan.C, n, c0 + channel_at(plan, q, r))
                                                 : 0.f;
                            const float d = v[i] + ib - k;
                            s1 += d;
                            s2 = fmaf(d, d, s2);
                            if constexpr (w > 1) next_pos(plan, q, r);
                          }
                        });
  const double t1 = block_sum(static_cast<double>(s1), scratch);
  const double t2 = block_sum(static_cast<double>(s2), scratch);
  if (threadIdx.x == 0) {
    partial[(pid * plan.split + sp) * 2] = t1;
    partial[(pid * plan.split + sp) * 2 + 1] = t2;
  }
}

// Dynamic shared memory: 2 * Cg floats (A, Bc per channel of the group).
template <typename T, int W>
__global__ void gn_apply_kernel(const T* __restrict__ x, T* __restrict__ y, float* __restrict__ mean_out,
                                float* __restrict__ rstd_out, GroupNormPlan plan, GroupNormParamsDev params, float eps,
                                bool silu, const double* __restrict__ partial) {
  FASTVDM_DYNAMIC_SMEM(smem);
  float* coef = reinterpret_cast<float*>(smem);  // [0, Cg): A, [Cg, 2 Cg): Bc
  __shared__ float stats[2];
  const int64_t pid = blockIdx.x, sp = blockIdx.y;
  const int64_t n = pid / plan.G, g = pid % plan.G;
  const int64_t xoff = group_base(plan, n, g);
  if (threadIdx.x == 0) {
    double s1 = 0.0, s2 = 0.0;
    for (int64_t j = 0; j < plan.split; ++j) {
      s1 += partial[(pid * plan.split + j) * 2];
      s2 += partial[(pid * plan.split + j) * 2 + 1];
    }
    const double m = s1 / static_cast<double>(plan.N);
    const double var = s2 / static_cast<double>(plan.N) - m * m;
    const float k = to_f32(x[xoff]) + input_bias_at(params, plan.C, n, g * plan.Cg);
    const float mean = static_cast<float>(m + static_cast<double>(k));
    const float rstd = rstd_of(var, eps);
    stats[0] = mean;
    stats[1] = rstd;
    if (sp == 0) {
      mean_out[pid] = mean;
      rstd_out[pid] = rstd;
    }
  }
  __syncthreads();
  const float mean = stats[0], rstd = stats[1];
  for (int64_t c = threadIdx.x; c < plan.Cg; c += blockDim.x) {
    float a, b;
    modulation(params, plan.C, n, g * plan.Cg + c, &a, &b);
    const float A = a * rstd;
    coef[c] = A;
    coef[plan.Cg + c] = b - A * (mean - input_bias_at(params, plan.C, n, g * plan.Cg + c));  // A * u + Bc
  }
  __syncthreads();
  const T* xg = x + xoff;
  T* yg = y + xoff;
  int64_t begin, end, head;
  group_run_range<W>(plan, sp, group_lead<W>(plan, xg), &begin, &end, &head);
  for_each_group_run<W>(plan, begin, end, head, threadIdx.x, blockDim.x,
                        [&](auto width, int64_t off, int64_t q, int64_t r) {
                          constexpr int w = decltype(width)::value;
                          float v[w];
                          load_run<w>(xg + off, v);
#pragma unroll
                          for (int i = 0; i < w; ++i) {
                            const int64_t c = channel_at(plan, q, r);
                            float z = fmaf(coef[c], v[i], coef[plan.Cg + c]);
                            if (silu) z = z * sigmoid(z);
                            v[i] = z;
                            if constexpr (w > 1) next_pos(plan, q, r);
                          }
                          store_run<w>(yg + off, v);
                        });
}

// One block per group (grid.x = B * G, kGroupNormFusedThreads threads); dynamic shared memory: 2 * Cg floats.
// Registers hold u = x + input_bias of the thread's runs t + i * nt (kGroupNormFusedItems / W of W elements)
// and, for W > 1, of at most one head and one tail element.
template <typename T, int W>
__global__ void __launch_bounds__(kGroupNormFusedThreads)
    gn_fused_kernel(const T* __restrict__ x, T* __restrict__ y, float* __restrict__ mean_out,
                    float* __restrict__ rstd_out, GroupNormPlan plan, GroupNormParamsDev params, float eps, bool silu) {
  FASTVDM_DYNAMIC_SMEM(smem);
  float* coef = reinterpret_cast<float*>(smem);  // [0, Cg): A, [Cg, 2 Cg): Bc
  __shared__ double scratch[32];
  constexpr int kRuns = kGroupNormFusedItems / W;
  const int64_t pid = blockIdx.x;
  const int64_t n = pid / plan.G, g = pid % plan.G;
  const int64_t xoff = group_base(plan, n, g);
  const T* xg = x + xoff;
  T* yg = y + xoff;
  const int64_t c0 = g * plan.Cg;
  const float k = to_f32(xg[0]) + input_bias_at(params, plan.C, n, c0);
  const int64_t t = threadIdx.x, nt = blockDim.x;
  const int64_t lead = group_lead<W>(plan, xg);
  const int64_t nruns = (plan.N - lead) / W;
  const int64_t tail0 = lead + nruns * W;
  // the scalar edges (W > 1): element t of the head, element tail0 + t of the tail, when they exist
  const bool has_head = W > 1 && t < lead, has_tail = W > 1 && t < plan.N - tail0;
  const int64_t eh = t, et = tail0 + t;
  const int64_t qh = W > 1 ? eh / plan.inner : 0, qt = W > 1 ? et / plan.inner : 0;
  const int64_t rh = eh - qh * plan.inner, rt = et - qt * plan.inner;
  float v[kRuns][W];
  float vh = 0.f, vt = 0.f;
  float s1 = 0.f, s2 = 0.f;
  // u[0, w) += input_bias, statistics of u - k; (q, r): the position of u[0]
  const auto stats_of = [&](auto width, float* u, int64_t q, int64_t r) {
    constexpr int w = decltype(width)::value;
#pragma unroll
    for (int i = 0; i < w; ++i) {
      if (params.input_bias) u[i] += params.input_bias[n * plan.C + c0 + channel_at(plan, q, r)];
      const float d = u[i] - k;
      s1 += d;
      s2 = fmaf(d, d, s2);
      if constexpr (w > 1) next_pos(plan, q, r);
    }
  };
  GroupWalk w(plan, lead + t * W, nt * W);
#pragma unroll
  for (int i = 0; i < kRuns; ++i, w.advance()) {
    if (t + i * nt < nruns) {
      load_run<W>(xg + w.offset(), v[i]);
      stats_of(RunWidth<W>{}, v[i], w.q, w.r);
    }
  }
  if (has_head) {
    load_run<1>(xg + eh, &vh);
    stats_of(RunWidth<1>{}, &vh, qh, rh);
  }
  if (has_tail) {
    load_run<1>(xg + et, &vt);
    stats_of(RunWidth<1>{}, &vt, qt, rt);
  }
  const double t1 = block_sum(static_cast<double>(s1), scratch);
  const double t2 = block_sum(static_cast<double>(s2), scratch);
  const double m = t1 / static_cast<double>(plan.N);
  const double var = t2 / static_cast<double>(plan.N) - m * m;
  const float mean = static_cast<float>(m + static_cast<double>(k));
  const float rstd = rstd_of(var, eps);
  if (threadIdx.x == 0) {
    mean_out[pid] = mean;
    rstd_out[pid] = rstd;
  }
  for (int64_t c = threadIdx.x; c < plan.Cg; c += blockDim.x) {
    float a, b;
    modulation(params, plan.C, n, g * plan.Cg + c, &a, &b);
    const float A = a * rstd;
    coef[c] = A;
    coef[plan.Cg + c] = b - A * mean;
  }
  __syncthreads();
  // dst[0, w) = act(A * u + Bc); (q, r): the position of u[0]
  const auto write = [&](auto width, T* dst, const float* u, int64_t q, int64_t r) {
    constexpr int w = decltype(width)::value;
    float out[w];
#pragma unroll
    for (int i = 0; i < w; ++i) {
      const int64_t c = channel_at(plan, q, r);
      float z = fmaf(coef[c], u[i], coef[plan.Cg + c]);
      if (silu) z = z * sigmoid(z);
      out[i] = z;
      if constexpr (w > 1) next_pos(plan, q, r);
    }
    store_run<w>(dst, out);
  };
  GroupWalk wy(plan, lead + t * W, nt * W);
#pragma unroll
  for (int i = 0; i < kRuns; ++i, wy.advance()) {
    if (t + i * nt < nruns) write(RunWidth<W>{}, yg + wy.offset(), v[i], wy.q, wy.r);
  }
  if (has_head) write(RunWidth<1>{}, yg + eh, &vh, qh, rh);
  if (has_tail) write(RunWidth<1>{}, yg + et, &vt, qt, rt);
}

// dz and xhat of one element.
__device__ __forceinline__ float grad_z(float dy, float xhat, float a, float b, bool silu) {
  if (!silu) return dy;
  const float z = fmaf(a, xhat, b);
  const float sg = sigmoid(z);
  return dy * sg * (1.f + z * (1.f - sg));
}

// Dynamic shared memory: 4 * Cg floats (a, b, sum dz, sum dz * xhat per channel).
template <typename T, int W>
__global__ void gn_bwd_sums_kernel(const T* __restrict__ dy, const T* __restrict__ x, const float* __restrict__ mean,
                                   const float* __restrict__ rstd, GroupNormPlan plan, GroupNormParamsDev params,
                                   bool silu, float* __restrict__ partial) {
  FASTVDM_DYNAMIC_SMEM(smem);
  float* sh = reinterpret_cast<float*>(smem);
  float* sa = sh;
  float* sb = sh + plan.Cg;
  float* s1 = sh + 2 * plan.Cg;
  float* s2 = sh + 3 * plan.Cg;
  const int64_t pid = blockIdx.x, sp = blockIdx.y;
  const int64_t n = pid / plan.G, g = pid % plan.G;
  for (int64_t c = threadIdx.x; c < plan.Cg; c += blockDim.x) {
    modulation(params, plan.C, n, g * plan.Cg + c, &sa[c], &sb[c]);
    s1[c] = 0.f;
    s2[c] = 0.f;
  }
  __syncthreads();
  const float m = mean[pid], r = rstd[pid];
  const int64_t xoff = group_base(plan, n, g);
  const T* xg = x + xoff;
  const T* dyg = dy + xoff;
  int64_t begin, end, head;
  group_run_range<W>(plan, sp, group_lead<W>(plan, xg), &begin, &end, &head);
  int64_t cur = -1;
  float acc1 = 0.f, acc2 = 0.f;
  for_each_group_run<W>(plan, begin, end, head, threadIdx.x, blockDim.x,
                        [&](auto width, int64_t off, int64_t q, int64_t rr) {
                          constexpr int w = decltype(width)::value;
                          float xv[w], dv[w];
                          load_run<w>(xg + off, xv);
                          load_run<w>(dyg + off, dv);
#pragma unroll
                          for (int i = 0; i < w; ++i) {
                            const int64_t c = channel_at(plan, q, rr);
                            if (c != cur) {
                              if (cur >= 0) {
                                atomicAdd(&s1[cur], acc1);
                                atomicAdd(&s2[cur], acc2);
                              }
                              cur = c;
                              acc1 = acc2 = 0.f;
                            }
                            const float u = xv[i] + input_bias_at(params, plan.C, n, g * plan.Cg + c);
                            const float xhat = (u - m) * r;
                            const float dz = grad_z(dv[i], xhat, sa[c], sb[c], silu);
                            acc1 += dz;
                            acc2 = fmaf(dz, xhat, acc2);
                            if constexpr (w > 1) next_pos(plan, q, rr);
                          }
                        });
  if (cur >= 0) {
    atomicAdd(&s1[cur], acc1);
    atomicAdd(&s2[cur], acc2);
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < plan.Cg; c += blockDim.x) {
    const int64_t row = (n * plan.C + g * plan.Cg + c) * plan.split + sp;
    partial[row * 2] = s1[c];
    partial[row * 2 + 1] = s2[c];
  }
}

// Dynamic shared memory: 2 * Cg floats (a, b per channel).
template <typename T, int W>
__global__ void gn_bwd_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x, const float* __restrict__ mean,
                                 const float* __restrict__ rstd, T* __restrict__ dx, float* __restrict__ sum_dz,
                                 float* __restrict__ sum_dzx, GroupNormPlan plan, GroupNormParamsDev params,
                                 bool silu, const float* __restrict__ partial) {
  FASTVDM_DYNAMIC_SMEM(smem);
  float* sh = reinterpret_cast<float*>(smem);
  __shared__ double scratch[32];
  float* sa = sh;
  float* sb = sh + plan.Cg;
  const int64_t pid = blockIdx.x, sp = blockIdx.y;
  const int64_t n = pid / plan.G, g = pid % plan.G;
  double m1 = 0.0, m2 = 0.0;
  for (int64_t c = threadIdx.x; c < plan.Cg; c += blockDim.x) {
    modulation(params, plan.C, n, g * plan.Cg + c, &sa[c], &sb[c]);
    const int64_t row = (n * plan.C + g * plan.Cg + c) * plan.split;
    float t1 = 0.f, t2 = 0.f;
    for (int64_t j = 0; j < plan.split; ++j) {
      t1 += partial[(row + j) * 2];
      t2 += partial[(row + j) * 2 + 1];
    }
    if (sp == 0) {
      sum_dz[n * plan.C + g * plan.Cg + c] = t1;
      sum_dzx[n * plan.C + g * plan.Cg + c] = t2;
    }
    m1 += static_cast<double>(sa[c]) * t1;
    m2 += static_cast<double>(sa[c]) * t2;
  }
  m1 = block_sum(m1, scratch);  // contains __syncthreads: sa, sb are visible afterwards
  m2 = block_sum(m2, scratch);
  const float fm1 = static_cast<float>(m1 / static_cast<double>(plan.N));
  const float fm2 = static_cast<float>(m2 / static_cast<double>(plan.N));
  const float m = mean[pid], r = rstd[pid];
  const int64_t xoff = group_base(plan, n, g);
  const T* xg = x + xoff;
  const T* dyg = dy + xoff;
  T* dxg = dx + xoff;
  int64_t begin, end, head;
  group_run_range<W>(plan, sp, group_lead<W>(plan, xg), &begin, &end, &head);
  for_each_group_run<W>(plan, begin, end, head, threadIdx.x, blockDim.x,
                        [&](auto width, int64_t off, int64_t q, int64_t rr) {
                          constexpr int w = decltype(width)::value;
                          float xv[w], dv[w];
                          load_run<w>(xg + off, xv);
                          load_run<w>(dyg + off, dv);
#pragma unroll
                          for (int i = 0; i < w; ++i) {
                            const int64_t c = channel_at(plan, q, rr);
                            const float u = xv[i] + input_bias_at(params, plan.C, n, g * plan.Cg + c);
                            const float xhat = (u - m) * r;
                            const float dz = grad_z(dv[i], xhat, sa[c], sb[c], silu);
                            xv[i] = r * (sa[c] * dz - fm1 - xhat * fm2);
                            if constexpr (w > 1) next_pos(plan, q, rr);
                          }
                          store_run<w>(dxg + off, xv);
                        });
}

// The run width of a pass: vectors when the groups are dense (group_is_dense) and every tensor of the pass has
// the same 16-byte phase (they share strides, so one scalar head per group aligns them all), else scalar.
template <typename T>
bool group_vector_runs(const GroupNormPlan& p, std::initializer_list<const void*> ptrs) {
  return group_is_dense(p) && vector_phase_shared<T>(ptrs);
}

}  // namespace

cudaError_t group_norm_forward(DType dtype, const void* x, void* y, float* mean, float* rstd,
                               const GroupNormPlan& plan, const GroupNormParamsDev& params, float eps, bool silu,
                               double* workspace, cudaStream_t stream) {
  const size_t smem = 2 * plan.Cg * sizeof(float);
  if (plan.fused) {
    FASTVDM_DISPATCH_DTYPE(dtype, T, {
      const auto kernel =
          group_vector_runs<T>(plan, {x, y}) ? gn_fused_kernel<T, kVecWidth<T>> : gn_fused_kernel<T, 1>;
      FASTVDM_LAUNCH(kernel, static_cast<unsigned>(plan.groups), kGroupNormFusedThreads, smem, stream,
                     static_cast<const T*>(x), static_cast<T*>(y), mean, rstd, plan, params, eps, silu);
    });
    return cudaGetLastError();
  }
  const dim3 grid(static_cast<unsigned>(plan.groups), static_cast<unsigned>(plan.split));
  FASTVDM_DISPATCH_DTYPE(dtype, T, {
    const bool vec = group_vector_runs<T>(plan, {x, y});
    const auto stats = vec ? gn_stats_kernel<T, kVecWidth<T>> : gn_stats_kernel<T, 1>;
    const auto apply = vec ? gn_apply_kernel<T, kVecWidth<T>> : gn_apply_kernel<T, 1>;
    FASTVDM_LAUNCH(stats, grid, plan.threads, 0, stream, static_cast<const T*>(x), plan, params, workspace);
    FASTVDM_LAUNCH(apply, grid, plan.threads, smem, stream, static_cast<const T*>(x), static_cast<T*>(y), mean, rstd,
                   plan, params, eps, silu, workspace);
  });
  return cudaGetLastError();
}

cudaError_t group_norm_backward(DType dtype, const void* dy, const void* x, const float* mean, const float* rstd,
                                void* dx, float* sum_dz, float* sum_dzx, const GroupNormPlan& plan,
                                const GroupNormParamsDev& params, bool silu, float* workspace, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(plan.groups), static_cast<unsigned>(plan.split));
  FASTVDM_DISPATCH_DTYPE(dtype, T, {
    const bool vec = group_vector_runs<T>(plan, {dy, x, dx});
    const auto sums = vec ? gn_bwd_sums_kernel<T, kVecWidth<T>> : gn_bwd_sums_kernel<T, 1>;
    const auto dxk = vec ? gn_bwd_dx_kernel<T, kVecWidth<T>> : gn_bwd_dx_kernel<T, 1>;
    FASTVDM_LAUNCH(sums, grid, plan.threads, 4 * plan.Cg * sizeof(float), stream, static_cast<const T*>(dy),
                   static_cast<const T*>(x), mean, rstd, plan, params, silu, workspace);
    FASTVDM_LAUNCH(dxk, grid, plan.threads, 2 * plan.Cg * sizeof(float), stream, static_cast<const T*>(dy),
                   static_cast<const T*>(x), mean, rstd, static_cast<T*>(dx), sum_dz, sum_dzx, plan, params, silu,
                   workspace);
  });
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fastvdm
