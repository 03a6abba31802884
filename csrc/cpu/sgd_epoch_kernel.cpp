// The CPU kernel of mfext::sgd_epoch_ (and its TORCH_LIBRARY_IMPL).
// One in-place epoch of stochastic gradient descent over observed ratings, for
// biased matrix factorization: pred = mu + b_u + b_i + w_u . h_i (use_biases)
// or w_u . h_i. Per entry, with e = r - pred (element_math.h):
//   b_u += lr (e - bias_reg b_u),  b_i += lr (e - bias_reg b_i)
//   w_u += lr (e h_i - reg w_u),   h_i += lr (e w_u(old) - reg h_i)
//
// Two schedules:
// * Blocked (LIBMF / DSGD style), when block_ptr and schedule are given. The
//   entries of block b are order[block_ptr[b] : block_ptr[b + 1]]. Each row of
//   `schedule` is a stratum: its blocks run in parallel, one thread per block,
//   and a barrier separates strata. When the blocks of a stratum share no row
//   and no column (the caller's grid guarantees it), no two threads touch the
//   same factor, so the result is bitwise identical for every thread count and
//   equals running the blocks one after another in schedule order. Threads take
//   slots in schedule order and wait (yielding) for the previous stratum. A block of
//   about 1/P of the rows and 1/P of the columns also keeps its factors in L2.
// * Hogwild, when both are None: the order is cut into one contiguous chunk
//   per thread and threads update shared factors without locks. With one
//   thread this is plain sequential SGD in `order`; with more threads the
//   result depends on timing (benign races on floats, as in Hogwild!).
//
// Returns the sum over processed entries of e^2 measured before each update
// (a float64 0-dim tensor), a free estimate of the training error. Partial sums
// are kept per schedule slot and added in slot order (blocked mode is
// deterministic, loss included).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <atomic>
#include <optional>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "../element_math.h"
#include "../sgd_epoch_checks.h"
#include "index_range.h"
#include "vec.h"

namespace mfext {
namespace {

constexpr const char* kOp = "mfext::sgd_epoch_";
constexpr int64_t kPrefetchDistance = 8;  // entries ahead: hides L2/L3 latency of random rows

template <typename scalar_t, typename index_t>
struct SgdProblem {
  scalar_t* W;               // (m, k) row-major, updated in place
  scalar_t* Ht;              // (n, k) row-major (H transposed), updated in place
  scalar_t* user_bias;       // (m,), updated in place (unused without biases)
  scalar_t* item_bias;       // (n,), updated in place (unused without biases)
  const index_t* rows;       // (nnz,)
  const index_t* cols;       // (nnz,)
  const scalar_t* vals;      // (nnz,)
  const int64_t* order;      // (len,) entry ids, or null for storage order
  int64_t k;
  scalar_t lr, reg, bias_reg, mu;
  bool biases, nonnegative;
};

template <typename scalar_t>
inline void prefetch_row(const scalar_t* row, int64_t k) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t b = 0; b < k * int64_t(sizeof(scalar_t)); b += 64) __builtin_prefetch(p + b, 1, 3);
}

// Runs positions [begin, end) of the order; K > 0 fixes the rank at compile time
// (fully unrolled, vectorized loops), K == 0 reads it from p.k.
template <int K, typename scalar_t, typename index_t>
double sgd_epoch_kernel(const SgdProblem<scalar_t, index_t>& p, int64_t begin, int64_t end) {
  const int64_t k = K > 0 ? K : p.k;
  const scalar_t lr = p.lr, bias_reg = p.bias_reg;
  const scalar_t decay = scalar_t(1) - p.lr * p.reg;
  double sse = 0.0;
  for (int64_t s = begin; s < end; ++s) {
    if (s + kPrefetchDistance < end) {
      const int64_t f = p.order ? p.order[s + kPrefetchDistance] : s + kPrefetchDistance;
      prefetch_row(p.W + static_cast<int64_t>(p.rows[f]) * k, k);
      prefetch_row(p.Ht + static_cast<int64_t>(p.cols[f]) * k, k);
    }
    const int64_t e = p.order ? p.order[s] : s;
    const int64_t u = static_cast<int64_t>(p.rows[e]);
    const int64_t i = static_cast<int64_t>(p.cols[e]);
    scalar_t* __restrict w = p.W + u * k;
    scalar_t* __restrict h = p.Ht + i * k;
    scalar_t pred = cpu::dot<K>(w, h, k);
    if (p.biases) pred += p.mu + p.user_bias[u] + p.item_bias[i];
    const scalar_t err = p.vals[e] - pred;
    sse += math::square<double>(err);
    if (p.biases) {
      p.user_bias[u] = math::sgd_bias_step(p.user_bias[u], err, lr, bias_reg);
      p.item_bias[i] = math::sgd_bias_step(p.item_bias[i], err, lr, bias_reg);
    }
    const scalar_t g = lr * err;
    if (p.nonnegative) {
#pragma omp simd
      for (int64_t q = 0; q < k; ++q) {
        math::sgd_pair_step(w[q], h[q], g, decay);
        w[q] = math::clamp_nonnegative(w[q]);
        h[q] = math::clamp_nonnegative(h[q]);
      }
    } else {
#pragma omp simd
      for (int64_t q = 0; q < k; ++q) math::sgd_pair_step(w[q], h[q], g, decay);
    }
  }
  return sse;
}

template <typename scalar_t, typename index_t>
using RangeFn = double (*)(const SgdProblem<scalar_t, index_t>&, int64_t, int64_t);

template <typename scalar_t, typename index_t>
RangeFn<scalar_t, index_t> pick_kernel(int64_t k) {
  switch (k) {
    case 8: return &sgd_epoch_kernel<8, scalar_t, index_t>;
    case 16: return &sgd_epoch_kernel<16, scalar_t, index_t>;
    case 32: return &sgd_epoch_kernel<32, scalar_t, index_t>;
    case 64: return &sgd_epoch_kernel<64, scalar_t, index_t>;
    case 128: return &sgd_epoch_kernel<128, scalar_t, index_t>;
    default: return &sgd_epoch_kernel<0, scalar_t, index_t>;
  }
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Waits until counter >= target: a short spin, then yields the CPU.
void wait_until(const std::atomic<int64_t>& counter, int64_t target) {
  int spins = 0;
  while (counter.load(std::memory_order_acquire) < target) {
    if (++spins < 256) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

int n_threads_for(int64_t work) {
  // Small epochs are not worth a parallel region.
  return work < 4096 ? 1 : std::max(1, at::get_num_threads());
}

template <typename scalar_t, typename index_t>
double run_epoch(const SgdProblem<scalar_t, index_t>& p, int64_t len,
                 const int64_t* block_ptr,           // (n_blocks + 1,) or null
                 const int64_t* schedule,            // (n_strata, width) or null
                 int64_t n_strata, int64_t width, double* partial) {
  const RangeFn<scalar_t, index_t> run = pick_kernel<scalar_t, index_t>(p.k);
  if (block_ptr == nullptr) {  // Hogwild: one contiguous chunk per thread
    const int n_threads = n_threads_for(len);
    for (int t = 0; t < n_threads; ++t) partial[t] = 0.0;
#pragma omp parallel num_threads(n_threads)
    {
#ifdef _OPENMP
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
      const int64_t t = 0, nt = 1;
#endif
      partial[t] = run(p, len * t / nt, len * (t + 1) / nt);
    }
    double sse = 0.0;
    for (int t = 0; t < n_threads; ++t) sse += partial[t];
    return sse;
  }
  // Slots are handed out in schedule order; a slot of stratum s starts once all
  // of stratum s - 1 is done. The wait yields the CPU instead of spinning like
  // an OpenMP barrier, so a thread descheduled on a busy machine costs the
  // others little. Every slot of the earliest unfinished stratum is held by a
  // thread that waits on nothing, so the scheme cannot deadlock.
  const int64_t n_slots = n_strata * width;
  std::vector<std::atomic<int64_t>> done(std::max<int64_t>(1, n_strata));
  for (auto& d : done) d.store(0, std::memory_order_relaxed);
  std::atomic<int64_t> next_slot{0};
  const int n_threads = static_cast<int>(std::min<int64_t>(n_threads_for(len), std::max<int64_t>(1, width)));
#pragma omp parallel num_threads(n_threads)
  {
    for (;;) {
      const int64_t slot = next_slot.fetch_add(1, std::memory_order_relaxed);
      if (slot >= n_slots) break;
      const int64_t st = slot / width;
      if (st > 0) wait_until(done[st - 1], width);
      const int64_t b = schedule[slot];
      partial[slot] = b < 0 ? 0.0 : run(p, block_ptr[b], block_ptr[b + 1]);
      done[st].fetch_add(1, std::memory_order_acq_rel);
    }
  }
  double sse = 0.0;
  for (int64_t s = 0; s < n_strata * width; ++s) sse += partial[s];
  return sse;
}

at::Tensor sgd_epoch_cpu(const at::Tensor& W,                         // (m, k), in place
                         const at::Tensor& H_t,                       // (n, k), in place
                         const at::Tensor& user_bias,                 // (m,), in place
                         const at::Tensor& item_bias,                 // (n,), in place
                         const at::Tensor& rows,                      // (nnz,)
                         const at::Tensor& cols,                      // (nnz,)
                         const at::Tensor& vals,                      // (nnz,)
                         const std::optional<at::Tensor>& order,      // (len,) or None
                         const std::optional<at::Tensor>& block_ptr,  // (n_blocks + 1,) or None
                         const std::optional<at::Tensor>& schedule,   // (n_strata, width) or None
                         double lr, double reg, double bias_reg, double global_mean,
                         bool use_biases, bool nonnegative) {
  // ---- arguments: shapes, dtypes and storage (shared with the CUDA glue), then values
  const SgdSizes s = check_sgd_inputs(kOp, W, H_t, user_bias, item_bias, rows, cols, vals, order,
                                      block_ptr, schedule, lr, reg, bias_reg, global_mean,
                                      use_biases);
  const int64_t m = s.m, n = s.n, k = s.k, nnz = s.nnz, len = s.len;
  const int64_t n_strata = s.n_strata, width = s.width;
  const at::Tensor order_c = order.has_value() ? order->contiguous() : at::Tensor();
  at::Tensor block_ptr_c, schedule_c;
  if (block_ptr.has_value()) {
    block_ptr_c = block_ptr->contiguous();
    schedule_c = schedule->contiguous();
    const int64_t* bp = block_ptr_c.const_data_ptr<int64_t>();
    const int64_t n_blocks = s.n_blocks;
    for (int64_t b = 0; b <= n_blocks; ++b) {
      TORCH_CHECK_INDEX(bp[b] >= 0 && bp[b] <= len && (b == 0 || bp[b] >= bp[b - 1]), kOp,
                        ": block_ptr must be non-decreasing offsets within [0, ", len,
                        "], got block_ptr[", b, "] = ", bp[b]);
    }
    const int64_t bad = cpu::first_out_of_range(schedule_c.const_data_ptr<int64_t>(),
                                                schedule_c.numel(), -1, n_blocks);
    TORCH_CHECK_INDEX(bad < 0, kOp, ": schedule holds block id ",
                      bad >= 0 ? schedule_c.const_data_ptr<int64_t>()[bad] : 0,
                      " at flat position ", bad, "; block ids must lie in [0, ", n_blocks,
                      ") or be -1 (an empty slot)");
  }
  const at::Tensor rows_c = rows.contiguous(), cols_c = cols.contiguous();
  const at::Tensor vals_c = vals.contiguous();
  if (order_c.defined()) {
    const int64_t bad =
        cpu::first_out_of_range(order_c.const_data_ptr<int64_t>(), len, 0, nnz);
    TORCH_CHECK_INDEX(bad < 0, kOp, ": order[", bad, "] = ",
                      bad >= 0 ? order_c.const_data_ptr<int64_t>()[bad] : 0,
                      " is out of range for ", nnz, " entries");
  }

  // Partial sums: one per schedule slot (blocked) or per thread (Hogwild).
  const int64_t n_partial =
      block_ptr.has_value() ? n_strata * width : std::max(1, at::get_num_threads());
  at::Tensor partial = at::zeros({std::max<int64_t>(1, n_partial)}, W.options().dtype(at::kDouble));
  double sse = 0.0;
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "sgd_epoch_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(rows.scalar_type(), "sgd_epoch_cpu_index", [&] {
      const index_t* r = rows_c.const_data_ptr<index_t>();
      const index_t* c = cols_c.const_data_ptr<index_t>();
      cpu::check_index_range(kOp, "rows", r, nnz, m, "W", "rows");
      cpu::check_index_range(kOp, "cols", c, nnz, n, "H_t", "rows (items)");
      SgdProblem<scalar_t, index_t> p{
          W.data_ptr<scalar_t>(),
          H_t.data_ptr<scalar_t>(),
          use_biases ? user_bias.data_ptr<scalar_t>() : nullptr,
          use_biases ? item_bias.data_ptr<scalar_t>() : nullptr,
          r,
          c,
          vals_c.const_data_ptr<scalar_t>(),
          order_c.defined() ? order_c.const_data_ptr<int64_t>() : nullptr,
          k,
          static_cast<scalar_t>(lr),
          static_cast<scalar_t>(reg),
          static_cast<scalar_t>(bias_reg),
          static_cast<scalar_t>(global_mean),
          use_biases,
          nonnegative};
      sse = run_epoch(p, len, block_ptr_c.defined() ? block_ptr_c.const_data_ptr<int64_t>() : nullptr,
                      schedule_c.defined() ? schedule_c.const_data_ptr<int64_t>() : nullptr,
                      n_strata, width, partial.data_ptr<double>());
    });
  });
  return at::scalar_tensor(sse, W.options().dtype(at::kDouble));
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CPU, m) {
  m.impl("sgd_epoch_", &sgd_epoch_cpu);
}

}  // namespace mfext
