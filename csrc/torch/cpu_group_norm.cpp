// torch.ops.fastvdm_cpu.group_norm_{forward,backward}: bindings of csrc/cpu/group_norm.cpp.
//
// x is passed as a (B, C, S) tensor (the Python wrapper flattens the spatial dims with a view). Contiguous
// and channels-last ((B, S, C) in memory) inputs are used in place; any other layout is copied to contiguous
// first. The (C,) and (B, C) parameters are converted to contiguous float32 here (tiny). The autograd
// wrapper, which turns the backward's per-(n, c) sums into the parameter gradients, is
// fastvdm/ops/cpu/group_norm.py. The forward writes into `out` when one is given (fastvdm.ops.group_norm's out=):
// it must have the strides of the x the kernel reads (x's own, or contiguous when x had to be copied).
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cpu/group_norm.h"
#include "cpu_output.h"  // csrc/torch/cpu_output.h (same directory)

namespace {

using fastvdm::bf16;
using fastvdm::fp16;
using fastvdm::GroupNormGeometry;
using fastvdm::GroupNormParams;

bool dense_layout(const at::Tensor& x) { return x.is_contiguous() || x.transpose(1, 2).is_contiguous(); }

void check_x(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), "fastvdm_cpu group_norm: ", name, " must be a CPU tensor");
  TORCH_CHECK(x.dim() == 3, "fastvdm_cpu group_norm: ", name, " must be (B, C, S), got ", x.dim(), " dims");
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf, "fastvdm_cpu group_norm: ", name,
              " must be float32, bfloat16 or float16, got ", t);
  TORCH_CHECK(x.numel() > 0, "fastvdm_cpu group_norm: ", name, " is empty");
}

at::Tensor param(const std::optional<at::Tensor>& t, at::IntArrayRef shape, const char* name) {
  if (!t.has_value()) return at::Tensor();
  TORCH_CHECK(t->sizes() == shape, "fastvdm_cpu group_norm: ", name, " must have shape ", shape, ", got ",
              t->sizes());
  return t->to(at::kFloat).contiguous();
}

const float* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

GroupNormGeometry geometry(const at::Tensor& x, int64_t num_groups) {
  const int64_t C = x.size(1);
  TORCH_CHECK(num_groups > 0 && C % num_groups == 0, "fastvdm_cpu group_norm: num_groups=", num_groups,
              " must divide C=", C);
  return GroupNormGeometry{x.size(0), C, x.size(2), num_groups, x.stride(0), x.stride(1), x.stride(2)};
}

template <typename T>
T* ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_forward(
    const at::Tensor& x_in, int64_t num_groups, const std::optional<at::Tensor>& weight_in,
    const std::optional<at::Tensor>& bias_in, double eps, const std::optional<at::Tensor>& scale_in,
    const std::optional<at::Tensor>& shift_in, bool silu, const std::optional<at::Tensor>& input_bias_in,
    const std::optional<at::Tensor>& out) {
  check_x(x_in, "x");
  const at::Tensor x = dense_layout(x_in) ? x_in : x_in.contiguous();
  const GroupNormGeometry geo = geometry(x, num_groups);
  const at::Tensor weight = param(weight_in, {geo.C}, "weight"), bias = param(bias_in, {geo.C}, "bias");
  const at::Tensor scale = param(scale_in, {geo.B, geo.C}, "scale");
  const at::Tensor shift = param(shift_in, {geo.B, geo.C}, "shift");
  const at::Tensor input_bias = param(input_bias_in, {geo.B, geo.C}, "input_bias");
  const GroupNormParams p{ptr_or_null(weight), ptr_or_null(bias), ptr_or_null(scale), ptr_or_null(shift),
                          ptr_or_null(input_bias)};

  at::Tensor y;
  if (out.has_value()) {  // the caller's buffer (x itself is allowed: every element is read before it is written)
    TORCH_CHECK(out->device().is_cpu() && out->scalar_type() == x.scalar_type() && out->sizes() == x.sizes() &&
                    out->strides() == x.strides(),
                "fastvdm_cpu group_norm: out must be a CPU tensor with x's shape, dtype and strides");
    at::assert_no_internal_overlap(*out);
    at::assert_no_partial_overlap(*out, x);
    y = *out;
  } else {
    y = fastvdm_cpu_output::empty_output(x.sizes(), x.strides(), x.options());
  }
  at::Tensor mean = at::empty({geo.B, geo.G}, x.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({geo.B, geo.G}, x.options().dtype(at::kFloat));
  const float e = static_cast<float>(eps);
  switch (x.scalar_type()) {
    case at::kFloat:
      fastvdm::group_norm_forward(ptr<const float>(x), ptr<float>(y), ptr<float>(mean), ptr<float>(rstd), geo, p, e,
                                  silu);
      break;
    case at::kBFloat16:
      fastvdm::group_norm_forward(ptr<const bf16>(x), ptr<bf16>(y), ptr<float>(mean), ptr<float>(rstd), geo, p, e,
                                  silu);
      break;
    default:
      fastvdm::group_norm_forward(ptr<const fp16>(x), ptr<fp16>(y), ptr<float>(mean), ptr<float>(rstd), geo, p, e,
                                  silu);
  }
  return {y, mean, rstd};
}

// Returns dx (x's strides) and the (B, C) fp32 sums of dz and dz * xhat.
std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_backward(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& mean_in, const at::Tensor& rstd_in,
    int64_t num_groups, const std::optional<at::Tensor>& weight_in, const std::optional<at::Tensor>& bias_in,
    const std::optional<at::Tensor>& scale_in, const std::optional<at::Tensor>& shift_in, bool silu,
    const std::optional<at::Tensor>& input_bias_in) {
  check_x(x_in, "x");
  check_x(grad_in, "grad");
  TORCH_CHECK(grad_in.sizes() == x_in.sizes() && grad_in.scalar_type() == x_in.scalar_type(),
              "fastvdm_cpu group_norm: grad must match x's shape and dtype");
  const at::Tensor x = dense_layout(x_in) ? x_in : x_in.contiguous();
  const GroupNormGeometry geo = geometry(x, num_groups);
  // dy in x's layout (a copy only when the layouts differ)
  at::Tensor grad = grad_in;
  if (grad.strides() != x.strides()) grad = at::empty_strided(x.sizes(), x.strides(), x.options()).copy_(grad_in);
  TORCH_CHECK(mean_in.numel() == geo.B * geo.G && rstd_in.numel() == geo.B * geo.G,
              "fastvdm_cpu group_norm: mean and rstd must have B * num_groups elements");
  const at::Tensor mean = mean_in.to(at::kFloat).contiguous(), rstd = rstd_in.to(at::kFloat).contiguous();
  const at::Tensor weight = param(weight_in, {geo.C}, "weight"), bias = param(bias_in, {geo.C}, "bias");
  const at::Tensor scale = param(scale_in, {geo.B, geo.C}, "scale");
  const at::Tensor shift = param(shift_in, {geo.B, geo.C}, "shift");
  const at::Tensor input_bias = param(input_bias_in, {geo.B, geo.C}, "input_bias");
  const GroupNormParams p{ptr_or_null(weight), ptr_or_null(bias), ptr_or_null(scale), ptr_or_null(shift),
                          ptr_or_null(input_bias)};

  at::Tensor dx = fastvdm_cpu_output::empty_output(x.sizes(), x.strides(), x.options());
  at::Tensor sum_dz = at::empty({geo.B, geo.C}, x.options().dtype(at::kFloat));
  at::Tensor sum_dzx = at::empty({geo.B, geo.C}, x.options().dtype(at::kFloat));
  const float* m = mean.data_ptr<float>();
  const float* r = rstd.data_ptr<float>();
  float* s1 = sum_dz.data_ptr<float>();
  float* s2 = sum_dzx.data_ptr<float>();
  switch (x.scalar_type()) {
    case at::kFloat:
      fastvdm::group_norm_backward(ptr<const float>(grad), ptr<const float>(x), m, r, ptr<float>(dx), s1, s2, geo, p,
                                   silu);
      break;
    case at::kBFloat16:
      fastvdm::group_norm_backward(ptr<const bf16>(grad), ptr<const bf16>(x), m, r, ptr<bf16>(dx), s1, s2, geo, p,
                                   silu);
      break;
    default:
      fastvdm::group_norm_backward(ptr<const fp16>(grad), ptr<const fp16>(x), m, r, ptr<fp16>(dx), s1, s2, geo, p,
                                   silu);
  }
  return {dx, sum_dz, sum_dzx};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastvdm_cpu, m) {
  m.def(
      "group_norm_forward(Tensor x, int num_groups, Tensor? weight, Tensor? bias, float eps, Tensor? scale, "
      "Tensor? shift, bool silu, Tensor? input_bias=None, Tensor(a!)? out=None) -> (Tensor, Tensor, Tensor)");
  m.def(
      "group_norm_backward(Tensor grad, Tensor x, Tensor mean, Tensor rstd, int num_groups, Tensor? weight, "
      "Tensor? bias, Tensor? scale, Tensor? shift, bool silu, Tensor? input_bias=None) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastvdm_cpu, CPU, m) {
  m.impl("group_norm_forward", &group_norm_forward);
  m.impl("group_norm_backward", &group_norm_backward);
}
