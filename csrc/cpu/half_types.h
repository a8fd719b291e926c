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

// ---- IEEE 754 binary16 (torch.float16), added for the group-norm kernels ----------------------------------
// One fp16 value as raw bits; layout-compatible with at::Half / torch.float16 storage.
struct fp16 {
  uint16_t bits;
};

inline float fp16_to_float(fp16 h) {
  const uint32_t sign = (static_cast<uint32_t>(h.bits) & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1fu;
  const uint32_t man = h.bits & 0x3ffu;
  uint32_t u;
  if (exp == 0x1fu) {
    u = sign | 0x7f800000u | (man << 13);  // inf / NaN
  } else if (exp != 0) {
    u = sign | ((exp + 112u) << 23) | (man << 13);  // normal: rebias 15 -> 127
  } else {
    const float mag = static_cast<float>(man) * 5.9604644775390625e-8f;  // zero / subnormal: man * 2^-24
    return sign ? -mag : mag;
  }
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline fp16 float_to_fp16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return fp16{static_cast<uint16_t>(sign | 0x7e00u)};   // NaN
  if (a >= 0x477ff000u) return fp16{static_cast<uint16_t>(sign | 0x7c00u)};  // rounds to >= 65520: inf
  if (a < 0x38800000u) {  // below 2^-14: subnormal half = round(|f| * 2^24), ties to even
    float mag;
    std::memcpy(&mag, &a, sizeof(mag));
    mag *= 16777216.0f;
    const float r = (mag + 12582912.0f) - 12582912.0f;  // round to nearest even integer (mag < 2^10)
    return fp16{static_cast<uint16_t>(sign | static_cast<uint16_t>(r))};
  }
  uint32_t v = a - (112u << 23);      // rebias 127 -> 15
  v += 0xfffu + ((v >> 13) & 1u);     // round the mantissa to 10 bits, ties to even (carry bumps exponent)
  return fp16{static_cast<uint16_t>(sign | (v >> 13))};
}

inline float to_float(fp16 v) { return fp16_to_float(v); }
template <>
inline fp16 from_float<fp16>(float v) {
  return float_to_fp16(v);
}

}  // namespace fastvdm
