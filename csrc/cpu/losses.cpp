// Fused distillation losses on the CPU: see losses.h for the math and the memory contract.
//
// Work split: each sample's N elements are cut into chunks of kChunk; one OpenMP task per (sample, chunk).
// A reduction task sums its chunk with kLanes independent float accumulators (which the compiler keeps in
// vector registers) and stores the chunk total as a double; the chunk totals of a sample are then added in
// chunk order on one thread, so the result is the same for any thread count.
#include "cpu/losses.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace fastvdm {
namespace cpu {
namespace {

constexpr int64_t kChunk = 16384;           // elements per OpenMP task
constexpr int kLanes = 16;                  // independent float accumulators per task
constexpr int64_t kParallelMin = 1 << 15;   // below this many elements, stay on one thread

struct Range {
  int64_t sample, begin, end;  // flat element range [begin, end) of one chunk of `sample`
};

inline int64_t num_chunks(int64_t N) { return (N + kChunk - 1) / kChunk; }

inline Range chunk_range(int64_t task, int64_t N, int64_t chunks) {
  const int64_t b = task / chunks, c = task % chunks;
  return {b, b * N + c * kChunk, b * N + std::min(N, (c + 1) * kChunk)};
}

// Sum of f(i) over [begin, end): kLanes float accumulators, combined in double.
template <typename F>
inline double lane_sum(int64_t begin, int64_t end, const F& f) {
  float acc[kLanes] = {};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) acc[j] += f(i + j);
  }
  double total = 0.0;
  for (; i < end; ++i) total += f(i);
  for (int j = 0; j < kLanes; ++j) total += acc[j];
  return total;
}

// Two sums in one pass: (sum f(i), sum g(i)).
template <typename F, typename G>
inline std::pair<double, double> lane_sum2(int64_t begin, int64_t end, const F& f, const G& g) {
  float acc_f[kLanes] = {}, acc_g[kLanes] = {};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) {
      acc_f[j] += f(i + j);
      acc_g[j] += g(i + j);
    }
  }
  double total_f = 0.0, total_g = 0.0;
  for (; i < end; ++i) {
    total_f += f(i);
    total_g += g(i);
  }
  for (int j = 0; j < kLanes; ++j) {
    total_f += acc_f[j];
    total_g += acc_g[j];
  }
  return {total_f, total_g};
}

// Adds each sample's chunk partials in chunk order: out[b] = sum_c part[b * chunks + c].
inline void finish_sums(const std::vector<double>& part, int64_t B, int64_t chunks, double* out) {
  for (int64_t b = 0; b < B; ++b) {
    double s = 0.0;
    for (int64_t c = 0; c < chunks; ++c) s += part[b * chunks + c];
    out[b] = s;
  }
}

// The denoising target at flat index i of sample b (alpha, sigma already looked up).
template <DenoisingTarget kTarget, typename T>
inline float target_at(const T* x0, const T* noise, float alpha, float sigma, int64_t i) {
  if constexpr (kTarget == DenoisingTarget::kEps) {
    return to_float(noise[i]);
  } else if constexpr (kTarget == DenoisingTarget::kX0) {
    return to_float(x0[i]);
  } else {
    return alpha * to_float(noise[i]) - sigma * to_float(x0[i]);
  }
}

template <DenoisingTarget kTarget, typename T>
void denoising_forward_impl(const T* pred, const T* x0, const T* noise, const float* alpha, const float* sigma,
                            int64_t B, int64_t N, double* sq_sum) {
  const int64_t chunks = num_chunks(N), tasks = B * chunks;
  std::vector<double> part(tasks);
#pragma omp parallel for schedule(static) if (B * N >= kParallelMin)
  for (int64_t t = 0; t < tasks; ++t) {
    const Range r = chunk_range(t, N, chunks);
    const float a = kTarget == DenoisingTarget::kV ? alpha[r.sample] : 0.f;
    const float s = kTarget == DenoisingTarget::kV ? sigma[r.sample] : 0.f;
    part[t] = lane_sum(r.begin, r.end, [&](int64_t i) {
      const float d = to_float(pred[i]) - target_at<kTarget>(x0, noise, a, s, i);
      return d * d;
    });
  }
  finish_sums(part, B, chunks, sq_sum);
}

template <DenoisingTarget kTarget, typename T>
void denoising_backward_impl(const T* pred, const T* x0, const T* noise, const float* alpha, const float* sigma,
                             const float* coef, int64_t B, int64_t N, T* dpred) {
  const int64_t chunks = num_chunks(N), tasks = B * chunks;
#pragma omp parallel for schedule(static) if (B * N >= kParallelMin)
  for (int64_t t = 0; t < tasks; ++t) {
    const Range r = chunk_range(t, N, chunks);
    const float a = kTarget == DenoisingTarget::kV ? alpha[r.sample] : 0.f;
    const float s = kTarget == DenoisingTarget::kV ? sigma[r.sample] : 0.f;
    const float c = coef[r.sample];
#pragma omp simd
    for (int64_t i = r.begin; i < r.end; ++i) {
      const float d = to_float(pred[i]) - target_at<kTarget>(x0, noise, a, s, i);
      dpred[i] = from_float<T>(c * d);
    }
  }
}

template <typename T>
void denoising_forward(const T* pred, const T* x0, const T* noise, const float* alpha, const float* sigma,
                       int64_t B, int64_t N, DenoisingTarget target, double* sq_sum) {
  switch (target) {
    case DenoisingTarget::kEps:
      return denoising_forward_impl<DenoisingTarget::kEps>(pred, x0, noise, alpha, sigma, B, N, sq_sum);
    case DenoisingTarget::kX0:
      return denoising_forward_impl<DenoisingTarget::kX0>(pred, x0, noise, alpha, sigma, B, N, sq_sum);
    case DenoisingTarget::kV:
      return denoising_forward_impl<DenoisingTarget::kV>(pred, x0, noise, alpha, sigma, B, N, sq_sum);
  }
}

template <typename T>
void denoising_backward(const T* pred, const T* x0, const T* noise, const float* alpha, const float* sigma,
                        const float* coef, int64_t B, int64_t N, DenoisingTarget target, T* dpred) {
  switch (target) {
    case DenoisingTarget::kEps:
      return denoising_backward_impl<DenoisingTarget::kEps>(pred, x0, noise, alpha, sigma, coef, B, N, dpred);
    case DenoisingTarget::kX0:
      return denoising_backward_impl<DenoisingTarget::kX0>(pred, x0, noise, alpha, sigma, coef, B, N, dpred);
    case DenoisingTarget::kV:
      return denoising_backward_impl<DenoisingTarget::kV>(pred, x0, noise, alpha, sigma, coef, B, N, dpred);
  }
}

template <typename T>
void dmd_forward(const T* x, const T* x0_real, const T* x0_fake, int64_t B, int64_t N, double* abs_sum,
                 double* sq_sum) {
  const int64_t chunks = num_chunks(N), tasks = B * chunks;
  std::vector<double> part_abs(tasks), part_sq(tasks);
#pragma omp parallel for schedule(static) if (B * N >= kParallelMin)
  for (int64_t t = 0; t < tasks; ++t) {
    const Range r = chunk_range(t, N, chunks);
    const auto sums = lane_sum2(
        r.begin, r.end, [&](int64_t i) { return std::fabs(to_float(x[i]) - to_float(x0_real[i])); },
        [&](int64_t i) {
          const float d = to_float(x0_fake[i]) - to_float(x0_real[i]);
          return d * d;
        });
    part_abs[t] = sums.first;
    part_sq[t] = sums.second;
  }
  finish_sums(part_abs, B, chunks, abs_sum);
  finish_sums(part_sq, B, chunks, sq_sum);
}

template <typename T>
void dmd_backward(const T* x0_real, const T* x0_fake, const float* norm, const float* weight, float scale,
                  int64_t B, int64_t N, T* dx) {
  const int64_t chunks = num_chunks(N), tasks = B * chunks;
#pragma omp parallel for schedule(static) if (B * N >= kParallelMin)
  for (int64_t t = 0; t < tasks; ++t) {
    const Range r = chunk_range(t, N, chunks);
    const float nb = norm[r.sample];
    const float wb = weight ? weight[r.sample] : 1.f;  // multiplying by 1.0f is exact
#pragma omp simd
    for (int64_t i = r.begin; i < r.end; ++i) {
      float g = (to_float(x0_fake[i]) - to_float(x0_real[i])) / nb;
      g = g * wb;
      dx[i] = from_float<T>(g * scale);
    }
  }
}

}  // namespace

void denoising_loss_forward(const float* pred, const float* x0, const float* noise, const float* alpha,
                            const float* sigma, int64_t B, int64_t N, DenoisingTarget target, double* sq_sum) {
  denoising_forward(pred, x0, noise, alpha, sigma, B, N, target, sq_sum);
}
void denoising_loss_forward(const bf16* pred, const bf16* x0, const bf16* noise, const float* alpha,
                            const float* sigma, int64_t B, int64_t N, DenoisingTarget target, double* sq_sum) {
  denoising_forward(pred, x0, noise, alpha, sigma, B, N, target, sq_sum);
}

void denoising_loss_backward(const float* pred, const float* x0, const float* noise, const float* alpha,
                             const float* sigma, const float* coef, int64_t B, int64_t N, DenoisingTarget target,
                             float* dpred) {
  denoising_backward(pred, x0, noise, alpha, sigma, coef, B, N, target, dpred);
}
void denoising_loss_backward(const bf16* pred, const bf16* x0, const bf16* noise, const float* alpha,
                             const float* sigma, const float* coef, int64_t B, int64_t N, DenoisingTarget target,
                             bf16* dpred) {
  denoising_backward(pred, x0, noise, alpha, sigma, coef, B, N, target, dpred);
}

void dmd_loss_forward(const float* x, const float* x0_real, const float* x0_fake, int64_t B, int64_t N,
                      double* abs_sum, double* sq_sum) {
  dmd_forward(x, x0_real, x0_fake, B, N, abs_sum, sq_sum);
}
void dmd_loss_forward(const bf16* x, const bf16* x0_real, const bf16* x0_fake, int64_t B, int64_t N,
                      double* abs_sum, double* sq_sum) {
  dmd_forward(x, x0_real, x0_fake, B, N, abs_sum, sq_sum);
}

void dmd_loss_backward(const float* x0_real, const float* x0_fake, const float* norm, const float* weight,
                       float scale, int64_t B, int64_t N, float* dx) {
  dmd_backward(x0_real, x0_fake, norm, weight, scale, B, N, dx);
}
void dmd_loss_backward(const bf16* x0_real, const bf16* x0_fake, const float* norm, const float* weight,
                       float scale, int64_t B, int64_t N, bf16* dx) {
  dmd_backward(x0_real, x0_fake, norm, weight, scale, B, N, dx);
}

}  // namespace cpu
}  // namespace fastvdm
