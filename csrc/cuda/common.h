// Shared definitions of the torch-free CUDA kernels (csrc/cuda/*.cu) and their launch-configuration headers
// (csrc/cuda/*_launch.h). Plain C++: the *_launch.h headers, and this file, compile without nvcc so the host-side
// tests (csrc/tests) can check the launch logic on a machine without a GPU.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define FASTVDM_HD __host__ __device__ __forceinline__
#else
#define FASTVDM_HD inline
#endif

namespace fastvdm {
namespace cuda {

// Element type of the big tensors. Pointers cross the torch-free API as void*; the .cu files cast them to
// float / __nv_bfloat16 / __half.
enum class DType : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

// Limits of a CUDA launch (compute capability 8.0 and 9.0).
constexpr int64_t kMaxGridX = 2147483647;  // 2^31 - 1
constexpr int64_t kMaxGridYZ = 65535;

FASTVDM_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
FASTVDM_HD int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
FASTVDM_HD int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
FASTVDM_HD int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Thrown by the launch planners for inputs a kernel cannot serve (the bindings turn it into a torch error).
inline void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("fastvdm cuda: " + what);
}

}  // namespace cuda
}  // namespace fastvdm
