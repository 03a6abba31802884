// Argument checks of implicit_als_matvec shared by the CPU op and the CUDA
// glue: everything that needs no tensor data. The indptr and indices values are
// checked by each device where it reads them (the CPU before its loop, the GPU
// in a validation kernel).
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace mfext {

struct ImplicitSizes {
  int64_t R, n, d, nnz;  // rows, rows of Y, columns of Y, entries
};

// indptr: (R + 1,) int64, indices: (nnz,) int32/int64, weight: (nnz,), Y: (n, d),
// gram: (d, d), X: (R, d), target: (nnz,) or None; dtypes, shapes and devices.
ImplicitSizes check_implicit_matvec_args(const char* op, const at::Tensor& indptr,
                                         const at::Tensor& indices, const at::Tensor& weight,
                                         const at::Tensor& Y, const at::Tensor& gram,
                                         const at::Tensor& X,
                                         const std::optional<at::Tensor>& target);

}  // namespace mfext
