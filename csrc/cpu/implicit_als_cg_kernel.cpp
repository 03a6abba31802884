// implicit_als_cg_ on the CPU: cg_steps conjugate-gradient steps on every row's
// implicit-ALS normal equations, X updated in place (mfext/ops/implicit.py
// states the math):
//   A_r = G_r + sum_e w_e y_c y_c^T,   b_r = sum_e t_e y_c,   c = indices[e]
// with G_r = gram (d, d), or diag(gram) * row_scale[r] for a gram of shape (d,)
// (row_scale 1 when absent), and t_e = target[e], or 1 + w_e when absent. The
// explicit-ratings ALS runs on the same kernel: w = 1, t = the ratings, G_r = the
// ridge times n_r^exponent.
//
// Full G: per step, one GEMM over a block of rows, PG = P @ gram (torch's), then
// one pass over the block's rows: each thread takes a row, adds the sparse part
// to its row of PG (Ap_r = PG_r + sum_e w_e (y_c . p_r) y_c) and at once does the
// row's vector update (pAp, x, r, rs, p) while the row is in L1, so Ap is never
// stored as a separate tensor. Step 0 starts the iteration the same way from
// PG = X @ gram:  r = -PG_r + sum_e (1 + w_e (1 - y_c . x_r)) y_c,  p = r,  rs = r . r.
// A row stops (its flag cleared) when rs < 1e-20 or p . Ap <= 0; the GEMM still
// covers it, the row pass skips it, and the block ends early once every row stopped.
//
// Diagonal G: G p is d products, so each row runs all of its steps back to back
// (cg_diag_kernel) and its rows of Y, gathered from memory by the first pass,
// are still in L1/L2 for the other cg_steps passes; there is no GEMM and no
// (R, d) state but X. (mfext's ImplicitALS rotates the problem into the
// eigenbasis of Y^T Y to get this form: mfext/recommenders/implicit_solvers.py.)
//
// Each row belongs to one thread (rows are handed out dynamically because their
// entry counts differ a lot) and sums its entries in a fixed order, so the
// result depends on the thread count only through the full G's GEMM: with a
// diagonal G it does not depend on it at all.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <vector>
#include <cstdint>
#include <type_traits>

#include <omp.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../implicit_als_cg_checks.h"
#include "index_range.h"
#include "vec.h"

namespace mfext {
namespace {

constexpr const char* kOp = "mfext::implicit_als_cg_";
constexpr double kConverged = 1e-20;  // implicit's threshold on |r|^2

template <typename scalar_t, typename index_t>
struct CgProblem {
  const int64_t* indptr;   // (R + 1,)
  const index_t* indices;  // (nnz,)
  const scalar_t* weight;  // (nnz,)
  const scalar_t* Y;       // (n, d) row-major
  scalar_t* X;             // (R, d) row-major, updated in place
  scalar_t* r;             // (R, d) residuals
  scalar_t* p;             // (R, d) search directions
  scalar_t* PG;            // (R, d) P @ gram (X @ gram at step 0), then Ap (or r at step 0)
  scalar_t* rs;            // (R,) |r|^2
  uint8_t* active;         // (R,) 1 while the row iterates
  int64_t R, d;
  const scalar_t* target = nullptr;     // (nnz,) b's coefficients, or null: 1 + w
  const scalar_t* row_scale = nullptr;  // (R,) diagonal G's scale per row, or null: 1
};

// Adds sum_e coef(e) y_c to acc (d,), in entry order, where
// kFirst: coef = 1 + w (1 - y . v); else coef = w (y . v).
constexpr int64_t kPrefetch = 8;  // entries ahead whose Y rows are prefetched

// Prefetches the row of Y that entry f reads: the rows are random, so their
// loads miss the cache unless started early.
template <typename scalar_t, typename index_t>
inline void prefetch_row(const CgProblem<scalar_t, index_t>& p, int64_t f, int64_t d) {
  const char* row = reinterpret_cast<const char*>(p.Y + static_cast<int64_t>(p.indices[f]) * d);
  for (int64_t b = 0; b < d * int64_t(sizeof(scalar_t)); b += 64) __builtin_prefetch(row + b, 0, 3);
}

#if defined(__AVX512F__)
// The float32 path for K a multiple of 16 (32, 64, 128), in chunks of up to
// kChunk entries and two phases per chunk, because one entry at a time spends
// most of its cycles on the horizontal sum of its dot product and on the long
// dependency chain from y_c to the update of acc:
//   A. the dot products y_c . v of 16 entries at a time: each entry's 16-lane
//      partial sum, then one transpose-and-add tree that turns the 16 partial
//      vectors into one vector of 16 sums (about 3 shuffles and adds an entry
//      instead of 8), then the 16 coefficients at once;
//   B. acc += coef_e y_c over the chunk, acc held in K/16 zmm registers; the
//      chunk's rows of Y are still in L1 from phase A.
// Every sum has a fixed order (lanes, tree, entries), so the result does not
// depend on the thread count or on the run.
constexpr int64_t kChunk = 32;
inline int g_skipA = getenv("SKIPA") != nullptr, g_skipB = getenv("SKIPB") != nullptr;
inline int64_t g_pf = getenv("MFEXT_PF") ? atoi(getenv("MFEXT_PF")) : 8;  // entries a chunk: 16 KiB of Y rows at K = 128

// The 16 lanes of (sum of v[0]'s lanes, ..., sum of v[15]'s lanes).
inline __m512 sum16(const __m512* v) {
  __m512 a[8], b[4];
  for (int i = 0; i < 8; ++i)  // 128-bit lane l of a[i]: (v2i[0]+v2i[2], v2i+1[0]+.., v2i[1]+v2i[3], ..)
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                         _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // lane l of b[i]: lane l's sums of v4i .. v4i+3
    b[i] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // Then across the four 128-bit lanes: (L0 + L2, L1 + L3) of b0, b1 (and b2, b3) ...
  const __m512 d0 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(b[0], b[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 d1 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(b[2], b[3], _MM_SHUFFLE(3, 2, 3, 2)));
  // ... and the two halves of those: lane group g of the result is b_g's total.
  return _mm512_add_ps(_mm512_shuffle_f32x4(d0, d1, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(d0, d1, _MM_SHUFFLE(3, 1, 3, 1)));
}

template <int K, bool kFirst, typename index_t>
inline void add_sparse_zmm(const CgProblem<float, index_t>& p, int64_t e0, int64_t e1,
                           const float* __restrict v, float* __restrict acc) {
  constexpr int NV = K / 16;
  __m512 vr[NV], ar[NV];  // v, acc: (K,) each, as NV vectors of 16 lanes
#pragma GCC unroll 16
  for (int j = 0; j < NV; ++j) {
    vr[j] = _mm512_loadu_ps(v + 16 * j);
    ar[j] = _mm512_loadu_ps(acc + 16 * j);
  }
  alignas(64) float coef[kChunk];  // (kChunk,) the chunk's coefficients
  const float* __restrict Y = p.Y;
  const index_t* __restrict idx = p.indices;
  for (int64_t c0 = e0; c0 < e1; c0 += kChunk) {
    const int64_t len = std::min(kChunk, e1 - c0);
    for (int64_t g = 0; g < len; g += 16) {  // phase A
      __m512 part[16];  // (16, 16): each entry's lane-wise partial dot product
      // Past the row's end the last entry is read again (its sums are unused),
      // so the 16 entries unroll without a branch.
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        const int64_t e = std::min(c0 + g + i, e1 - 1);
        if (e + kPrefetch < e1) prefetch_row(p, e + kPrefetch, K);
        const float* __restrict y = Y + static_cast<int64_t>(idx[e]) * K;
        __m512 s0 = _mm512_mul_ps(_mm512_loadu_ps(y), vr[0]);
        __m512 s1 = NV > 1 ? _mm512_mul_ps(_mm512_loadu_ps(y + 16), vr[NV > 1 ? 1 : 0])
                           : _mm512_setzero_ps();
#pragma GCC unroll 16
        for (int j = 2; j < NV; j += 2) {
          s0 = _mm512_fmadd_ps(_mm512_loadu_ps(y + 16 * j), vr[j], s0);
          if (j + 1 < NV) s1 = _mm512_fmadd_ps(_mm512_loadu_ps(y + 16 * (j + 1)), vr[j + 1], s1);
        }
        part[i] = _mm512_add_ps(s0, s1);
      }
      const __m512 yv = sum16(part);  // (16,) y_c . v
      const __mmask16 live = len - g >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (len - g)) - 1);
      const __m512 w = _mm512_maskz_loadu_ps(live, p.weight + c0 + g);
      const __m512 one = _mm512_set1_ps(1.0f);
      __m512 cf;
      if (!kFirst) {
        cf = _mm512_mul_ps(w, yv);
      } else if (p.target != nullptr) {  // target - w (y . x)
        cf = _mm512_fnmadd_ps(w, yv, _mm512_maskz_loadu_ps(live, p.target + c0 + g));
      } else {  // 1 + w (1 - y . x)
        cf = _mm512_fmadd_ps(w, _mm512_sub_ps(one, yv), one);
      }
      _mm512_store_ps(coef + g, cf);
    }
    for (int64_t i = 0; i < len; ++i) {  // phase B
      const float* __restrict y = Y + static_cast<int64_t>(idx[c0 + i]) * K;
      const __m512 c = _mm512_set1_ps(coef[i]);
#pragma GCC unroll 16
      for (int j = 0; j < NV; ++j) ar[j] = _mm512_fmadd_ps(c, _mm512_loadu_ps(y + 16 * j), ar[j]);
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < NV; ++j) _mm512_storeu_ps(acc + 16 * j, ar[j]);
}
#endif

template <int K, bool kFirst, typename scalar_t, typename index_t>
inline void add_sparse(const CgProblem<scalar_t, index_t>& p, int64_t e0, int64_t e1,
                       const scalar_t* __restrict v, scalar_t* __restrict acc, int64_t d) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<scalar_t, float> && K > 0 && K % 16 == 0 && K <= 128) {
    add_sparse_zmm<K, kFirst>(p, e0, e1, v, acc);
    return;
  }
#endif
  auto coef = [&](int64_t e, const scalar_t* y) {
    const scalar_t w = p.weight[e], yv = cpu::dot<K>(y, v, d);
    if (!kFirst) return w * yv;
    return p.target != nullptr ? p.target[e] - w * yv : scalar_t(1) + w * (scalar_t(1) - yv);
  };
  // Four entries at a time: their dot products are independent, so their
  // reductions overlap; the updates of acc run in entry order.
  int64_t e = e0;
  for (; e + 4 <= e1; e += 4) {
    for (int64_t f = e + kPrefetch; f < std::min(e + kPrefetch + 4, e1); ++f) prefetch_row(p, f, d);
    const scalar_t* __restrict y0 = p.Y + static_cast<int64_t>(p.indices[e]) * d;
    const scalar_t* __restrict y1 = p.Y + static_cast<int64_t>(p.indices[e + 1]) * d;
    const scalar_t* __restrict y2 = p.Y + static_cast<int64_t>(p.indices[e + 2]) * d;
    const scalar_t* __restrict y3 = p.Y + static_cast<int64_t>(p.indices[e + 3]) * d;
    const scalar_t c0 = coef(e, y0), c1 = coef(e + 1, y1), c2 = coef(e + 2, y2),
                   c3 = coef(e + 3, y3);
    cpu::axpy<K>(acc, c0, y0, d);
    cpu::axpy<K>(acc, c1, y1, d);
    cpu::axpy<K>(acc, c2, y2, d);
    cpu::axpy<K>(acc, c3, y3, d);
  }
  for (; e < e1; ++e) {
    const scalar_t* __restrict y = p.Y + static_cast<int64_t>(p.indices[e]) * d;
    cpu::axpy<K>(acc, coef(e, y), y, d);
  }
}

// One row pass (step 0 when kFirst). Returns the number of rows still active.
template <int K, bool kFirst, typename scalar_t, typename index_t>
int64_t cg_rows_kernel(const CgProblem<scalar_t, index_t>& p) {
  const int64_t d = K > 0 ? K : p.d;
  const int threads = p.R * d < 16384 ? 1 : std::max(1, at::get_num_threads());
  int64_t still = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 16) reduction(+ : still)
  for (int64_t row = 0; row < p.R; ++row) {
    if (!kFirst && !p.active[row]) continue;
    const int64_t e0 = p.indptr[row], e1 = p.indptr[row + 1];
    scalar_t* __restrict x = p.X + row * d;
    scalar_t* __restrict r = p.r + row * d;
    scalar_t* __restrict pv = p.p + row * d;
    scalar_t* __restrict acc = p.PG + row * d;  // (d,): PG_r, then r (step 0) or Ap
    if constexpr (kFirst) {
#pragma omp simd
      for (int64_t q = 0; q < d; ++q) acc[q] = -acc[q];
      add_sparse<K, true>(p, e0, e1, x, acc, d);
      std::copy(acc, acc + d, r);
      std::copy(acc, acc + d, pv);
      const scalar_t rs = cpu::dot<K>(r, r, d);
      p.rs[row] = rs;
      const bool on = !(rs < scalar_t(kConverged));  // a NaN goes on, and reaches X
      p.active[row] = on;
      still += on;
    } else {
      add_sparse<K, false>(p, e0, e1, pv, acc, d);
      const scalar_t pAp = cpu::dot<K>(pv, acc, d);
      if (pAp <= scalar_t(0)) {
        p.active[row] = 0;
        continue;
      }
      const scalar_t rs = p.rs[row], a = rs / pAp;
      cpu::axpy<K>(x, a, pv, d);
      cpu::axpy<K>(r, -a, acc, d);
      const scalar_t rs_new = cpu::dot<K>(r, r, d);
      p.rs[row] = rs_new;
      if (rs_new < scalar_t(kConverged)) {
        p.active[row] = 0;
        continue;
      }
      const scalar_t beta = rs_new / rs;
#pragma omp simd
      for (int64_t q = 0; q < d; ++q) pv[q] = r[q] + beta * pv[q];
      still += 1;
    }
  }
  return still;
}

// The diagonal-G CG of the module comment: every step of a row back to back.
// lam: (d,) the diagonal of G. Stops as the full-G path does.
template <int K, typename scalar_t, typename index_t>
void cg_diag_kernel(const CgProblem<scalar_t, index_t>& p, const scalar_t* __restrict lam,
                    int64_t steps) {
  const int64_t d = K > 0 ? K : p.d;
  const int threads = p.R * d < 16384 ? 1 : std::max(1, at::get_num_threads());
  // (threads, 3, d): each thread's r, p and Ap.
  std::vector<scalar_t> scratch(static_cast<size_t>(threads) * 3 * d);
#pragma omp parallel num_threads(threads)
  {
    scalar_t* __restrict r = scratch.data() + static_cast<int64_t>(omp_get_thread_num()) * 3 * d;
    scalar_t* __restrict pv = r + d;
    scalar_t* __restrict ap = pv + d;
#pragma omp for schedule(dynamic, 16)
    for (int64_t row = 0; row < p.R; ++row) {
      const int64_t e0 = p.indptr[row], e1 = p.indptr[row + 1];
      scalar_t* __restrict x = p.X + row * d;
      const scalar_t sc = p.row_scale != nullptr ? p.row_scale[row] : scalar_t(1);
#pragma omp simd
      for (int64_t q = 0; q < d; ++q) r[q] = -(lam[q] * sc) * x[q];
      add_sparse<K, true>(p, e0, e1, x, r, d);  // r = b - A x
      std::copy(r, r + d, pv);
      scalar_t rs = cpu::dot<K>(r, r, d);
      for (int64_t s = 0; s < steps && !(rs < scalar_t(kConverged)); ++s) {  // NaN goes on
#pragma omp simd
        for (int64_t q = 0; q < d; ++q) ap[q] = (lam[q] * sc) * pv[q];
        add_sparse<K, false>(p, e0, e1, pv, ap, d);  // Ap
        const scalar_t pAp = cpu::dot<K>(pv, ap, d);
        if (pAp <= scalar_t(0)) break;
        const scalar_t a = rs / pAp;
        cpu::axpy<K>(x, a, pv, d);
        cpu::axpy<K>(r, -a, ap, d);
        const scalar_t rs_new = cpu::dot<K>(r, r, d);
        if (rs_new < scalar_t(kConverged)) break;
        const scalar_t beta = rs_new / rs;
#pragma omp simd
        for (int64_t q = 0; q < d; ++q) pv[q] = r[q] + beta * pv[q];
        rs = rs_new;
      }
    }
  }
}

// Rows per block: the block's r, p and PG (B, d) and its rows of X take about
// 1 MiB, so they stay in the two cores' L2 caches through all of the block's
// GEMMs and row passes instead of streaming from memory 4 + 3 cg_steps times.
template <typename scalar_t>
int64_t block_rows(int64_t d) {
  return std::max<int64_t>(64, (int64_t(1) << 20) / (4 * d * int64_t(sizeof(scalar_t))));
}

// Runs the CG of the module comment on rows [0, R) block by block; each block's
// rows are independent of the others', so the blocking changes no result
// (each output row of a GEMM depends on its own input row only).
template <int K, typename scalar_t, typename index_t>
void implicit_cg(const CgProblem<scalar_t, index_t>& whole, const at::Tensor& Xc,
                 const at::Tensor& gram, int64_t steps) {
  const int64_t R = whole.R, d = whole.d, B = std::min(R, block_rows<scalar_t>(d));
  const auto opt = Xc.options();
  at::Tensor r = at::empty({B, d}, opt);                      // (B, d) residuals
  at::Tensor P = at::empty({B, d}, opt);                      // (B, d) directions
  at::Tensor PG = at::empty({B, d}, opt);                     // (B, d) P @ gram, then Ap
  at::Tensor rs = at::empty({B}, opt);                        // (B,) |r|^2
  at::Tensor active = at::empty({B}, opt.dtype(at::kByte));  // (B,)
  for (int64_t b0 = 0; b0 < R; b0 += B) {
    const int64_t nb = std::min(B, R - b0);
    CgProblem<scalar_t, index_t> p = whole;
    p.indptr = whole.indptr + b0;
    p.X = whole.X + b0 * d;
    p.r = r.data_ptr<scalar_t>();
    p.p = P.data_ptr<scalar_t>();
    p.PG = PG.data_ptr<scalar_t>();
    p.rs = rs.data_ptr<scalar_t>();
    p.active = active.data_ptr<uint8_t>();
    p.R = nb;
    at::Tensor PGb = PG.narrow(0, 0, nb), Pb = P.narrow(0, 0, nb);
    at::mm_out(PGb, Xc.narrow(0, b0, nb), gram);  // gram symmetric: row r holds gram x_r
    int64_t still = cg_rows_kernel<K, true>(p);
    for (int64_t s = 0; s < steps && still > 0; ++s) {
      at::mm_out(PGb, Pb, gram);
      still = cg_rows_kernel<K, false>(p);
    }
  }
}

// X updated in place; arguments as in check_implicit_cg_args.
void implicit_als_cg_cpu(const at::Tensor& X, const at::Tensor& indptr,
                         const at::Tensor& indices, const at::Tensor& weight,
                         const at::Tensor& Y, const at::Tensor& gram, int64_t cg_steps,
                         const std::optional<at::Tensor>& target,
                         const std::optional<at::Tensor>& row_scale) {
  const at::Tensor tgt = target.has_value() ? *target : at::Tensor();      // (nnz,) or none
  const at::Tensor scl = row_scale.has_value() ? *row_scale : at::Tensor();  // (R,) or none
  const ImplicitSizes s =
      check_implicit_cg_args(kOp, X, indptr, indices, weight, Y, gram, cg_steps, tgt, scl);
  // Every value check before X is touched.
  const at::Tensor ip = indptr.contiguous();
  const int64_t* ipp = ip.const_data_ptr<int64_t>();
  for (int64_t r = 0; r <= s.R; ++r) {
    TORCH_CHECK_INDEX(ipp[r] >= 0 && ipp[r] <= s.nnz && (r == 0 || ipp[r] >= ipp[r - 1]), kOp,
                      ": indptr must hold non-decreasing offsets within [0, ", s.nnz,
                      "], got indptr[", r, "] = ", ipp[r]);
  }
  const at::Tensor idx = indices.contiguous();
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "implicit_als_cg_cpu_check", [&] {
    const index_t* ix = idx.const_data_ptr<index_t>();
    const int64_t lo = ipp[0], hi = ipp[s.R];  // only the span the rows read is checked
    const int64_t bad = cpu::first_out_of_range(ix + lo, hi - lo, 0, s.n);
    TORCH_CHECK_INDEX(bad < 0, kOp, ": indices[", lo + bad, "] = ",
                      bad >= 0 ? int64_t(ix[lo + bad]) : 0, " is out of range for Y with ", s.n,
                      " rows");
  });
  if (s.R == 0) return;
  const at::Tensor w = weight.contiguous(), Yc = Y.contiguous();
  const at::Tensor tc = tgt.defined() ? tgt.contiguous() : tgt;
  const at::Tensor sc = scl.defined() ? scl.contiguous() : scl;
  at::Tensor Xc = X.is_contiguous() ? X : X.contiguous();  // (R, d)
  AT_DISPATCH_FLOATING_TYPES(Y.scalar_type(), "implicit_als_cg_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "implicit_als_cg_cpu_index", [&] {
      // The scratch pointers are the blocks' (implicit_cg).
      CgProblem<scalar_t, index_t> p{ipp,     idx.const_data_ptr<index_t>(),
                                     w.const_data_ptr<scalar_t>(),
                                     Yc.const_data_ptr<scalar_t>(),
                                     Xc.data_ptr<scalar_t>(),
                                     nullptr, nullptr, nullptr, nullptr, nullptr,
                                     s.R,     s.d};
      p.target = tc.defined() ? tc.const_data_ptr<scalar_t>() : nullptr;
      p.row_scale = sc.defined() ? sc.const_data_ptr<scalar_t>() : nullptr;
      auto run = [&](auto k_const) {
        constexpr int K = decltype(k_const)::value;
        if (gram.dim() == 1) {
          const at::Tensor lam = gram.contiguous();  // (d,)
          cg_diag_kernel<K>(p, lam.const_data_ptr<scalar_t>(), cg_steps);
        } else {
          implicit_cg<K>(p, Xc, gram, cg_steps);
        }
      };
      switch (s.d) {
        case 32: run(std::integral_constant<int, 32>{}); break;
        case 64: run(std::integral_constant<int, 64>{}); break;
        case 128: run(std::integral_constant<int, 128>{}); break;
        default: run(std::integral_constant<int, 0>{}); break;
      }
    });
  });
  if (!Xc.is_same(X)) X.copy_(Xc);
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CPU, m) {
  m.impl("implicit_als_cg_", &implicit_als_cg_cpu);
}

}  // namespace mfext
