// Argument checks of mfext::sparse_loss_grad, shared by the CPU op and the CUDA
// glue so that both devices raise the same errors in the same order.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace mfext {

struct SparseSizes {
  int64_t m, n, k, nnz;
};

// rows, cols, vals: (nnz,), W: (m, k), H: (k, n), weight: (nnz,) or None.
// Index values are checked by the kernels, which read them anyway.
SparseSizes check_sparse_inputs(const char* op, const at::Tensor& rows, const at::Tensor& cols,
                                const at::Tensor& vals, const at::Tensor& W, const at::Tensor& H,
                                const std::optional<at::Tensor>& weight);

}  // namespace mfext
