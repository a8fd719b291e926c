// A small CPU emulator of the CUDA execution model, for testing the kernels of csrc/cuda/*.cu without a GPU.
//
// The .cu files are compiled as plain C++ (g++ -x c++ -std=c++20 -include cuda_emu.h) and their host launch
// functions run unchanged: FASTVDM_LAUNCH runs the grid's blocks one after another, each block as blockDim.x
// std::threads (one per CUDA thread), with real barriers for __syncthreads / __syncwarp, warp shuffles through a
// per-warp exchange buffer, and a mutex for atomicAdd. `__shared__` variables become function-static (shared by
// the threads of the one running block); dynamic shared memory is a per-block buffer filled with 0xFF bytes (NaN
// as floats) so reads of uninitialized shared memory show up. "Device" pointers are host pointers.
//
// 16-byte vector accesses (FASTVDM_VEC_ACCESS, device_utils.cuh) abort unless the address is 16-byte aligned, as
// the hardware would fault, and are counted (vec_accesses) so tests can tell the vector path from the scalar one.
//
// WMMA (nvcuda::wmma, 16x16x16) is emulated with whole tiles per thread (FASTVDM_EMULATE_WMMA makes the kernels
// take their tensor-core path for bf16 / fp16): the emulation checks the pointer alignment (32 bytes) and ldm
// rules of load/store_matrix_sync and computes the products in fp32 (exact products of bf16 / fp16 inputs, like
// the hardware; the accumulation order differs).
// Not emulated: the hardware's fragment-to-lane mapping (not visible to these kernels), memory-model subtleties
// beyond barrier ordering, and the exact error of the fast-math intrinsics.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cuda_runtime_api.h>

#include <array>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#define FASTVDM_EMULATION 1

// CUDA qualifiers as plain C++
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace fastvdm_emu {

struct BlockContext {
  std::unique_ptr<std::barrier<>> block;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<std::array<uint64_t, 32>> exchange;  // per warp: one 8-byte slot per lane
  unsigned char* smem = nullptr;
};

inline thread_local BlockContext* tl_block = nullptr;
inline thread_local uint3 tl_thread{0, 0, 0};
inline thread_local uint3 tl_block_idx{0, 0, 0};
inline thread_local dim3 tl_block_dim{1, 1, 1};
inline thread_local dim3 tl_grid_dim{1, 1, 1};

inline void syncthreads() { tl_block->block->arrive_and_wait(); }
inline void syncwarp() { tl_block->warps[tl_thread.x / 32]->arrive_and_wait(); }

template <typename T>
inline T shfl_xor(T v, int lane_mask) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  const unsigned lane = tl_thread.x % 32, warp = tl_thread.x / 32;
  auto& slots = tl_block->exchange[warp];
  std::memcpy(&slots[lane], &v, sizeof(T));
  syncwarp();
  T out;
  std::memcpy(&out, &slots[lane ^ static_cast<unsigned>(lane_mask)], sizeof(T));
  syncwarp();
  return out;
}

inline std::atomic<long long>& vec_accesses() {
  static std::atomic<long long> n{0};
  return n;
}

inline void vec_access(const void* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) std::abort();  // a misaligned 16-byte access faults on a GPU
  vec_accesses().fetch_add(1, std::memory_order_relaxed);
}

inline std::mutex& atomic_mutex() {
  static std::mutex m;
  return m;
}

template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, dim3 block, size_t smem_bytes, Args... args) {
  const unsigned nthreads = block.x * block.y * block.z;
  if (nthreads == 0 || nthreads % 32 != 0 || block.y != 1 || block.z != 1) std::abort();  // 1-D, whole warps
  const size_t smem_alloc = (smem_bytes + 127) / 128 * 128 + 128;
  unsigned char* smem = static_cast<unsigned char*>(std::aligned_alloc(128, smem_alloc));
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        BlockContext ctx;
        ctx.block = std::make_unique<std::barrier<>>(nthreads);
        for (unsigned w = 0; w < nthreads / 32; ++w) ctx.warps.push_back(std::make_unique<std::barrier<>>(32));
        ctx.exchange.resize(nthreads / 32);
        std::memset(smem, 0xFF, smem_alloc);
        ctx.smem = smem;
        std::vector<std::thread> threads;
        threads.reserve(nthreads);
        for (unsigned t = 0; t < nthreads; ++t) {
          threads.emplace_back([&, t] {
            tl_block = &ctx;
            tl_thread = uint3{t, 0, 0};
            tl_block_idx = uint3{bx, by, bz};
            tl_block_dim = block;
            tl_grid_dim = grid;
            kernel(args...);
          });
        }
        for (auto& th : threads) th.join();
      }
  std::free(smem);
}

}  // namespace fastvdm_emu

#define threadIdx (::fastvdm_emu::tl_thread)
#define blockIdx (::fastvdm_emu::tl_block_idx)
#define blockDim (::fastvdm_emu::tl_block_dim)
#define gridDim (::fastvdm_emu::tl_grid_dim)

#define FASTVDM_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ((void)(stream), ::fastvdm_emu::launch(kernel, dim3(grid), dim3(block), static_cast<size_t>(smem), __VA_ARGS__))
#define FASTVDM_DYNAMIC_SMEM(name) unsigned char* name = ::fastvdm_emu::tl_block->smem
#define FASTVDM_VEC_ACCESS(ptr) ::fastvdm_emu::vec_access(ptr)

inline void __syncthreads() { ::fastvdm_emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::fastvdm_emu::syncwarp(); }
template <typename T>
inline T emu_shfl_xor_sync(unsigned, T v, int lane_mask) {
  return ::fastvdm_emu::shfl_xor(v, lane_mask);
}
#define __shfl_xor_sync emu_shfl_xor_sync

inline float emu_atomic_add(float* p, float v) {
  std::lock_guard<std::mutex> lock(::fastvdm_emu::atomic_mutex());
  const float old = *p;
  *p = old + v;
  return old;
}
#define atomicAdd emu_atomic_add

// device math intrinsics (IEEE versions)
inline float emu_expf(float x) { return std::exp(x); }
inline float emu_logf(float x) { return std::log(x); }
inline float emu_rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float emu_fdiv_rn(float a, float b) { return a / b; }
inline float emu_fmul_rn(float a, float b) { return a * b; }
#define __expf emu_expf
#define __logf emu_logf
#define rsqrtf emu_rsqrtf
#define __fdiv_rn emu_fdiv_rn
#define __fmul_rn emu_fmul_rn
inline float emu_int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
#define __int_as_float emu_int_as_float
using std::isfinite;  // device code calls the global isfinite (a CUDA math function)

// runtime API used by the launch functions
inline cudaError_t emu_func_set_attribute(const void*, cudaFuncAttribute, int) { return cudaSuccess; }
inline cudaError_t emu_get_last_error() { return cudaSuccess; }
#define cudaFuncSetAttribute emu_func_set_attribute
#define cudaGetLastError emu_get_last_error

// ------------------------------------------------------------------------------------------------ WMMA
#define FASTVDM_EMULATE_WMMA 1
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

// Every lane holds the whole 16x16 tile (row-major, fp32).
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "only m16n16k16 is emulated");
  float x[256];
};

inline void emu_check_pointer(const void* p, unsigned ldm, size_t elem_bytes) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) std::abort();  // WMMA needs 256-bit aligned pointers
  if ((ldm * elem_bytes) % 16 != 0) std::abort();              // ldm: a multiple of 16 bytes
}

inline float emu_to_float(float v) { return v; }
inline float emu_to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float emu_to_float(__half v) { return __half2float(v); }

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  emu_check_pointer(p, ldm, sizeof(T));
  constexpr bool col = std::is_same<Layout, col_major>::value;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) f.x[i * 16 + j] = emu_to_float(col ? p[j * ldm + i] : p[i * ldm + j]);
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
  emu_check_pointer(p, ldm, sizeof(float));
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) f.x[i * 16 + j] = l == mem_row_major ? p[i * ldm + j] : p[j * ldm + i];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  emu_check_pointer(p, ldm, sizeof(float));
  if (threadIdx.x % 32 != 0) return;  // one lane writes the (identical) tile
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) (l == mem_row_major ? p[i * ldm + j] : p[j * ldm + i]) = f.x[i * 16 + j];
}

inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) {
  for (float& e : f.x) e = v;
}

template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float acc = c.x[i * 16 + j];
      for (int k = 0; k < 16; ++k) acc = std::fma(a.x[i * 16 + k], b.x[k * 16 + j], acc);
      out[i * 16 + j] = acc;
    }
  std::memcpy(d.x, out, sizeof(out));
}
}  // namespace wmma
}  // namespace nvcuda
