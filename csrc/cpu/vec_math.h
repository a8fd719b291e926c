// Small vectorizable math helpers shared by the CPU kernels (csrc/cpu/*.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

// Leaf functions marked FASTVDM_MULTIVERSION are compiled twice (AVX2+FMA and baseline x86-64); the loader
// picks the clone the CPU supports.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTVDM_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FASTVDM_MULTIVERSION
#endif

namespace fastvdm {

// exp(x) to ~2 ulp vectorizable (SiLU, softmax): range reduction by round(x / ln 2), Cephes expf polynomial,
// 2^n assembled in the exponent bits. Inputs are clamped to [-87.3, 88.3] (outputs stay normal/finite).
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  const float fn = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest integer
  float r = x - fn * 0.693359375f;  // ln 2 split in two for an exact reduction
  r = r + fn * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(fn) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return p * two_n;
}

}  // namespace fastvdm
