// Argument checks of mfext::_sparse_dot, shared by the CPU op and the CUDA glue
// so that both devices raise the same errors in the same order.
#pragma once

#include <ATen/ATen.h>

namespace mfext {

struct SparseDotSizes {
  int64_t m, n, k, nnz;
};

// rows, cols: (nnz,), W: (m, k), H_t: (n, k). Index values are checked by the
// kernels, which read them anyway.
SparseDotSizes check_sparse_dot_inputs(const char* op, const at::Tensor& rows,
                                       const at::Tensor& cols, const at::Tensor& W,
                                       const at::Tensor& H_t);

}  // namespace mfext
