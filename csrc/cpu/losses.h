// Fused distillation losses on the CPU (OpenMP), torch-free: raw pointers and sizes.
//
// Every tensor is a contiguous (B, N) array: B samples of N elements each (N = numel / B). Element types are
// float or bf16 (half_types.h); arithmetic is float32, every reduction accumulates in float32 registers over
// a fixed chunk of elements and the chunk sums in double, in a fixed order, so results do not depend on the
// number of threads. Per-sample vectors (alpha, sigma, weight, norm) are float32; weight may be null (= 1).
//
// Each loss is one reduction pass (forward: per-sample sums) plus one elementwise pass (backward: writes the
// gradient directly). No full-size temporary is allocated (except the optional float32 residual of the
// denoising forward, see below); the forward's only scratch is B * ceil(N / chunk) doubles.
//
//   denoising loss  L = sum_b weight_b * S_b / (B * N),    S_b = sum_i (pred - target)^2
//                   target = noise ("eps"), x0 ("x0") or alpha_b * noise - sigma_b * x0 ("v")
//                   dL/dpred = coef_b * (pred - target),    coef_b = 2 * weight_b * grad / (B * N)  (host)
//   DMD surrogate   norm_b = max(A_b / N, eps),             A_b = sum_i |x - x0_real|
//                   g = weight_b * (x0_fake - x0_real) / norm_b
//                   L = 0.5 * sum_b weight_b^2 * Q_b / norm_b^2 / (B * N),   Q_b = sum_i (x0_fake - x0_real)^2
//                   dL/dx = g * scale,                       scale = grad / (B * N)                   (host)
#pragma once

#include <cstdint>

#include "cpu/half_types.h"

namespace fastvdm {
namespace cpu {

// Regression target of the denoising loss.
enum class DenoisingTarget : int { kEps = 0, kX0 = 1, kV = 2 };

// sq_sum[b] = sum_i (pred - target)^2 over sample b.  alpha, sigma: B floats (read only for kV).
// float32: when residual is not null, also residual[i] = pred - target (B * N floats; the eager training path
// keeps it for the backward, which then scales it in place instead of reading the three inputs again).
void denoising_loss_forward(const float* pred, const float* x0, const float* noise, const float* alpha,
                            const float* sigma, int64_t B, int64_t N, DenoisingTarget target, double* sq_sum,
                            float* residual = nullptr);
void denoising_loss_forward(const bf16* pred, const bf16* x0, const bf16* noise, const float* alpha,
                            const float* sigma, int64_t B, int64_t N, DenoisingTarget target, double* sq_sum);

// dpred = coef[b] * (pred - target), rounded once to the element type.
void denoising_loss_backward(const float* pred, const float* x0, const float* noise, const float* alpha,
                             const float* sigma, const float* coef, int64_t B, int64_t N, DenoisingTarget target,
                             float* dpred);
void denoising_loss_backward(const bf16* pred, const bf16* x0, const bf16* noise, const float* alpha,
                             const float* sigma, const float* coef, int64_t B, int64_t N, DenoisingTarget target,
                             bf16* dpred);

// abs_sum[b] = sum_i |x - x0_real|, sq_sum[b] = sum_i (x0_fake - x0_real)^2, in one pass over the three inputs.
void dmd_loss_forward(const float* x, const float* x0_real, const float* x0_fake, int64_t B, int64_t N,
                      double* abs_sum, double* sq_sum);
void dmd_loss_forward(const bf16* x, const bf16* x0_real, const bf16* x0_fake, int64_t B, int64_t N,
                      double* abs_sum, double* sq_sum);

// dx = (((x0_fake - x0_real) / norm[b]) * weight[b]) * scale, each step rounded in float32 in this order (the
// order of the reference's g / numel * grad), then once to the element type. weight may be null.
void dmd_loss_backward(const float* x0_real, const float* x0_fake, const float* norm, const float* weight,
                       float scale, int64_t B, int64_t N, float* dx);
void dmd_loss_backward(const bf16* x0_real, const bf16* x0_fake, const float* norm, const float* weight,
                       float scale, int64_t B, int64_t N, bf16* dx);

}  // namespace cpu
}  // namespace fastvdm
