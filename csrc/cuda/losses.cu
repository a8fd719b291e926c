// Distillation-loss kernels (see losses.h for the math). Forward: one reduction pass over the inputs (grid of
// B * blocks_per_sample chunk blocks writing double partials) and one single-thread finishing kernel that
// combines them in a fixed order. Backward: one elementwise grid-stride pass writing the gradient.
//
// Memory access: every kernel is instantiated for a run width W. W = kVecWidth<T> (8 bf16 / fp16, 4 fp32) moves
// 16-byte vectors (ld/st.global.v4); it is chosen when all the big tensors' base addresses share their offset
// from a 16-byte boundary, so one scalar head (the elements before the first boundary) aligns every tensor at
// once; a scalar tail follows the last whole vector. W = 1 (pointers at different offsets) is the scalar path.
// Index math: a reduction block decodes (b, j) once; the elementwise pass tracks the sample of its element with
// a SampleWalk (adds and a compare per step, no division per element).
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
template <typename T, int W>
__global__ void denoising_sums_kernel(const T* __restrict__ pred, const T* __restrict__ x0,
                                      const T* __restrict__ noise, const float* __restrict__ alpha,
                                      const float* __restrict__ sigma, int kind, LossReducePlan plan,
                                      double* __restrict__ partial) {
  __shared__ double scratch[32];
  const int64_t blk = blockIdx.x;
  int64_t b, j, begin, end;
  loss_block_coords(plan, blk, &b, &j);
  loss_chunk_range(plan.N, plan.chunk, j, &begin, &end);
  const int64_t base = b * plan.N + begin;
  const T* p = pred + base;
  const T* x = x0 + base;
  const T* n = noise + base;
  const float a = kind == 2 ? alpha[b] : 0.f, s = kind == 2 ? sigma[b] : 0.f;
  float acc = 0.f;
  for_each_run<W>(end - begin, vec_misalignment(p), threadIdx.x, blockDim.x, [&](auto width, int64_t i) {
    constexpr int w = decltype(width)::value;
    float pv[w], xv[w], nv[w];
    load_run<w>(p + i, pv);
    load_run<w>(x + i, xv);
    load_run<w>(n + i, nv);
#pragma unroll
    for (int k = 0; k < w; ++k) {
      const float d = pv[k] - target_value(kind, xv[k], nv[k], a, s);
      acc = fmaf(d, d, acc);
    }
  });
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

// Per-sample factors of the denoising gradient: dpred = coef * (pred - target(a, s)).
struct DenoisingCoef {
  float coef, a, s;
};

__device__ __forceinline__ DenoisingCoef denoising_coef(float base, const float* weight, const float* alpha,
                                                        const float* sigma, int kind, int64_t b) {
  return DenoisingCoef{weight ? __fmul_rn(base, weight[b]) : base, kind == 2 ? alpha[b] : 0.f,
                       kind == 2 ? sigma[b] : 0.f};
}

// Grid-stride elementwise pass over the B * N elements (thread t of nt takes every nt-th run).
template <typename T, int W>
__global__ void denoising_backward_kernel(const float* __restrict__ grad, const T* __restrict__ pred,
                                          const T* __restrict__ x0, const T* __restrict__ noise,
                                          const float* __restrict__ alpha, const float* __restrict__ sigma,
                                          const float* __restrict__ weight, int kind, int64_t B, int64_t N,
                                          T* __restrict__ dpred) {
  const int64_t total = B * N;
  const float base = __fdiv_rn(2.0f * grad[0], static_cast<float>(total));  // IEEE even under --use_fast_math
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t nt = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t head = W > 1 ? min64(vec_misalignment(pred), total) : 0;
  // runs of W elements from `head`; the sample of a run's first element is tracked by a walk
  SampleWalk walk(head + t * W, nt * W, N);
  for_each_run<W>(total, head, t, nt, [&](auto width, int64_t i) {
    constexpr int w = decltype(width)::value;
    int64_t b, r;
    if constexpr (w == W) {  // a run of the strided loop: walk's position
      b = walk.b;
      r = walk.r;
      walk.advance();
    } else {  // head or tail: at most one element per thread
      b = i / N;
      r = i - b * N;
    }
    float pv[w], xv[w], nv[w], out[w];
    load_run<w>(pred + i, pv);
    load_run<w>(x0 + i, xv);
    load_run<w>(noise + i, nv);
    DenoisingCoef c = denoising_coef(base, weight, alpha, sigma, kind, b);
#pragma unroll
    for (int k = 0; k < w; ++k) {
      out[k] = c.coef * (pv[k] - target_value(kind, xv[k], nv[k], c.a, c.s));
      if (w > 1 && ++r == N && k + 1 < w) {  // the run crosses into the next sample
        r = 0;
        c = denoising_coef(base, weight, alpha, sigma, kind, ++b);
      }
    }
    store_run<w>(dpred + i, out);
  });
}

// Block (b, j): partial[2 * blk] = sum |x - x0_real|, partial[2 * blk + 1] = sum (x0_fake - x0_real)^2.
template <typename T, int W>
__global__ void dmd_sums_kernel(const T* __restrict__ x, const T* __restrict__ real, const T* __restrict__ fake,
                                LossReducePlan plan, double* __restrict__ partial) {
  __shared__ double scratch[32];
  const int64_t blk = blockIdx.x;
  int64_t b, j, begin, end;
  loss_block_coords(plan, blk, &b, &j);
  loss_chunk_range(plan.N, plan.chunk, j, &begin, &end);
  const int64_t base = b * plan.N + begin;
  const T* xp = x + base;
  const T* rp = real + base;
  const T* fp = fake + base;
  float abs_acc = 0.f, sq_acc = 0.f;
  for_each_run<W>(end - begin, vec_misalignment(xp), threadIdx.x, blockDim.x, [&](auto width, int64_t i) {
    constexpr int w = decltype(width)::value;
    float xv[w], rv[w], fv[w];
    load_run<w>(xp + i, xv);
    load_run<w>(rp + i, rv);
    load_run<w>(fp + i, fv);
#pragma unroll
    for (int k = 0; k < w; ++k) {
      const float d = fv[k] - rv[k];
      abs_acc += fabsf(xv[k] - rv[k]);
      sq_acc = fmaf(d, d, sq_acc);
    }
  });
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

template <typename T, int W>
__global__ void dmd_backward_kernel(const float* __restrict__ grad, const T* __restrict__ real,
                                    const T* __restrict__ fake, const float* __restrict__ norm,
                                    const float* __restrict__ weight, int64_t B, int64_t N, T* __restrict__ dx) {
  const int64_t total = B * N;
  const float scale = __fdiv_rn(grad[0], static_cast<float>(total));
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t nt = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t head = W > 1 ? min64(vec_misalignment(real), total) : 0;
  SampleWalk walk(head + t * W, nt * W, N);
  for_each_run<W>(total, head, t, nt, [&](auto width, int64_t i) {
    constexpr int w = decltype(width)::value;
    int64_t b, r;
    if constexpr (w == W) {
      b = walk.b;
      r = walk.r;
      walk.advance();
    } else {
      b = i / N;
      r = i - b * N;
    }
    float rv[w], fv[w], out[w];
    load_run<w>(real + i, rv);
    load_run<w>(fake + i, fv);
    float nb = norm[b], wb = weight ? weight[b] : 1.f;
#pragma unroll
    for (int k = 0; k < w; ++k) {
      float g = __fdiv_rn(fv[k] - rv[k], nb);  // the reference's rounding, bit for bit
      if (weight) g = __fmul_rn(g, wb);
      out[k] = __fmul_rn(g, scale);
      if (w > 1 && ++r == N && k + 1 < w) {
        r = 0;
        ++b;
        nb = norm[b];
        wb = weight ? weight[b] : 1.f;
      }
    }
    store_run<w>(dx + i, out);
  });
}

}  // namespace

cudaError_t denoising_loss_forward(DType dtype, const void* pred, const void* x0, const void* noise,
                                   const float* alpha, const float* sigma, const float* weight, int target,
                                   const LossReducePlan& plan, double* partial, float* loss, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(plan.grid);
  FASTVDM_DISPATCH_DTYPE(dtype, T, {
    const auto kernel = vector_phase_shared<T>({pred, x0, noise}) ? denoising_sums_kernel<T, kVecWidth<T>>
                                                                   : denoising_sums_kernel<T, 1>;
    FASTVDM_LAUNCH(kernel, grid, plan.threads, 0, stream, static_cast<const T*>(pred), static_cast<const T*>(x0),
                   static_cast<const T*>(noise), alpha, sigma, target, plan, partial);
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
    const auto kernel = vector_phase_shared<T>({pred, x0, noise, dpred}) ? denoising_backward_kernel<T, kVecWidth<T>>
                                                                          : denoising_backward_kernel<T, 1>;
    FASTVDM_LAUNCH(kernel, grid, p.threads, 0, stream, grad, static_cast<const T*>(pred), static_cast<const T*>(x0),
                   static_cast<const T*>(noise), alpha, sigma, weight, target, B, N, static_cast<T*>(dpred));
  });
  return cudaGetLastError();
}

cudaError_t dmd_loss_forward(DType dtype, const void* x, const void* x0_real, const void* x0_fake,
                             const float* weight, float norm_eps, const LossReducePlan& plan, double* partial,
                             float* loss, float* norm, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(plan.grid);
  FASTVDM_DISPATCH_DTYPE(dtype, T, {
    const auto kernel =
        vector_phase_shared<T>({x, x0_real, x0_fake}) ? dmd_sums_kernel<T, kVecWidth<T>> : dmd_sums_kernel<T, 1>;
    FASTVDM_LAUNCH(kernel, grid, plan.threads, 0, stream, static_cast<const T*>(x), static_cast<const T*>(x0_real),
                   static_cast<const T*>(x0_fake), plan, partial);
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
    const auto kernel = vector_phase_shared<T>({x0_real, x0_fake, dx}) ? dmd_backward_kernel<T, kVecWidth<T>>
                                                                        : dmd_backward_kernel<T, 1>;
    FASTVDM_LAUNCH(kernel, grid, p.threads, 0, stream, grad, static_cast<const T*>(x0_real),
                   static_cast<const T*>(x0_fake), norm, weight, B, N, static_cast<T*>(dx));
  });
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fastvdm
