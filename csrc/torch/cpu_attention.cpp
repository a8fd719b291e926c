// torch.ops.fastvdm_cpu.attention_{forward,backward}: bindings of csrc/cpu/attention.cpp.
//
// q, k, v (and dout, out) are (B, T, S, heads, D) CPU tensors of one dtype (float32, bfloat16, float16) and any
// strides; a tensor whose head dimension is not contiguous is copied to contiguous first (views of a fused QKV
// projection are read in place). Outputs (out, dq, dk, dv) are contiguous (B, T, S, heads, D) in q's dtype; lse
// is a contiguous (B, T, S, heads) fp32 tensor, returned by the forward and consumed by the backward. axis:
// 0 spatial, 1 temporal, 2 joint. The autograd wrapper is fastvdm/ops/cpu/attention.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "cpu/attention.h"

namespace {

using fastvdm::AttnGeometry;
using fastvdm::AttnStrides;
using fastvdm::bf16;
using fastvdm::fp16;

at::Tensor checked(const at::Tensor& t, const at::Tensor& q, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "fastvdm_cpu attention: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 5, "fastvdm_cpu attention: ", name, " must be (B, T, S, heads, D), got ", t.dim(), " dims");
  TORCH_CHECK(t.sizes() == q.sizes() && t.scalar_type() == q.scalar_type(), "fastvdm_cpu attention: ", name,
              " must match q's shape and dtype");
  const auto s = t.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kBFloat16 || s == at::kHalf, "fastvdm_cpu attention: ", name,
              " must be float32, bfloat16 or float16, got ", s);
  TORCH_CHECK(t.numel() > 0, "fastvdm_cpu attention: ", name, " is empty");
  return t.stride(4) == 1 || t.size(4) == 1 ? t : t.contiguous();
}

AttnStrides strides(const at::Tensor& t) { return AttnStrides{t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

AttnGeometry geometry(const at::Tensor& q, int64_t axis) {
  TORCH_CHECK(axis >= 0 && axis <= 2, "fastvdm_cpu attention: axis must be 0 (spatial), 1 (temporal) or 2 (joint)");
  return AttnGeometry{q.size(0), q.size(1), q.size(2), q.size(3), q.size(4), static_cast<int>(axis)};
}

// Calls run(T{}) with T the kernels' element type for `type` (float32, bfloat16 or float16).
template <typename Run>
void with_element_type(at::ScalarType type, Run&& run) {
  switch (type) {
    case at::kFloat:
      run(float{});
      break;
    case at::kBFloat16:
      run(bf16{});
      break;
    default:
      run(fp16{});
  }
}

template <typename T>
T* ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& q_in, const at::Tensor& k_in,
                                                     const at::Tensor& v_in, int64_t axis, double scale) {
  const at::Tensor q = checked(q_in, q_in, "q"), k = checked(k_in, q_in, "k"), v = checked(v_in, q_in, "v");
  const AttnGeometry g = geometry(q, axis);
  at::Tensor out = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor lse = at::empty({g.B, g.T, g.S, g.H}, q.options().dtype(at::kFloat));
  const AttnStrides lse_st{lse.stride(0), lse.stride(1), lse.stride(2), lse.stride(3)};
  const float sc = static_cast<float>(scale);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    fastvdm::attention_forward<T>(g, ptr<const T>(q), strides(q), ptr<const T>(k), strides(k), ptr<const T>(v),
                                  strides(v), ptr<T>(out), strides(out), lse.data_ptr<float>(), lse_st, sc);
  };
  with_element_type(q.scalar_type(), run);
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(const at::Tensor& grad_in, const at::Tensor& q_in,
                                                                  const at::Tensor& k_in, const at::Tensor& v_in,
                                                                  const at::Tensor& out_in, const at::Tensor& lse_in,
                                                                  int64_t axis, double scale) {
  const at::Tensor q = checked(q_in, q_in, "q"), k = checked(k_in, q_in, "k"), v = checked(v_in, q_in, "v");
  const at::Tensor grad = checked(grad_in, q_in, "grad"), out = checked(out_in, q_in, "out");
  const AttnGeometry g = geometry(q, axis);
  TORCH_CHECK(lse_in.sizes() == at::IntArrayRef({g.B, g.T, g.S, g.H}),
              "fastvdm_cpu attention: lse must be (B, T, S, heads)");
  const at::Tensor lse = lse_in.to(at::kFloat);
  const AttnStrides lse_st{lse.stride(0), lse.stride(1), lse.stride(2), lse.stride(3)};
  const auto contiguous = q.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor dq = at::empty(q.sizes(), contiguous), dk = at::empty(q.sizes(), contiguous);
  at::Tensor dv = at::empty(q.sizes(), contiguous);
  const float sc = static_cast<float>(scale);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    fastvdm::attention_backward<T>(g, ptr<const T>(q), strides(q), ptr<const T>(k), strides(k), ptr<const T>(v),
                                   strides(v), ptr<const T>(out), strides(out), ptr<const T>(grad), strides(grad),
                                   lse.data_ptr<float>(), lse_st, ptr<T>(dq), strides(dq), ptr<T>(dk), strides(dk),
                                   ptr<T>(dv), strides(dv), sc);
  };
  with_element_type(q.scalar_type(), run);
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastvdm_cpu, m) {
  m.def("attention_forward(Tensor q, Tensor k, Tensor v, int axis, float scale) -> (Tensor, Tensor)");
  m.def(
      "attention_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, int axis, "
      "float scale) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastvdm_cpu, CPU, m) {
  m.impl("attention_forward", &attention_forward);
  m.impl("attention_backward", &attention_backward);
}
