// Fused GroupNorm + affine + per-sample modulation + SiLU on the GPU, forward and backward. Torch-free: raw
// device pointers, sizes, strides (elements) and a cudaStream_t. Same math as csrc/cpu/group_norm.h:
//
// x[n, c, s] of shape (B, C, S) (see group_norm_launch.h for the addressing; y, dy, dx share x's strides).
// Per (n, c): a = w[c] * (1 + scale[n, c]), b = bias[c] * (1 + scale[n, c]) + shift[n, c] (missing weight = 1,
// missing bias/scale/shift = 0);  u = x + input_bias[n, c] (missing = 0),  xhat = (u - mean[n, g]) * rstd[n, g],
// z = a * xhat + b,  y = silu(z) or z.
// Statistics of u: fp32 partial sums of u - k (k = the group's first element, so a large mean does not cancel)
// combined in double; biased variance; mean, rstd (B, G) fp32.
// Backward, dz = dy * act'(z), N = Cg * S:
//   sum_dz[n, c] = sum_s dz,  sum_dzx[n, c] = sum_s dz * xhat                       (outputs, (B, C) fp32)
//   dx = rstd * (a * dz - m1 - xhat * m2),  m1 = sum_{c in g} a * sum_dz / N,  m2 = sum_{c in g} a * sum_dzx / N;
// the parameter gradients follow from the (B, C) sums (done by the caller, O(B * C); d input_bias = sum_s dx).
#pragma once

#include <cuda_runtime_api.h>

#include "cuda/common.h"
#include "cuda/group_norm_launch.h"

namespace fastvdm {
namespace cuda {

// fp32 device parameters, each contiguous, or nullptr: weight, bias (C,); scale, shift, input_bias (B, C).
struct GroupNormParamsDev {
  const float* weight;
  const float* bias;
  const float* scale;
  const float* shift;
  const float* input_bias = nullptr;  // added to x before the statistics: GroupNorm(x + input_bias)
};

// Workspace (device, doubles) the forward needs for `plan`: 2 * groups * split.
inline int64_t group_norm_forward_workspace(const GroupNormPlan& p) { return 2 * p.groups * p.split; }
// Workspace (device, floats) the backward needs: 2 * B * C * split.
inline int64_t group_norm_backward_workspace(const GroupNormPlan& p) { return 2 * p.B * p.C * p.split; }

cudaError_t group_norm_forward(DType dtype, const void* x, void* y, float* mean, float* rstd,
                               const GroupNormPlan& plan, const GroupNormParamsDev& params, float eps, bool silu,
                               double* workspace, cudaStream_t stream);

cudaError_t group_norm_backward(DType dtype, const void* dy, const void* x, const float* mean, const float* rstd,
                                void* dx, float* sum_dz, float* sum_dzx, const GroupNormPlan& plan,
                                const GroupNormParamsDev& params, bool silu, float* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastvdm
