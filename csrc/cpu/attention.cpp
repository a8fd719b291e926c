// Video attention on the CPU (OpenMP). See attention.h for the math, layouts and guarantees.
//
// Structure: the OpenMP loop walks sequences; for each it gathers the sequence's rows of q, k, v (and dout)
// into contiguous fp32 buffers (whatever the dtype and token strides), runs one of the two leaf functions
// below, which hold all the arithmetic on those buffers, and scatters the results. The leaves work on blocks
// of kR = 4 query rows: every product is a register-blocked micro-kernel (a kR x kC = 4 x 16 accumulator tile held
// in GCC vector-extension registers) over buffers padded with zeros to multiples of kR rows
// and kC columns; K and V are also kept transposed, (D, L), for the score products. The softmax's exp is the
// vectorizable exp_approx. The leaves are compiled twice (target_clones: AVX2+FMA and baseline x86-64,
// picked at load time).
//
// Floating-point trapping is off for this file only (as in group_norm.cpp): with -ftrapping-math GCC refuses
// to if-convert the clamp in exp_approx and leaves the softmax loops scalar.
// Multiply-adds are contracted to FMAs where the target has them (-std=c++17 turns contraction off).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "fp-contract=fast")
#endif

#include "cpu/attention.h"
#include "cpu/vec_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

// The micro-kernels must be inlined into each target clone of the leaves (an out-of-line copy is compiled for
// the baseline ISA only).
#if defined(__GNUC__)
#define FASTVDM_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FASTVDM_ALWAYS_INLINE inline
#endif

namespace fastvdm {
namespace {

constexpr int64_t kR = 4;   // query rows per block
constexpr int64_t kC = 16;  // columns per micro-kernel tile
constexpr int64_t kQB = 64; // query rows per backward block (a multiple of kR)

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

int64_t seq_len(const AttnGeometry& g) { return g.axis == 0 ? g.S : g.axis == 1 ? g.T : g.T * g.S; }

int64_t num_sequences(const AttnGeometry& g) {
  return g.axis == 0 ? g.B * g.T * g.H : g.axis == 1 ? g.B * g.S * g.H : g.B * g.H;
}

// Element offset of token l of sequence n in a tensor with strides st (at d = 0). Sequences are numbered
// ((b * T + t) * H + h) (spatial), ((b * S + s) * H + h) (temporal), (b * H + h) (joint).
inline int64_t offset(const AttnGeometry& g, int64_t n, int64_t l, const AttnStrides& st) {
  const int64_t h = n % g.H, r = n / g.H;
  int64_t b, t, s;
  if (g.axis == 0) {
    t = r % g.T, b = r / g.T, s = l;
  } else if (g.axis == 1) {
    s = r % g.S, b = r / g.S, t = l;
  } else {
    b = r, t = l / g.S, s = l % g.S;
  }
  return b * st.b + t * st.t + s * st.s + h * st.h;
}

// dst[l * ld + d] = src token l (l < L, d < D); the rest of dst is left as is (zero padding).
template <typename T>
void gather(const AttnGeometry& g, int64_t n, int64_t L, const T* src, const AttnStrides& st, float* dst,
            int64_t ld) {
  for (int64_t l = 0; l < L; ++l) {
    const T* row = src + offset(g, n, l, st);
    for (int64_t d = 0; d < g.D; ++d) dst[l * ld + d] = to_float(row[d]);
  }
}

// dst[d * ld + l] = src token l, transposed.
template <typename T>
void gather_transposed(const AttnGeometry& g, int64_t n, int64_t L, const T* src, const AttnStrides& st,
                       float* dst, int64_t ld) {
  for (int64_t l = 0; l < L; ++l) {
    const T* row = src + offset(g, n, l, st);
    for (int64_t d = 0; d < g.D; ++d) dst[d * ld + l] = to_float(row[d]);
  }
}

template <typename T>
void scatter(const AttnGeometry& g, int64_t n, int64_t L, const float* src, int64_t ld, T* dst,
             const AttnStrides& st) {
  for (int64_t l = 0; l < L; ++l) {
    T* row = dst + offset(g, n, l, st);
    for (int64_t d = 0; d < g.D; ++d) row[d] = from_float<T>(src[l * ld + d]);
  }
}

// 8 floats as one GCC vector (AVX register in the x86-64-v3 clone, two SSE registers in the baseline one);
// loads and stores go through memcpy, so buffers need no alignment.
typedef float f8 __attribute__((vector_size(32)));

FASTVDM_ALWAYS_INLINE f8 load8(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

FASTVDM_ALWAYS_INLINE void store8(float* p, f8 v) { std::memcpy(p, &v, sizeof(v)); }

FASTVDM_ALWAYS_INLINE f8 splat8(float a) { return f8{a, a, a, a, a, a, a, a}; }

static_assert(kC == 16, "the micro-kernels hold a tile row in two 8-float vectors");

// s[r, j] = scale * sum_{d < D} x[r, d] * mT[d, j] for r < kR, j < ncols (a multiple of kC).
FASTVDM_ALWAYS_INLINE void block_scores(const float* x, int64_t ldx, const float* mT, int64_t ldm, int64_t D, int64_t ncols,
                         float scale, float* s, int64_t lds) {
  for (int64_t j0 = 0; j0 < ncols; j0 += kC) {
    f8 acc[kR][2] = {};
    for (int64_t d = 0; d < D; ++d) {
      const f8 m0 = load8(mT + d * ldm + j0), m1 = load8(mT + d * ldm + j0 + 8);
      for (int64_t r = 0; r < kR; ++r) {
        const f8 a = splat8(x[r * ldx + d]);
        acc[r][0] += a * m0;
        acc[r][1] += a * m1;
      }
    }
    const f8 sc = splat8(scale);
    for (int64_t r = 0; r < kR; ++r) {
      store8(s + r * lds + j0, sc * acc[r][0]);
      store8(s + r * lds + j0 + 8, sc * acc[r][1]);
    }
  }
}

// out[r, d] (+)= sum_{j < L} w[r, j] * m[j, d] for r < kR, d < ncols (a multiple of kC); overwrites out, or
// adds to it with Accumulate.
template <bool Accumulate = false>
FASTVDM_ALWAYS_INLINE void block_combine(const float* w, int64_t ldw, const float* m, int64_t ldm, int64_t L, int64_t ncols,
                          float* out, int64_t ldo) {
  for (int64_t d0 = 0; d0 < ncols; d0 += kC) {
    f8 acc[kR][2] = {};
    for (int64_t j = 0; j < L; ++j) {
      const f8 m0 = load8(m + j * ldm + d0), m1 = load8(m + j * ldm + d0 + 8);
      for (int64_t r = 0; r < kR; ++r) {
        const f8 a = splat8(w[r * ldw + j]);
        acc[r][0] += a * m0;
        acc[r][1] += a * m1;
      }
    }
    for (int64_t r = 0; r < kR; ++r) {
      float* o = out + r * ldo + d0;
      if (Accumulate) {
        acc[r][0] += load8(o);
        acc[r][1] += load8(o + 8);
      }
      store8(o, acc[r][0]);
      store8(o + 8, acc[r][1]);
    }
  }
}

// Buffer geometry of one sequence: L tokens padded to L4 rows (multiple of kR) and Lp columns (multiple of kC);
// head dim D padded to Dp (multiple of kC). Row-major (rows, Dp) buffers, transposed (D, Lp) buffers.
struct Pad {
  int64_t L, D, L4, Lp, Dp;
  Pad(int64_t L_, int64_t D_) : L(L_), D(D_), L4(round_up(L_, kR)), Lp(round_up(L_, kC)), Dp(round_up(D_, kC)) {}
};

// One sequence's forward: q (L4, Dp), kT (D, Lp), v (L, Dp) -> o (L4, Dp) = softmax(scale q k^T) v and
// lse (L4,) (rows >= L are padding). p: kR * Lp floats.
FASTVDM_MULTIVERSION
void forward_rows(const Pad& z, const float* q, const float* kT, const float* v, float scale, float* o,
                  float* lse, float* p) {
  for (int64_t i0 = 0; i0 < z.L; i0 += kR) {
    block_scores(q + i0 * z.Dp, z.Dp, kT, z.Lp, z.D, z.Lp, scale, p, z.Lp);
    for (int64_t r = 0; r < kR; ++r) {
      float* pr = p + r * z.Lp;
      float m = pr[0];
#pragma omp simd reduction(max : m)
      for (int64_t j = 0; j < z.L; ++j) m = std::max(m, pr[j]);
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < z.L; ++j) {
        pr[j] = exp_approx(pr[j] - m);
        sum += pr[j];
      }
      const float inv = 1.0f / sum;
#pragma omp simd
      for (int64_t j = 0; j < z.L; ++j) pr[j] *= inv;
      lse[i0 + r] = m + std::log(sum);
    }
    block_combine(p, z.Lp, v, z.Dp, z.L, z.Dp, o + i0 * z.Dp, z.Dp);
  }
}

// One sequence's backward: q, dout (L4, Dp), k (L, Dp), kT, vT (D, Lp), lse, delta (L4,) -> dq, dk, dv (L4, Dp),
// fully written (rows >= L are padding). Query rows are taken kQB at a time: their P and scale * dS (kQB, Lp)
// are computed kR rows at a time (dq follows directly), then transposed so that dk += (scale dS)^T q and
// dv += P^T dout are register-blocked kR-key tiles too. p, ds: kQB * Lp floats; pT, dsT: L4 * kQB floats
// (rows >= L zero).
FASTVDM_MULTIVERSION
void backward_rows(const Pad& z, const float* q, const float* k, const float* kT, const float* vT,
                   const float* dout, const float* lse, const float* delta, float scale, float* dq, float* dk,
                   float* dv, float* p, float* ds, float* pT, float* dsT) {
  std::fill(dk, dk + z.L4 * z.Dp, 0.0f);
  std::fill(dv, dv + z.L4 * z.Dp, 0.0f);
  for (int64_t i0 = 0; i0 < z.L; i0 += kQB) {
    const int64_t nb = std::min(kQB, z.L4 - i0);  // a multiple of kR
    for (int64_t r0 = 0; r0 < nb; r0 += kR) {
      float* pb = p + r0 * z.Lp;
      float* db = ds + r0 * z.Lp;
      block_scores(q + (i0 + r0) * z.Dp, z.Dp, kT, z.Lp, z.D, z.Lp, scale, pb, z.Lp);      // scale * q k^T
      block_scores(dout + (i0 + r0) * z.Dp, z.Dp, vT, z.Lp, z.D, z.Lp, 1.0f, db, z.Lp);    // dout v^T
      for (int64_t r = 0; r < kR; ++r) {
        const int64_t i = i0 + r0 + r;
        float* pr = pb + r * z.Lp;
        float* dsr = db + r * z.Lp;
        if (i >= z.L) {  // padding row: contributes nothing
          std::fill(pr, pr + z.L, 0.0f);
          std::fill(dsr, dsr + z.L, 0.0f);
          continue;
        }
        const float li = lse[i], di = delta[i];
#pragma omp simd
        for (int64_t j = 0; j < z.L; ++j) {
          pr[j] = exp_approx(pr[j] - li);
          dsr[j] = scale * pr[j] * (dsr[j] - di);  // scale * dS
        }
      }
      block_combine(db, z.Lp, k, z.Dp, z.L, z.Dp, dq + (i0 + r0) * z.Dp, z.Dp);  // dq = scale dS k
    }
    for (int64_t j = 0; j < z.L; ++j)  // transposed writes at unit stride (the reads are strided)
      for (int64_t r = 0; r < nb; ++r) {
        pT[j * kQB + r] = p[r * z.Lp + j];
        dsT[j * kQB + r] = ds[r * z.Lp + j];
      }
    for (int64_t j0 = 0; j0 < z.L; j0 += kR) {
      block_combine<true>(dsT + j0 * kQB, kQB, q + i0 * z.Dp, z.Dp, nb, z.Dp, dk + j0 * z.Dp, z.Dp);
      block_combine<true>(pT + j0 * kQB, kQB, dout + i0 * z.Dp, z.Dp, nb, z.Dp, dv + j0 * z.Dp, z.Dp);
    }
  }
}

}  // namespace

template <typename T>
void attention_forward(const AttnGeometry& g, const T* q, AttnStrides q_st, const T* k, AttnStrides k_st,
                       const T* v, AttnStrides v_st, T* out, AttnStrides out_st, float* lse, AttnStrides lse_st,
                       float scale) {
  const int64_t N = num_sequences(g);
  const Pad z(seq_len(g), g.D);
#pragma omp parallel
  {
    std::vector<float> qb(z.L4 * z.Dp, 0.0f), kT(z.D * z.Lp, 0.0f), vb(z.L * z.Dp, 0.0f), ob(z.L4 * z.Dp),
        lb(z.L4), p(kR * z.Lp);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      gather(g, n, z.L, q, q_st, qb.data(), z.Dp);
      gather_transposed(g, n, z.L, k, k_st, kT.data(), z.Lp);
      gather(g, n, z.L, v, v_st, vb.data(), z.Dp);
      forward_rows(z, qb.data(), kT.data(), vb.data(), scale, ob.data(), lb.data(), p.data());
      scatter(g, n, z.L, ob.data(), z.Dp, out, out_st);
      for (int64_t l = 0; l < z.L; ++l) lse[offset(g, n, l, lse_st)] = lb[l];
    }
  }
}

template <typename T>
void attention_backward(const AttnGeometry& g, const T* q, AttnStrides q_st, const T* k, AttnStrides k_st,
                        const T* v, AttnStrides v_st, const T* out, AttnStrides out_st, const T* dout,
                        AttnStrides dout_st, const float* lse, AttnStrides lse_st, T* dq, AttnStrides dq_st, T* dk,
                        AttnStrides dk_st, T* dv, AttnStrides dv_st, float scale) {
  const int64_t N = num_sequences(g);
  const Pad z(seq_len(g), g.D);
#pragma omp parallel
  {
    std::vector<float> qb(z.L4 * z.Dp, 0.0f), dob(z.L4 * z.Dp, 0.0f), ob(z.L * z.Dp, 0.0f), kb(z.L * z.Dp, 0.0f),
        kT(z.D * z.Lp, 0.0f), vT(z.D * z.Lp, 0.0f), dqb(z.L4 * z.Dp), dkb(z.L4 * z.Dp), dvb(z.L4 * z.Dp),
        lb(z.L4, 0.0f), delta(z.L4, 0.0f), p(kQB * z.Lp), ds(kQB * z.Lp), pT(z.L4 * kQB, 0.0f),
        dsT(z.L4 * kQB, 0.0f);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      gather(g, n, z.L, q, q_st, qb.data(), z.Dp);
      gather(g, n, z.L, k, k_st, kb.data(), z.Dp);
      gather_transposed(g, n, z.L, k, k_st, kT.data(), z.Lp);
      gather_transposed(g, n, z.L, v, v_st, vT.data(), z.Lp);
      gather(g, n, z.L, dout, dout_st, dob.data(), z.Dp);
      gather(g, n, z.L, out, out_st, ob.data(), z.Dp);
      for (int64_t l = 0; l < z.L; ++l) {
        lb[l] = lse[offset(g, n, l, lse_st)];
        float acc = 0.0f;
        for (int64_t d = 0; d < g.D; ++d) acc += dob[l * z.Dp + d] * ob[l * z.Dp + d];
        delta[l] = acc;  // rowsum(dout * out)
      }
      backward_rows(z, qb.data(), kb.data(), kT.data(), vT.data(), dob.data(), lb.data(), delta.data(), scale,
                    dqb.data(), dkb.data(), dvb.data(), p.data(), ds.data(), pT.data(), dsT.data());
      scatter(g, n, z.L, dqb.data(), z.Dp, dq, dq_st);
      scatter(g, n, z.L, dkb.data(), z.Dp, dk, dk_st);
      scatter(g, n, z.L, dvb.data(), z.Dp, dv, dv_st);
    }
  }
}

#define FASTVDM_INSTANTIATE_ATTENTION(T)                                                                        \
  template void attention_forward<T>(const AttnGeometry&, const T*, AttnStrides, const T*, AttnStrides, const T*, \
                                     AttnStrides, T*, AttnStrides, float*, AttnStrides, float);                 \
  template void attention_backward<T>(const AttnGeometry&, const T*, AttnStrides, const T*, AttnStrides,         \
                                      const T*, AttnStrides, const T*, AttnStrides, const T*, AttnStrides,       \
                                      const float*, AttnStrides, T*, AttnStrides, T*, AttnStrides, T*,           \
                                      AttnStrides, float);
FASTVDM_INSTANTIATE_ATTENTION(float)
FASTVDM_INSTANTIATE_ATTENTION(bf16)
FASTVDM_INSTANTIATE_ATTENTION(fp16)
#undef FASTVDM_INSTANTIATE_ATTENTION

}  // namespace fastvdm
