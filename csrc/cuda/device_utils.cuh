// Device helpers shared by the .cu kernels: element loads/stores in fp32 arithmetic, warp/block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/common.h"

// Kernel launch and dynamic shared memory through macros, so that the kernels can also be compiled as plain C++
// and run by the CPU emulator of the tests (csrc/tests/emu/cuda_emu.h defines both before including this file).
#ifndef FASTVDM_LAUNCH
#define FASTVDM_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif
#ifndef FASTVDM_DYNAMIC_SMEM
#define FASTVDM_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
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
