// C entry points of the emulated CUDA kernels (see cuda_emu.h), called from tests/test_cuda_emulated.py through
// ctypes with CPU tensors' data pointers. Each wraps the corresponding torch-free host function of csrc/cuda with
// the same buffers the torch bindings (csrc/torch/cuda_*.cpp) allocate. Build:
//   g++ -std=c++20 -O1 -pthread -fPIC -shared -I csrc -I <cuda>/include -include csrc/tests/emu/cuda_emu.h
//       -x c++ csrc/tests/emu/emu_api.cpp -o libfastvdm_cuda_emu.so
#include "../../cuda/attention.cu"
#include "../../cuda/group_norm.cu"
#include "../../cuda/losses.cu"

namespace fc = fastvdm::cuda;

namespace {
fc::Strides5 strides5(const int64_t* s) { return fc::Strides5{s[0], s[1], s[2], s[3], s[4]}; }
}  // namespace

extern "C" {

// 16-byte vector accesses made by the kernels since the last call (resets the count).
long long emu_take_vector_accesses() { return fastvdm_emu::vec_accesses().exchange(0); }

// Returns 0 on success, 1 for a planner error (unsupported input), 2 for a CUDA error.
int emu_denoising_forward(int dtype, const void* pred, const void* x0, const void* noise, const float* alpha,
                          const float* sigma, const float* weight, int target, int64_t B, int64_t N, int num_sms,
                          float* loss) {
  try {
    const fc::LossReducePlan plan = fc::plan_loss_reduce(B, N, num_sms);
    std::vector<double> partial(2 * plan.grid);
    return fc::denoising_loss_forward(static_cast<fc::DType>(dtype), pred, x0, noise, alpha, sigma, weight, target,
                                      plan, partial.data(), loss, nullptr) == cudaSuccess
               ? 0
               : 2;
  } catch (const std::invalid_argument&) {
    return 1;
  }
}

int emu_denoising_backward(int dtype, const float* grad, const void* pred, const void* x0, const void* noise,
                           const float* alpha, const float* sigma, const float* weight, int target, int64_t B,
                           int64_t N, int num_sms, void* dpred) {
  return fc::denoising_loss_backward(static_cast<fc::DType>(dtype), grad, pred, x0, noise, alpha, sigma, weight,
                                     target, B, N, dpred, num_sms, nullptr) == cudaSuccess
             ? 0
             : 2;
}

int emu_dmd_forward(int dtype, const void* x, const void* real, const void* fake, const float* weight, float norm_eps,
                    int64_t B, int64_t N, int num_sms, float* loss, float* norm) {
  try {
    const fc::LossReducePlan plan = fc::plan_loss_reduce(B, N, num_sms);
    std::vector<double> partial(2 * plan.grid);
    return fc::dmd_loss_forward(static_cast<fc::DType>(dtype), x, real, fake, weight, norm_eps, plan, partial.data(),
                                loss, norm, nullptr) == cudaSuccess
               ? 0
               : 2;
  } catch (const std::invalid_argument&) {
    return 1;
  }
}

int emu_dmd_backward(int dtype, const float* grad, const void* real, const void* fake, const float* norm,
                     const float* weight, int64_t B, int64_t N, int num_sms, void* dx) {
  return fc::dmd_loss_backward(static_cast<fc::DType>(dtype), grad, real, fake, norm, weight, B, N, dx, num_sms,
                               nullptr) == cudaSuccess
             ? 0
             : 2;
}

// x: (B, C, S) with strides xs[3]; params fp32 or null.
int emu_group_norm_forward(int dtype, const void* x, const int64_t* xs, int64_t B, int64_t C, int64_t S, int64_t G,
                           const float* weight, const float* bias, const float* scale, const float* shift, float eps,
                           int silu, int num_sms, void* y, float* mean, float* rstd, const float* input_bias) {
  try {
    const fc::GroupNormPlan plan = fc::plan_group_norm(B, C, S, G, xs[0], xs[1], xs[2], num_sms);
    std::vector<double> work(fc::group_norm_forward_workspace(plan));
    return fc::group_norm_forward(static_cast<fc::DType>(dtype), x, y, mean, rstd, plan,
                                  fc::GroupNormParamsDev{weight, bias, scale, shift, input_bias}, eps, silu != 0,
                                  work.data(), nullptr) == cudaSuccess
               ? 0
               : 2;
  } catch (const std::invalid_argument&) {
    return 1;
  }
}

int emu_group_norm_backward(int dtype, const void* dy, const void* x, const int64_t* xs, int64_t B, int64_t C,
                            int64_t S, int64_t G, const float* mean, const float* rstd, const float* weight,
                            const float* bias, const float* scale, const float* shift, int silu, int num_sms, void* dx,
                            float* sum_dz, float* sum_dzx, const float* input_bias) {
  try {
    const fc::GroupNormPlan plan = fc::plan_group_norm(B, C, S, G, xs[0], xs[1], xs[2], num_sms);
    std::vector<float> work(fc::group_norm_backward_workspace(plan));
    return fc::group_norm_backward(static_cast<fc::DType>(dtype), dy, x, mean, rstd, dx, sum_dz, sum_dzx, plan,
                                   fc::GroupNormParamsDev{weight, bias, scale, shift, input_bias}, silu != 0,
                                   work.data(), nullptr) == cudaSuccess
               ? 0
               : 2;
  } catch (const std::invalid_argument&) {
    return 1;
  }
}

// Tensors (B, T, S, H, D) with strides[5] each; lse (B, T, S, H) contiguous fp32; out contiguous.
int emu_attention_forward(int dtype, int64_t B, int64_t T, int64_t S, int64_t H, int64_t D, int axis, const void* q,
                          const int64_t* qs, const void* k, const int64_t* ks, const void* v, const int64_t* vs,
                          void* out, float* lse, float scale) {
  try {
    const fc::AttnProblem p = fc::make_attn_problem(B, T, S, H, D, static_cast<fc::Axis>(axis));
    return fc::attention_forward(static_cast<fc::DType>(dtype), p, {q, strides5(qs)}, {k, strides5(ks)},
                                 {v, strides5(vs)}, {out, fc::contiguous_strides(T, S, H, D)}, lse,
                                 fc::contiguous_strides(T, S, H, 1), scale, nullptr) == cudaSuccess
               ? 0
               : 2;
  } catch (const std::invalid_argument&) {
    return 1;
  }
}

// dq, dk, dv: contiguous outputs of the element type; dq_accum: contiguous fp32 zeros (flash path); delta:
// (B, T, S, H) fp32 rowsum(dout * out) (flash path). Returns 3 when the short kernel was used (dq written directly).
int emu_attention_backward(int dtype, int64_t B, int64_t T, int64_t S, int64_t H, int64_t D, int axis, const void* q,
                           const int64_t* qs, const void* k, const int64_t* ks, const void* v, const int64_t* vs,
                           const void* dout, const int64_t* dos, const float* lse, const float* delta, void* dq,
                           float* dq_accum, void* dk, void* dv, float scale) {
  try {
    const fc::AttnProblem p = fc::make_attn_problem(B, T, S, H, D, static_cast<fc::Axis>(axis));
    const fc::Strides5 c = fc::contiguous_strides(T, S, H, D);
    const bool short_kernel = fc::use_short_kernel(p);
    const cudaError_t err = fc::attention_backward(
        static_cast<fc::DType>(dtype), p, {q, strides5(qs)}, {k, strides5(ks)}, {v, strides5(vs)},
        {dout, strides5(dos)}, lse, short_kernel ? nullptr : delta, fc::contiguous_strides(T, S, H, 1), {dq, c},
        short_kernel ? nullptr : dq_accum, {dk, c}, {dv, c}, scale, nullptr);
    if (err != cudaSuccess) return 2;
    return short_kernel ? 3 : 0;
  } catch (const std::invalid_argument&) {
    return 1;
  }
}

}  // extern "C"
