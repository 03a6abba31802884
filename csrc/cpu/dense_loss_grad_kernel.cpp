// The CPU kernel of mfext::dense_loss_grad (and its TORCH_LIBRARY_IMPL): fused
// dense loss and gradients.
//
// A is cut into tiles of (tile_rows x tile_cols). The row blocks are split into
// chunks; for each tile of its row block a chunk computes
//   R      = W_blk @ H[:, cols] - A_tile     (BLAS; A read once, into a tile buffer)
//   loss  += sum(weight * R^2)                (hand loop, float64 accumulation)
//   R      = 2 * weight * R                   (d loss / d (W H), in place)
//   grad_W[blk]     += R @ H[:, cols]^T       (BLAS)
//   grad_H_chunk[:, cols] += W_blk^T @ R      (BLAS, per-chunk partial)
// Every product has an inner dimension of at least min(k, tile) so BLAS runs
// near its peak, and the tile stays in cache between the three products.
// The number of chunks depends on the shapes only (dense_chunks), never on the
// thread count; partials and losses are summed in chunk order, and every BLAS call
// runs single-threaded (SequentialBlas: MKL's own threading changes the order of
// its sums with the thread count). So the results are bitwise the same for
// every thread count; the threads only decide which chunks they compute.
// Extra memory: (chunks - 1) * k * n elements of partials (at most an eighth of A,
// or 2^20 elements) and one tile_rows * tile_cols tile per thread, never m * n.
// The loss comes from the residual itself: the expansion
// |A|^2 - 2<W, A H^T> + <W^T W, H H^T> would cancel catastrophically near a fit.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../dense_loss_grad_checks.h"
#include "../element_math.h"

namespace mfext {
namespace {

constexpr const char* kOp = "mfext::dense_loss_grad";

// Tile shape: about 256 KiB of residual (it must stay in L2 between the three
// products), as square as the matrix allows so that every product is efficient.
constexpr int64_t kTileCols = 512;
int64_t choose_tile_rows(int64_t n, int64_t elem_size) {
  const int64_t cols = std::min(n, kTileCols);
  const int64_t rows = (256 * 1024) / std::max<int64_t>(1, cols * elem_size);
  return std::clamp<int64_t>(rows, 16, 512);
}

// MKL's thread count for the calling thread only: the C entry point behind mkl.h's
// mkl_set_num_threads_local (the lowercase symbol is the Fortran one, which takes a
// pointer). torch's x86 builds link MKL and export it; a weak reference is null
// where they do not. torch turns MKL's dynamic threading off, so MKL may run (or
// plan its sums for) threads of its own even inside a parallel region, and its
// results then depend on the thread count.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

// MKL sets up its per-thread state when a thread first makes a BLAS call large
// enough to be worth threads, and that resets the thread's local thread count: a
// local setting made before it is lost for the rest of the parallel region, and
// the calls then run (or split their sums) as if on torch's thread count.
// So, once per thread, such a call comes first (float32 256^3: 34 MFLOP, well over
// the threshold, which lies between 128^3 and 256^3 in MKL 2024).
void init_blas_thread() {
  thread_local bool ready = false;
  if (ready || MKL_Set_Num_Threads_Local == nullptr) return;
  ready = true;
  const at::Tensor x = at::ones({256, 256}, at::kFloat);
  at::mm(x, x);
}

// While alive, BLAS calls of this thread run on this thread alone.
class SequentialBlas {
 public:
  SequentialBlas()
      : previous_((init_blas_thread(), MKL_Set_Num_Threads_Local)
                      ? MKL_Set_Num_Threads_Local(1)
                      : -1) {}
  ~SequentialBlas() {
    if (previous_ >= 0) MKL_Set_Num_Threads_Local(previous_);  // 0: MKL's global setting again
  }
  SequentialBlas(const SequentialBlas&) = delete;
  SequentialBlas& operator=(const SequentialBlas&) = delete;

 private:
  int previous_;
};

// At most this many chunks: each costs a k x n partial and its share of the final sum.
constexpr int64_t kMaxChunks = 8;

// The number of chunks of n_row_blocks row blocks: a function of the shapes only.
// Their partials ((chunks - 1) k n elements) stay within max(m n / 8, 2^20) elements.
// A power of two, so that 2 or 4 threads get equal shares.
int64_t dense_chunks(int64_t m, int64_t n, int64_t k, int64_t n_row_blocks) {
  const int64_t cap = std::max<int64_t>(m * n / 8, int64_t(1) << 20);
  const int64_t fit = 1 + cap / std::max<int64_t>(1, k * n);
  const int64_t most = std::min({kMaxChunks, n_row_blocks, fit});
  int64_t chunks = 1;
  while (2 * chunks <= most) chunks *= 2;
  return chunks;
}

// Tile buffers start on 64-byte boundaries, as the outputs and partials do: MKL may
// pick its code path (and with it the order of its sums) by the alignment of its
// operands, which must not depend on which thread's buffer a chunk uses.
int64_t aligned_elems(int64_t elems, int64_t elem_size) {
  const int64_t per_line = std::max<int64_t>(1, 64 / elem_size);
  return (elems + per_line - 1) / per_line * per_line;
}

// Turns the residual tile R (rows, n), contiguous, into 2 * weight * R in place
// and returns sum(weight * R^2). weight: (rows, n) with strides (ws0, ws1), or null.
// (Here n is the tile's width.)
// Sets *bad_weight when a weight is negative or not finite.
template <typename scalar_t>
double residual_to_grad(scalar_t* R, int64_t rows, int64_t n, const scalar_t* weight,
                        int64_t ws0, int64_t ws1, bool* bad_weight) {
  double loss = 0.0;
  for (int64_t i = 0; i < rows; ++i) {
    scalar_t* r = R + i * n;
    double row_loss = 0.0;
    if (weight == nullptr) {
#pragma omp simd reduction(+ : row_loss)
      for (int64_t j = 0; j < n; ++j) {
        row_loss += math::square<double>(r[j]);
        r[j] = math::unit_residual_grad(r[j]);
      }
    } else {
      const scalar_t* w = weight + i * ws0;
      bool bad = false;
      if (ws1 == 1) {
#pragma omp simd reduction(+ : row_loss) reduction(| : bad)
        for (int64_t j = 0; j < n; ++j) {
          bad |= !math::valid_weight(w[j]);
          row_loss += math::weighted_square<double>(r[j], w[j]);
          r[j] = math::residual_grad(r[j], w[j]);
        }
      } else {
        for (int64_t j = 0; j < n; ++j) {
          const scalar_t wj = w[j * ws1];
          bad |= !math::valid_weight(wj);
          row_loss += math::weighted_square<double>(r[j], wj);
          r[j] = math::residual_grad(r[j], wj);
        }
      }
      if (bad) *bad_weight = true;
    }
    loss += row_loss;
  }
  return loss;
}

template <typename scalar_t>
void dense_loss_grad_kernel(const at::Tensor& A,                      // (m, n)
                            const at::Tensor& W,                      // (m, k)
                            const at::Tensor& H,                      // (k, n)
                            const std::optional<at::Tensor>& weight,  // (m, n) or None
                            double* loss_out,
                            at::Tensor& grad_W,                       // (m, k), contiguous
                            at::Tensor& grad_H) {                     // (k, n), contiguous
  const int64_t m = A.size(0), n = A.size(1), k = W.size(1);
  const int64_t tile_rows = choose_tile_rows(n, sizeof(scalar_t));
  const int64_t tile_cols = std::min(n, kTileCols);
  const int64_t n_row_blocks = (m + tile_rows - 1) / tile_rows;
  const int64_t n_chunks = dense_chunks(m, n, k, n_row_blocks);
  const auto opts = A.options().memory_format(at::MemoryFormat::Contiguous);

  // Chunk 0 accumulates straight into grad_H; the others into partials.
  at::Tensor partials = n_chunks > 1 ? at::empty({n_chunks - 1, k, n}, opts) : at::Tensor();
  // One residual tile per thread that can run a chunk (scratch only: which buffer a
  // chunk uses cannot change its results, see aligned_elems).
  const int64_t n_tiles = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_chunks));
  const int64_t tile_stride = aligned_elems(tile_rows * tile_cols, sizeof(scalar_t));
  at::Tensor tiles = at::empty({n_tiles * tile_stride}, opts);
  std::vector<double> chunk_loss(n_chunks, 0.0);
  std::vector<char> chunk_bad_weight(n_chunks, 0);

  const scalar_t* weight_ptr = weight ? weight->const_data_ptr<scalar_t>() : nullptr;
  const int64_t ws0 = weight ? weight->stride(0) : 0;
  const int64_t ws1 = weight ? weight->stride(1) : 0;

  at::parallel_for(0, n_chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    const SequentialBlas sequential_blas;
    const int64_t tid = at::get_thread_num();
    TORCH_INTERNAL_ASSERT(tid >= 0 && tid < n_tiles, kOp, ": thread ", tid, " has no tile buffer");
    at::Tensor tile = tiles.narrow(0, tid * tile_stride, tile_stride);
    for (int64_t c = c_begin; c < c_end; ++c) {
      // Row blocks [b0, b1) belong to chunk c.
      const int64_t b0 = n_row_blocks * c / n_chunks, b1 = n_row_blocks * (c + 1) / n_chunks;
      at::Tensor gH = c == 0 ? grad_H : partials[c - 1];  // written by the chunk's first row block
      bool bad = false;
      double loss = 0.0;
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = b * tile_rows, rows = std::min(tile_rows, m - r0);
        const at::Tensor W_blk = W.narrow(0, r0, rows);
        at::Tensor gW_blk = grad_W.narrow(0, r0, rows);
        for (int64_t c0 = 0; c0 < n; c0 += tile_cols) {
          const int64_t cols = std::min(tile_cols, n - c0);
          at::Tensor R = tile.narrow(0, 0, rows * cols).view({rows, cols});
          const at::Tensor H_cols = H.narrow(1, c0, cols);
          at::addmm_out(R, A.narrow(0, r0, rows).narrow(1, c0, cols), W_blk, H_cols,
                        /*beta=*/-1, /*alpha=*/1);
          loss += residual_to_grad<scalar_t>(
              R.data_ptr<scalar_t>(), rows, cols,
              weight_ptr ? weight_ptr + r0 * ws0 + c0 * ws1 : nullptr, ws0, ws1, &bad);
          if (c0 == 0) {
            at::mm_out(gW_blk, R, H_cols.t());
          } else {
            gW_blk.addmm_(R, H_cols.t());
          }
          at::Tensor gH_cols = gH.narrow(1, c0, cols);
          if (b == b0) {
            at::mm_out(gH_cols, W_blk.t(), R);
          } else {
            gH_cols.addmm_(W_blk.t(), R);
          }
        }
      }
      chunk_loss[c] = loss;
      chunk_bad_weight[c] = bad;
    }
  });

  for (int64_t c = 0; c < n_chunks; ++c) {
    TORCH_CHECK_VALUE(!chunk_bad_weight[c], kOp,
                      ": argument 'weight' must be finite and non-negative (0 marks a missing "
                      "entry); found a negative, NaN or Inf weight");
  }
  // Fixed-order reductions over a thread-independent chunking.
  double loss = 0.0;
  for (double l : chunk_loss) loss += l;
  *loss_out = loss;
  // grad_H += partials in chunk order, one pass (each element's sum in the same order
  // whichever thread adds it).
  if (n_chunks > 1) {
    scalar_t* out = grad_H.data_ptr<scalar_t>();
    const scalar_t* parts = partials.const_data_ptr<scalar_t>();
    at::parallel_for(0, k * n, 4096, [&](int64_t p0, int64_t p1) {
      for (int64_t c = 0; c < n_chunks - 1; ++c) {
        const scalar_t* part = parts + c * k * n;
#pragma omp simd
        for (int64_t p = p0; p < p1; ++p) out[p] += part[p];
      }
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dense_loss_grad_cpu(
    const at::Tensor& A, const at::Tensor& W, const at::Tensor& H,
    const std::optional<at::Tensor>& weight) {
  check_dense_inputs(kOp, A, W, H, weight);
  at::NoGradGuard no_grad;  // the tile products must not record autograd history
  // Outputs take the layout of their factor (preserve_format), as the fake kernel does.
  at::Tensor grad_W = at::empty_like(W);
  at::Tensor grad_H = at::empty_like(H);
  at::Tensor gW = grad_W.is_contiguous() ? grad_W : at::empty(W.sizes(), W.options());
  at::Tensor gH = grad_H.is_contiguous() ? grad_H : at::empty(H.sizes(), H.options());
  double loss = 0.0;
  if (A.numel() == 0) {
    gW.zero_();
    gH.zero_();
  } else {
    AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "dense_loss_grad_cpu", [&] {
      dense_loss_grad_kernel<scalar_t>(A, W, H, weight, &loss, gW, gH);
    });
  }
  if (!gW.is_same(grad_W)) grad_W.copy_(gW);
  if (!gH.is_same(grad_H)) grad_H.copy_(gH);
  // Through a float64 tensor: a loss beyond float32's range becomes Inf, not an error.
  return {at::scalar_tensor(loss, A.options().dtype(at::kDouble)).to(A.scalar_type()), grad_W,
          grad_H};
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CPU, m) {
  m.impl("dense_loss_grad", &dense_loss_grad_cpu);
}

}  // namespace mfext
