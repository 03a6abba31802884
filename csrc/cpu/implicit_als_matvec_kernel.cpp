// implicit_als_matvec on the CPU: the product A x of the implicit-ALS normal
// equations for every row at once (mfext/ops/implicit.py states the math):
//   out[r] = X[r] @ gram + sum_e (weight[e] * (Y[c] . X[r]) - target[e]) * Y[c],  c = indices[e]
// The dense part is one GEMM (torch's); the sparse part is one pass over the
// CSR entries that accumulates each row in a register-sized buffer, with no
// per-row k x k matrix and no per-entry temporaries.
//
// Each row belongs to one thread (rows are handed out dynamically because
// their entry counts differ a lot) and sums its entries in entry order, so the
// sparse part does not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "../implicit_als_matvec_checks.h"
#include "index_range.h"
#include "vec.h"

namespace mfext {
namespace {

constexpr const char* kOp = "mfext::implicit_als_matvec";

template <typename scalar_t, typename index_t>
struct MatvecProblem {
  const int64_t* indptr;   // (R + 1,)
  const index_t* indices;  // (nnz,)
  const scalar_t* weight;  // (nnz,)
  const scalar_t* target;  // (nnz,) or null
  const scalar_t* Y;       // (n, d) row-major
  const scalar_t* X;       // (R, d) row-major
  int64_t R, d;
};

// out: (R, d), already X @ gram; the sparse part is added row by row.
template <int K, typename scalar_t, typename index_t>
void implicit_matvec_kernel(const MatvecProblem<scalar_t, index_t>& p, scalar_t* out) {
  const int64_t d = K > 0 ? K : p.d;
  const int threads = p.R * d < 16384 ? 1 : std::max(1, at::get_num_threads());
#pragma omp parallel num_threads(threads)
  {
    std::vector<scalar_t> acc_buf(d);  // this row's sparse part: (d,)
    scalar_t* __restrict acc = acc_buf.data();
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t e0 = p.indptr[r], e1 = p.indptr[r + 1];
      if (e0 == e1) continue;
      const scalar_t* __restrict x = p.X + r * d;
      std::fill(acc, acc + d, scalar_t(0));
      int64_t e = e0;
      // Four entries at a time: their dot products are independent, so their
      // reductions overlap instead of waiting on each other. The sums (each
      // dot, then the updates of acc in entry order) are those of the plain loop.
      for (; e + 4 <= e1; e += 4) {
        const scalar_t* __restrict y0 = p.Y + static_cast<int64_t>(p.indices[e]) * d;
        const scalar_t* __restrict y1 = p.Y + static_cast<int64_t>(p.indices[e + 1]) * d;
        const scalar_t* __restrict y2 = p.Y + static_cast<int64_t>(p.indices[e + 2]) * d;
        const scalar_t* __restrict y3 = p.Y + static_cast<int64_t>(p.indices[e + 3]) * d;
        scalar_t c0 = p.weight[e] * cpu::dot<K>(y0, x, d);
        scalar_t c1 = p.weight[e + 1] * cpu::dot<K>(y1, x, d);
        scalar_t c2 = p.weight[e + 2] * cpu::dot<K>(y2, x, d);
        scalar_t c3 = p.weight[e + 3] * cpu::dot<K>(y3, x, d);
        if (p.target) {
          c0 -= p.target[e];
          c1 -= p.target[e + 1];
          c2 -= p.target[e + 2];
          c3 -= p.target[e + 3];
        }
        cpu::axpy<K>(acc, c0, y0, d);
        cpu::axpy<K>(acc, c1, y1, d);
        cpu::axpy<K>(acc, c2, y2, d);
        cpu::axpy<K>(acc, c3, y3, d);
      }
      for (; e < e1; ++e) {
        const scalar_t* __restrict y = p.Y + static_cast<int64_t>(p.indices[e]) * d;
        scalar_t coef = p.weight[e] * cpu::dot<K>(y, x, d);
        if (p.target) coef -= p.target[e];
        cpu::axpy<K>(acc, coef, y, d);
      }
      scalar_t* __restrict o = out + r * d;
#pragma omp simd
      for (int64_t q = 0; q < d; ++q) o[q] += acc[q];
    }
  }
}

// Returns out: (R, d); arguments as in check_implicit_matvec_args.
at::Tensor implicit_als_matvec_cpu(const at::Tensor& indptr, const at::Tensor& indices,
                                   const at::Tensor& weight, const at::Tensor& Y,
                                   const at::Tensor& gram, const at::Tensor& X,
                                   const std::optional<at::Tensor>& target) {
  const ImplicitSizes s =
      check_implicit_matvec_args(kOp, indptr, indices, weight, Y, gram, X, target);
  const at::Tensor ip = indptr.contiguous();
  const int64_t* ipp = ip.const_data_ptr<int64_t>();
  for (int64_t r = 0; r <= s.R; ++r) {
    TORCH_CHECK_INDEX(ipp[r] >= 0 && ipp[r] <= s.nnz && (r == 0 || ipp[r] >= ipp[r - 1]), kOp,
                      ": indptr must hold non-decreasing offsets within [0, ", s.nnz,
                      "], got indptr[", r, "] = ", ipp[r]);
  }
  const at::Tensor idx = indices.contiguous(), w = weight.contiguous(), Yc = Y.contiguous();
  const at::Tensor Xc = X.contiguous();
  const at::Tensor t = target.has_value() ? target->contiguous() : at::Tensor();
  // The dense part: one GEMM for every row (gram is symmetric, so X @ gram
  // holds gram @ x_r in row r).
  at::Tensor out = at::mm(Xc, gram).contiguous();
  AT_DISPATCH_FLOATING_TYPES(Y.scalar_type(), "implicit_als_matvec_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "implicit_als_matvec_cpu_index", [&] {
      const index_t* ix = idx.const_data_ptr<index_t>();
      const int64_t lo = ipp[0], hi = ipp[s.R];  // only the span the rows read is checked
      const int64_t bad = cpu::first_out_of_range(ix + lo, hi - lo, 0, s.n);
      TORCH_CHECK_INDEX(bad < 0, kOp, ": indices[", lo + bad, "] = ",
                        bad >= 0 ? int64_t(ix[lo + bad]) : 0, " is out of range for Y with ",
                        s.n, " rows");
      const MatvecProblem<scalar_t, index_t> p{
          ipp, ix, w.const_data_ptr<scalar_t>(),
          t.defined() ? t.const_data_ptr<scalar_t>() : nullptr, Yc.const_data_ptr<scalar_t>(),
          Xc.const_data_ptr<scalar_t>(), s.R, s.d};
      scalar_t* o = out.data_ptr<scalar_t>();
      switch (s.d) {
        case 32: implicit_matvec_kernel<32>(p, o); break;
        case 64: implicit_matvec_kernel<64>(p, o); break;
        case 128: implicit_matvec_kernel<128>(p, o); break;
        default: implicit_matvec_kernel<0>(p, o); break;
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CPU, m) {
  m.impl("implicit_als_matvec", &implicit_als_matvec_cpu);
}

}  // namespace mfext
