// Fused sparse loss and gradients on the CPU, over observed entries only.
//
// Two owner-computes passes, each output row written by exactly one thread:
//   row pass:    entries grouped by row; for row i, residuals r_e = w_i . h_c - v_e,
//                the loss, g_e = 2 weight_e r_e (kept), grad_W[i] = sum g_e h_c
//   column pass: entries grouped by column; grad_H[:, j] = sum g_e w_{rows[e]}
// The groupings are stable counting sorts, so the sums run in entry order and
// the results are identical for any thread count. H is read as H^T, an (n, k)
// row-major array: when H is the .t() view of a contiguous (n, k) tensor (the
// fast layout) no copy is made, and grad_H is written in that layout too.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "../math.h"
#include "bucket_order.h"

namespace mfext {
namespace {

constexpr const char* kOp = "mfext::sparse_loss_grad";
constexpr int64_t kRowsPerBlock = 256;  // loss partials per fixed block: thread-count independent

template <typename scalar_t>
inline scalar_t dot(const scalar_t* __restrict a, const scalar_t* __restrict b, int64_t k) {
  scalar_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t p = 0; p < k; ++p) s += a[p] * b[p];
  return s;
}

template <typename scalar_t>
inline void axpy(scalar_t* __restrict y, scalar_t alpha, const scalar_t* __restrict x, int64_t k) {
#pragma omp simd
  for (int64_t p = 0; p < k; ++p) y[p] += alpha * x[p];
}

template <typename scalar_t, typename index_t>
double sparse_loss_grad_kernel(const index_t* rows, const index_t* cols,  // (nnz,)
                               const scalar_t* vals,                      // (nnz,)
                               const scalar_t* weight,                    // (nnz,) or null
                               const scalar_t* W,                         // (m, k) row-major
                               const scalar_t* Ht,                        // (n, k) row-major
                               int64_t m, int64_t n, int64_t k, int64_t nnz,
                               scalar_t* grad_W,                          // (m, k) row-major
                               scalar_t* grad_Ht) {                       // (n, k) row-major
  int64_t bad = -1;
  const cpu::BucketOrder by_row = cpu::stable_bucket_order(rows, nnz, m, &bad);
  TORCH_CHECK_INDEX(bad < 0, kOp, ": rows[", bad, "] = ", bad >= 0 ? int64_t(rows[bad]) : 0,
                    " is out of range for W with ", m, " rows");
  const cpu::BucketOrder by_col = cpu::stable_bucket_order(cols, nnz, n, &bad);
  TORCH_CHECK_INDEX(bad < 0, kOp, ": cols[", bad, "] = ", bad >= 0 ? int64_t(cols[bad]) : 0,
                    " is out of range for H with ", n, " columns");

  std::vector<scalar_t> entry_grad(nnz);  // g_e = d loss / d prediction_e
  const int64_t n_blocks = (m + kRowsPerBlock - 1) / kRowsPerBlock;
  std::vector<double> block_loss(n_blocks, 0.0);
  std::vector<char> block_bad_weight(n_blocks, 0);

  at::parallel_for(0, n_blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<scalar_t> acc(k);
    for (int64_t b = b0; b < b1; ++b) {
      double loss = 0.0;
      bool bad_weight = false;
      for (int64_t i = b * kRowsPerBlock, i_end = std::min(m, i + kRowsPerBlock); i < i_end; ++i) {
        const scalar_t* w_i = W + i * k;
        std::fill(acc.begin(), acc.end(), scalar_t(0));
        for (int64_t s = by_row.offsets[i]; s < by_row.offsets[i + 1]; ++s) {
          const int64_t e = by_row.order[s];
          const scalar_t* h_c = Ht + static_cast<int64_t>(cols[e]) * k;
          const scalar_t r = dot(w_i, h_c, k) - vals[e];
          scalar_t g;
          if (weight == nullptr) {
            loss += math::square<double>(r);
            g = math::unit_residual_grad(r);
          } else {
            bad_weight |= !math::valid_weight(weight[e]);
            loss += math::weighted_square<double>(r, weight[e]);
            g = math::residual_grad(r, weight[e]);
          }
          entry_grad[e] = g;
          axpy(acc.data(), g, h_c, k);
        }
        std::copy(acc.begin(), acc.end(), grad_W + i * k);
      }
      block_loss[b] = loss;
      block_bad_weight[b] = bad_weight;
    }
  });
  for (char bad_weight : block_bad_weight) {
    TORCH_CHECK_VALUE(!bad_weight, kOp,
                      ": argument 'weight' must be finite and non-negative; found a "
                      "negative, NaN or Inf weight");
  }

  at::parallel_for(0, n, 64, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      scalar_t* out = grad_Ht + j * k;
      std::fill(out, out + k, scalar_t(0));
      for (int64_t s = by_col.offsets[j]; s < by_col.offsets[j + 1]; ++s) {
        const int64_t e = by_col.order[s];
        axpy(out, entry_grad[e], W + static_cast<int64_t>(rows[e]) * k, k);
      }
    }
  });

  double loss = 0.0;
  for (double l : block_loss) loss += l;
  return loss;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_loss_grad_cpu(
    const at::Tensor& rows, const at::Tensor& cols, const at::Tensor& vals, const at::Tensor& W,
    const at::Tensor& H, const std::optional<at::Tensor>& weight) {
  const SparseSizes s = check_sparse_inputs(kOp, rows, cols, vals, W, H, weight);
  at::NoGradGuard no_grad;
  at::Tensor grad_W = at::empty_like(W);
  at::Tensor grad_H = at::empty_like(H);
  // Row-major views the kernel reads; copies only when a layout is not already so.
  const at::Tensor W_c = W.contiguous();
  const at::Tensor Ht_c = H.t().contiguous();
  const at::Tensor rows_c = rows.contiguous(), cols_c = cols.contiguous();
  const at::Tensor vals_c = vals.contiguous();
  const std::optional<at::Tensor> weight_c =
      weight ? std::optional<at::Tensor>(weight->contiguous()) : std::nullopt;
  at::Tensor gW = grad_W.is_contiguous() ? grad_W : at::empty(W.sizes(), W.options());
  const bool grad_H_is_transposed = grad_H.t().is_contiguous();
  at::Tensor gHt = grad_H_is_transposed ? grad_H.t() : at::empty({s.n, s.k}, H.options());

  double loss = 0.0;
  AT_DISPATCH_FLOATING_TYPES(vals.scalar_type(), "sparse_loss_grad_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(rows.scalar_type(), "sparse_loss_grad_cpu_index", [&] {
      loss = sparse_loss_grad_kernel<scalar_t, index_t>(
          rows_c.const_data_ptr<index_t>(), cols_c.const_data_ptr<index_t>(),
          vals_c.const_data_ptr<scalar_t>(),
          weight_c ? weight_c->const_data_ptr<scalar_t>() : nullptr,
          W_c.const_data_ptr<scalar_t>(), Ht_c.const_data_ptr<scalar_t>(), s.m, s.n, s.k, s.nnz,
          gW.data_ptr<scalar_t>(), gHt.data_ptr<scalar_t>());
    });
  });
  if (!gW.is_same(grad_W)) grad_W.copy_(gW);
  if (!grad_H_is_transposed) grad_H.copy_(gHt.t());
  return {at::scalar_tensor(loss, vals.options()), grad_W, grad_H};
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CPU, m) {
  m.impl("sparse_loss_grad", &sparse_loss_grad_cpu);
}

}  // namespace mfext
