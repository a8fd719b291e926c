// Video attention on the CPU (OpenMP), forward and backward. Torch-free: raw pointers, sizes and strides in
// elements.
//
// q, k, v, out, dout, dq, dk, dv are (B, T, S, H, D) tensors, each with its own strides, except that the head
// dimension D must be contiguous (stride 1) in every one of them. A sequence is:
//   spatial  (axis 0): the S tokens of one (b, t, h)      -> B * T * H sequences of L = S tokens
//   temporal (axis 1): the T tokens of one (b, s, h)      -> B * S * H sequences of L = T tokens
//   joint    (axis 2): the T * S tokens of one (b, h)     -> B * H sequences of L = T * S, token n at
//                                                            (t, s) = (n / S, n % S)
// Forward: out = softmax(scale * q k^T) v per sequence; lse[b, t, s, h] (fp32, strides `lse_st`, d unused) is
// the logsumexp (natural log) of each query's scaled scores, saved for the backward.
// Backward (P = exp(scale * q k^T - lse), delta = rowsum(dout * out)):
//   dv = P^T dout,  dS = P * (dout v^T - delta),  dq = scale * dS k,  dk = scale * dS^T q.
// Arithmetic in fp32. Each sequence is one unit of work (OpenMP static schedule over sequences), computed in
// a fixed order: results do not depend on the thread count. Per sequence the kernels hold its K and V (and
// in the backward Q, dO, dK, dV) in fp32 thread-local buffers of L x D floats.
#pragma once

#include <cstdint>

#include "cpu/half_types.h"

namespace fastvdm {

struct AttnStrides {
  int64_t b, t, s, h;  // the d stride is 1
};

struct AttnGeometry {
  int64_t B, T, S, H, D;
  int axis;  // 0 spatial, 1 temporal, 2 joint
};

// T is float, bf16 or fp16.
template <typename T>
void attention_forward(const AttnGeometry& g, const T* q, AttnStrides q_st, const T* k, AttnStrides k_st,
                       const T* v, AttnStrides v_st, T* out, AttnStrides out_st, float* lse, AttnStrides lse_st,
                       float scale);

template <typename T>
void attention_backward(const AttnGeometry& g, const T* q, AttnStrides q_st, const T* k, AttnStrides k_st,
                        const T* v, AttnStrides v_st, const T* out, AttnStrides out_st, const T* dout,
                        AttnStrides dout_st, const float* lse, AttnStrides lse_st, T* dq, AttnStrides dq_st, T* dk,
                        AttnStrides dk_st, T* dv, AttnStrides dv_st, float scale);

}  // namespace fastvdm
