// Video attention on the GPU (spatial / temporal / joint), forward and backward. Torch-free: raw device pointers,
// element strides, a cudaStream_t. Geometry, addressing and kernel choice: attention_launch.h.
//
// Forward: out = softmax(scale * q k^T) v per sequence, lse = logsumexp of the scaled scores (natural log) per
// query token, fp32, saved for the backward.
// Backward (P = exp(scale * q k^T - lse), dP = dout v^T, delta = rowsum(P * dP) = rowsum(dout * out)):
//   dv = P^T dout,  dS = P * (dP - delta),  dq = scale * dS k,  dk = scale * dS^T q.
// The short kernel (L <= 32) computes delta itself and writes dq directly. The flash kernels need `delta`
// (per token, fp32, like lse) from the caller and accumulate dq into `dq_accum`, an fp32 tensor that must be
// zero-filled before the call (the caller casts it to the element type afterwards).
#pragma once

#include <cuda_runtime_api.h>

#include "cuda/attention_launch.h"
#include "cuda/common.h"

namespace fastvdm {
namespace cuda {

struct AttnIn {
  const void* ptr;
  Strides5 st;
};
struct AttnOut {
  void* ptr;
  Strides5 st;
};

// o: output of q's dtype; lse: fp32 (B, T, S, H) with strides `stat` (d unused).
cudaError_t attention_forward(DType dtype, const AttnProblem& problem, AttnIn q, AttnIn k, AttnIn v, AttnOut o,
                              float* lse, Strides5 stat, float scale, cudaStream_t stream);

// dq: used by the short kernel (element type); dq_accum: fp32, zero-filled, used by the flash kernels; both with
// strides dq.st. delta: required for the flash kernels (may be null for the short kernel).
cudaError_t attention_backward(DType dtype, const AttnProblem& problem, AttnIn q, AttnIn k, AttnIn v, AttnIn dout,
                               const float* lse, const float* delta, Strides5 stat, AttnOut dq, float* dq_accum,
                               AttnOut dk, AttnOut dv, float scale, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastvdm
