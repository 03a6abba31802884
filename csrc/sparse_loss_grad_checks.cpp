// Argument checks of mfext::sparse_loss_grad (see sparse_loss_grad_checks.h).
#include "sparse_loss_grad_checks.h"

#include "tensor_checks.h"

namespace mfext {

SparseSizes check_sparse_inputs(const char* op, const at::Tensor& rows, const at::Tensor& cols,
                                const at::Tensor& vals, const at::Tensor& W, const at::Tensor& H,
                                const std::optional<at::Tensor>& weight) {
  const bool allow_half = W.is_cuda();
  check_index_pair(op, rows, cols);
  check_float_tensor(op, "vals", vals, 1, allow_half);
  check_factors(op, W, H, allow_half);
  check_same_dtype(op, "W", W, "vals", vals);
  check_same_device(op, "W", W, "rows", rows);
  check_same_device(op, "W", W, "cols", cols);
  check_same_device(op, "W", W, "vals", vals);
  const int64_t nnz = vals.size(0);
  TORCH_CHECK(rows.size(0) == nnz && cols.size(0) == nnz, op,
              ": rows, cols and vals must have the same length, got ", rows.size(0), ", ",
              cols.size(0), " and ", nnz);
  if (weight.has_value()) {
    check_float_tensor(op, "weight", *weight, 1, allow_half);
    check_same_dtype(op, "vals", vals, "weight", *weight);
    check_same_device(op, "W", W, "weight", *weight);
    TORCH_CHECK(weight->size(0) == nnz, op, ": weight must have one entry per value (", nnz,
                "), got shape ", weight->sizes());
  }
  return {W.size(0), H.size(1), W.size(1), nnz};
}

}  // namespace mfext
