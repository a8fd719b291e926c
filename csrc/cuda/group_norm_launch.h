// Launch configuration and element addressing of the GroupNorm kernels (csrc/cuda/group_norm.cu).
// Plain C++ (tested by csrc/tests/test_group_norm_launch.cpp).
//
// x is seen as x[n, c, s] of shape (B, C, S) with element strides (stride_b, stride_c, stride_s); y, dy, dx
// share them. A group (n, g) holds N = Cg * S elements, Cg = C / G, numbered e in [0, N) along the memory
// order of the layout: when stride_c < stride_s (or S == 1) (channels-last, e.g. channels_last_3d) the channel is the
// inner index (e = s * Cg + c), otherwise the position is (e = c * S + s, contiguous NC*). Consecutive e are
// then adjacent in memory for both dense layouts, so a block's threads read coalesced.
//
// Forward, two paths:
//   fused  (N <= kGroupNormFusedMaxN): grid x = B * G, one block of kGroupNormFusedThreads per group keeps the
//          group in registers (kGroupNormFusedItems per thread): x is read once and y written once;
//   split  (larger groups): grid x = B * G groups (no 65,535 limit), y = `split` chunks of `chunk` consecutive e
//          (the last may be shorter, none empty). Splitting lets small batches fill the GPU; each chunk is read
//          once for the statistics and once more (from L2 when it fits) to normalize.
// The backward always uses the (B * G, split) grid (split = 1 for fused plans).
#pragma once

#include "cuda/common.h"

namespace fastvdm {
namespace cuda {

// Per-channel coefficients of a group live in shared memory (4 floats per channel in the backward).
constexpr int64_t kGroupNormMaxCg = 3072;
constexpr int kGroupNormFusedThreads = 512;
constexpr int kGroupNormFusedItems = 16;  // elements per thread held in registers
constexpr int64_t kGroupNormFusedMaxN = kGroupNormFusedThreads * kGroupNormFusedItems;

struct GroupNormPlan {
  int64_t B, C, S, G, Cg;
  int64_t N;               // Cg * S elements per group (< 2^31)
  bool channel_inner;      // e = s * Cg + c (channels-last) rather than c * S + s
  int64_t inner, inner_stride, outer_stride;  // e -> (e / inner) * outer_stride + (e % inner) * inner_stride
  int64_t stride_b;
  int64_t split, chunk;    // grid.y and elements per chunk
  int64_t groups;          // grid.x = B * G
  int threads;             // per block (split path and backward)
  bool fused;              // forward: one block per group, group held in registers (then split == 1)
};

// num_sms: streaming multiprocessors of the device (to size the split).
inline GroupNormPlan plan_group_norm(int64_t B, int64_t C, int64_t S, int64_t G, int64_t stride_b, int64_t stride_c,
                                     int64_t stride_s, int num_sms) {
  check(B >= 1 && C >= 1 && S >= 1, "group_norm needs a non-empty (B, C, S) input");
  check(G >= 1 && C % G == 0, "num_groups must divide C");
  GroupNormPlan p{};
  p.B = B;
  p.C = C;
  p.S = S;
  p.G = G;
  p.Cg = C / G;
  p.N = p.Cg * S;
  check(p.N <= 2147483647LL, "a group has more than 2^31 - 1 elements");
  check(p.Cg <= kGroupNormMaxCg, "group_norm: more than 3072 channels per group");
  p.channel_inner = S == 1 || (p.Cg > 1 && stride_c < stride_s);
  if (p.channel_inner) {
    p.inner = p.Cg;
    p.inner_stride = stride_c;
    p.outer_stride = stride_s;
  } else {
    p.inner = S;
    p.inner_stride = stride_s;
    p.outer_stride = stride_c;
  }
  p.stride_b = stride_b;
  p.groups = B * G;
  check(p.groups <= kMaxGridX, "B * num_groups exceeds the grid");
  p.threads = 256;
  p.fused = p.N <= kGroupNormFusedMaxN;
  if (p.fused) {
    p.split = 1;
    p.chunk = p.N;
    return p;
  }
  // ~4 blocks per SM in total, chunks of at least 8 elements per thread, at most 64 chunks per group.
  const int64_t target = 4 * static_cast<int64_t>(num_sms > 0 ? num_sms : 1);
  int64_t split = ceil_div(target, p.groups);
  split = min64(split, ceil_div(p.N, 8 * p.threads));
  split = max64(1, min64(split, 64));
  p.chunk = ceil_div(p.N, split);
  p.split = ceil_div(p.N, p.chunk);  // no empty chunk
  return p;
}

// Offset (in elements, from the group's sample base n * stride_b + g * Cg * stride_c) of element e of a group,
// and its channel within the group.
FASTVDM_HD int64_t group_elem_offset(const GroupNormPlan& p, int64_t e) {
  return (e / p.inner) * p.outer_stride + (e % p.inner) * p.inner_stride;
}
FASTVDM_HD int64_t group_elem_channel(const GroupNormPlan& p, int64_t e) {
  return p.channel_inner ? e % p.inner : e / p.inner;
}
// Element offset of the group's first element (c = g * Cg, s = 0) in sample n.
FASTVDM_HD int64_t group_base(const GroupNormPlan& p, int64_t n, int64_t g) {
  return n * p.stride_b + g * p.Cg * (p.channel_inner ? p.inner_stride : p.outer_stride);
}
// Walks e = start, start + step, start + 2 step, ... of one group (a thread's strided loop) keeping the element's
// offset and channel up to date with adds and one compare per element: the 64-bit divisions of
// group_elem_offset / group_elem_channel happen once per thread, not once per element.
struct GroupWalk {
  int64_t q, r;        // e = q * inner + r
  int64_t off;         // group_elem_offset(e)
  int64_t dq, dr;      // step = dq * inner + dr, 0 <= dr < inner
  int64_t doff;        // offset change of a step without a carry
  int64_t carry_off;   // extra offset change when r wraps past inner
  int64_t inner;
  bool channel_inner;
  FASTVDM_HD GroupWalk(const GroupNormPlan& p, int64_t start, int64_t step)
      : q(start / p.inner),
        r(start % p.inner),
        off(0),
        dq(step / p.inner),
        dr(step % p.inner),
        doff(0),
        carry_off(p.outer_stride - p.inner * p.inner_stride),
        inner(p.inner),
        channel_inner(p.channel_inner) {
    off = q * p.outer_stride + r * p.inner_stride;
    doff = dq * p.outer_stride + dr * p.inner_stride;
  }
  FASTVDM_HD int64_t offset() const { return off; }
  FASTVDM_HD int64_t channel() const { return channel_inner ? r : q; }
  FASTVDM_HD void advance() {
    q += dq;
    r += dr;
    off += doff;
    if (r >= inner) {
      r -= inner;
      ++q;
      off += carry_off;
    }
  }
};

// Whether every group is one dense run of memory: element e at offset e from the group's base (unit inner stride
// and rows back to back, or a single row). Such groups can move as 16-byte vectors (group_norm.cu).
FASTVDM_HD bool group_is_dense(const GroupNormPlan& p) {
  return p.inner_stride == 1 && (p.outer_stride == p.inner || p.N == p.inner);
}

FASTVDM_HD void group_chunk_range(const GroupNormPlan& p, int64_t split_index, int64_t* begin, int64_t* end) {
  *begin = split_index * p.chunk;
  *end = min64(p.N, *begin + p.chunk);
}

}  // namespace cuda
}  // namespace fastvdm
