// Argument checks of implicit_als_cg_ shared by the CPU op and the CUDA glue:
// everything that needs no tensor data. The indptr and indices values are
// checked by each device where it reads them (the CPU before its loop, the GPU
// in a validation kernel whose errors go through the mailbox).
#pragma once

#include <ATen/ATen.h>

namespace mfext {

struct ImplicitSizes {
  int64_t R, n, d, nnz;  // rows, rows of Y, columns of Y, entries
};

// X: (R, d) float32/float64 (written in place), indptr: (R + 1,) int64,
// indices: (nnz,) int32/int64, weight: (nnz,), Y: (n, d), gram: (d, d),
// cg_steps >= 1 (ValueError otherwise); dtypes, shapes and devices; target: (nnz,)
// or undefined; row_scale: (R,) or undefined, only with a (d,) gram.
ImplicitSizes check_implicit_cg_args(const char* op, const at::Tensor& X,
                                     const at::Tensor& indptr, const at::Tensor& indices,
                                     const at::Tensor& weight, const at::Tensor& Y,
                                     const at::Tensor& gram, int64_t cg_steps,
                                     const at::Tensor& target = at::Tensor(),
                                     const at::Tensor& row_scale = at::Tensor());

}  // namespace mfext
