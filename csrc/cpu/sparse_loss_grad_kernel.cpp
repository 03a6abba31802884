// The CPU kernel of mfext::sparse_loss_grad (and its TORCH_LIBRARY_IMPL): fused
// sparse loss and gradients, over observed entries only.
//
// Per entry e = (i, c, v):  r = w_i . h_c - v,  loss += weight r^2,  g = 2 weight r,
//   grad_W[i] += g h_c,  grad_H^T[c] += g w_i.
// No update may be lost and results must repeat exactly, for every thread count.
// So the work is cut into chunks whose number and bounds depend on the data only
// (nnz, m, n, k, whether the rows are sorted), never on at::get_num_threads():
// every output row has one writer per chunk, chunk partials (loss included) are
// summed in chunk order, and the threads only decide which chunks they compute.
//   - rows sorted (CSR order, as MovieLens files are): chunks own whole rows, so
//     grad_W[i] is summed in registers and written once; grad_H^T goes to a
//     per-chunk partial;
//   - rows unsorted, partials affordable: chunks own ranges of entries and keep
//     partials of both gradients (no sort at all);
//   - otherwise: a stable counting sort by row, then the row-owned pass, and
//     grad_H from a second, column-ordered pass over the kept g_e (each output
//     row summed by one thread in entry order; no partials).
// Scratch memory comes from the torch allocator and is bounded: at most
// kMaxPartialChunks - 1 partials, and those only within partial_budget (never
// more elements than 4 per entry). The counting sorts' own chunking may follow
// the thread count: a stable sort has one result whatever its chunks.
// H is read as H^T, an (n, k) row-major array: when H is the .t() view of a
// contiguous (n, k) tensor (the fast layout) no copy is made, and grad_H is
// written in that layout too.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../element_math.h"
#include "../sparse_loss_grad_checks.h"
#include "bucket_order.h"
#include "index_range.h"
#include "vec.h"

namespace mfext {
namespace {

constexpr const char* kOp = "mfext::sparse_loss_grad";

template <typename scalar_t>
struct SparseProblem {
  const scalar_t* vals;    // (nnz,)
  const scalar_t* weight;  // (nnz,) or null
  const scalar_t* W;       // (m, k) row-major
  const scalar_t* Ht;      // (n, k) row-major
  int64_t m, n, k, nnz;
  scalar_t* grad_W;        // (m, k) row-major
  scalar_t* grad_Ht;       // (n, k) row-major
};

// Entry e predicted as `pred`: adds its loss to *loss and returns
// g_e = d loss / d pred; flags a negative or non-finite weight in *bad.
template <typename scalar_t>
inline scalar_t entry_loss_grad(const SparseProblem<scalar_t>& a, int64_t e, scalar_t pred,
                                double* loss, bool* bad) {
  const scalar_t r = pred - a.vals[e];
  if (a.weight == nullptr) {
    *loss += math::square<double>(r);
    return math::unit_residual_grad(r);
  }
  *bad |= !math::valid_weight(a.weight[e]);
  *loss += math::weighted_square<double>(r, a.weight[e]);
  return math::residual_grad(r, a.weight[e]);
}

// ---- Chunking: a function of the data only -------------------------------------------
// A chunk holds at least kGrain entries. Chunks that keep gradient partials are at
// most kMaxPartialChunks, and a power of two (so that 2 or 4 threads share them out
// evenly); chunks that own whole rows and keep only a loss partial are at most
// kMaxRowChunks (they balance the load of the sorted path).
constexpr int64_t kGrain = 4096;
constexpr int64_t kMaxPartialChunks = 8;
constexpr int64_t kMaxRowChunks = 256;

// ceil(nnz / kGrain), within [1, most].
int64_t chunks_for(int64_t nnz, int64_t most) {
  return std::clamp<int64_t>((nnz + kGrain - 1) / kGrain, 1, std::max<int64_t>(1, most));
}

// Elements of gradient partials that nnz entries of rank k pay for. A partial costs
// a zeroing pass and a pass of the final sum; an entry about 3k random-access
// multiply-adds. At nnz k / 32 the partials cost a few percent of the pass (measured
// on ML-1M shapes), and never more memory than the entries themselves (4 nnz).
int64_t partial_budget(int64_t nnz, int64_t k) {
  const int64_t affordable = std::min(nnz * std::max<int64_t>(k, 1) / 32, nnz * 4);
  return std::max<int64_t>(int64_t(1) << 16, affordable);
}

// How many partial-keeping chunks to use: as many as the entries merit (up to
// kMaxPartialChunks and `most`) while the partials (chunk 0 writes the outputs,
// chunk c > 0 one partial of partial_elems elements) fit the budget, rounded down to
// a power of two; 0 when the entries merit several chunks but not even one partial
// fits (a row-owned path without partials then does better).
int64_t partial_chunks(int64_t nnz, int64_t most, int64_t partial_elems, int64_t k) {
  const int64_t want = chunks_for(nnz, std::min(kMaxPartialChunks, most));
  const int64_t fit = 1 + partial_budget(nnz, k) / std::max<int64_t>(1, partial_elems);
  int64_t c = 1;
  while (2 * c <= std::min(want, fit)) c *= 2;
  return c >= 2 || want == 1 ? c : 0;
}

// Entries of row i are order[offsets[i] : offsets[i + 1]] (identity order when
// the rows are sorted). Splits rows into n_chunks chunks of about equal entry counts.
std::vector<int64_t> balanced_row_chunks(const std::vector<int64_t>& offsets, int64_t m,
                                         int64_t n_chunks) {
  std::vector<int64_t> bounds(n_chunks + 1, m);
  bounds[0] = 0;
  const int64_t nnz = offsets[m];
  for (int64_t c = 1; c < n_chunks; ++c) {
    const int64_t target = nnz * c / n_chunks;
    bounds[c] = std::lower_bound(offsets.begin(), offsets.begin() + m + 1, target) -
                offsets.begin();
    bounds[c] = std::clamp(bounds[c], bounds[c - 1], m);
  }
  return bounds;
}

// Sum of the chunk losses in chunk order; ORs the chunks' bad-weight flags into *bad.
double sum_chunk_losses(const std::vector<double>& chunk_loss, const std::vector<char>& chunk_bad,
                        bool* bad) {
  double loss = 0.0;
  for (size_t c = 0; c < chunk_loss.size(); ++c) {
    loss += chunk_loss[c];
    *bad |= chunk_bad[c] != 0;
  }
  return loss;
}

// Rows split into n_chunks chunks; grad_W rows are written once, from registers.
// grad_H^T: chunk 0 into a.grad_Ht, chunk c > 0 into partials + (c - 1) n k, each
// zeroed by its chunk (partials: (n_chunks - 1, n, k)); or, with entry_grad, not at
// all: g_e is kept for a column pass.
template <typename scalar_t, typename index_t, int K>
double row_pass(const SparseProblem<scalar_t>& a, const index_t* cols,
                const cpu::BucketOrder& by_row, bool identity_order,
                scalar_t* entry_grad,               // (nnz,) or null: keep g_e for a column pass
                scalar_t* partials,                 // (n_chunks - 1, n, k) or null
                int64_t n_chunks, bool* bad_weight) {
  const int64_t k = K > 0 ? K : a.k;
  const std::vector<int64_t> bounds = balanced_row_chunks(by_row.offsets, a.m, n_chunks);
  std::vector<double> chunk_loss(n_chunks, 0.0);
  std::vector<char> chunk_bad(n_chunks, 0);
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<scalar_t> acc(k);
    for (int64_t c = c0; c < c1; ++c) {
      scalar_t* gHt = nullptr;  // this chunk's grad_H^T accumulator, or null for a column pass
      if (entry_grad == nullptr) {
        gHt = c == 0 ? a.grad_Ht : partials + (c - 1) * a.n * k;
        std::fill(gHt, gHt + a.n * k, scalar_t(0));
      }
      double loss = 0.0;
      bool bad = false;
      for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
        const scalar_t* w_i = a.W + i * k;
        std::fill(acc.begin(), acc.end(), scalar_t(0));
        for (int64_t s = by_row.offsets[i]; s < by_row.offsets[i + 1]; ++s) {
          const int64_t e = identity_order ? s : by_row.order[s];
          const int64_t col = static_cast<int64_t>(cols[e]);
          const scalar_t* h_c = a.Ht + col * k;
          const scalar_t g = entry_loss_grad(a, e, cpu::dot_loop<K>(w_i, h_c, k), &loss, &bad);
          cpu::axpy<K>(acc.data(), g, h_c, k);
          if (gHt != nullptr) {
            cpu::axpy<K>(gHt + col * k, g, w_i, k);
          } else {
            entry_grad[e] = g;
          }
        }
        std::copy(acc.begin(), acc.end(), a.grad_W + i * k);
      }
      chunk_loss[c] = loss;
      chunk_bad[c] = bad;
    }
  });
  return sum_chunk_losses(chunk_loss, chunk_bad, bad_weight);
}

// Entries in their given order, split into n_chunks equal ranges. Chunk 0
// accumulates into grad_W/grad_H^T, chunk c > 0 into its own partials; each
// chunk zeroes its accumulators first.
template <typename scalar_t, typename index_t, int K>
double entry_pass(const SparseProblem<scalar_t>& a, const index_t* rows, const index_t* cols,
                  scalar_t* partials,  // (n_chunks - 1, m + n, k): grad_W rows, then grad_H^T rows
                  int64_t n_chunks, bool* bad_weight) {
  const int64_t k = K > 0 ? K : a.k;
  std::vector<double> chunk_loss(n_chunks, 0.0);
  std::vector<char> chunk_bad(n_chunks, 0);
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      scalar_t* gW = c == 0 ? a.grad_W : partials + (c - 1) * (a.m + a.n) * k;
      scalar_t* gHt = c == 0 ? a.grad_Ht : gW + a.m * k;
      std::fill(gW, gW + a.m * k, scalar_t(0));
      std::fill(gHt, gHt + a.n * k, scalar_t(0));
      double loss = 0.0;
      bool bad = false;
      for (int64_t e = a.nnz * c / n_chunks, end = a.nnz * (c + 1) / n_chunks; e < end; ++e) {
        const int64_t i = static_cast<int64_t>(rows[e]), col = static_cast<int64_t>(cols[e]);
        const scalar_t* w_i = a.W + i * k;
        const scalar_t* h_c = a.Ht + col * k;
        const scalar_t g = entry_loss_grad(a, e, cpu::dot_loop<K>(w_i, h_c, k), &loss, &bad);
        cpu::axpy<K>(gW + i * k, g, h_c, k);
        cpu::axpy<K>(gHt + col * k, g, w_i, k);
      }
      chunk_loss[c] = loss;
      chunk_bad[c] = bad;
    }
  });
  return sum_chunk_losses(chunk_loss, chunk_bad, bad_weight);
}

// out[p] += sum over chunks of parts[c][p], chunks in order; parallel over p (each
// element's sum has the same order whichever thread computes it).
template <typename scalar_t>
void add_partials(scalar_t* out, const scalar_t* parts, int64_t n_parts, int64_t part_stride,
                  int64_t len) {
  if (n_parts == 0) return;
  at::parallel_for(0, len, 4096, [&](int64_t p0, int64_t p1) {
    for (int64_t c = 0; c < n_parts; ++c) {
      const scalar_t* part = parts + c * part_stride;
#pragma omp simd
      for (int64_t p = p0; p < p1; ++p) out[p] += part[p];
    }
  });
}

// grad_H^T[j] = sum over entries e of column j of g_e * W[rows[e]], in entry order.
template <typename scalar_t, typename index_t, int K>
void column_pass(const SparseProblem<scalar_t>& a, const index_t* rows,
                 const scalar_t* entry_grad,  // (nnz,)
                 const cpu::BucketOrder& by_col) {
  const int64_t k = K > 0 ? K : a.k;
  at::parallel_for(0, a.n, 64, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      scalar_t* out = a.grad_Ht + j * k;
      std::fill(out, out + k, scalar_t(0));
      for (int64_t s = by_col.offsets[j]; s < by_col.offsets[j + 1]; ++s) {
        const int64_t e = by_col.order[s];
        cpu::axpy<K>(out, entry_grad[e], a.W + static_cast<int64_t>(rows[e]) * k, k);
      }
    }
  });
}

template <typename scalar_t, typename index_t, int K>
double sparse_loss_grad_kernel(const index_t* rows, const index_t* cols,  // (nnz,)
                               const SparseProblem<scalar_t>& a, const at::TensorOptions& opts) {
  cpu::check_index_range(kOp, "rows", rows, a.nnz, a.m, "W", "rows");
  cpu::check_index_range(kOp, "cols", cols, a.nnz, a.n, "H", "columns");
  int64_t bad = -1;  // stable_bucket_order's report; the indices are checked above
  bool rows_sorted = true;
  cpu::BucketOrder by_row = cpu::bucket_offsets_if_sorted(rows, a.nnz, a.m, &rows_sorted);

  const int64_t k = a.k;
  bool bad_weight = false;
  double loss;
  const int64_t row_chunks = rows_sorted ? partial_chunks(a.nnz, a.m, a.n * k, k) : 0;
  const int64_t entry_chunks =
      rows_sorted ? 0 : partial_chunks(a.nnz, a.nnz, (a.m + a.n) * k, k);
  if (row_chunks > 0) {
    at::Tensor partials = at::empty({(row_chunks - 1) * a.n * k}, opts);
    loss = row_pass<scalar_t, index_t, K>(a, cols, by_row, true, nullptr,
                                          partials.data_ptr<scalar_t>(), row_chunks, &bad_weight);
    add_partials(a.grad_Ht, partials.data_ptr<scalar_t>(), row_chunks - 1, a.n * k, a.n * k);
  } else if (entry_chunks > 0) {
    const int64_t stride = (a.m + a.n) * k;
    at::Tensor partials = at::empty({(entry_chunks - 1) * stride}, opts);
    loss = entry_pass<scalar_t, index_t, K>(a, rows, cols, partials.data_ptr<scalar_t>(),
                                            entry_chunks, &bad_weight);
    scalar_t* parts = partials.data_ptr<scalar_t>();
    add_partials(a.grad_W, parts, entry_chunks - 1, stride, a.m * k);
    add_partials(a.grad_Ht, parts + a.m * k, entry_chunks - 1, stride, a.n * k);
  } else {
    if (!rows_sorted) by_row = cpu::stable_bucket_order(rows, a.nnz, a.m, &bad);
    at::Tensor entry_grad = at::empty({a.nnz}, opts);  // g_e, for the column pass
    loss = row_pass<scalar_t, index_t, K>(a, cols, by_row, rows_sorted,
                                          entry_grad.data_ptr<scalar_t>(), nullptr,
                                          chunks_for(a.nnz, std::min(kMaxRowChunks, a.m)),
                                          &bad_weight);
    const cpu::BucketOrder by_col = cpu::stable_bucket_order(cols, a.nnz, a.n, &bad);
    column_pass<scalar_t, index_t, K>(a, rows, entry_grad.data_ptr<scalar_t>(), by_col);
  }
  TORCH_CHECK_VALUE(!bad_weight, kOp,
                    ": argument 'weight' must be finite and non-negative; found a negative, "
                    "NaN or Inf weight");
  return loss;
}

template <typename scalar_t, typename index_t>
double dispatch_rank(const index_t* rows, const index_t* cols, const SparseProblem<scalar_t>& a,
                     const at::TensorOptions& opts) {
  switch (a.k) {
    case 8: return sparse_loss_grad_kernel<scalar_t, index_t, 8>(rows, cols, a, opts);
    case 16: return sparse_loss_grad_kernel<scalar_t, index_t, 16>(rows, cols, a, opts);
    case 32: return sparse_loss_grad_kernel<scalar_t, index_t, 32>(rows, cols, a, opts);
    case 64: return sparse_loss_grad_kernel<scalar_t, index_t, 64>(rows, cols, a, opts);
    case 128: return sparse_loss_grad_kernel<scalar_t, index_t, 128>(rows, cols, a, opts);
    default: return sparse_loss_grad_kernel<scalar_t, index_t, 0>(rows, cols, a, opts);
  }
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
    const SparseProblem<scalar_t> args{
        vals_c.const_data_ptr<scalar_t>(),
        weight_c ? weight_c->const_data_ptr<scalar_t>() : nullptr,
        W_c.const_data_ptr<scalar_t>(),
        Ht_c.const_data_ptr<scalar_t>(),
        s.m, s.n, s.k, s.nnz,
        gW.data_ptr<scalar_t>(),
        gHt.data_ptr<scalar_t>()};
    AT_DISPATCH_INDEX_TYPES(rows.scalar_type(), "sparse_loss_grad_cpu_index", [&] {
      loss = dispatch_rank<scalar_t, index_t>(rows_c.const_data_ptr<index_t>(),
                                              cols_c.const_data_ptr<index_t>(), args,
                                              W.options());
    });
  });
  if (!gW.is_same(grad_W)) grad_W.copy_(gW);
  if (!grad_H_is_transposed) grad_H.copy_(gHt.t());
  // Through a float64 tensor: a loss beyond float32's range becomes Inf, not an error.
  return {at::scalar_tensor(loss, vals.options().dtype(at::kDouble)).to(vals.scalar_type()),
          grad_W, grad_H};
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CPU, m) {
  m.impl("sparse_loss_grad", &sparse_loss_grad_cpu);
}

}  // namespace mfext
