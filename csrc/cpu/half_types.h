// bfloat16 storage type and float conversions for the torch-free CPU kernels (csrc/cpu/*.cpp).
//
// A bf16 value is the upper 16 bits of an IEEE float32. Loading is exact (shift left by 16); storing rounds
// to nearest, ties to even (the rounding torch uses for .to(torch.bfloat16)), and keeps NaN a (quiet) NaN.
// The helpers are plain inline functions on bit patterns, so loops that call them auto-vectorize.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastvdm {

// One bf16 value as raw bits; layout-compatible with at::BFloat16 / torch.bfloat16 storage.
struct bf16 {
  uint16_t bits;
};

inline float bf16_to_float(bf16 h) {
  uint32_t u = static_cast<uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline bf16 float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep the sign, force a quiet-NaN payload
    return bf16{static_cast<uint16_t>((u >> 16) | 0x0040u)};
  }
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return bf16{static_cast<uint16_t>(u >> 16)};
}

// Uniform load/store for templated kernels: T is float or bf16.
inline float to_float(float v) { return v; }
inline float to_float(bf16 v) { return bf16_to_float(v); }

template <typename T>
inline T from_float(float v);
template <>
inline float from_float<float>(float v) {
  return v;
}
template <>
inline bf16 from_float<bf16>(float v) {
  return float_to_bf16(v);
}

}  // namespace fastvdm
