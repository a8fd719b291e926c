// In-process A/B of two source trees of the CPU attention kernels (csrc/cpu/attention*), interleaved rounds.
//
// Built by bench/cpu_ab/attention_ab.sh, which copies csrc/cpu of two git revisions (or the working tree) into
// directories VA and VB, makes their headers includable twice, and compiles this file with -DVA=... -DVB=...: both
// versions live in one process (namespaces va:: and vb::), so that the drift of a shared VM's speed, which moves
// separate processes' figures by 10-20%, hits both alike. Each round times A then B (then B then A in the next
// round) for >= 0.1 s each, forward and forward+backward; printed: medians of GFLOP/s and the median of the
// per-round ratios B / A, the figure to read.
//
//   attention_ab B T S H D AXIS ROUNDS    (AXIS: 0 spatial, 1 temporal; q, k, v views of one fused
//                                          (B, T, S, 3, H, D) fp32 tensor, as a fused QKV projection makes them)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#define FASTVDM_AB_STR2(x) #x
#define FASTVDM_AB_STR(x) FASTVDM_AB_STR2(x)
namespace va {
#include FASTVDM_AB_STR(VA/attention.cpp)
}
namespace vb {
#include FASTVDM_AB_STR(VB/attention.cpp)
}

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) {
    std::fprintf(stderr, "usage: %s B T S H D AXIS ROUNDS  (AXIS 0 spatial, 1 temporal)\n", argv[0]);
    return 2;
  }
  const int64_t B = std::atoll(argv[1]), T = std::atoll(argv[2]), S = std::atoll(argv[3]), H = std::atoll(argv[4]),
                D = std::atoll(argv[5]);
  const int axis = std::atoi(argv[6]), rounds = std::atoi(argv[7]);
  const int64_t n = B * T * S * H * D;
  std::vector<float> qkv(3 * n), out(n), dout(n), dqkv(3 * n), lse(B * T * S * H);
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  for (auto& x : qkv) x = normal(rng);
  for (auto& x : dout) x = normal(rng);
  const float* q = qkv.data();
  const float* k = q + H * D;
  const float* v = k + H * D;
  float* dq = dqkv.data();
  float* dk = dq + H * D;
  float* dv = dk + H * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t L = axis == 0 ? S : T, sequences = axis == 0 ? B * T * H : B * S * H;
  const double fwd_flops = 4.0 * sequences * L * L * D;

  // One version's forward (and backward) on the shared buffers; `ns` is va or vb.
#define FASTVDM_AB_RUN(ns)                                                                                         \
  {                                                                                                               \
    using namespace ns::fastvdm;                                                                                  \
    const AttnGeometry g{B, T, S, H, D, axis};                                                                    \
    const AttnStrides fused{T * S * 3 * H * D, S * 3 * H * D, 3 * H * D, D},                                      \
        plain{T * S * H * D, S * H * D, H * D, D}, lse_st{T * S * H, S * H, H, 1};                                \
    attention_forward<float>(g, q, fused, k, fused, v, fused, out.data(), plain, lse.data(), lse_st, scale);      \
    if (backward)                                                                                                 \
      attention_backward<float>(g, q, fused, k, fused, v, fused, out.data(), plain, dout.data(), plain,           \
                                lse.data(), lse_st, dq, fused, dk, fused, dv, fused, scale);                      \
  }
  auto run = [&](int version, bool backward) {
    if (version == 0)
      FASTVDM_AB_RUN(va)
    else
      FASTVDM_AB_RUN(vb)
  };
  for (int version = 0; version < 2; ++version) run(version, true);  // warm-up

  std::vector<double> rate[2][2];  // [backward][version], GFLOP/s per round
  for (int r = 0; r < rounds; ++r)
    for (int backward = 0; backward < 2; ++backward)
      for (int j = 0; j < 2; ++j) {
        const int version = (r % 2 == 0) ? j : 1 - j;  // A B, then B A
        const double t0 = now();
        double dt = 0;
        int calls = 0;
        do {
          run(version, backward);
          ++calls;
          dt = now() - t0;
        } while (dt < 0.1);
        rate[backward][version].push_back((backward ? 3.5 : 1.0) * fwd_flops * calls / dt / 1e9);
      }
  for (int backward = 0; backward < 2; ++backward) {
    std::vector<double> ratio;
    for (int r = 0; r < rounds; ++r) ratio.push_back(rate[backward][1][r] / rate[backward][0][r]);
    std::printf("%-4s A %7.1f GFLOP/s   B %7.1f GFLOP/s   B/A per round: median %.3f (min %.3f, max %.3f)\n",
                backward ? "f+b" : "fwd", median(rate[backward][0]), median(rate[backward][1]), median(ratio),
                *std::min_element(ratio.begin(), ratio.end()), *std::max_element(ratio.begin(), ratio.end()));
  }
  return 0;
}
