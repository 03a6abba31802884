// The CPU kernel of mfext::_sparse_dot (and its TORCH_LIBRARY_IMPL).
// Scores of observed entries: out[e] = W[rows[e]] . H_t[cols[e]], the inner
// products that predict, score and validation need, without the (nnz, k)
// gathered temporaries of the torch expression (W[rows] * H_t[cols]).sum(1).
// Each entry is independent, so the result does not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../sparse_dot_checks.h"
#include "index_range.h"
#include "vec.h"

namespace mfext {
namespace {

constexpr const char* kOp = "mfext::_sparse_dot";

template <int K, typename scalar_t, typename index_t>
void sparse_dot_kernel(const index_t* rows, const index_t* cols,  // (nnz,)
                       const scalar_t* W,                         // (m, k) row-major
                       const scalar_t* Ht,                        // (n, k) row-major
                       int64_t k_rt, int64_t nnz,
                       scalar_t* out) {                           // (nnz,)
  const int64_t k = K > 0 ? K : k_rt;
  at::parallel_for(0, nnz, 8192, [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      out[e] = cpu::dot<K>(W + static_cast<int64_t>(rows[e]) * k,
                           Ht + static_cast<int64_t>(cols[e]) * k, k);
    }
  });
}

// Returns out: (nnz,).
at::Tensor sparse_dot_cpu(const at::Tensor& rows,   // (nnz,)
                          const at::Tensor& cols,   // (nnz,)
                          const at::Tensor& W,      // (m, k)
                          const at::Tensor& H_t) {  // (n, k)
  const SparseDotSizes s = check_sparse_dot_inputs(kOp, rows, cols, W, H_t);
  const int64_t nnz = s.nnz, m = s.m, n = s.n, k = s.k;
  const at::Tensor rows_c = rows.contiguous(), cols_c = cols.contiguous();
  const at::Tensor W_c = W.contiguous(), Ht_c = H_t.contiguous();
  at::Tensor out = at::empty({nnz}, W.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "sparse_dot_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(rows.scalar_type(), "sparse_dot_cpu_index", [&] {
      const index_t* r = rows_c.const_data_ptr<index_t>();
      const index_t* c = cols_c.const_data_ptr<index_t>();
      cpu::check_index_range(kOp, "rows", r, nnz, m, "W", "rows");
      cpu::check_index_range(kOp, "cols", c, nnz, n, "H_t", "rows (items)");
      const scalar_t* w = W_c.const_data_ptr<scalar_t>();
      const scalar_t* h = Ht_c.const_data_ptr<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      switch (k) {
        case 32: sparse_dot_kernel<32>(r, c, w, h, k, nnz, o); break;
        case 64: sparse_dot_kernel<64>(r, c, w, h, k, nnz, o); break;
        case 128: sparse_dot_kernel<128>(r, c, w, h, k, nnz, o); break;
        default: sparse_dot_kernel<0>(r, c, w, h, k, nnz, o); break;
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CPU, m) {
  m.impl("_sparse_dot", &sparse_dot_cpu);
}

}  // namespace mfext
