// Helpers shared by the CUDA bindings (csrc/torch/cuda_*.cpp): dtype mapping, current stream and SM count,
// and the conversion of the kernels' launch-planning errors and CUDA errors into torch errors.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#ifdef FASTVDM_EMULATION
// Test build (tests/test_cuda_bindings_emulated.py): the bindings run on CPU tensors against the emulated kernels
// (csrc/tests/emu), with stand-ins for the c10::cuda stream / guard / error check, registered for the CPU key.
#include "tests/emu/torch_emu.h"
#define FASTVDM_DISPATCH_KEY CPU
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define FASTVDM_DISPATCH_KEY CUDA
#endif

#include <optional>
#include <stdexcept>

#include "cuda/common.h"

namespace fastvdm_binding {

inline fastvdm::cuda::DType to_dtype(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return fastvdm::cuda::DType::kF32;
    case at::kBFloat16:
      return fastvdm::cuda::DType::kBF16;
    case at::kHalf:
      return fastvdm::cuda::DType::kF16;
    default:
      TORCH_CHECK(false, "fastvdm_cuda ", op, ": dtype must be float32, bfloat16 or float16, got ", t.scalar_type());
  }
  return fastvdm::cuda::DType::kF32;  // unreachable
}

inline void check_cuda(const at::Tensor& t, const char* op, const char* name) {
#ifndef FASTVDM_EMULATION
  TORCH_CHECK(t.is_cuda(), "fastvdm_cuda ", op, ": ", name, " must be a CUDA tensor");
#else
  (void)t, (void)op, (void)name;
#endif
}

inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Streaming multiprocessors of the current device (used to size grids).
inline int num_sms() {
#ifdef FASTVDM_EMULATION
  return 132;  // an H100's count, so the emulated plans split like on the GPU
#endif
  int device = 0, count = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

// A (n,) or (B, C) parameter as contiguous fp32 on x's device (empty tensor when absent).
inline at::Tensor as_f32(const std::optional<at::Tensor>& t, at::IntArrayRef shape, const at::Tensor& like,
                         const char* op, const char* name) {
  if (!t.has_value()) return at::Tensor();
  TORCH_CHECK(t->sizes() == shape, "fastvdm_cuda ", op, ": ", name, " must have shape ", shape, ", got ",
              t->sizes());
  TORCH_CHECK(t->device() == like.device(), "fastvdm_cuda ", op, ": ", name, " must be on ", like.device());
  return t->to(at::kFloat).contiguous();
}

inline const float* f32_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// Run a launch planner, turning its std::invalid_argument into a torch error.
template <typename F>
auto plan_or_throw(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, e.what());
  }
  throw std::logic_error("unreachable");
}

}  // namespace fastvdm_binding
