// implicit_als_cg_ on the CPU: cg_steps conjugate-gradient steps on every row's
// implicit-ALS normal equations, X updated in place (mfext/ops/implicit.py
// states the math):
//   A_r = gram + sum_e w_e y_c y_c^T,   b_r = sum_e (1 + w_e) y_c,   c = indices[e]
// Per step, one GEMM over all rows, PG = P @ gram (torch's), then one pass over
// the rows: each thread takes a row, adds the sparse part to its row of PG
// (Ap_r = PG_r + sum_e w_e (y_c . p_r) y_c) and at once does the row's vector
// update (pAp, x, r, rs, p) while the row is in L1, so Ap is never stored as a
// separate tensor. Step 0 starts the iteration the same way from PG = X @ gram:
//   r = -PG_r + sum_e (1 + w_e (1 - y_c . x_r)) y_c,  p = r,  rs = r . r.
// A row stops (its flag cleared) when rs < 1e-20 or p . Ap <= 0; the GEMM still
// covers it, the row pass skips it, and the loop ends early once every row stopped.
//
// Each row belongs to one thread (rows are handed out dynamically because their
// entry counts differ a lot) and sums its entries in entry order, so the
// result depends on the thread count only through the GEMM.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

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
};

// Adds sum_e coef(e) y_c to acc (d,), four entries at a time: their dot
// products are independent, so their reductions overlap; the updates of acc
// run in entry order. kFirst: coef = 1 + w (1 - y . v); else coef = w (y . v).
constexpr int64_t kPrefetch = 8;  // entries ahead whose Y rows are prefetched

template <int K, bool kFirst, typename scalar_t, typename index_t>
inline void add_sparse(const CgProblem<scalar_t, index_t>& p, int64_t e0, int64_t e1,
                       const scalar_t* __restrict v, scalar_t* __restrict acc, int64_t d) {
  auto coef = [&](int64_t e, const scalar_t* y) {
    const scalar_t w = p.weight[e], yv = cpu::dot<K>(y, v, d);
    return kFirst ? scalar_t(1) + w * (scalar_t(1) - yv) : w * yv;
  };
  int64_t e = e0;
  for (; e + 4 <= e1; e += 4) {
    // Prefetch the rows of Y that entries kPrefetch ahead will read: the rows are
    // random, so their loads miss the cache unless started early.
    for (int64_t f = e + kPrefetch; f < std::min(e + kPrefetch + 4, e1); ++f) {
      const char* row = reinterpret_cast<const char*>(p.Y + static_cast<int64_t>(p.indices[f]) * d);
      for (int64_t b = 0; b < d * int64_t(sizeof(scalar_t)); b += 64) __builtin_prefetch(row + b, 0, 3);
    }
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
      const bool on = rs >= scalar_t(kConverged);
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

template <int K, typename scalar_t, typename index_t>
void implicit_cg(const CgProblem<scalar_t, index_t>& p, const at::Tensor& Xc,
                 const at::Tensor& P, at::Tensor& PG, const at::Tensor& gram, int64_t steps) {
  at::mm_out(PG, Xc, gram);  // gram symmetric: row r holds gram x_r
  int64_t still = cg_rows_kernel<K, true>(p);
  for (int64_t s = 0; s < steps && still > 0; ++s) {
    at::mm_out(PG, P, gram);
    still = cg_rows_kernel<K, false>(p);
  }
}

// X updated in place; arguments as in check_implicit_cg_args.
void implicit_als_cg_cpu(const at::Tensor& X, const at::Tensor& indptr,
                         const at::Tensor& indices, const at::Tensor& weight,
                         const at::Tensor& Y, const at::Tensor& gram, int64_t cg_steps) {
  const ImplicitSizes s =
      check_implicit_cg_args(kOp, X, indptr, indices, weight, Y, gram, cg_steps);
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
  at::Tensor Xc = X.is_contiguous() ? X : X.contiguous();  // (R, d)
  at::Tensor r = at::empty({s.R, s.d}, Y.options());         // (R, d)
  at::Tensor P = at::empty({s.R, s.d}, Y.options());         // (R, d)
  at::Tensor PG = at::empty({s.R, s.d}, Y.options());        // (R, d)
  at::Tensor rs = at::empty({s.R}, Y.options());             // (R,)
  at::Tensor active = at::empty({s.R}, Y.options().dtype(at::kByte));  // (R,)
  AT_DISPATCH_FLOATING_TYPES(Y.scalar_type(), "implicit_als_cg_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "implicit_als_cg_cpu_index", [&] {
      const CgProblem<scalar_t, index_t> p{ipp,
                                           idx.const_data_ptr<index_t>(),
                                           w.const_data_ptr<scalar_t>(),
                                           Yc.const_data_ptr<scalar_t>(),
                                           Xc.data_ptr<scalar_t>(),
                                           r.data_ptr<scalar_t>(),
                                           P.data_ptr<scalar_t>(),
                                           PG.data_ptr<scalar_t>(),
                                           rs.data_ptr<scalar_t>(),
                                           active.data_ptr<uint8_t>(),
                                           s.R,
                                           s.d};
      switch (s.d) {
        case 32: implicit_cg<32>(p, Xc, P, PG, gram, cg_steps); break;
        case 64: implicit_cg<64>(p, Xc, P, PG, gram, cg_steps); break;
        case 128: implicit_cg<128>(p, Xc, P, PG, gram, cg_steps); break;
        default: implicit_cg<0>(p, Xc, P, PG, gram, cg_steps); break;
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
