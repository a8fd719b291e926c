// Fused distillation losses on the CPU: see losses.h for the math and the memory contract, and
// losses_kernels.inc for the kernels.
//
// Instruction sets: the build uses the compiler's baseline ISA (SSE2 on x86-64, no -march flag), which has no
// efficient bf16 <-> float packing. On x86-64 GCC the kernels are therefore compiled a second time with
// `#pragma GCC target("avx2")` and chosen at run time with __builtin_cpu_supports("avx2") (about 2x faster for
// bf16 here). FMA is not enabled, so both builds round identically.
#include "cpu/losses.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

// Build with -DFASTVDM_LOSSES_NO_AVX2 to compile the baseline kernels only.
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__)) && \
    !defined(FASTVDM_LOSSES_NO_AVX2)
#define FASTVDM_LOSSES_AVX2 1
#endif

namespace fastvdm {
namespace cpu {
namespace {

namespace baseline {
#include "cpu/losses_kernels.inc"
}  // namespace baseline

#ifdef FASTVDM_LOSSES_AVX2
#pragma GCC push_options
#pragma GCC target("avx2")
namespace avx2 {
#include "cpu/losses_kernels.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

bool use_avx2() {
#ifdef FASTVDM_LOSSES_AVX2
  static const bool supported = __builtin_cpu_supports("avx2");
  return supported;
#else
  return false;
#endif
}

#ifndef FASTVDM_LOSSES_AVX2
namespace avx2 = baseline;  // never taken: use_avx2() is false
#endif

}  // namespace

void denoising_loss_forward(const float* pred, const float* x0, const float* noise, const float* alpha,
                            const float* sigma, int64_t B, int64_t N, DenoisingTarget target, double* sq_sum,
                            float* residual) {
  if (use_avx2()) return avx2::denoising_forward(pred, x0, noise, alpha, sigma, B, N, target, sq_sum, residual);
  baseline::denoising_forward(pred, x0, noise, alpha, sigma, B, N, target, sq_sum, residual);
}
void denoising_loss_forward(const bf16* pred, const bf16* x0, const bf16* noise, const float* alpha,
                            const float* sigma, int64_t B, int64_t N, DenoisingTarget target, double* sq_sum) {
  if (use_avx2()) return avx2::denoising_forward(pred, x0, noise, alpha, sigma, B, N, target, sq_sum, nullptr);
  baseline::denoising_forward(pred, x0, noise, alpha, sigma, B, N, target, sq_sum, nullptr);
}

void denoising_loss_backward(const float* pred, const float* x0, const float* noise, const float* alpha,
                             const float* sigma, const float* coef, int64_t B, int64_t N, DenoisingTarget target,
                             float* dpred) {
  if (use_avx2()) return avx2::denoising_backward(pred, x0, noise, alpha, sigma, coef, B, N, target, dpred);
  baseline::denoising_backward(pred, x0, noise, alpha, sigma, coef, B, N, target, dpred);
}
void denoising_loss_backward(const bf16* pred, const bf16* x0, const bf16* noise, const float* alpha,
                             const float* sigma, const float* coef, int64_t B, int64_t N, DenoisingTarget target,
                             bf16* dpred) {
  if (use_avx2()) return avx2::denoising_backward(pred, x0, noise, alpha, sigma, coef, B, N, target, dpred);
  baseline::denoising_backward(pred, x0, noise, alpha, sigma, coef, B, N, target, dpred);
}

void dmd_loss_forward(const float* x, const float* x0_real, const float* x0_fake, int64_t B, int64_t N,
                      double* abs_sum, double* sq_sum) {
  if (use_avx2()) return avx2::dmd_forward(x, x0_real, x0_fake, B, N, abs_sum, sq_sum);
  baseline::dmd_forward(x, x0_real, x0_fake, B, N, abs_sum, sq_sum);
}
void dmd_loss_forward(const bf16* x, const bf16* x0_real, const bf16* x0_fake, int64_t B, int64_t N,
                      double* abs_sum, double* sq_sum) {
  if (use_avx2()) return avx2::dmd_forward(x, x0_real, x0_fake, B, N, abs_sum, sq_sum);
  baseline::dmd_forward(x, x0_real, x0_fake, B, N, abs_sum, sq_sum);
}

void dmd_loss_backward(const float* x0_real, const float* x0_fake, const float* norm, const float* weight,
                       float scale, int64_t B, int64_t N, float* dx) {
  if (use_avx2()) return avx2::dmd_backward(x0_real, x0_fake, norm, weight, scale, B, N, dx);
  baseline::dmd_backward(x0_real, x0_fake, norm, weight, scale, B, N, dx);
}
void dmd_loss_backward(const bf16* x0_real, const bf16* x0_fake, const float* norm, const float* weight,
                       float scale, int64_t B, int64_t N, bf16* dx) {
  if (use_avx2()) return avx2::dmd_backward(x0_real, x0_fake, norm, weight, scale, B, N, dx);
  baseline::dmd_backward(x0_real, x0_fake, norm, weight, scale, B, N, dx);
}

}  // namespace cpu
}  // namespace fastvdm
