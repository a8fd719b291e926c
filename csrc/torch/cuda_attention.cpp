// torch.ops.fastvdm_cuda.attention_{forward,backward}: bindings of csrc/cuda/attention.cu.
//
// q, k, v (and dout) are (B, T, S, heads, D) tensors of any strides, read in place (no copy). Outputs (out, dq,
// dk, dv) are contiguous (B, T, S, heads, D); lse is a contiguous (B, T, S, heads) fp32 tensor, the logsumexp of
// each query's scaled scores, returned by the forward and consumed by the backward. axis: 0 spatial,
// 1 temporal, 2 joint. The autograd wrapper is fastvdm/ops/cuda/attention.py.
#include <torch/library.h>

#include <tuple>

#include "cuda/attention.h"
#include "cuda_binding.h"  // csrc/torch/cuda_binding.h (same directory)

namespace {

using namespace fastvdm_binding;
namespace fc = fastvdm::cuda;

fc::Strides5 strides5(const at::Tensor& t) {
  return fc::Strides5{t.stride(0), t.stride(1), t.stride(2), t.stride(3), t.stride(4)};
}

fc::Strides5 stat_strides(const at::Tensor& stat) {
  return fc::Strides5{stat.stride(0), stat.stride(1), stat.stride(2), stat.stride(3), 0};
}

void check_qkv(const at::Tensor& t, const at::Tensor& q, const char* name) {
  check_cuda(t, "attention", name);
  TORCH_CHECK(t.dim() == 5, "fastvdm_cuda attention: ", name, " must be (B, T, S, heads, D)");
  TORCH_CHECK(t.sizes() == q.sizes() && t.scalar_type() == q.scalar_type() && t.device() == q.device(),
              "fastvdm_cuda attention: ", name, " must match q's shape, dtype and device");
  to_dtype(t, "attention");
}

fc::AttnProblem problem_for(const at::Tensor& q, int64_t axis) {
  TORCH_CHECK(axis >= 0 && axis <= 2, "fastvdm_cuda attention: axis must be 0 (spatial), 1 (temporal) or 2 (joint)");
  return plan_or_throw([&] {
    return fc::make_attn_problem(q.size(0), q.size(1), q.size(2), q.size(3), q.size(4), static_cast<fc::Axis>(axis));
  });
}

std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                     int64_t axis, double scale) {
  check_qkv(q, q, "q");
  check_qkv(k, q, "k");
  check_qkv(v, q, "v");
  const c10::cuda::CUDAGuard guard(q.device());
  const fc::AttnProblem p = problem_for(q, axis);
  at::Tensor out = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor lse = at::empty({p.B, p.T, p.S, p.H}, q.options().dtype(at::kFloat));
  plan_or_throw([&] {  // validate the launch configuration with a torch error before launching
    if (fc::use_short_kernel(p)) {
      fc::plan_short(p, false);
    } else {
      fc::plan_flash(p, q.element_size(), false);
    }
    return 0;
  });
  C10_CUDA_CHECK(fc::attention_forward(to_dtype(q, "attention"), p, {q.data_ptr(), strides5(q)},
                                       {k.data_ptr(), strides5(k)}, {v.data_ptr(), strides5(v)},
                                       {out.data_ptr(), strides5(out)}, lse.data_ptr<float>(), stat_strides(lse),
                                       static_cast<float>(scale), stream()));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(const at::Tensor& grad, const at::Tensor& q,
                                                                  const at::Tensor& k, const at::Tensor& v,
                                                                  const at::Tensor& out, const at::Tensor& lse_in,
                                                                  int64_t axis, double scale) {
  check_qkv(q, q, "q");
  check_qkv(k, q, "k");
  check_qkv(v, q, "v");
  check_qkv(grad, q, "grad");
  check_qkv(out, q, "out");
  const c10::cuda::CUDAGuard guard(q.device());
  const fc::AttnProblem p = problem_for(q, axis);
  TORCH_CHECK(lse_in.sizes() == at::IntArrayRef({p.B, p.T, p.S, p.H}), "fastvdm_cuda attention: lse must be (B, T, S, heads)");
  const at::Tensor lse = lse_in.to(at::kFloat);
  const bool short_kernel = fc::use_short_kernel(p);
  plan_or_throw([&] {
    if (short_kernel) {
      fc::plan_short(p, true);
    } else {
      fc::plan_flash(p, q.element_size(), true);
    }
    return 0;
  });
  const auto contiguous = q.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor dk = at::empty(q.sizes(), contiguous), dv = at::empty(q.sizes(), contiguous);
  at::Tensor dq, dq_accum, delta;
  if (short_kernel) {
    dq = at::empty(q.sizes(), contiguous);
  } else {
    // delta = rowsum(dout * out) per token (fp32); dq accumulates in fp32 across the key blocks
    delta = (grad.to(at::kFloat) * out.to(at::kFloat)).sum(-1).contiguous();
    dq_accum = at::zeros(q.sizes(), contiguous.dtype(at::kFloat));
  }
  const at::Tensor& dq_target = short_kernel ? dq : dq_accum;
  C10_CUDA_CHECK(fc::attention_backward(
      to_dtype(q, "attention"), p, {q.data_ptr(), strides5(q)}, {k.data_ptr(), strides5(k)},
      {v.data_ptr(), strides5(v)}, {grad.data_ptr(), strides5(grad)}, lse.data_ptr<float>(),
      short_kernel ? nullptr : delta.data_ptr<float>(), stat_strides(lse),
      {short_kernel ? dq.data_ptr() : nullptr, strides5(dq_target)},
      short_kernel ? nullptr : dq_accum.data_ptr<float>(), {dk.data_ptr(), strides5(dk)},
      {dv.data_ptr(), strides5(dv)}, static_cast<float>(scale), stream()));
  if (!short_kernel) dq = dq_accum.to(q.scalar_type());
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastvdm_cuda, m) {
  m.def("attention_forward(Tensor q, Tensor k, Tensor v, int axis, float scale) -> (Tensor, Tensor)");
  m.def(
      "attention_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, int axis, "
      "float scale) -> (Tensor, Tensor, Tensor)");
}

// FASTVDM_DISPATCH_KEY: CUDA (CPU in the emulated test build, see cuda_binding.h)
TORCH_LIBRARY_IMPL(fastvdm_cuda, FASTVDM_DISPATCH_KEY, m) {
  m.impl("attention_forward", &attention_forward);
  m.impl("attention_backward", &attention_backward);
}
