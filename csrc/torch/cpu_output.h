// Fresh full-size outputs of the cpu ops, with cheaper first-touch page faults.
//
// A large CPU tensor (>= 32 MiB: above glibc's largest dynamic mmap threshold, so always a fresh anonymous
// mapping) is first touched by the kernel that writes it, one 4 KiB page fault at a time: for a 64 MiB output
// that costs several times the kernel's own pass (bench/RESULTS.md, issue 23). Asking for transparent huge
// pages on the mapping (madvise MADV_HUGEPAGE, the 2 MiB-aligned interior; the system setting "madvise" or
// "always") makes that one fault per 2 MiB. Advice only: where it is refused or unsupported nothing changes.
// Callers that reuse memory pass out= instead (group_norm).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fastvdm_cpu_output {

constexpr int64_t kHugePageMinBytes = int64_t{32} << 20;

inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const int64_t nbytes = static_cast<int64_t>(t.nbytes());
  if (nbytes < kHugePageMinBytes) return;
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1), hi = (begin + nbytes) & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice: the result is ignored
#else
  (void)t;
#endif
}

// at::empty_strided, large outputs advised to use huge pages.
inline at::Tensor empty_output(at::IntArrayRef sizes, at::IntArrayRef strides, const at::TensorOptions& options) {
  at::Tensor t = at::empty_strided(sizes, strides, options);
  advise_huge_pages(t);
  return t;
}

}  // namespace fastvdm_cpu_output
