// torch.ops.fastvdm_cuda.group_norm_{forward,backward}: bindings of csrc/cuda/group_norm.cu.
//
// x is passed as a (B, C, S) tensor (the Python wrapper flattens the spatial dims with a view). Contiguous and
// channels-last ((B, S, C) in memory) inputs are used in place; any other layout is copied to contiguous first.
// The (C,) and (B, C) parameters are converted to contiguous fp32 here (tiny). The autograd wrapper, which turns
// the backward's per-(n, c) sums into the parameter gradients, is fastvdm/ops/cuda/group_norm.py.
#include <torch/library.h>

#include <tuple>

#include "cuda/group_norm.h"
#include "cuda_binding.h"  // csrc/torch/cuda_binding.h (same directory)

namespace {

using namespace fastvdm_binding;
namespace fc = fastvdm::cuda;

bool dense_layout(const at::Tensor& x) { return x.is_contiguous() || x.transpose(1, 2).is_contiguous(); }

void check_x(const at::Tensor& x, const char* name) {
  check_cuda(x, "group_norm", name);
  TORCH_CHECK(x.dim() == 3, "fastvdm_cuda group_norm: ", name, " must be (B, C, S), got ", x.dim(), " dims");
  to_dtype(x, "group_norm");
  TORCH_CHECK(x.numel() > 0, "fastvdm_cuda group_norm: ", name, " is empty");
}

fc::GroupNormPlan plan_for(const at::Tensor& x, int64_t num_groups) {
  return plan_or_throw([&] {
    return fc::plan_group_norm(x.size(0), x.size(1), x.size(2), num_groups, x.stride(0), x.stride(1), x.stride(2),
                               num_sms());
  });
}

struct Params {
  at::Tensor weight, bias, scale, shift, input_bias;
  fc::GroupNormParamsDev dev() const {
    return fc::GroupNormParamsDev{f32_or_null(weight), f32_or_null(bias), f32_or_null(scale), f32_or_null(shift),
                                  f32_or_null(input_bias)};
  }
};

Params params(const at::Tensor& x, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
              const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& shift,
              const std::optional<at::Tensor>& input_bias) {
  const int64_t B = x.size(0), C = x.size(1);
  return Params{as_f32(weight, {C}, x, "group_norm", "weight"), as_f32(bias, {C}, x, "group_norm", "bias"),
                as_f32(scale, {B, C}, x, "group_norm", "scale"), as_f32(shift, {B, C}, x, "group_norm", "shift"),
                as_f32(input_bias, {B, C}, x, "group_norm", "input_bias")};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_forward(
    const at::Tensor& x_in, int64_t num_groups, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, double eps, const std::optional<at::Tensor>& scale,
    const std::optional<at::Tensor>& shift, bool silu, const std::optional<at::Tensor>& input_bias) {
  check_x(x_in, "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = dense_layout(x_in) ? x_in : x_in.contiguous();
  const fc::GroupNormPlan plan = plan_for(x, num_groups);
  const Params p = params(x, weight, bias, scale, shift, input_bias);
  at::Tensor y = at::empty_strided(x.sizes(), x.strides(), x.options());
  at::Tensor mean = at::empty({plan.B, plan.G}, x.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({plan.B, plan.G}, x.options().dtype(at::kFloat));
  at::Tensor work = at::empty({fc::group_norm_forward_workspace(plan)}, x.options().dtype(at::kDouble));
  C10_CUDA_CHECK(fc::group_norm_forward(to_dtype(x, "group_norm"), x.data_ptr(), y.data_ptr(), mean.data_ptr<float>(),
                                        rstd.data_ptr<float>(), plan, p.dev(), static_cast<float>(eps), silu,
                                        work.data_ptr<double>(), stream()));
  return {y, mean, rstd};
}

// Returns dx (x's strides) and the (B, C) fp32 sums of dz and dz * xhat.
std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_backward(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& mean_in, const at::Tensor& rstd_in,
    int64_t num_groups, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& shift, bool silu,
    const std::optional<at::Tensor>& input_bias) {
  check_x(x_in, "x");
  check_x(grad_in, "grad");
  TORCH_CHECK(grad_in.sizes() == x_in.sizes() && grad_in.scalar_type() == x_in.scalar_type(),
              "fastvdm_cuda group_norm: grad must match x's shape and dtype");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = dense_layout(x_in) ? x_in : x_in.contiguous();
  at::Tensor grad = grad_in;  // dy in x's layout (a copy only when the layouts differ)
  if (grad.strides() != x.strides()) grad = at::empty_strided(x.sizes(), x.strides(), x.options()).copy_(grad_in);
  const fc::GroupNormPlan plan = plan_for(x, num_groups);
  TORCH_CHECK(mean_in.numel() == plan.B * plan.G && rstd_in.numel() == plan.B * plan.G,
              "fastvdm_cuda group_norm: mean and rstd must have B * num_groups elements");
  const at::Tensor mean = mean_in.to(at::kFloat).contiguous(), rstd = rstd_in.to(at::kFloat).contiguous();
  const Params p = params(x, weight, bias, scale, shift, input_bias);
  at::Tensor dx = at::empty_strided(x.sizes(), x.strides(), x.options());
  at::Tensor sum_dz = at::empty({plan.B, plan.C}, x.options().dtype(at::kFloat));
  at::Tensor sum_dzx = at::empty({plan.B, plan.C}, x.options().dtype(at::kFloat));
  at::Tensor work = at::empty({fc::group_norm_backward_workspace(plan)}, x.options().dtype(at::kFloat));
  C10_CUDA_CHECK(fc::group_norm_backward(to_dtype(x, "group_norm"), grad.data_ptr(), x.data_ptr(),
                                         mean.data_ptr<float>(), rstd.data_ptr<float>(), dx.data_ptr(),
                                         sum_dz.data_ptr<float>(), sum_dzx.data_ptr<float>(), plan, p.dev(), silu,
                                         work.data_ptr<float>(), stream()));
  return {dx, sum_dz, sum_dzx};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastvdm_cuda, m) {
  m.def(
      "group_norm_forward(Tensor x, int num_groups, Tensor? weight, Tensor? bias, float eps, Tensor? scale, "
      "Tensor? shift, bool silu, Tensor? input_bias=None) -> (Tensor, Tensor, Tensor)");
  m.def(
      "group_norm_backward(Tensor grad, Tensor x, Tensor mean, Tensor rstd, int num_groups, Tensor? weight, "
      "Tensor? bias, Tensor? scale, Tensor? shift, bool silu, Tensor? input_bias=None) -> (Tensor, Tensor, Tensor)");
}

// FASTVDM_DISPATCH_KEY: CUDA (CPU in the emulated test build, see cuda_binding.h)
TORCH_LIBRARY_IMPL(fastvdm_cuda, FASTVDM_DISPATCH_KEY, m) {
  m.impl("group_norm_forward", &group_norm_forward);
  m.impl("group_norm_backward", &group_norm_backward);
}
