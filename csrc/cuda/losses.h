// Distillation losses on the GPU, torch-free: raw device pointers, sizes and a cudaStream_t.
//
// Big tensors are contiguous (B, N) arrays of `dtype` (fp32, bf16 or fp16); per-sample vectors (alpha, sigma,
// weight, norm) are (B,) fp32 device arrays; weight may be null (= 1). `grad` is a device pointer to the fp32
// incoming gradient of the scalar loss (read on the device: no host synchronization). Arithmetic is fp32;
// per-block partial sums are double and the finishing reduction runs in a fixed order (deterministic).
//
//   denoising loss  L = sum_b weight_b * S_b / (B * N),    S_b = sum_i (pred - target)^2,
//                   target = noise (0, "eps"), x0 (1, "x0") or alpha_b * noise - sigma_b * x0 (2, "v");
//                   dL/dpred = coef_b * (pred - target),  coef_b = (2 * grad / (B * N)) * weight_b.
//   DMD surrogate   norm_b = max(A_b / N, norm_eps),       A_b = sum_i |x - x0_real|,
//                   L = 0.5 * sum_b weight_b^2 * Q_b / norm_b^2 / (B * N),   Q_b = sum_i (x0_fake - x0_real)^2;
//                   dL/dx = (((x0_fake - x0_real) / norm_b) * weight_b) * (grad / (B * N)).
#pragma once

#include <cuda_runtime_api.h>

#include "cuda/common.h"
#include "cuda/losses_launch.h"

namespace fastvdm {
namespace cuda {

// `partial`: device workspace of 2 * plan.grid doubles. loss: device fp32 scalar (output).
cudaError_t denoising_loss_forward(DType dtype, const void* pred, const void* x0, const void* noise,
                                   const float* alpha, const float* sigma, const float* weight, int target,
                                   const LossReducePlan& plan, double* partial, float* loss, cudaStream_t stream);

// dpred: (B, N) of dtype (output).
cudaError_t denoising_loss_backward(DType dtype, const float* grad, const void* pred, const void* x0,
                                    const void* noise, const float* alpha, const float* sigma, const float* weight,
                                    int target, int64_t B, int64_t N, void* dpred, int num_sms, cudaStream_t stream);

// `partial`: device workspace of 2 * plan.grid doubles. loss: device fp32 scalar; norm: (B,) fp32 (outputs).
cudaError_t dmd_loss_forward(DType dtype, const void* x, const void* x0_real, const void* x0_fake,
                             const float* weight, float norm_eps, const LossReducePlan& plan, double* partial,
                             float* loss, float* norm, cudaStream_t stream);

// dx: (B, N) of dtype (output).
cudaError_t dmd_loss_backward(DType dtype, const float* grad, const void* x0_real, const void* x0_fake,
                              const float* norm, const float* weight, int64_t B, int64_t N, void* dx, int num_sms,
                              cudaStream_t stream);

}  // namespace cuda
}  // namespace fastvdm
