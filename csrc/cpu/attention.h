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
// Arithmetic in fp32 (bf16/fp16 inputs are converted while packing). The kernels pack what a work item reads into
// fp32 panels (K^T, V^T in groups of one vector width of keys) and rows, and run register-blocked GEMM
// micro-kernels (AVX-512: 12 x 32 or 6 x 64 tiles, AVX2+FMA: 6 x 16 or 3 x 32, baseline x86-64: 4 x 16 or
// 2 x 32; chosen once at run time) for q k^T, P v and, in the backward, dout v^T, dS k, dS^T q, P^T dout, with an
// online softmax (vectorized exp2) on each 48-query x 256-key tile. Work items are (sequence, query blocks) in
// the forward and (sequence, key chunk) in the backward, handed out dynamically; sequences of up to 64 tokens
// (temporal attention) are one query block, worked a position's heads at a time, and in fp32 with D a multiple
// of the vector width read and written in place (no packing but the K^T / V^T panels). How a sequence is split
// depends on the shape only, so results do not depend on the thread count. Any head dim D (padded to the vector
// width inside the buffers), any sequence length.
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

// The instruction set the kernels run with: "avx512", "avx2" or "baseline" (see FASTVDM_CPU_ISA in attention.cpp).
const char* attention_isa();

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
