// Argument checks of the ALS ops (see als_checks.h).
#include "als_checks.h"

#include <ATen/Dispatch.h>

#include <cmath>

#include "tensor_checks.h"

namespace mfext {

void check_als_exponent(const char* op, double count_exponent) {
  TORCH_CHECK(std::isfinite(count_exponent), op, ": count_exponent must be finite, got ",
              count_exponent);
}

AlsSizes check_als_args(const char* op, const at::Tensor& indptr, const at::Tensor& indices,
                        const at::Tensor& vals, const at::Tensor& F,
                        const std::optional<at::Tensor>& col_offset, const at::Tensor& reg_diag,
                        const std::optional<at::Tensor>& base,
                        const std::optional<at::Tensor>& weight) {
  TORCH_CHECK(indptr.defined() && indptr.layout() == at::kStrided && indptr.dim() == 1 &&
                  indptr.scalar_type() == at::kLong && indptr.size(0) >= 1,
              op, ": argument 'indptr' must be a non-empty 1-D int64 tensor (R + 1,), got shape ",
              indptr.sizes(), " and dtype ", indptr.scalar_type());
  check_index_tensor(op, "indices", indices);
  check_float_tensor(op, "vals", vals, 1, false);
  check_float_tensor(op, "F", F, 2, false);
  check_float_tensor(op, "reg_diag", reg_diag, 1, false);
  check_same_dtype(op, "F", F, "vals", vals);
  check_same_dtype(op, "F", F, "reg_diag", reg_diag);
  check_same_device(op, "F", F, "indptr", indptr);
  check_same_device(op, "F", F, "indices", indices);
  check_same_device(op, "F", F, "vals", vals);
  check_same_device(op, "F", F, "reg_diag", reg_diag);
  const int64_t n = F.size(0), d = F.size(1);
  TORCH_CHECK(d >= 1, op, ": F must have at least one column, got shape ", F.sizes());
  TORCH_CHECK(indices.size(0) == vals.size(0), op,
              ": indices and vals must have the same length, got ", indices.size(0), " and ",
              vals.size(0));
  TORCH_CHECK(reg_diag.size(0) == d, op, ": reg_diag must have shape (d,) = (", d,
              ",) to match F of shape ", F.sizes(), ", got ", reg_diag.sizes());
  if (col_offset.has_value()) {
    check_float_tensor(op, "col_offset", *col_offset, 1, false);
    check_same_dtype(op, "F", F, "col_offset", *col_offset);
    check_same_device(op, "F", F, "col_offset", *col_offset);
    TORCH_CHECK(col_offset->size(0) == n, op, ": col_offset must have shape (n,) = (", n,
                ",) to match F of shape ", F.sizes(), ", got ", col_offset->sizes());
  }
  if (base.has_value()) {
    check_float_tensor(op, "base", *base, 2, false);
    check_same_dtype(op, "F", F, "base", *base);
    check_same_device(op, "F", F, "base", *base);
    TORCH_CHECK(base->size(0) == d && base->size(1) == d, op,
                ": base must have shape (d, d) = (", d, ", ", d, ") to match F of shape ",
                F.sizes(), ", got ", base->sizes());
  }
  if (weight.has_value()) {
    check_float_tensor(op, "weight", *weight, 1, false);
    check_same_dtype(op, "F", F, "weight", *weight);
    check_same_device(op, "F", F, "weight", *weight);
    TORCH_CHECK(weight->size(0) == indices.size(0), op,
                ": indices and weight must have the same length, got ", indices.size(0), " and ",
                weight->size(0));
  }
  return {indptr.size(0) - 1, n, d, indices.size(0)};
}

void check_reg_diag_values(const char* op, const at::Tensor& reg_diag) {
  AT_DISPATCH_FLOATING_TYPES(reg_diag.scalar_type(), "check_reg_diag_values", [&] {
    const scalar_t* reg = reg_diag.const_data_ptr<scalar_t>();
    for (int64_t q = 0; q < reg_diag.numel(); ++q) {
      TORCH_CHECK_VALUE(std::isfinite(reg[q]) && reg[q] >= 0, op,
                        ": argument 'reg_diag' must be finite and non-negative; found reg_diag[",
                        q, "] = ", reg[q]);
    }
  });
}

}  // namespace mfext
