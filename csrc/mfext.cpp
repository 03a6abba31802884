// mfext: every op schema (TORCH_LIBRARY) and the Python module that loads the
// library and reports how it was built. Kernels register themselves per device
// with TORCH_LIBRARY_IMPL beside their code (csrc/cpu, csrc/cuda).
#include <torch/extension.h>
#include <torch/library.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef MFEXT_WITH_CUDA
#include "cuda/glue.h"
#endif

TORCH_LIBRARY(mfext, m) {
  // loss = sum(weight * (A - W @ H)^2), grad_W = d loss / d W, grad_H = d loss / d H.
  // A: (m, n), W: (m, k), H: (k, n), weight: (m, n) >= 0 or None (0 = missing entry).
  m.def(
      "dense_loss_grad(Tensor A, Tensor W, Tensor H, Tensor? weight=None) "
      "-> (Tensor loss, Tensor grad_W, Tensor grad_H)");
  // The same loss over observed entries (rows[e], cols[e], vals[e]) only.
  // rows, cols: (nnz,) int32/int64, vals: (nnz,), W: (m, k), H: (k, n), weight: (nnz,) or None.
  m.def(
      "sparse_loss_grad(Tensor rows, Tensor cols, Tensor vals, Tensor W, Tensor H, "
      "Tensor? weight=None) -> (Tensor loss, Tensor grad_W, Tensor grad_H)");
  // One SGD epoch over observed ratings, updating W, H_t and the biases in place.
  // W: (m, k), H_t: (n, k) (H transposed), user_bias: (m,), item_bias: (n,),
  // rows, cols: (nnz,) int32/int64, vals: (nnz,), order: (len,) int64 entry ids or None,
  // block_ptr: (n_blocks + 1,) int64 and schedule: (n_strata, width) int64 block ids
  // (-1 = empty slot), or both None (Hogwild). Returns the float64 sum of squared
  // errors seen before each update.
  m.def(
      "sgd_epoch_(Tensor(a!) W, Tensor(b!) H_t, Tensor(c!) user_bias, Tensor(d!) item_bias, "
      "Tensor rows, Tensor cols, Tensor vals, Tensor? order, Tensor? block_ptr, "
      "Tensor? schedule, float lr, float reg, float bias_reg, float global_mean, "
      "bool use_biases, bool nonnegative) -> Tensor");
  // ALS normal equations, one k x k system per row of a CSR matrix.
  // indptr: (R + 1,) int64 offsets into indices/vals, indices: (nnz,) int32/int64 column
  // ids, vals: (nnz,), F: (n, d) fixed factors, col_offset: (n,) subtracted from vals
  // per column or None, reg_diag: (d,) scaled by (row count)^count_exponent, base: (d, d)
  // added to every row's Gram matrix or None, weight: (nnz,) per-entry weights of the Gram
  // terms or None. Returns gram: (R, d, d), rhs: (R, d).
  m.def(
      "als_normal_equations(Tensor indptr, Tensor indices, Tensor vals, Tensor F, "
      "Tensor? col_offset, Tensor reg_diag, float count_exponent, Tensor? base=None, "
      "Tensor? weight=None) -> (Tensor gram, Tensor rhs)");
  // The same systems solved row by row (Cholesky), without storing the Gram matrices.
  // Arguments as in als_normal_equations. Returns x: (R, d) with gram[r] x[r] = rhs[r].
  m.def(
      "als_solve(Tensor indptr, Tensor indices, Tensor vals, Tensor F, Tensor? col_offset, "
      "Tensor reg_diag, float count_exponent, Tensor? base=None, Tensor? weight=None) "
      "-> Tensor");
  // Implicit-feedback ALS: cg_steps conjugate-gradient steps on every row's normal
  // equations A x = b, from the current X, in place. A = gram + sum_e weight[e] Y[c] Y[c]^T,
  // b = sum_e (1 + weight[e]) Y[c], c = indices[e]. X: (R, d), indptr: (R + 1,) int64,
  // indices: (nnz,) int32/int64, weight: (nnz,) >= 0, Y: (n, d), gram: (d, d) symmetric
  // (Y^T Y + reg I) or (d,) (a diagonal gram), cg_steps >= 1. A row stops when
  // |r|^2 < 1e-20 or p . Ap <= 0. Optional target: (nnz,), b = sum_e target[e] Y[c]
  // instead; optional row_scale: (R,) >= 0 with a (d,) gram, row r's G = diag(gram) *
  // row_scale[r] (explicit ALS: reg * n_r^exponent, weight 1, target the ratings).
  m.def(
      "implicit_als_cg_(Tensor(a!) X, Tensor indptr, Tensor indices, Tensor weight, Tensor Y, "
      "Tensor gram, int cg_steps, Tensor? target=None, Tensor? row_scale=None) -> ()");
  // Internal: out[e] = W[rows[e]] . H_t[cols[e]]. rows, cols: (nnz,) int32/int64,
  // W: (m, k), H_t: (n, k). Returns (nnz,).
  m.def("_sparse_dot(Tensor rows, Tensor cols, Tensor W, Tensor H_t) -> Tensor");
  // Internal: stable counting sort of entry ids by key. keys: (nnz,) int32/int64 in
  // [0, n_buckets). Returns order: (nnz,) int64 and offsets: (n_buckets + 1,) int64.
  m.def("_bucket_sort(Tensor keys, int n_buckets) -> (Tensor order, Tensor offsets)");
}

namespace {

bool cuda_built() {
#ifdef MFEXT_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int openmp_max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "mfext compiled library: fused matrix-factorization ops (torch.ops.mfext)";
  module.def("cuda_built", &cuda_built, "True when the CUDA kernels were compiled in");
  module.def("openmp_max_threads", &openmp_max_threads, "OpenMP threads available to kernels");
  module.def("openmp_built", []() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
  });
  module.def("torch_version_built", []() { return std::string(TORCH_VERSION); });
#ifdef MFEXT_WITH_CUDA
  module.def(
      "cuda_raise_pending_errors",
      []() {
        // Raise IndexError / ValueError as the ops do (not pybind11's RuntimeError).
        try {
          mfext::cuda::raise_pending_errors();
        } catch (const c10::IndexError& e) {
          throw pybind11::index_error(e.what_without_backtrace());
        } catch (const c10::ValueError& e) {
          throw pybind11::value_error(e.what_without_backtrace());
        }
      },
      "Raise the first input error a CUDA kernel reported (host memory read, no sync)");
  module.def("_set_cuda_dense_path", &mfext::cuda::set_dense_path,
             "Dense CUDA path: 0 auto, 1 fused, 2 tiled (tests and benchmarks)");
  module.def("_cuda_dense_path", &mfext::cuda::dense_path);
#endif
}
