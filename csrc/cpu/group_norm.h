// Fused GroupNorm + affine + per-sample modulation + SiLU on the CPU (OpenMP), forward and backward.
// Torch-free: raw pointers, sizes and strides in elements.
//
// The input is seen as x[n, c, s] of shape (B, C, S), S = prod of the spatial dims, with strides
// (stride_b, stride_c, stride_s); y, dy and dx share x's strides. G groups of Cg = C / G channels each.
// Per (n, c), with a(n, c) = w[c] * (1 + scale[n, c]) and b(n, c) = bias[c] * (1 + scale[n, c]) + shift[n, c]
// (a missing weight is 1, a missing bias/scale/shift is 0):
//     u = x + input_bias[n, c],  xhat = (u - mean[n, g]) * rstd[n, g],  z = a * xhat + b,  y = silu(z) or z.
// Statistics of u (biased variance, fp32 results, double-precision accumulation of shifted sums) are per
// (n, group) over Cg * S elements; mean and rstd, (B, G) fp32, are outputs of the forward and inputs of the
// backward.
//
// Backward, with dz = dy * act'(z) and N = Cg * S:
//     sum_dz[n, c] = sum_s dz,   sum_dzx[n, c] = sum_s dz * xhat                      (outputs, (B, C) fp32)
//     dx = rstd * (a * dz - m1 - xhat * m2),  m1 = sum_{c in g} a * sum_dz / N,  m2 = sum_{c in g} a * sum_dzx / N
// and the parameter gradients follow from the (B, C) sums alone (done by the caller; d input_bias = sum_s dx):
//     dshift = sum_dz, dscale = w * sum_dzx + bias * sum_dz,
//     dweight = sum_n (1 + scale) * sum_dzx, dbias = sum_n (1 + scale) * sum_dz.
//
// Two memory paths: "rows" (any strides; vectorized when stride_s == 1: contiguous NC* input) walks each
// (n, c) row over s; "channels-last" (stride_c == 1, e.g. channels_last_3d) walks each (n, s) row over the C
// contiguous channels, so both layouts are read at unit stride. With enough (n, g) groups for the threads,
// the rows path runs group by group (sums, statistics, then the elementwise pass while the group is still
// in cache); otherwise, and on the channels-last path, each pass covers the whole tensor. All reductions run
// in a fixed order: results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "cpu/half_types.h"

namespace fastvdm {

struct GroupNormGeometry {
  int64_t B, C, S, G;
  int64_t stride_b, stride_c, stride_s;  // of x (and of y, dy, dx), in elements
};

// fp32 parameters, each contiguous, or nullptr when absent: weight, bias (C,); scale, shift, input_bias (B, C).
struct GroupNormParams {
  const float* weight;
  const float* bias;
  const float* scale;
  const float* shift;
  const float* input_bias = nullptr;  // added to x before the statistics: GroupNorm(x + input_bias)
};

// T is float, bf16 or fp16. mean, rstd: (B, G) fp32 outputs.
template <typename T>
void group_norm_forward(const T* x, T* y, float* mean, float* rstd, const GroupNormGeometry& geo,
                        const GroupNormParams& params, float eps, bool silu);

// dy, x: inputs with x's strides; mean, rstd from the forward. dx: output with x's strides;
// sum_dz, sum_dzx: (B, C) fp32 outputs.
template <typename T>
void group_norm_backward(const T* dy, const T* x, const float* mean, const float* rstd, T* dx, float* sum_dz,
                         float* sum_dzx, const GroupNormGeometry& geo, const GroupNormParams& params, bool silu);

}  // namespace fastvdm
