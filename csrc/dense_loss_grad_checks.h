// Argument checks of mfext::dense_loss_grad, shared by the CPU op and the CUDA
// glue so that both devices raise the same errors in the same order.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace mfext {

struct DenseSizes {
  int64_t m, n, k;
};

// A: (m, n), W: (m, k), H: (k, n), weight: (m, n) or None. Shapes, dtypes and
// devices only; the weight values are checked by the kernels, which read them anyway.
DenseSizes check_dense_inputs(const char* op, const at::Tensor& A, const at::Tensor& W,
                              const at::Tensor& H, const std::optional<at::Tensor>& weight);

}  // namespace mfext
