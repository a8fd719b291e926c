// Host-side tests of the loss kernels' launch configuration (csrc/cuda/losses_launch.h): every element of every
// sample is in exactly one non-empty chunk, the grid is one-dimensional and large batches do not hit 65,535.
#include <cstdint>
#include <vector>

#include "check.h"
#include "cuda/losses_launch.h"

using namespace fastvdm::cuda;
using fastvdm_test::throws_invalid;

static void check_plan(int64_t B, int64_t N, int sms) {
  const LossReducePlan p = plan_loss_reduce(B, N, sms);
  CHECK(p.B == B && p.N == N);
  CHECK(p.blocks_per_sample >= 1 && p.blocks_per_sample <= 1024);
  CHECK(p.grid == B * p.blocks_per_sample);
  CHECK(p.grid <= kMaxGridX);
  CHECK(p.threads % 32 == 0 && p.threads <= 1024);
  if (N >= 4) CHECK(p.chunk % 4 == 0);
  // chunks tile [0, N): contiguous, non-empty, in order
  int64_t expect = 0;
  for (int64_t j = 0; j < p.blocks_per_sample; ++j) {
    int64_t begin, end;
    loss_chunk_range(N, p.chunk, j, &begin, &end);
    CHECK(begin == expect);
    CHECK(end > begin);
    expect = end;
  }
  CHECK(expect == N);
  // the block id decodes back to (sample, chunk) as the kernels do (32-bit arithmetic)
  for (int64_t blk : {int64_t(0), p.grid / 2, p.grid - 1}) {
    int64_t b, j;
    loss_block_coords(p, blk, &b, &j);
    CHECK(b == blk / p.blocks_per_sample && j == blk % p.blocks_per_sample);
  }
}

// SampleWalk visits start, start + step, ... as (i / N, i % N) without dividing per step.
static void check_sample_walk(int64_t N, int64_t start, int64_t step, int steps) {
  SampleWalk w(start, step, N);
  for (int k = 0; k < steps; ++k, w.advance()) {
    const int64_t i = start + k * step;
    CHECK(w.b == i / N && w.r == i % N);
  }
}

int main() {
  const std::vector<int64_t> Bs = {1, 2, 3, 7, 64, 1000};
  const std::vector<int64_t> Ns = {1, 3, 4, 5, 255, 256, 1023, 1024, 1025, 4096, 100000, 1 << 20, 16777216 + 3};
  for (int64_t B : Bs)
    for (int64_t N : Ns)
      for (int sms : {1, 108, 132}) check_plan(B, N, sms);

  for (int64_t N : {int64_t(1), int64_t(3), int64_t(7), int64_t(8), int64_t(1000), int64_t(3001), int64_t(1) << 33})
    for (int64_t start : {int64_t(0), int64_t(5), int64_t(1023), int64_t(1) << 31})
      for (int64_t step : {int64_t(1), int64_t(8), int64_t(4224 * 8), (int64_t(1) << 34) + 3})
        check_sample_walk(N, start, step, 50);

  // a huge batch of tiny samples: more than 65,535 blocks on grid.x (allowed up to 2^31 - 1)
  {
    const LossReducePlan p = plan_loss_reduce(200000, 3, 132);
    CHECK(p.blocks_per_sample == 1);
    CHECK(p.grid == 200000 && p.grid > kMaxGridYZ);
  }
  // few samples, many elements: the batch is split to fill the SMs, bounded by 1024 chunks per sample
  {
    const LossReducePlan p = plan_loss_reduce(2, int64_t(1) << 30, 132);
    CHECK(p.blocks_per_sample == 264);
    const LossReducePlan q = plan_loss_reduce(1, int64_t(1) << 30, 100000);
    CHECK(q.blocks_per_sample == 1024);
  }
  CHECK(throws_invalid([] { plan_loss_reduce(0, 10, 1); }));
  CHECK(throws_invalid([] { plan_loss_reduce(2, 0, 1); }));

  // elementwise grid-stride plans: at least one block, at most 32 per SM, never more blocks than needed
  for (int64_t total : {int64_t(1), int64_t(255), int64_t(256), int64_t(257), int64_t(1) << 34}) {
    const ElementwisePlan e = plan_elementwise(total, 132);
    CHECK(e.grid >= 1 && e.grid <= 32 * 132);
    CHECK(e.grid <= ceil_div(total, e.threads));
  }
  CHECK(throws_invalid([] { plan_elementwise(0, 1); }));
  return fastvdm_test::report("test_losses_launch");
}
