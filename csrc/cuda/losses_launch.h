// Launch configuration of the loss kernels (csrc/cuda/losses.cu). Plain C++ (tested by csrc/tests).
//
// Every big tensor is a contiguous (B, N) array. A reduction pass splits each sample's N elements into
// `blocks_per_sample` contiguous chunks of `chunk` elements (the last one possibly shorter, never empty); the
// grid is one-dimensional, block id = b * blocks_per_sample + j, so B has no 65,535 limit. Each block writes
// one partial sum per quantity, and one finishing block reduces the B * blocks_per_sample partials in a fixed
// order (deterministic results). Elementwise passes (the gradients) use a grid-stride loop.
#pragma once

#include "cuda/common.h"

namespace fastvdm {
namespace cuda {

struct LossReducePlan {
  int64_t B, N;               // samples, elements per sample
  int64_t blocks_per_sample;  // chunks per sample
  int64_t chunk;              // elements per chunk (a multiple of 4 except when N < 4)
  int64_t grid;               // B * blocks_per_sample
  int threads;                // per block
};

// Aim at ~4 blocks per SM in total, at least 4 elements per thread in a chunk, and at most 1024 chunks per sample.
inline LossReducePlan plan_loss_reduce(int64_t B, int64_t N, int num_sms) {
  check(B >= 1 && N >= 1, "losses need a non-empty (B, ...) input");
  LossReducePlan p{};
  p.B = B;
  p.N = N;
  p.threads = 256;
  const int64_t target_blocks = 4 * static_cast<int64_t>(num_sms > 0 ? num_sms : 1);
  const int64_t min_chunk = 4 * p.threads;
  int64_t bps = ceil_div(target_blocks, B);
  bps = min64(bps, ceil_div(N, min_chunk));
  bps = max64(1, min64(bps, 1024));
  p.chunk = round_up(ceil_div(N, bps), 4);
  p.blocks_per_sample = ceil_div(N, p.chunk);  // recomputed so that no chunk is empty
  p.grid = B * p.blocks_per_sample;
  check(p.grid <= kMaxGridX, "too many samples for one grid");
  return p;
}

// Sample b and chunk j of reduction block blk (32-bit arithmetic: grid <= 2^31 - 1, blocks_per_sample <= 1024).
FASTVDM_HD void loss_block_coords(const LossReducePlan& p, int64_t blk, int64_t* b, int64_t* j) {
  const uint32_t ublk = static_cast<uint32_t>(blk), bps = static_cast<uint32_t>(p.blocks_per_sample);
  *b = ublk / bps;
  *j = ublk - static_cast<uint32_t>(*b) * bps;
}

// [begin, end) of chunk j of a sample.
FASTVDM_HD void loss_chunk_range(int64_t N, int64_t chunk, int64_t j, int64_t* begin, int64_t* end) {
  *begin = j * chunk;
  *end = min64(N, *begin + chunk);
}

// Walks the flat index i = start, start + step, start + 2 step, ... of a (B, N) array as (b, r), i = b * N + r,
// with adds and one compare per step: the 64-bit divisions happen once, in the constructor (a thread's
// grid-stride loop then needs none per element).
struct SampleWalk {
  int64_t b, r;    // current sample and position in it
  int64_t db, dr;  // step = db * N + dr, 0 <= dr < N
  int64_t N;
  FASTVDM_HD SampleWalk(int64_t start, int64_t step, int64_t n)
      : b(start / n), r(start % n), db(step / n), dr(step % n), N(n) {}
  FASTVDM_HD void advance() {
    b += db;
    r += dr;
    if (r >= N) {
      r -= N;
      ++b;
    }
  }
};

struct ElementwisePlan {
  int64_t grid;
  int threads;
};

// Grid-stride elementwise pass over `total` elements: at most 32 blocks per SM, at least one element per thread.
inline ElementwisePlan plan_elementwise(int64_t total, int num_sms) {
  check(total >= 1, "empty elementwise pass");
  ElementwisePlan p{};
  p.threads = 256;
  const int64_t cap = 32 * static_cast<int64_t>(num_sms > 0 ? num_sms : 1);
  p.grid = max64(1, min64(ceil_div(total, p.threads), cap));
  return p;
}

}  // namespace cuda
}  // namespace fastvdm
