// torch.ops.fastvdm_cpu.{denoising_loss,dmd_loss}_{forward,backward}: bindings of csrc/cpu/losses.cpp.
//
// The bindings check inputs, make the big tensors contiguous (a no-op for contiguous inputs), convert the
// per-sample (B,) vectors to float32, run the torch-free kernels and do the O(B) host arithmetic that turns
// per-sample sums into the loss. The autograd wrappers live in fastvdm/ops/cpu/losses.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "cpu/losses.h"
#include "cpu_output.h"  // csrc/torch/cpu_output.h (same directory)

namespace {

using fastvdm::bf16;
using fastvdm::cpu::DenoisingTarget;

void check_big(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu(), "fastvdm_cpu losses: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16,
              "fastvdm_cpu losses: ", name, " must be float32 or bfloat16, got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == like.sizes() && t.scalar_type() == like.scalar_type(), "fastvdm_cpu losses: ", name,
              " must match the first input's shape and dtype");
  TORCH_CHECK(t.dim() >= 1 && t.numel() > 0, "fastvdm_cpu losses: ", name, " must be a non-empty (B, ...) tensor");
}

// A (B,) per-sample vector as contiguous float32 (empty when absent).
at::Tensor per_sample(const std::optional<at::Tensor>& t, int64_t B, const char* name) {
  if (!t.has_value()) return at::Tensor();
  TORCH_CHECK(t->dim() == 1 && t->size(0) == B, "fastvdm_cpu losses: ", name, " must have shape (", B, ",)");
  return t->to(at::kFloat).contiguous();
}

const float* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

template <typename T>
const T* data(const at::Tensor& t);
template <>
const float* data<float>(const at::Tensor& t) {
  return t.data_ptr<float>();
}
template <>
const bf16* data<bf16>(const at::Tensor& t) {
  return reinterpret_cast<const bf16*>(t.data_ptr<at::BFloat16>());
}
template <typename T>
T* mutable_data(at::Tensor& t) {
  return const_cast<T*>(data<T>(t));
}

DenoisingTarget to_target(int64_t target) {
  TORCH_CHECK(target >= 0 && target <= 2, "fastvdm_cpu losses: target must be 0 (eps), 1 (x0) or 2 (v)");
  return static_cast<DenoisingTarget>(target);
}

// loss = sum_b weight_b * S_b / numel, S_b = sum (pred - target)^2 over sample b. With `residual` (float32
// inputs only), also returns pred - target, else an undefined tensor.
std::tuple<at::Tensor, at::Tensor> denoising_forward(const at::Tensor& pred_in, const at::Tensor& x0_in,
                                                     const at::Tensor& noise_in, const at::Tensor& alpha_in,
                                                     const at::Tensor& sigma_in,
                                                     const std::optional<at::Tensor>& weight_in, int64_t target,
                                                     bool residual) {
  check_big(pred_in, "pred", pred_in);
  check_big(x0_in, "x0", pred_in);
  check_big(noise_in, "noise", pred_in);
  const at::Tensor pred = pred_in.contiguous(), x0 = x0_in.contiguous(), noise = noise_in.contiguous();
  const int64_t B = pred.size(0), N = pred.numel() / B;
  const at::Tensor alpha = per_sample(alpha_in, B, "alpha"), sigma = per_sample(sigma_in, B, "sigma");
  const at::Tensor weight = per_sample(weight_in, B, "weight");
  std::vector<double> sq(B);
  at::Tensor diff;
  if (pred.scalar_type() == at::kFloat) {
    if (residual) {
      diff = at::empty_like(pred, at::MemoryFormat::Contiguous);
      fastvdm_cpu_output::advise_huge_pages(diff);
    }
    fastvdm::cpu::denoising_loss_forward(data<float>(pred), data<float>(x0), data<float>(noise),
                                         alpha.data_ptr<float>(), sigma.data_ptr<float>(), B, N, to_target(target),
                                         sq.data(), residual ? mutable_data<float>(diff) : nullptr);
  } else {
    TORCH_CHECK(!residual, "fastvdm_cpu losses: the residual output is float32 only");
    fastvdm::cpu::denoising_loss_forward(data<bf16>(pred), data<bf16>(x0), data<bf16>(noise), alpha.data_ptr<float>(),
                                         sigma.data_ptr<float>(), B, N, to_target(target), sq.data());
  }
  const float* w = ptr_or_null(weight);
  double total = 0.0;
  for (int64_t b = 0; b < B; ++b) total += (w ? static_cast<double>(w[b]) : 1.0) * sq[b];
  return {at::scalar_tensor(total / static_cast<double>(pred.numel()), at::TensorOptions().dtype(at::kFloat)), diff};
}

at::Tensor denoising_loss_forward(const at::Tensor& pred, const at::Tensor& x0, const at::Tensor& noise,
                                  const at::Tensor& alpha, const at::Tensor& sigma,
                                  const std::optional<at::Tensor>& weight, int64_t target) {
  return std::get<0>(denoising_forward(pred, x0, noise, alpha, sigma, weight, target, false));
}

// (loss, pred - target): float32 only (the eager training path of fastvdm/ops/cpu/losses.py).
std::tuple<at::Tensor, at::Tensor> denoising_loss_forward_residual(const at::Tensor& pred, const at::Tensor& x0,
                                                                   const at::Tensor& noise, const at::Tensor& alpha,
                                                                   const at::Tensor& sigma,
                                                                   const std::optional<at::Tensor>& weight,
                                                                   int64_t target) {
  return denoising_forward(pred, x0, noise, alpha, sigma, weight, target, true);
}

// dpred = coef_b * (pred - target), coef_b = (2 * grad / numel) * weight_b in float32 (the reference's order).
at::Tensor denoising_loss_backward(const at::Tensor& grad, const at::Tensor& pred_in, const at::Tensor& x0_in,
                                   const at::Tensor& noise_in, const at::Tensor& alpha_in,
                                   const at::Tensor& sigma_in, const std::optional<at::Tensor>& weight_in,
                                   int64_t target) {
  check_big(pred_in, "pred", pred_in);
  check_big(x0_in, "x0", pred_in);
  check_big(noise_in, "noise", pred_in);
  TORCH_CHECK(grad.numel() == 1, "fastvdm_cpu losses: grad must be a scalar");
  const at::Tensor pred = pred_in.contiguous(), x0 = x0_in.contiguous(), noise = noise_in.contiguous();
  const int64_t B = pred.size(0), N = pred.numel() / B;
  const at::Tensor alpha = per_sample(alpha_in, B, "alpha"), sigma = per_sample(sigma_in, B, "sigma");
  const at::Tensor weight = per_sample(weight_in, B, "weight");
  const float* w = ptr_or_null(weight);
  const float base = 2.0f * grad.to(at::kFloat).item<float>() / static_cast<float>(pred.numel());
  std::vector<float> coef(B);
  for (int64_t b = 0; b < B; ++b) coef[b] = w ? base * w[b] : base;
  at::Tensor dpred = at::empty_like(pred, at::MemoryFormat::Contiguous);
  fastvdm_cpu_output::advise_huge_pages(dpred);
  if (pred.scalar_type() == at::kFloat) {
    fastvdm::cpu::denoising_loss_backward(data<float>(pred), data<float>(x0), data<float>(noise),
                                          alpha.data_ptr<float>(), sigma.data_ptr<float>(), coef.data(), B, N,
                                          to_target(target), mutable_data<float>(dpred));
  } else {
    fastvdm::cpu::denoising_loss_backward(data<bf16>(pred), data<bf16>(x0), data<bf16>(noise),
                                          alpha.data_ptr<float>(), sigma.data_ptr<float>(), coef.data(), B, N,
                                          to_target(target), mutable_data<bf16>(dpred));
  }
  return dpred;
}

// Returns (loss, norm): norm_b = max(mean_b |x - x0_real|, norm_eps) in float32, saved for the backward;
// loss = 0.5 * sum_b weight_b^2 * sum (x0_fake - x0_real)^2 / norm_b^2 / numel (= 0.5 * mean(g^2)).
std::tuple<at::Tensor, at::Tensor> dmd_loss_forward(const at::Tensor& x_in, const at::Tensor& real_in,
                                                    const at::Tensor& fake_in,
                                                    const std::optional<at::Tensor>& weight_in, double norm_eps) {
  check_big(x_in, "x", x_in);
  check_big(real_in, "x0_real", x_in);
  check_big(fake_in, "x0_fake", x_in);
  const at::Tensor x = x_in.contiguous(), real = real_in.contiguous(), fake = fake_in.contiguous();
  const int64_t B = x.size(0), N = x.numel() / B;
  const at::Tensor weight = per_sample(weight_in, B, "weight");
  std::vector<double> abs_sum(B), sq_sum(B);
  if (x.scalar_type() == at::kFloat) {
    fastvdm::cpu::dmd_loss_forward(data<float>(x), data<float>(real), data<float>(fake), B, N, abs_sum.data(),
                                   sq_sum.data());
  } else {
    fastvdm::cpu::dmd_loss_forward(data<bf16>(x), data<bf16>(real), data<bf16>(fake), B, N, abs_sum.data(),
                                   sq_sum.data());
  }
  const float* w = ptr_or_null(weight);
  at::Tensor norm = at::empty({B}, at::TensorOptions().dtype(at::kFloat));
  float* nrm = norm.data_ptr<float>();
  double total = 0.0;
  for (int64_t b = 0; b < B; ++b) {
    nrm[b] = std::max(static_cast<float>(abs_sum[b] / static_cast<double>(N)), static_cast<float>(norm_eps));
    const double wb = w ? static_cast<double>(w[b]) : 1.0, nb = nrm[b];
    total += wb * wb * sq_sum[b] / (nb * nb);
  }
  at::Tensor loss =
      at::scalar_tensor(0.5 * total / static_cast<double>(x.numel()), at::TensorOptions().dtype(at::kFloat));
  return {loss, norm};
}

// dx = g * (grad / numel), g = ((x0_fake - x0_real) / norm_b) * weight_b, all in float32.
at::Tensor dmd_loss_backward(const at::Tensor& grad, const at::Tensor& real_in, const at::Tensor& fake_in,
                             const at::Tensor& norm_in, const std::optional<at::Tensor>& weight_in) {
  check_big(real_in, "x0_real", real_in);
  check_big(fake_in, "x0_fake", real_in);
  TORCH_CHECK(grad.numel() == 1, "fastvdm_cpu losses: grad must be a scalar");
  const at::Tensor real = real_in.contiguous(), fake = fake_in.contiguous();
  const int64_t B = real.size(0), N = real.numel() / B;
  const at::Tensor norm = per_sample(norm_in, B, "norm"), weight = per_sample(weight_in, B, "weight");
  const float scale = grad.to(at::kFloat).item<float>() / static_cast<float>(real.numel());
  at::Tensor dx = at::empty_like(real, at::MemoryFormat::Contiguous);
  fastvdm_cpu_output::advise_huge_pages(dx);
  if (real.scalar_type() == at::kFloat) {
    fastvdm::cpu::dmd_loss_backward(data<float>(real), data<float>(fake), norm.data_ptr<float>(), ptr_or_null(weight),
                                    scale, B, N, mutable_data<float>(dx));
  } else {
    fastvdm::cpu::dmd_loss_backward(data<bf16>(real), data<bf16>(fake), norm.data_ptr<float>(), ptr_or_null(weight),
                                    scale, B, N, mutable_data<bf16>(dx));
  }
  return dx;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastvdm_cpu, m) {
  m.def("denoising_loss_forward(Tensor pred, Tensor x0, Tensor noise, Tensor alpha, Tensor sigma, Tensor? weight, "
        "int target) -> Tensor",
        &denoising_loss_forward);
  m.def("denoising_loss_forward_residual(Tensor pred, Tensor x0, Tensor noise, Tensor alpha, Tensor sigma, "
        "Tensor? weight, int target) -> (Tensor, Tensor)",
        &denoising_loss_forward_residual);
  m.def("denoising_loss_backward(Tensor grad, Tensor pred, Tensor x0, Tensor noise, Tensor alpha, Tensor sigma, "
        "Tensor? weight, int target) -> Tensor",
        &denoising_loss_backward);
  m.def("dmd_loss_forward(Tensor x, Tensor x0_real, Tensor x0_fake, Tensor? weight, float norm_eps) -> "
        "(Tensor, Tensor)",
        &dmd_loss_forward);
  m.def("dmd_loss_backward(Tensor grad, Tensor x0_real, Tensor x0_fake, Tensor norm, Tensor? weight) -> Tensor",
        &dmd_loss_backward);
}
