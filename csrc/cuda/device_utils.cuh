// Device helpers shared by the .cu kernels: element loads/stores in fp32 arithmetic, warp/block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "cuda/common.h"

// Kernel launch and dynamic shared memory through macros, so that the kernels can also be compiled as plain C++
// and run by the CPU emulator of the tests (csrc/tests/emu/cuda_emu.h defines both before including this file).
#ifndef FASTVDM_LAUNCH
#define FASTVDM_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif
#ifndef FASTVDM_DYNAMIC_SMEM
#define FASTVDM_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif
// Hook on every 16-byte vector access (the emulator checks the alignment and counts the accesses).
#ifndef FASTVDM_VEC_ACCESS
#define FASTVDM_VEC_ACCESS(ptr) ((void)0)
#endif

namespace fastvdm {
namespace cuda {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }

// ------------------------------------------------------------------------------- 16-byte vector accesses
// A run of W consecutive elements moved as one 16-byte access (ld/st.global.v4: 8 bf16 / fp16 or 4 fp32) when
// W = kVecWidth<T>, as W scalar accesses when W = 1 (the fallback for misaligned pointers, odd sizes or strides).
// The vector form needs a 16-byte aligned address; callers check that on the host (vec_aligned).
template <typename T>
constexpr int kVecWidth = static_cast<int>(16 / sizeof(T));

// The run width as a type, for generic lambdas: f(RunWidth<W>{}) sees W as decltype(width)::value.
template <int W>
using RunWidth = std::integral_constant<int, W>;

// f(RunWidth<kVecWidth<T>>{}) when `vec`, else f(RunWidth<1>{}).
template <typename T, typename F>
__device__ __forceinline__ void with_run_width(bool vec, F&& f) {
  if (vec) {
    f(RunWidth<kVecWidth<T>>{});
  } else {
    f(RunWidth<1>{});
  }
}

FASTVDM_HD bool vec_aligned(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Elements of the address p (of T) that precede the next 16-byte boundary (0 when aligned).
template <typename T>
FASTVDM_HD int64_t vec_misalignment(const T* p) {
  return static_cast<int64_t>(((16u - (reinterpret_cast<uintptr_t>(p) & 15u)) & 15u) / sizeof(T));
}

// v[0, W) = p[0, W) as fp32.
template <int W, typename T>
__device__ __forceinline__ void load_run(const T* __restrict__ p, float* v) {
  if constexpr (W == 1) {
    v[0] = to_f32(*p);
  } else {
    static_assert(W * sizeof(T) == 16, "a vector run is 16 bytes");
    FASTVDM_VEC_ACCESS(p);
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    T e[W];
    memcpy(static_cast<void*>(e), &raw, 16);  // the 16 bytes as W elements
#pragma unroll
    for (int k = 0; k < W; ++k) v[k] = to_f32(e[k]);
  }
}

// p[0, W) = v[0, W) rounded to T.
template <int W, typename T>
__device__ __forceinline__ void store_run(T* __restrict__ p, const float* v) {
  if constexpr (W == 1) {
    *p = from_f32<T>(v[0]);
  } else {
    static_assert(W * sizeof(T) == 16, "a vector run is 16 bytes");
    FASTVDM_VEC_ACCESS(p);
    T e[W];
#pragma unroll
    for (int k = 0; k < W; ++k) e[k] = from_f32<T>(v[k]);
    uint4 raw;
    memcpy(&raw, e, 16);
    *reinterpret_cast<uint4*>(p) = raw;
  }
}

// dst[0, W) = src[0, W) unchanged (zeros when src is null).
template <int W, typename T>
__device__ __forceinline__ void copy_run(T* __restrict__ dst, const T* __restrict__ src) {
  if constexpr (W == 1) {
    *dst = src ? *src : from_f32<T>(0.f);
  } else {
    static_assert(W * sizeof(T) == 16, "a vector run is 16 bytes");
    FASTVDM_VEC_ACCESS(dst);
    uint4 raw = make_uint4(0u, 0u, 0u, 0u);
    if (src) {
      FASTVDM_VEC_ACCESS(src);
      raw = *reinterpret_cast<const uint4*>(src);
    }
    *reinterpret_cast<uint4*>(dst) = raw;
  }
}

// Calls f(RunWidth<w>{}, i) for the runs of [0, len) that thread t of nt (nt >= W) owns: with W > 1, the
// `head` elements before the first 16-byte boundary one by one, then whole runs of W from i = head, then the
// scalar tail; with W = 1, every element. No division: W is a power of two.
template <int W, typename F>
__device__ __forceinline__ void for_each_run(int64_t len, int64_t head, int64_t t, int64_t nt, F&& f) {
  head = W > 1 ? min64(head, len) : 0;
  const int64_t nvec = (len - head) / W;
  const int64_t tail = head + nvec * W;
  if (W > 1 && t < head) f(RunWidth<1>{}, t);
  for (int64_t v = t; v < nvec; v += nt) f(RunWidth<W>{}, head + v * W);
  if (W > 1 && t < len - tail) f(RunWidth<1>{}, tail + t);
}

// The run width of a pass over `ptrs` (the big tensors of one call): the vector width when every pointer sits at
// the same offset from a 16-byte boundary (one scalar head then aligns them all), else 1.
template <typename T>
inline bool vector_phase_shared(std::initializer_list<const void*> ptrs) {
  const uintptr_t phase = reinterpret_cast<uintptr_t>(*ptrs.begin()) & 15u;
  if (phase % sizeof(T) != 0) return false;
  for (const void* p : ptrs)
    if ((reinterpret_cast<uintptr_t>(p) & 15u) != phase) return false;
  return true;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024), in double, valid in every thread.
// `scratch` holds 32 doubles of shared memory. Contains __syncthreads: call from all threads.
__device__ __forceinline__ double block_sum(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < nwarps; ++w) total += scratch[w];  // fixed order: deterministic
  return total;
}

// Dispatch a DType to a C++ element type: `DISPATCH(dtype, T, body)` runs body with T bound.
#define FASTVDM_DISPATCH_DTYPE(dtype, T, ...)         \
  switch (dtype) {                                    \
    case ::fastvdm::cuda::DType::kF32: {              \
      using T = float;                                \
      __VA_ARGS__;                                    \
    } break;                                          \
    case ::fastvdm::cuda::DType::kBF16: {             \
      using T = __nv_bfloat16;                        \
      __VA_ARGS__;                                    \
    } break;                                          \
    default: {                                        \
      using T = __half;                               \
      __VA_ARGS__;                                    \
    }                                                 \
  }

}  // namespace cuda
}  // namespace fastvdm
