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

template <typename T>
__global__ void gn_stats_kernel(const T* __restrict__ x, GroupNormPlan plan, GroupNormParamsDev params,
                                double* __restrict__ partial) {
  __shared__ double scratch[32];
  const int64_t pid = blockIdx.x, sp = blockIdx.y;
  const int64_t n = pid / plan.G, g = pid % plan.G;
  const T* xg = x + group_base(plan, n, g);
  const int64_t c0 = g * plan.Cg;
  const float k = to_f32(xg[0]) + input_bias_at(params, plan.C, n, c0);
  int64_t begin, end;
  group_chunk_range(plan, sp, &begin, &end);
  float s1 = 0.f, s2 = 0.f;
  GroupWalk w(plan, begin + threadIdx.x, blockDim.x);
  for (int64_t e = begin + threadIdx.x; e < end; e += blockDim.x, w.advance()) {
    const float ib = params.input_bias ? input_bias_at(params, plan.C, n, c0 + w.channel()) : 0.f;
    const float v = to_f32(xg[w.offset()]) + ib - k;
    s1 += v;
    s2 = fmaf(v, v, s2);
  }
  const double t1 = block_sum(static_cast<double>(s1), scratch);
  const double t2 = block_sum(static_cast<double>(s2), scratch);
  if (threadIdx.x == 0) {
    partial[(pid * plan.split + sp) * 2] = t1;
    partial[(pid * plan.split + sp) * 2 + 1] = t2;
  }
}

// Dynamic shared memory: 2 * Cg floats (A, Bc per channel of the group).
template <typename T>
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
  int64_t begin, end;
  group_chunk_range(plan, sp, &begin, &end);
  const T* xg = x + xoff;
  T* yg = y + xoff;
  GroupWalk w(plan, begin + threadIdx.x, blockDim.x);
  for (int64_t e = begin + threadIdx.x; e < end; e += blockDim.x, w.advance()) {
    const int64_t off = w.offset();
    const int64_t c = w.channel();
    float z = fmaf(coef[c], to_f32(xg[off]), coef[plan.Cg + c]);
    if (silu) z = z * sigmoid(z);
    yg[off] = from_f32<T>(z);
  }
}

// One block per group (grid.x = B * G, kGroupNormFusedThreads threads); dynamic shared memory: 2 * Cg floats.
template <typename T>
__global__ void __launch_bounds__(kGroupNormFusedThreads)
    gn_fused_kernel(const T* __restrict__ x, T* __restrict__ y, float* __restrict__ mean_out,
                    float* __restrict__ rstd_out, GroupNormPlan plan, GroupNormParamsDev params, float eps, bool silu) {
  FASTVDM_DYNAMIC_SMEM(smem);
  float* coef = reinterpret_cast<float*>(smem);  // [0, Cg): A, [Cg, 2 Cg): Bc
  __shared__ double scratch[32];
  const int64_t pid = blockIdx.x;
  const int64_t n = pid / plan.G, g = pid % plan.G;
  const int64_t xoff = group_base(plan, n, g);
  const T* xg = x + xoff;
  T* yg = y + xoff;
  const int64_t c0 = g * plan.Cg;
  const float k = to_f32(xg[0]) + input_bias_at(params, plan.C, n, c0);
  float v[kGroupNormFusedItems];  // u = x + input_bias
  float s1 = 0.f, s2 = 0.f;
  GroupWalk w(plan, threadIdx.x, blockDim.x);
#pragma unroll
  for (int i = 0; i < kGroupNormFusedItems; ++i, w.advance()) {
    const int64_t e = threadIdx.x + static_cast<int64_t>(i) * blockDim.x;
    v[i] = e < plan.N ? to_f32(xg[w.offset()]) : 0.f;
    if (params.input_bias && e < plan.N) v[i] += params.input_bias[n * plan.C + c0 + w.channel()];
    const float d = e < plan.N ? v[i] - k : 0.f;
    s1 += d;
    s2 = fmaf(d, d, s2);
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
  GroupWalk wy(plan, threadIdx.x, blockDim.x);
#pragma unroll
  for (int i = 0; i < kGroupNormFusedItems; ++i, wy.advance()) {
    const int64_t e = threadIdx.x + static_cast<int64_t>(i) * blockDim.x;
    if (e < plan.N) {
      const int64_t c = wy.channel();
      float z = fmaf(coef[c], v[i], coef[plan.Cg + c]);
      if (silu) z = z * sigmoid(z);
      yg[wy.offset()] = from_f32<T>(z);
    }
  }
}

// dz and xhat of one element.
__device__ __forceinline__ float grad_z(float dy, float xhat, float a, float b, bool silu) {
  if (!silu) return dy;
  const float z = fmaf(a, xhat, b);
  const float sg = sigmoid(z);
  return dy * sg * (1.f + z * (1.f - sg));
}

// Dynamic shared memory: 4 * Cg floats (a, b, sum dz, sum dz * xhat per channel).
template <typename T>
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
  int64_t begin, end;
  group_chunk_range(plan, sp, &begin, &end);
  int64_t cur = -1;
  float acc1 = 0.f, acc2 = 0.f;
  GroupWalk w(plan, begin + threadIdx.x, blockDim.x);
  for (int64_t e = begin + threadIdx.x; e < end; e += blockDim.x, w.advance()) {
    const int64_t off = w.offset();
    const int64_t c = w.channel();
    if (c != cur) {
      if (cur >= 0) {
        atomicAdd(&s1[cur], acc1);
        atomicAdd(&s2[cur], acc2);
      }
      cur = c;
      acc1 = acc2 = 0.f;
    }
    const float u = to_f32(xg[off]) + input_bias_at(params, plan.C, n, g * plan.Cg + c);
    const float xhat = (u - m) * r;
    const float dz = grad_z(to_f32(dyg[off]), xhat, sa[c], sb[c], silu);
    acc1 += dz;
    acc2 = fmaf(dz, xhat, acc2);
  }
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
template <typename T>
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
  int64_t begin, end;
  group_chunk_range(plan, sp, &begin, &end);
  GroupWalk w(plan, begin + threadIdx.x, blockDim.x);
  for (int64_t e = begin + threadIdx.x; e < end; e += blockDim.x, w.advance()) {
    const int64_t off = w.offset();
    const int64_t c = w.channel();
    const float u = to_f32(xg[off]) + input_bias_at(params, plan.C, n, g * plan.Cg + c);
    const float xhat = (u - m) * r;
    const float dz = grad_z(to_f32(dyg[off]), xhat, sa[c], sb[c], silu);
    dxg[off] = from_f32<T>(r * (sa[c] * dz - fm1 - xhat * fm2));
  }
}

}  // namespace

cudaError_t group_norm_forward(DType dtype, const void* x, void* y, float* mean, float* rstd,
                               const GroupNormPlan& plan, const GroupNormParamsDev& params, float eps, bool silu,
                               double* workspace, cudaStream_t stream) {
  const size_t smem = 2 * plan.Cg * sizeof(float);
  if (plan.fused) {
    FASTVDM_DISPATCH_DTYPE(dtype, T, {
      FASTVDM_LAUNCH(gn_fused_kernel<T>, static_cast<unsigned>(plan.groups), kGroupNormFusedThreads, smem, stream,
                     static_cast<const T*>(x), static_cast<T*>(y), mean, rstd, plan, params, eps, silu);
    });
    return cudaGetLastError();
  }
  const dim3 grid(static_cast<unsigned>(plan.groups), static_cast<unsigned>(plan.split));
  FASTVDM_DISPATCH_DTYPE(dtype, T, {
    FASTVDM_LAUNCH(gn_stats_kernel<T>, grid, plan.threads, 0, stream, static_cast<const T*>(x), plan, params,
                   workspace);
    FASTVDM_LAUNCH(gn_apply_kernel<T>, grid, plan.threads, smem, stream, static_cast<const T*>(x),
                   static_cast<T*>(y), mean, rstd, plan, params, eps, silu, workspace);
  });
  return cudaGetLastError();
}

cudaError_t group_norm_backward(DType dtype, const void* dy, const void* x, const float* mean, const float* rstd,
                                void* dx, float* sum_dz, float* sum_dzx, const GroupNormPlan& plan,
                                const GroupNormParamsDev& params, bool silu, float* workspace, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(plan.groups), static_cast<unsigned>(plan.split));
  FASTVDM_DISPATCH_DTYPE(dtype, T, {
    FASTVDM_LAUNCH(gn_bwd_sums_kernel<T>, grid, plan.threads, 4 * plan.Cg * sizeof(float), stream,
                   static_cast<const T*>(dy), static_cast<const T*>(x), mean, rstd, plan, params, silu, workspace);
    FASTVDM_LAUNCH(gn_bwd_dx_kernel<T>, grid, plan.threads, 2 * plan.Cg * sizeof(float), stream,
                   static_cast<const T*>(dy), static_cast<const T*>(x), mean, rstd, static_cast<T*>(dx), sum_dz,
                   sum_dzx, plan, params, silu, workspace);
  });
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fastvdm
