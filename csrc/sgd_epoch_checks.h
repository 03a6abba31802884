// Argument checks of mfext::sgd_epoch_ that need no tensor data, shared by the
// CPU op and the CUDA glue so that both raise the same errors in the same
// order. They read shapes, dtypes, strides and storage only, never tensor
// values: the values (indices, offsets, schedule ids) are checked by the CPU op
// on the host and by a validation kernel on the GPU.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace mfext {

struct SgdSizes {
  int64_t m, n, k, nnz;
  int64_t len;       // entries processed: order's length, or nnz without an order
  int64_t n_blocks;  // block_ptr's length - 1 (blocked mode; 0 in Hogwild)
  int64_t n_strata, width;  // schedule's shape (blocked mode; 0 in Hogwild)
};

// W: (m, k), H_t: (n, k), user_bias: (m,), item_bias: (n,) (any length when
// !use_biases), rows, cols, vals: (nnz,), order: (len,) int64 or None,
// block_ptr: (n_blocks + 1,) int64 and schedule: (n_strata, width) int64, or both None.
SgdSizes check_sgd_inputs(const char* op, const at::Tensor& W, const at::Tensor& H_t,
                          const at::Tensor& user_bias, const at::Tensor& item_bias,
                          const at::Tensor& rows, const at::Tensor& cols, const at::Tensor& vals,
                          const std::optional<at::Tensor>& order,
                          const std::optional<at::Tensor>& block_ptr,
                          const std::optional<at::Tensor>& schedule, double lr, double reg,
                          double bias_reg, double global_mean, bool use_biases);

}  // namespace mfext
