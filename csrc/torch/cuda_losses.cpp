// torch.ops.fastvdm_cuda.{denoising_loss,dmd_loss}_{forward,backward}: bindings of csrc/cuda/losses.cu.
//
// The big tensors are made contiguous (a no-op for contiguous inputs); the (B,) vectors become fp32. The loss is
// computed entirely on the device (no host synchronization): the incoming gradient of the backward is read by
// the kernels from device memory. The autograd wrappers live in fastvdm/ops/cuda/losses.py.
#include <torch/library.h>

#include <tuple>

#include "cuda/losses.h"
#include "cuda_binding.h"  // csrc/torch/cuda_binding.h (same directory)

namespace {

using namespace fastvdm_binding;
namespace fc = fastvdm::cuda;

void check_big(const at::Tensor& t, const char* name, const at::Tensor& like) {
  check_cuda(t, "losses", name);
  to_dtype(t, "losses");
  TORCH_CHECK(t.sizes() == like.sizes() && t.scalar_type() == like.scalar_type() && t.device() == like.device(),
              "fastvdm_cuda losses: ", name, " must match the first input's shape, dtype and device");
  TORCH_CHECK(t.dim() >= 1 && t.numel() > 0, "fastvdm_cuda losses: ", name, " must be a non-empty (B, ...) tensor");
}

at::Tensor per_sample(const std::optional<at::Tensor>& t, int64_t B, const at::Tensor& like, const char* name) {
  return as_f32(t, {B}, like, "losses", name);
}

at::Tensor grad_f32(const at::Tensor& grad, const at::Tensor& like) {
  TORCH_CHECK(grad.numel() == 1, "fastvdm_cuda losses: grad must be a scalar");
  return grad.to(like.device(), at::kFloat).reshape({1}).contiguous();
}

at::Tensor denoising_loss_forward(const at::Tensor& pred_in, const at::Tensor& x0_in, const at::Tensor& noise_in,
                                  const at::Tensor& alpha_in, const at::Tensor& sigma_in,
                                  const std::optional<at::Tensor>& weight_in, int64_t target) {
  check_big(pred_in, "pred", pred_in);
  check_big(x0_in, "x0", pred_in);
  check_big(noise_in, "noise", pred_in);
  TORCH_CHECK(target >= 0 && target <= 2, "fastvdm_cuda losses: target must be 0 (eps), 1 (x0) or 2 (v)");
  const c10::cuda::CUDAGuard guard(pred_in.device());
  const at::Tensor pred = pred_in.contiguous(), x0 = x0_in.contiguous(), noise = noise_in.contiguous();
  const int64_t B = pred.size(0), N = pred.numel() / B;
  const at::Tensor alpha = per_sample(alpha_in, B, pred, "alpha"), sigma = per_sample(sigma_in, B, pred, "sigma");
  const at::Tensor weight = per_sample(weight_in, B, pred, "weight");
  const fc::LossReducePlan plan = plan_or_throw([&] { return fc::plan_loss_reduce(B, N, num_sms()); });
  at::Tensor partial = at::empty({2 * plan.grid}, pred.options().dtype(at::kDouble));
  at::Tensor loss = at::empty({}, pred.options().dtype(at::kFloat));
  C10_CUDA_CHECK(fc::denoising_loss_forward(to_dtype(pred, "losses"), pred.data_ptr(), x0.data_ptr(),
                                            noise.data_ptr(), alpha.data_ptr<float>(), sigma.data_ptr<float>(),
                                            f32_or_null(weight), static_cast<int>(target), plan,
                                            partial.data_ptr<double>(), loss.data_ptr<float>(), stream()));
  return loss;
}

at::Tensor denoising_loss_backward(const at::Tensor& grad, const at::Tensor& pred_in, const at::Tensor& x0_in,
                                   const at::Tensor& noise_in, const at::Tensor& alpha_in,
                                   const at::Tensor& sigma_in, const std::optional<at::Tensor>& weight_in,
                                   int64_t target) {
  check_big(pred_in, "pred", pred_in);
  check_big(x0_in, "x0", pred_in);
  check_big(noise_in, "noise", pred_in);
  TORCH_CHECK(target >= 0 && target <= 2, "fastvdm_cuda losses: target must be 0 (eps), 1 (x0) or 2 (v)");
  const c10::cuda::CUDAGuard guard(pred_in.device());
  const at::Tensor pred = pred_in.contiguous(), x0 = x0_in.contiguous(), noise = noise_in.contiguous();
  const int64_t B = pred.size(0), N = pred.numel() / B;
  const at::Tensor alpha = per_sample(alpha_in, B, pred, "alpha"), sigma = per_sample(sigma_in, B, pred, "sigma");
  const at::Tensor weight = per_sample(weight_in, B, pred, "weight");
  const at::Tensor g = grad_f32(grad, pred);
  at::Tensor dpred = at::empty_like(pred, at::MemoryFormat::Contiguous);
  C10_CUDA_CHECK(fc::denoising_loss_backward(to_dtype(pred, "losses"), g.data_ptr<float>(), pred.data_ptr(),
                                             x0.data_ptr(), noise.data_ptr(), alpha.data_ptr<float>(),
                                             sigma.data_ptr<float>(), f32_or_null(weight), static_cast<int>(target),
                                             B, N, dpred.data_ptr(), num_sms(), stream()));
  return dpred;
}

std::tuple<at::Tensor, at::Tensor> dmd_loss_forward(const at::Tensor& x_in, const at::Tensor& real_in,
                                                    const at::Tensor& fake_in,
                                                    const std::optional<at::Tensor>& weight_in, double norm_eps) {
  check_big(x_in, "x", x_in);
  check_big(real_in, "x0_real", x_in);
  check_big(fake_in, "x0_fake", x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), real = real_in.contiguous(), fake = fake_in.contiguous();
  const int64_t B = x.size(0), N = x.numel() / B;
  const at::Tensor weight = per_sample(weight_in, B, x, "weight");
  const fc::LossReducePlan plan = plan_or_throw([&] { return fc::plan_loss_reduce(B, N, num_sms()); });
  at::Tensor partial = at::empty({2 * plan.grid}, x.options().dtype(at::kDouble));
  at::Tensor loss = at::empty({}, x.options().dtype(at::kFloat));
  at::Tensor norm = at::empty({B}, x.options().dtype(at::kFloat));
  C10_CUDA_CHECK(fc::dmd_loss_forward(to_dtype(x, "losses"), x.data_ptr(), real.data_ptr(), fake.data_ptr(),
                                      f32_or_null(weight), static_cast<float>(norm_eps), plan,
                                      partial.data_ptr<double>(), loss.data_ptr<float>(), norm.data_ptr<float>(),
                                      stream()));
  return {loss, norm};
}

at::Tensor dmd_loss_backward(const at::Tensor& grad, const at::Tensor& real_in, const at::Tensor& fake_in,
                             const at::Tensor& norm_in, const std::optional<at::Tensor>& weight_in) {
  check_big(real_in, "x0_real", real_in);
  check_big(fake_in, "x0_fake", real_in);
  const c10::cuda::CUDAGuard guard(real_in.device());
  const at::Tensor real = real_in.contiguous(), fake = fake_in.contiguous();
  const int64_t B = real.size(0), N = real.numel() / B;
  const at::Tensor norm = per_sample(norm_in, B, real, "norm"), weight = per_sample(weight_in, B, real, "weight");
  const at::Tensor g = grad_f32(grad, real);
  at::Tensor dx = at::empty_like(real, at::MemoryFormat::Contiguous);
  C10_CUDA_CHECK(fc::dmd_loss_backward(to_dtype(real, "losses"), g.data_ptr<float>(), real.data_ptr(),
                                       fake.data_ptr(), norm.data_ptr<float>(), f32_or_null(weight), B, N,
                                       dx.data_ptr(), num_sms(), stream()));
  return dx;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastvdm_cuda, m) {
  m.def("denoising_loss_forward(Tensor pred, Tensor x0, Tensor noise, Tensor alpha, Tensor sigma, Tensor? weight, "
        "int target) -> Tensor");
  m.def("denoising_loss_backward(Tensor grad, Tensor pred, Tensor x0, Tensor noise, Tensor alpha, Tensor sigma, "
        "Tensor? weight, int target) -> Tensor");
  m.def("dmd_loss_forward(Tensor x, Tensor x0_real, Tensor x0_fake, Tensor? weight, float norm_eps) -> "
        "(Tensor, Tensor)");
  m.def("dmd_loss_backward(Tensor grad, Tensor x0_real, Tensor x0_fake, Tensor norm, Tensor? weight) -> Tensor");
}

// FASTVDM_DISPATCH_KEY: CUDA (CPU in the emulated test build, see cuda_binding.h)
TORCH_LIBRARY_IMPL(fastvdm_cuda, FASTVDM_DISPATCH_KEY, m) {
  m.impl("denoising_loss_forward", &denoising_loss_forward);
  m.impl("denoising_loss_backward", &denoising_loss_backward);
  m.impl("dmd_loss_forward", &dmd_loss_forward);
  m.impl("dmd_loss_backward", &dmd_loss_backward);
}
