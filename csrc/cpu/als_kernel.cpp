// The CPU kernels of mfext::als_normal_equations and mfext::als_solve (and
// their TORCH_LIBRARY_IMPL). The per-row least-squares problems of ALS, built
// from the observed entries only. Row r (a user when solving for users, an
// item when solving for items) owns the entries e in [indptr[r], indptr[r + 1]):
//   gram[r] = base + sum_e w_e f_c f_c^T + diag(reg_diag) * n_r^count_exponent
//   rhs[r]  = sum_e (vals[e] - col_offset[c]) f_c,       c = indices[e]
// with f_c = F[c] (the fixed factors of the other side, one row per column id),
// w_e = weight[e] (1 without weight) and base a (d, d) matrix shared by every
// row (0 without base; implicit-feedback ALS passes Y^T Y there and the
// confidences minus one as the weights). A row without entries gets gram = I
// and rhs = 0 (its solution is 0).
//
// Two ops share the builder:
//   als_normal_equations -> (gram (R, d, d), rhs (R, d)), for a batched solve
//   als_solve            -> x (R, d), gram[r] x[r] = rhs[r] by an in-register
//                           Cholesky per row, never storing the R Gram matrices.
//
// Each row belongs to one thread (rows are handed out dynamically because their
// entry counts differ a lot), so the sums run in entry order and the results do
// not depend on the thread count. Per row, the factors of its entries are
// gathered into a zero-padded (n_r, dp) scratch G, and the lower triangle of
// G^T G is computed in register tiles of 8 rows x one 64-byte vector of
// columns, so every loaded vector feeds 8 FMAs.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "../als_checks.h"
#include "../element_math.h"
#include "index_range.h"

namespace mfext {
namespace {

constexpr const char* kOpNormal = "mfext::als_normal_equations";
constexpr const char* kOpSolve = "mfext::als_solve";
constexpr int kTileRows = 8;  // rows of a Gram tile (register accumulators)

template <typename scalar_t>
constexpr int64_t lanes() {
  return 64 / sizeof(scalar_t);  // elements of one 64-byte vector
}

// Padded width of the gathered factors: tiles never read past it.
template <typename scalar_t>
int64_t padded_width(int64_t d) {
  const int64_t step = std::max<int64_t>(kTileRows, lanes<scalar_t>());
  return (d + step - 1) / step * step;
}

template <typename scalar_t, typename index_t>
struct AlsProblem {
  const int64_t* indptr;       // (R + 1,)
  const index_t* indices;      // (nnz,)
  const scalar_t* vals;        // (nnz,)
  const scalar_t* F;           // (n, d) row-major
  const scalar_t* col_offset;  // (n,) or null
  const scalar_t* base;        // (d, d) row-major, symmetric, or null
  const scalar_t* weight;      // (nnz,) or null
  const scalar_t* reg_diag;    // (d,)
  double count_exponent;  // 0: plain ridge, 1: ALS-WR (proportional to n_r)
  int64_t d;
};

// Lower triangle of G^T diag(w) G into A (d x d, row-major). G: (cnt, dp),
// zero-padded; w: (cnt,) when kWeighted (each entry's row of G scaled by its
// weight on one side of the product, so a zero or tiny weight needs no sqrt).
template <bool kWeighted, typename scalar_t>
void gram_lower_kernel(const scalar_t* __restrict G, const scalar_t* __restrict w, int64_t cnt,
                       int64_t dp, int64_t d, scalar_t* __restrict A) {
  constexpr int64_t L = lanes<scalar_t>();
  for (int64_t p0 = 0; p0 < d; p0 += kTileRows) {
    const int64_t q_end = std::min<int64_t>(p0 + kTileRows, d);  // tiles touching the triangle
    for (int64_t q0 = 0; q0 < q_end; q0 += L) {
      scalar_t acc[kTileRows][L] = {};
      for (int64_t e = 0; e < cnt; ++e) {
        const scalar_t* g = G + e * dp;
        const scalar_t we = kWeighted ? w[e] : scalar_t(1);
        for (int r = 0; r < kTileRows; ++r) {
          const scalar_t a = kWeighted ? we * g[p0 + r] : g[p0 + r];
#pragma omp simd
          for (int64_t c = 0; c < L; ++c) acc[r][c] += a * g[q0 + c];
        }
      }
      for (int r = 0; r < kTileRows && p0 + r < d; ++r) {
        const int64_t p = p0 + r;
        for (int64_t c = 0; c < L && q0 + c <= p; ++c) A[p * d + q0 + c] = acc[r][c];
      }
    }
  }
}

// Builds the lower triangle of gram[r] into A (d x d) and rhs[r] into b (d,).
// G: scratch of at least (max entries per row) * dp. Returns the entry count.
template <typename scalar_t, typename index_t>
int64_t build_row(const AlsProblem<scalar_t, index_t>& p, int64_t r, scalar_t* A, scalar_t* b,
                  std::vector<scalar_t>& G) {
  const int64_t d = p.d, dp = padded_width<scalar_t>(d);
  const int64_t e0 = p.indptr[r], e1 = p.indptr[r + 1], cnt = e1 - e0;
  std::fill(b, b + d, scalar_t(0));
  if (cnt == 0) {
    std::fill(A, A + d * d, scalar_t(0));
    for (int64_t q = 0; q < d; ++q) A[q * d + q] = scalar_t(1);
    return 0;
  }
  if (static_cast<int64_t>(G.size()) < cnt * dp) G.assign(cnt * dp, scalar_t(0));
  for (int64_t e = e0; e < e1; ++e) {
    const int64_t c = static_cast<int64_t>(p.indices[e]);
    const scalar_t* __restrict f = p.F + c * d;
    scalar_t* __restrict g = G.data() + (e - e0) * dp;
    std::copy(f, f + d, g);
    std::fill(g + d, g + dp, scalar_t(0));
    const scalar_t t = p.col_offset ? p.vals[e] - p.col_offset[c] : p.vals[e];
#pragma omp simd
    for (int64_t q = 0; q < d; ++q) b[q] += t * f[q];
  }
  if (p.weight) {
    gram_lower_kernel<true>(G.data(), p.weight + e0, cnt, dp, d, A);
  } else {
    gram_lower_kernel<false>(G.data(), static_cast<const scalar_t*>(nullptr), cnt, dp, d, A);
  }
  if (p.base) {  // the shared term, lower triangle
    for (int64_t q = 0; q < d; ++q) {
      for (int64_t t = 0; t <= q; ++t) A[q * d + t] += p.base[q * d + t];
    }
  }
  const scalar_t scale =
      p.count_exponent == 0.0   ? scalar_t(1)
      : p.count_exponent == 1.0 ? static_cast<scalar_t>(cnt)
                                : static_cast<scalar_t>(std::pow(double(cnt), p.count_exponent));
  for (int64_t q = 0; q < d; ++q) A[q * d + q] += p.reg_diag[q] * scale;
  return cnt;
}

// The largest diagonal entry of A (d, d), 0 at least (NaN entries are skipped).
template <typename scalar_t>
scalar_t max_diagonal(const scalar_t* A, int64_t d) {
  scalar_t max_diag = 0;
  for (int64_t q = 0; q < d; ++q) max_diag = std::max(max_diag, A[q * d + q]);
  return max_diag;
}

// Solves A x = b in place (x overwrites b) from the lower triangle of A, which
// is overwritten by its Cholesky factor. col: (d,) scratch. Returns false when
// A is not numerically positive definite (math::good_pivot).
template <typename scalar_t>
bool cholesky_solve_kernel(scalar_t* __restrict A, scalar_t* __restrict b, int64_t d,
                           scalar_t* __restrict col) {
  using limits = std::numeric_limits<scalar_t>;
  const scalar_t floor = math::pivot_floor(max_diagonal(A, d), d, limits::epsilon());
  for (int64_t j = 0; j < d; ++j) {  // right-looking: rank-1 updates on contiguous rows
    const scalar_t pivot = A[j * d + j];
    if (!math::good_pivot(pivot, floor, limits::max())) return false;
    const scalar_t ljj = std::sqrt(pivot);
    const scalar_t inv = scalar_t(1) / ljj;
    A[j * d + j] = ljj;
    for (int64_t i = j + 1; i < d; ++i) col[i] = A[i * d + j] *= inv;
    for (int64_t i = j + 1; i < d; ++i) {
      const scalar_t ci = col[i];
      scalar_t* __restrict ai = A + i * d;
#pragma omp simd
      for (int64_t q = j + 1; q <= i; ++q) ai[q] -= ci * col[q];
    }
  }
  for (int64_t i = 0; i < d; ++i) {  // L y = b
    const scalar_t* li = A + i * d;
    scalar_t s = b[i];
    for (int64_t t = 0; t < i; ++t) s -= li[t] * b[t];
    b[i] = s / li[i];
  }
  for (int64_t i = d - 1; i >= 0; --i) {  // L^T x = y, one column of L^T (row of L) at a time
    const scalar_t* li = A + i * d;
    const scalar_t xi = b[i] / li[i];
    b[i] = xi;
#pragma omp simd
    for (int64_t t = 0; t < i; ++t) b[t] -= li[t] * xi;
  }
  return true;
}

int threads_for(int64_t R, int64_t d) {
  return R * d * d < 32768 ? 1 : std::max(1, at::get_num_threads());
}

template <typename scalar_t, typename index_t>
void als_normal_equations_kernel(const AlsProblem<scalar_t, index_t>& p, int64_t R,
                                 scalar_t* gram,  // (R, d, d)
                                 scalar_t* rhs) { // (R, d)
  const int64_t d = p.d;
#pragma omp parallel num_threads(threads_for(R, d))
  {
    std::vector<scalar_t> G;  // per-thread gather scratch
#pragma omp for schedule(dynamic, 8)
    for (int64_t r = 0; r < R; ++r) {
      scalar_t* A = gram + r * d * d;
      build_row(p, r, A, rhs + r * d, G);
      for (int64_t q = 0; q < d; ++q) {  // mirror the lower triangle
        for (int64_t t = 0; t < q; ++t) A[t * d + q] = A[q * d + t];
      }
    }
  }
}

// x: (R, d). Returns the number of rows that needed the fallback ridge.
template <typename scalar_t, typename index_t>
int64_t als_solve_kernel(const AlsProblem<scalar_t, index_t>& p, int64_t R, scalar_t* x) {
  const int64_t d = p.d;
  int64_t ridged = 0;
#pragma omp parallel num_threads(threads_for(R, d)) reduction(+ : ridged)
  {
    std::vector<scalar_t> G, A(d * d), col(d);
#pragma omp for schedule(dynamic, 8)
    for (int64_t r = 0; r < R; ++r) {
      scalar_t* b = x + r * d;
      build_row(p, r, A.data(), b, G);
      if (cholesky_solve_kernel(A.data(), b, d, col.data())) continue;
      // Not positive definite (possible with reg = 0 and fewer entries than d):
      // rebuild with a small ridge (math::fallback_ridge), or give NaN.
      ++ridged;
      build_row(p, r, A.data(), b, G);
      using limits = std::numeric_limits<scalar_t>;
      const scalar_t ridge =
          math::fallback_ridge(max_diagonal(A.data(), d), d, limits::epsilon(), limits::min());
      for (int64_t q = 0; q < d; ++q) A[q * d + q] += ridge;
      if (!cholesky_solve_kernel(A.data(), b, d, col.data())) {
        std::fill(b, b + d, std::numeric_limits<scalar_t>::quiet_NaN());
      }
    }
  }
  return ridged;
}

struct Checked {
  at::Tensor indptr, indices, vals, F, offset, reg, base, weight;
  int64_t R, d;
};

// The shared data-free checks (../als_checks.h), then the index and reg_diag values.
Checked check_als_inputs(const char* op,
                         const at::Tensor& indptr,                     // (R + 1,) int64
                         const at::Tensor& indices,                    // (nnz,)
                         const at::Tensor& vals,                       // (nnz,)
                         const at::Tensor& F,                          // (n, d)
                         const std::optional<at::Tensor>& col_offset,  // (n,) or None
                         const at::Tensor& reg_diag,                   // (d,)
                         const std::optional<at::Tensor>& base,        // (d, d) or None
                         const std::optional<at::Tensor>& weight) {    // (nnz,) or None
  const AlsSizes s =
      check_als_args(op, indptr, indices, vals, F, col_offset, reg_diag, base, weight);
  const int64_t n = s.n, nnz = s.nnz;
  Checked c;
  c.R = s.R;
  c.d = s.d;
  c.indptr = indptr.contiguous();
  const int64_t* ip = c.indptr.const_data_ptr<int64_t>();
  for (int64_t r = 0; r <= c.R; ++r) {
    TORCH_CHECK_INDEX(ip[r] >= 0 && ip[r] <= nnz && (r == 0 || ip[r] >= ip[r - 1]), op,
                      ": indptr must hold non-decreasing offsets within [0, ", nnz,
                      "], got indptr[", r, "] = ", ip[r]);
  }
  c.indices = indices.contiguous();
  c.vals = vals.contiguous();
  c.F = F.contiguous();
  c.reg = reg_diag.contiguous();
  if (col_offset.has_value()) c.offset = col_offset->contiguous();
  if (base.has_value()) c.base = base->contiguous();
  if (weight.has_value()) c.weight = weight->contiguous();
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "als_check_indices", [&] {
    const index_t* idx = c.indices.const_data_ptr<index_t>();
    const int64_t lo = ip[0], hi = ip[c.R];  // only the span the rows read is checked
    const int64_t bad = cpu::first_out_of_range(idx + lo, hi - lo, 0, n);
    TORCH_CHECK_INDEX(bad < 0, op, ": indices[", lo + bad, "] = ",
                      bad >= 0 ? int64_t(idx[lo + bad]) : 0, " is out of range for F with ", n,
                      " rows");
  });
  check_reg_diag_values(op, c.reg);  // after the indices, in the order CUDA reports them
  return c;
}

template <typename scalar_t, typename index_t>
AlsProblem<scalar_t, index_t> make_problem(const Checked& c, double count_exponent) {
  return {c.indptr.const_data_ptr<int64_t>(),
          c.indices.const_data_ptr<index_t>(),
          c.vals.const_data_ptr<scalar_t>(),
          c.F.const_data_ptr<scalar_t>(),
          c.offset.defined() ? c.offset.const_data_ptr<scalar_t>() : nullptr,
          c.base.defined() ? c.base.const_data_ptr<scalar_t>() : nullptr,
          c.weight.defined() ? c.weight.const_data_ptr<scalar_t>() : nullptr,
          c.reg.const_data_ptr<scalar_t>(),
          count_exponent,
          c.d};
}

// Returns gram: (R, d, d), rhs: (R, d); arguments as in check_als_inputs.
std::tuple<at::Tensor, at::Tensor> als_normal_equations_cpu(
    const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& vals,
    const at::Tensor& F, const std::optional<at::Tensor>& col_offset, const at::Tensor& reg_diag,
    double count_exponent, const std::optional<at::Tensor>& base,
    const std::optional<at::Tensor>& weight) {
  check_als_exponent(kOpNormal, count_exponent);
  const Checked c = check_als_inputs(kOpNormal, indptr, indices, vals, F, col_offset, reg_diag,
                                     base, weight);
  at::Tensor gram = at::empty({c.R, c.d, c.d}, F.options());
  at::Tensor rhs = at::empty({c.R, c.d}, F.options());
  AT_DISPATCH_FLOATING_TYPES(F.scalar_type(), "als_normal_equations_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "als_normal_equations_cpu_index", [&] {
      als_normal_equations_kernel(make_problem<scalar_t, index_t>(c, count_exponent), c.R,
                                  gram.data_ptr<scalar_t>(), rhs.data_ptr<scalar_t>());
    });
  });
  return {gram, rhs};
}

// Returns x: (R, d); arguments as in check_als_inputs.
at::Tensor als_solve_cpu(const at::Tensor& indptr, const at::Tensor& indices,
                         const at::Tensor& vals, const at::Tensor& F,
                         const std::optional<at::Tensor>& col_offset, const at::Tensor& reg_diag,
                         double count_exponent, const std::optional<at::Tensor>& base,
                         const std::optional<at::Tensor>& weight) {
  check_als_exponent(kOpSolve, count_exponent);
  const Checked c = check_als_inputs(kOpSolve, indptr, indices, vals, F, col_offset, reg_diag,
                                     base, weight);
  at::Tensor x = at::empty({c.R, c.d}, F.options());
  AT_DISPATCH_FLOATING_TYPES(F.scalar_type(), "als_solve_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "als_solve_cpu_index", [&] {
      als_solve_kernel(make_problem<scalar_t, index_t>(c, count_exponent), c.R,
                       x.data_ptr<scalar_t>());
    });
  });
  return x;
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CPU, m) {
  m.impl("als_normal_equations", &als_normal_equations_cpu);
  m.impl("als_solve", &als_solve_cpu);
}

}  // namespace mfext
