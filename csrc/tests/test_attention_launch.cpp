// Host-side tests of the attention geometry, strided addressing and launch configuration
// (csrc/cuda/attention_launch.h): each (sequence, token) maps to the right (b, t, s, h) for every axis and
// for fused-QKV, scrambled and padded strides; the short kernel's plan fits shared memory and handles batches
// beyond 65,535 sequences; the flash tile layouts are aligned for WMMA and fit sm_80's shared memory.
#include <cstdint>
#include <set>
#include <tuple>
#include <vector>

#include "check.h"
#include "cuda/attention_launch.h"

using namespace fastvdm::cuda;
using fastvdm_test::throws_invalid;

// For strides `st` of a (B, T, S, H, D) view, check that (seq, n, d) addresses (b, t, s, h, d) with the axis'
// grouping, and that every (b, t, s, h) is visited exactly once.
static void check_addressing(int64_t B, int64_t T, int64_t S, int64_t H, int64_t D, Axis axis, const Strides5& st) {
  const AttnProblem p = make_attn_problem(B, T, S, H, D, axis);
  CHECK(p.nseq * p.L == B * T * S * H);
  std::set<std::tuple<int64_t, int64_t, int64_t, int64_t>> seen;
  for (int64_t seq = 0; seq < p.nseq; ++seq) {
    // expected sequence coordinates (h fastest)
    const int64_t h = seq % H, r = seq / H;
    for (int64_t n = 0; n < p.L; ++n) {
      int64_t b, t, s;
      if (axis == Axis::kSpatial) {
        b = r / T, t = r % T, s = n;
      } else if (axis == Axis::kTemporal) {
        b = r / S, s = r % S, t = n;
      } else {
        b = r, t = n / S, s = n % S;
      }
      CHECK(seen.insert({b, t, s, h}).second);
      for (int64_t d = 0; d < D; d += (D > 3 ? D - 1 : 1)) {  // first and last d
        const int64_t got = seq_offset(p, st, seq) + token_offset(p, st, n) + d * st.d;
        const int64_t want = b * st.b + t * st.t + s * st.s + h * st.h + d * st.d;
        CHECK(got == want);
      }
    }
  }
  CHECK(static_cast<int64_t>(seen.size()) == B * T * S * H);
}

// Strides of q = qkv[:, :, :, 0] for a (B, T, S + pad, 3, H, D) contiguous fused tensor.
static Strides5 fused(int64_t T, int64_t S, int64_t H, int64_t D, int64_t pad) {
  const int64_t sS = 3 * H * D;
  return Strides5{T * (S + pad) * sS, (S + pad) * sS, sS, D, 1};
}

// Strides of a view from storage ordered (3, H, B, D, S, T) (the "scrambled" layout of tests/test_attention.py).
static Strides5 scrambled(int64_t B, int64_t T, int64_t S, int64_t D) {
  const int64_t st = 1, ss = T, sd = T * S, sb = T * S * D, sh = T * S * D * B;
  return Strides5{sb, st, ss, sh, sd};
}

// A thread's TileWalk over every tile of a kernel's loop (row0 = 0, rows, 2 rows, ... advanced as a TokenIndex, the
// pattern built once) visits exactly its share of each tile, idx = start, start + step, ..., with the offsets of
// token_offset: the division-free walk of attention.cu against the plain formulas.
static void check_walk(const AttnProblem& p, const Strides5& st, int rows, int cols, int step) {
  const TokenMap m = token_map(p, st);
  const int64_t inner = token_inner(p);
  CHECK(m.inner == inner);
  const TokenIndex rows_tok = token_index(rows, inner);
  for (int start = 0; start < step; ++start) {
    const RunPattern pat(cols, start, step, inner);
    TokenIndex row0_tok{0, 0};
    for (int64_t row0 = 0; row0 < p.L; row0 += rows, row0_tok = token_add(row0_tok, rows_tok, inner)) {
      CHECK(row0_tok.q * inner + row0_tok.s == row0 && row0_tok.s < inner);
      int idx = start;
      for (TileWalk w(m, pat, row0_tok); w.r < rows; w.advance(), idx += step) {
        CHECK(w.r == idx / cols && w.c == idx % cols);
        if (row0 + w.r < p.L) CHECK(w.off == token_offset(p, st, row0 + w.r));
      }
      CHECK(idx >= rows * cols && idx - step < rows * cols);
    }
  }
}

int main() {
  struct Shape {
    int64_t B, T, S, H, D;
  };
  const std::vector<Shape> shapes = {{1, 2, 17, 2, 32}, {2, 2, 1, 2, 8}, {2, 7, 17, 2, 4}, {1, 25, 5, 1, 24},
                                     {1, 1, 6, 3, 2},   {2, 3, 4, 1, 40}};
  for (const Shape& sh : shapes) {
    for (Axis axis : {Axis::kSpatial, Axis::kTemporal, Axis::kJoint}) {
      check_addressing(sh.B, sh.T, sh.S, sh.H, sh.D, axis, contiguous_strides(sh.T, sh.S, sh.H, sh.D));
      check_addressing(sh.B, sh.T, sh.S, sh.H, sh.D, axis, fused(sh.T, sh.S, sh.H, sh.D, 0));
      check_addressing(sh.B, sh.T, sh.S, sh.H, sh.D, axis, fused(sh.T, sh.S, sh.H, sh.D, 3));  // padded frames
      check_addressing(sh.B, sh.T, sh.S, sh.H, sh.D, axis, scrambled(sh.B, sh.T, sh.S, sh.D));
    }
  }

  // the division-free tile walks (flash tiles of 32 / 64 rows, 128 threads; short tiles, 32 lanes) for every axis
  for (Axis axis : {Axis::kSpatial, Axis::kTemporal, Axis::kJoint}) {
    for (const Shape& sh :
         {Shape{1, 3, 17, 2, 40}, Shape{2, 70, 1, 1, 8}, Shape{1, 5, 7, 3, 16}, Shape{1, 2, 64, 1, 24}}) {
      const AttnProblem p = make_attn_problem(sh.B, sh.T, sh.S, sh.H, sh.D, axis);
      const Strides5 st = fused(sh.T, sh.S, sh.H, sh.D, 3);  // padded frames: t and s strides both matter
      for (int cols : {1, 3, 5, 8, 16, 40}) {
        check_walk(p, st, 32, cols, 128);
        check_walk(p, st, 64, cols, 128);
        check_walk(p, scrambled(sh.B, sh.T, sh.S, sh.D), 32, cols, 32);
      }
    }
  }

  // rows_vectorizable: 16-byte aligned base, unit d stride, D and every stride (of a dimension > 1) in whole vectors
  {
    alignas(16) static unsigned char buf[64];
    const AttnProblem p = make_attn_problem(2, 3, 5, 2, 16, Axis::kJoint);
    const Strides5 c = contiguous_strides(3, 5, 2, 16);
    CHECK(rows_vectorizable(p, buf, c, 2) && rows_vectorizable(p, buf, c, 4));
    CHECK(!rows_vectorizable(p, buf + 2, c, 2) && !rows_vectorizable(p, buf + 4, c, 4));  // misaligned base
    CHECK(rows_vectorizable(p, buf + 16, c, 2));
    CHECK(!rows_vectorizable(p, buf, scrambled(2, 3, 5, 16), 2));  // d stride != 1
    CHECK(rows_vectorizable(p, buf, fused(3, 5, 2, 16, 0), 2));  // fused QKV rows: strides of 3 H D
    Strides5 odd = c;
    odd.s = 16 * 2 + 4;  // padded rows of 36 elements: not whole 8-element vectors, whole 4-float ones
    CHECK(!rows_vectorizable(p, buf, odd, 2) && rows_vectorizable(p, buf, odd, 4));
    const AttnProblem p1 = make_attn_problem(1, 1, 5, 1, 16, Axis::kSpatial);
    Strides5 single = c;
    single.b = 3;  // B = T = H = 1: their strides never move a row
    single.t = 7;
    single.h = 5;
    CHECK(rows_vectorizable(p1, buf, single, 2));
    const AttnProblem p20 = make_attn_problem(1, 1, 5, 1, 20, Axis::kSpatial);  // D = 20: 5 fp32, 2.5 bf16 vectors
    CHECK(!rows_vectorizable(p20, buf, contiguous_strides(1, 5, 1, 20), 2));
    CHECK(rows_vectorizable(p20, buf, contiguous_strides(1, 5, 1, 20), 4));
  }

  // sequence length and kernel choice per axis
  {
    const AttnProblem sp = make_attn_problem(2, 16, 1024, 8, 64, Axis::kSpatial);
    CHECK(sp.L == 1024 && sp.nseq == 2 * 16 * 8 && !use_short_kernel(sp));
    const AttnProblem tm = make_attn_problem(2, 16, 1024, 8, 64, Axis::kTemporal);
    CHECK(tm.L == 16 && tm.nseq == 2 * 1024 * 8 && use_short_kernel(tm));
    const AttnProblem jt = make_attn_problem(2, 16, 1024, 8, 64, Axis::kJoint);
    CHECK(jt.L == 16 * 1024 && jt.nseq == 16 && !use_short_kernel(jt));
    CHECK(use_short_kernel(make_attn_problem(1, 32, 4, 1, 8, Axis::kTemporal)));
    CHECK(!use_short_kernel(make_attn_problem(1, 33, 4, 1, 8, Axis::kTemporal)));
  }

  // short kernel plans: every L <= 32 and D <= 128 fits the shared-memory budget with >= 1 warp
  for (int64_t L = 1; L <= kShortMaxL; ++L) {
    for (int64_t D : {1, 8, 24, 32, 40, 64, 100, 128}) {
      for (bool backward : {false, true}) {
        const AttnProblem p = make_attn_problem(1, L, 3, 2, D, Axis::kTemporal);
        const ShortPlan s = plan_short(p, backward);
        CHECK(s.warps >= 1 && s.warps <= kShortMaxWarps);
        CHECK(s.smem == short_smem_per_warp(L, D, backward) * static_cast<size_t>(s.warps));
        CHECK(s.smem <= kShortSmemBudget);
        CHECK(s.grid * s.warps >= p.nseq && (s.grid - 1) * s.warps < p.nseq);
        CHECK(s.ldd == D + 1);
      }
    }
  }
  // the huge temporal batch of tests/test_attention.py: 3 * 4096 * 8 = 98,304 sequences > 65,535
  {
    const AttnProblem p = make_attn_problem(3, 16, 4096, 8, 64, Axis::kTemporal);
    CHECK(p.nseq == 98304);
    for (bool backward : {false, true}) {
      const ShortPlan s = plan_short(p, backward);
      CHECK(s.grid * s.warps >= p.nseq && s.grid <= kMaxGridX);
    }
    // and a flash launch over as many sequences (T = 64 > 32) puts them on grid.x too
    const AttnProblem f = make_attn_problem(3, 64, 4096, 8, 64, Axis::kTemporal);
    const FlashPlan fp = plan_flash(f, 2, false);
    CHECK(fp.grid_x == 98304 && fp.grid_y == 1);
  }
  CHECK(throws_invalid([] { plan_short(make_attn_problem(1, 40, 1, 1, 8, Axis::kTemporal), false); }));

  // flash layouts: WMMA alignment and shared-memory limits for every D <= 128
  for (int eb : {2, 4}) {
    for (bool backward : {false, true}) {
      for (int64_t D = 1; D <= kAttnMaxD; ++D) {
        const FlashLayout f = flash_layout(eb, D, backward);
        CHECK(f.Dp % 16 == 0 && f.Dp >= D && f.Dp < D + 16);
        CHECK(f.block_m % 16 == 0 && f.block_n % 16 == 0);
        CHECK(f.total <= kFlashMaxSmem);
        // ldm: multiple of 8 elements (16-bit) / 4 floats; 16-row fragment steps stay 32-byte aligned
        if (eb == 2) CHECK(f.ld % 8 == 0 && f.ldp % 8 == 0);
        CHECK(f.lds % 4 == 0 && f.ldo % 4 == 0);
        CHECK((16 * f.ld * eb) % 32 == 0 && (16 * f.ldp * eb) % 32 == 0);
        std::vector<size_t> regions = {f.q, f.k, f.v, f.p, f.s, f.stat0, f.stat1};
        if (backward) {
          for (size_t r : {f.dout, f.ds, f.dp, f.dk, f.dv, f.dq}) regions.push_back(r);
        } else {
          regions.push_back(f.o);
        }
        std::set<size_t> distinct(regions.begin(), regions.end());
        CHECK(distinct.size() == regions.size());
        for (size_t r : regions) CHECK(r % 128 == 0 && r < f.total);
        // region sizes: the Dp-wide element tiles do not overlap what follows them
        CHECK(f.k - f.q >= static_cast<size_t>(eb) * f.block_m * f.ld);
        CHECK(f.v - f.k >= static_cast<size_t>(eb) * f.block_n * f.ld);
      }
    }
  }
  // flash grids: query / key blocks on grid.y (tails round up), sequences on grid.x
  {
    const AttnProblem p = make_attn_problem(1, 1, 300, 1, 32, Axis::kSpatial);
    CHECK(plan_flash(p, 2, false).grid_y == 5);  // 300 / 64 -> 5 query blocks (last has 44 rows)
    CHECK(plan_flash(p, 4, false).grid_y == 10);  // fp32 forward: 32-row blocks
    CHECK(plan_flash(p, 2, true).grid_y == 10);   // backward: 32-key blocks
  }
  CHECK(throws_invalid([] { make_attn_problem(1, 2, 3, 1, 129, Axis::kSpatial); }));  // D > 128
  CHECK(throws_invalid([] { make_attn_problem(0, 2, 3, 1, 16, Axis::kSpatial); }));
  CHECK(throws_invalid([] {  // 2^22 + 1 tokens in one sequence: too many blocks for grid.y
    plan_flash(make_attn_problem(1, 1, (int64_t(1) << 22) + 64, 1, 16, Axis::kSpatial), 2, true);
  }));
  return fastvdm_test::report("test_attention_launch");
}
