// Distillation-loss kernels (see losses.h for the math). Forward: one reduction pass over the inputs (grid of
// B * blocks_per_sample chunk blocks writing double partials) and one single-thread finishing kernel that
// combines them in a fixed order. Backward: one elementwise grid-stride pass writing the gradient.
#include "cuda/device_utils.cuh"
#include "cuda/losses.h"

namespace fastvdm {
namespace cuda {
namespace {

// The regression target of element i of sample b (kind: 0 eps, 1 x0, 2 v).
__device__ __forceinline__ float target_value(int kind, float x0, float noise, float alpha, float sigma) {
  if (kind == 0) return noise;
  if (kind == 1) return x0;
  return alpha * noise - sigma * x0;
}

// Grid: plan.grid blocks; block (b, j) sums (pred - target)^2 over chunk j of sample b into partial[blk].
template <typename T>
__global__ void denoising_sums_kernel(const T* __restrict__ pred, const T* __restrict__ x0,
                                      const T* __restrict__ noise, const float* __restrict__ alpha,
                                      const float* __restrict__ sigma, int kind, LossReducePlan plan,
                                      double* __restrict__ partial) {
  __shared__ double scratch[32];
  const int64_t blk = blockIdx.x;
  const int64_t b = blk / plan.blocks_per_sample, j = blk % plan.blocks_per_sample;
  int64_t begin, end;
  loss_chunk_range(plan.N, plan.chunk, j, &begin, &end);
  const int64_t base = b * plan.N;
  const float a = kind == 2 ? alpha[b] : 0.f, s = kind == 2 ? sigma[b] : 0.f;
  float acc = 0.f;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float d = to_f32(pred[base + i]) - target_value(kind, to_f32(x0[base + i]), to_f32(noise[base + i]), a, s);
    acc = fmaf(d, d, acc);
  }
  const double total = block_sum(static_cast<double>(acc), scratch);
  if (threadIdx.x == 0) partial[blk] = total;
}

// One thread: loss = sum_b weight_b * S_b / numel, the partials of each sample summed in order.
__global__ void denoising_finish_kernel(const double* __restrict__ partial, const float* __restrict__ weight,
                                        LossReducePlan plan, float* __restrict__ loss) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double total = 0.0;
  for (int64_t b = 0; b < plan.B; ++b) {
    double sb = 0.0;
    for (int64_t j = 0; j < plan.blocks_per_sample; ++j) sb += partial[b * plan.blocks_per_sample + j];
    total += (weight ? static_cast<double>(weight[b]) : 1.0) * sb;
  }
  *loss = static_cast<float>(total / static_cast<double>(plan.B * plan.N));
}

template <typename T>
__global__ void denoising_backward_kernel(const float* __restrict__ grad, const T* __restrict__ pred,
                                          const T* __restrict__ x0, const T* __restrict__ noise,
                                          const float* __restrict__ alpha, const float* __restrict__ sigma,
                                          const float* __restrict__ weight, int kind, int64_t B, int64_t N,
                                          T* __restrict__ dpred) {
  const int64_t total = B * N;
  const float base = __fdiv_rn(2.0f * grad[0], static_cast<float>(total));  // IEEE even under --use_fast_math
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / N;
    const float coef = weight ? __fmul_rn(base, weight[b]) : base;
    const float a = kind == 2 ? alpha[b] : 0.f, s = kind == 2 ? sigma[b] : 0.f;
    const float d = to_f32(pred[i]) - target_value(kind, to_f32(x0[i]), to_f32(noise[i]), a, s);
    dpred[i] = from_f32<T>(coef * d);
  }
}

// Block (b, j): partial[2 * blk] = sum |x - x0_real|, partial[2 * blk + 1] = sum (x0_fake - x0_real)^2.
template <typename T>
__global__ void dmd_sums_kernel(const T* __restrict__ x, const T* __restrict__ real, const T* __restrict__ fake,
                                LossReducePlan plan, double* __restrict__ partial) {
  __shared__ double scratch[32];
  const int64_t blk = blockIdx.x;
  const int64_t b = blk / plan.blocks_per_sample, j = blk % plan.blocks_per_sample;
  int64_t begin, end;
  loss_chunk_range(plan.N, plan.chunk, j, &begin, &end);
  const int64_t base = b * plan.N;
  float abs_acc = 0.f, sq_acc = 0.f;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float r = to_f32(real[base + i]);
    const float d = to_f32(fake[base + i]) - r;
    abs_acc += fabsf(to_f32(x[base + i]) - r);
    sq_acc = fmaf(d, d, sq_acc);
  }
  const double a = block_sum(static_cast<double>(abs_acc), scratch);
  const double q = block_sum(static_cast<double>(sq_acc), scratch);
  if (threadIdx.x == 0) {
    partial[2 * blk] = a;
    partial[2 * blk + 1] = q;
  }
}

__global__ void dmd_finish_kernel(const double* __restrict__ partial, const float* __restrict__ weight,
                                  float norm_eps, LossReducePlan plan, float* __restrict__ loss,
                                  float* __restrict__ norm) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double total = 0.0;
  for (int64_t b = 0; b < plan.B; ++b) {
    double a = 0.0, q = 0.0;
    for (int64_t j = 0; j < plan.blocks_per_sample; ++j) {
      a += partial[2 * (b * plan.blocks_per_sample + j)];
      q += partial[2 * (b * plan.blocks_per_sample + j) + 1];
    }
    const float nb = fmaxf(static_cast<float>(a / static_cast<double>(plan.N)), norm_eps);
    norm[b] = nb;
    const double wb = weight ? static_cast<double>(weight[b]) : 1.0;
    total += wb * wb * q / (static_cast<double>(nb) * nb);
  }
  *loss = static_cast<float>(0.5 * total / static_cast<double>(plan.B * plan.N));
}

template <typename T>
__global__ void dmd_backward_kernel(const float* __restrict__ grad, const T* __restrict__ real,
                                    const T* __restrict__ fake, const float* __restrict__ norm,
                                    const float* __restrict__ weight, int64_t B, int64_t N, T* __restrict__ dx) {
  const int64_t total = B * N;
  const float scale = __fdiv_rn(grad[0], static_cast<float>(total));
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / N;
    float g = __fdiv_rn(to_f32(fake[i]) - to_f32(real[i]), norm[b]);  // the reference's rounding, bit for bit
    if (weight) g = __fmul_rn(g, weight[b]);
    dx[i] = from_f32<T>(__fmul_rn(g, scale));
  }
}

}  // namespace

cudaError_t denoising_loss_forward(DType dtype, const void* pred, const void* x0, const void* noise,
                                   const float* alpha, const float* sigma, const float* weight, int target,
                                   const LossReducePlan& plan, double* partial, float* loss, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(plan.grid);
  FASTVDM_DISPATCH_DTYPE(dtype, T, {
    FASTVDM_LAUNCH(denoising_sums_kernel<T>, grid, plan.threads, 0, stream, static_cast<const T*>(pred),
                   static_cast<const T*>(x0), static_cast<const T*>(noise), alpha, sigma, target, plan, partial);
  });
  FASTVDM_LAUNCH(denoising_finish_kernel, 1, 32, 0, stream, partial, weight, plan, loss);
  return cudaGetLastError();
}

cudaError_t denoising_loss_backward(DType dtype, const float* grad, const void* pred, const void* x0,
                                    const void* noise, const float* alpha, const float* sigma, const float* weight,
                                    int target, int64_t B, int64_t N, void* dpred, int num_sms, cudaStream_t stream) {
  const ElementwisePlan p = plan_elementwise(B * N, num_sms);
  const unsigned grid = static_cast<unsigned>(p.grid);
  FASTVDM_DISPATCH_DTYPE(dtype, T, {
    FASTVDM_LAUNCH(denoising_backward_kernel<T>, grid, p.threads, 0, stream, grad, static_cast<const T*>(pred),
                   static_cast<const T*>(x0), static_cast<const T*>(noise), alpha, sigma, weight, target, B, N,
                   static_cast<T*>(dpred));
  });
  return cudaGetLastError();
}

cudaError_t dmd_loss_forward(DType dtype, const void* x, const void* x0_real, const void* x0_fake,
                             const float* weight, float norm_eps, const LossReducePlan& plan, double* partial,
                             float* loss, float* norm, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(plan.grid);
  FASTVDM_DISPATCH_DTYPE(dtype, T, {
    FASTVDM_LAUNCH(dmd_sums_kernel<T>, grid, plan.threads, 0, stream, static_cast<const T*>(x),
                   static_cast<const T*>(x0_real), static_cast<const T*>(x0_fake), plan, partial);
  });
  FASTVDM_LAUNCH(dmd_finish_kernel, 1, 32, 0, stream, partial, weight, norm_eps, plan, loss, norm);
  return cudaGetLastError();
}

cudaError_t dmd_loss_backward(DType dtype, const float* grad, const void* x0_real, const void* x0_fake,
                              const float* norm, const float* weight, int64_t B, int64_t N, void* dx, int num_sms,
                              cudaStream_t stream) {
  const ElementwisePlan p = plan_elementwise(B * N, num_sms);
  const unsigned grid = static_cast<unsigned>(p.grid);
  FASTVDM_DISPATCH_DTYPE(dtype, T, {
    FASTVDM_LAUNCH(dmd_backward_kernel<T>, grid, p.threads, 0, stream, grad, static_cast<const T*>(x0_real),
                   static_cast<const T*>(x0_fake), norm, weight, B, N, static_cast<T*>(dx));
  });
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fastvdm
