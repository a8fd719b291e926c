// Host-side tests of the GroupNorm launch configuration and addressing (csrc/cuda/group_norm_launch.h): for
// contiguous, channels-last and arbitrary strided layouts, the (group, e) walk visits every element of x exactly
// once with the right channel; chunks tile each group; big batches fit grid.x; unsupported shapes are refused.
#include <cstdint>
#include <set>
#include <vector>

#include "check.h"
#include "cuda/group_norm_launch.h"

using namespace fastvdm::cuda;
using fastvdm_test::throws_invalid;

// Walk all (n, g, e) like the kernels and check the element offsets against x[n, c, s] = n*sb + c*sc + s*ss.
static void check_addressing(int64_t B, int64_t C, int64_t S, int64_t G, int64_t sb, int64_t sc, int64_t ss, int sms) {
  const GroupNormPlan p = plan_group_norm(B, C, S, G, sb, sc, ss, sms);
  CHECK(p.Cg * G == C && p.N == p.Cg * S);
  CHECK(p.groups == B * G);
  // reference: offset -> (n, c) for every element
  std::set<int64_t> expected;
  for (int64_t n = 0; n < B; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t s = 0; s < S; ++s) expected.insert(n * sb + c * sc + s * ss);
  CHECK(static_cast<int64_t>(expected.size()) == B * C * S);  // the test layout itself has no aliasing
  std::set<int64_t> seen;
  for (int64_t pid = 0; pid < p.groups; ++pid) {
    const int64_t n = pid / G, g = pid % G;
    int64_t covered = 0;
    for (int64_t sp = 0; sp < p.split; ++sp) {
      int64_t begin, end;
      group_chunk_range(p, sp, &begin, &end);
      CHECK(begin == covered && end > begin);
      covered = end;
      for (int64_t e = begin; e < end; ++e) {
        const int64_t c = g * p.Cg + group_elem_channel(p, e);
        CHECK(c >= g * p.Cg && c < (g + 1) * p.Cg);
        const int64_t off = group_base(p, n, g) + group_elem_offset(p, e);
        // the decoded channel must be the channel of this offset: find s such that off = n*sb + c*sc + s*ss
        const int64_t rest = off - n * sb - c * sc;
        CHECK(ss != 0 ? (rest % ss == 0 && rest / ss >= 0 && rest / ss < S) : rest == 0);
        CHECK(seen.insert(off).second);  // visited once
      }
    }
    CHECK(covered == p.N);
  }
  CHECK(seen == expected);
}

int main() {
  // (B, C, S, G) shapes: odd sizes, Cg = 1, S = 1, G = 1
  struct Shape {
    int64_t B, C, S, G;
  };
  const std::vector<Shape> shapes = {{1, 4, 6, 2}, {2, 6, 5, 3}, {2, 8, 1, 4}, {3, 5, 7, 5}, {1, 12, 9, 1},
                                     {2, 32, 33, 8}, {1, 4, 3000, 2}, {2, 4, 9000, 2}};  // the last: split path
  for (const Shape& sh : shapes) {
    for (int sms : {1, 132}) {
      // contiguous (B, C, S)
      check_addressing(sh.B, sh.C, sh.S, sh.G, sh.C * sh.S, sh.S, 1, sms);
      // channels-last: memory (B, S, C)
      check_addressing(sh.B, sh.C, sh.S, sh.G, sh.S * sh.C, 1, sh.C, sms);
      // padded / strided: a slice of a larger buffer
      check_addressing(sh.B, sh.C, sh.S, sh.G, (sh.C + 1) * (2 * sh.S + 3), 2 * sh.S + 3, 2, sms);
    }
  }
  // layout choice: the inner (consecutive e) index is the unit-stride one for both dense layouts
  {
    const GroupNormPlan cont = plan_group_norm(2, 64, 1000, 32, 64000, 1000, 1, 132);
    CHECK(!cont.channel_inner && cont.inner_stride == 1);
    const GroupNormPlan cl = plan_group_norm(2, 64, 1000, 32, 64000, 1, 64, 132);
    CHECK(cl.channel_inner && cl.inner_stride == 1 && cl.inner == 2);
  }
  // dense groups (one run of memory each: the vector path of group_norm.cu): contiguous, channels-last with one
  // group or S = 1, Cg = 1 with unit S stride; not channels-last with several groups, not padded rows
  {
    CHECK(group_is_dense(plan_group_norm(2, 64, 1000, 32, 64000, 1000, 1, 132)));
    CHECK(group_is_dense(plan_group_norm(2, 64, 1000, 1, 64000, 1, 64, 132)));
    CHECK(group_is_dense(plan_group_norm(2, 64, 1, 32, 64, 1, 1, 132)));
    CHECK(group_is_dense(plan_group_norm(2, 8, 7, 8, 100, 9, 1, 132)));  // Cg = 1: rows of S, any C stride
    CHECK(!group_is_dense(plan_group_norm(2, 64, 1000, 32, 64000, 1, 64, 132)));
    CHECK(!group_is_dense(plan_group_norm(2, 64, 1000, 32, 64 * 1008, 1008, 1, 132)));
    CHECK(!group_is_dense(plan_group_norm(2, 64, 1000, 32, 128000, 2000, 2, 132)));
  }
  // fused (one read) path exactly for groups of at most 8192 elements, with one chunk
  {
    const GroupNormPlan small = plan_group_norm(2, 64, 4096, 32, 64 * 4096, 4096, 1, 132);  // N = 8192
    CHECK(small.fused && small.split == 1 && small.chunk == small.N);
    const GroupNormPlan big = plan_group_norm(2, 64, 4097, 32, 64 * 4097, 4097, 1, 132);  // N = 8194
    CHECK(!big.fused);
    CHECK(kGroupNormFusedMaxN == int64_t(kGroupNormFusedThreads) * kGroupNormFusedItems);
  }
  // split: small batches fill the GPU; chunks bounded by 64 per group; none empty
  {
    const GroupNormPlan p = plan_group_norm(1, 128, 16 * 64 * 64, 32, 128 * 65536, 65536, 1, 132);
    CHECK(p.split > 1 && p.split <= 64);
    CHECK((p.split - 1) * p.chunk < p.N && p.split * p.chunk >= p.N);
    const GroupNormPlan one = plan_group_norm(4, 8, 3, 2, 24, 3, 1, 132);
    CHECK(one.split == 1 && one.chunk == one.N);
  }
  // huge batch: B * G beyond 65,535 groups on grid.x
  {
    const GroupNormPlan p = plan_group_norm(100000, 64, 4, 32, 256, 4, 1, 132);
    CHECK(p.groups == 3200000 && p.groups > kMaxGridYZ && p.groups <= kMaxGridX);
    CHECK(p.split <= kMaxGridYZ);
  }
  // GroupWalk (the kernels' division-free strided loops) agrees with group_elem_offset / group_elem_channel
  // for both layouts, strided views, every start and steps below, equal to and above the inner extent
  {
    const int64_t layouts[][7] = {
        {2, 12, 35, 4, 420, 35, 1},      // contiguous (B, C, S)
        {2, 12, 35, 4, 420, 1, 12},      // channels-last
        {1, 6, 9, 2, 500, 70, 3},        // strided view
        {1, 4, 1, 2, 4, 1, 1},           // S == 1
        {1, 3072, 5, 1, 20000, 5, 1},    // the widest group
    };
    for (const auto& l : layouts) {
      const GroupNormPlan p = plan_group_norm(l[0], l[1], l[2], l[3], l[4], l[5], l[6], 1);
      for (int64_t step : {int64_t(1), int64_t(3), p.inner, p.inner + 1, int64_t(256), int64_t(512)}) {
        for (int64_t start = 0; start < 40 && start < p.N; ++start) {
          GroupWalk w(p, start, step);
          for (int64_t e = start; e < p.N; e += step, w.advance()) {
            CHECK(w.offset() == group_elem_offset(p, e));
            CHECK(w.channel() == group_elem_channel(p, e));
          }
        }
      }
    }
  }
  // refused
  CHECK(throws_invalid([] { plan_group_norm(1, 6, 4, 4, 24, 4, 1, 1); }));         // G does not divide C
  CHECK(throws_invalid([] { plan_group_norm(1, 8192, 4, 1, 32768, 4, 1, 1); }));   // Cg > 3072
  CHECK(throws_invalid([] { plan_group_norm(0, 8, 4, 2, 32, 4, 1, 1); }));         // empty
  CHECK(throws_invalid([] { plan_group_norm(1, 2, int64_t(1) << 31, 1, 0, int64_t(1) << 31, 1, 1); }));  // N >= 2^31
  CHECK(!throws_invalid([] { plan_group_norm(1, 3072, 4, 1, 12288, 4, 1, 1); }));  // Cg = 3072 is fine
  return fastvdm_test::report("test_group_norm_launch");
}
