// Argument checks shared by every device's implementation of the ops.
// Each failure names the op, the argument and what was wrong.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace mfext {

struct DenseSizes {
  int64_t m, n, k;
};

struct SparseSizes {
  int64_t m, n, k, nnz;
};

// A: (m, n), W: (m, k), H: (k, n), weight: (m, n) or None.
DenseSizes check_dense_inputs(const char* op, const at::Tensor& A, const at::Tensor& W,
                              const at::Tensor& H, const std::optional<at::Tensor>& weight);

// rows, cols, vals: (nnz,), W: (m, k), H: (k, n), weight: (nnz,) or None.
// Index values are checked by the kernels, which read them anyway.
SparseSizes check_sparse_inputs(const char* op, const at::Tensor& rows, const at::Tensor& cols,
                                const at::Tensor& vals, const at::Tensor& W, const at::Tensor& H,
                                const std::optional<at::Tensor>& weight);

// _sparse_dot: rows, cols: (nnz,), W: (m, k), H_t: (n, k). Returns (m, n, k, nnz).
SparseSizes check_sparse_dot_inputs(const char* op, const at::Tensor& rows,
                                    const at::Tensor& cols, const at::Tensor& W,
                                    const at::Tensor& H_t);

// Floating factor/data tensor: float32 or float64 (the CUDA build adds half types).
void check_float_tensor(const char* op, const char* name, const at::Tensor& t, int64_t ndim,
                        bool allow_half);

// rows and cols: 1-D index tensors of one dtype (int32 or int64).
void check_index_pair(const char* op, const at::Tensor& rows, const at::Tensor& cols);

// Index tensor: 1-D int32 or int64.
void check_index_tensor(const char* op, const char* name, const at::Tensor& t);

// Every tensor on the same device as `ref`.
void check_same_device(const char* op, const char* ref_name, const at::Tensor& ref,
                       const char* name, const at::Tensor& t);

// Same dtype as `ref`.
void check_same_dtype(const char* op, const char* ref_name, const at::Tensor& ref,
                      const char* name, const at::Tensor& t);

}  // namespace mfext
