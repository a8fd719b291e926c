// Stand-ins for the c10::cuda pieces the CUDA bindings use (csrc/torch/cuda_binding.h), for the emulated test
// build: no device guard, the null stream, and cudaError_t checks turned into torch errors.
#pragma once

#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

namespace c10 {
namespace cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
struct EmulatedStream {
  cudaStream_t stream() const { return nullptr; }
};
inline EmulatedStream getCurrentCUDAStream() { return {}; }
}  // namespace cuda
}  // namespace c10

#define C10_CUDA_CHECK(expr)                                                      \
  do {                                                                            \
    const cudaError_t fastvdm_err_ = (expr);                                      \
    TORCH_CHECK(fastvdm_err_ == cudaSuccess, "emulated CUDA error ", static_cast<int>(fastvdm_err_)); \
  } while (0)
