#include "implicit_als_cg_checks.h"

#include "tensor_checks.h"

#include <string>
#include <tuple>

namespace mfext {

ImplicitSizes check_implicit_cg_args(const char* op, const at::Tensor& X,
                                     const at::Tensor& indptr, const at::Tensor& indices,
                                     const at::Tensor& weight, const at::Tensor& Y,
                                     const at::Tensor& gram, int64_t cg_steps,
                                     const at::Tensor& target, const at::Tensor& row_scale) {
  TORCH_CHECK_VALUE(cg_steps >= 1, op, ": cg_steps must be at least 1, got ", cg_steps);
  TORCH_CHECK(indptr.defined() && indptr.layout() == at::kStrided && indptr.dim() == 1 &&
                  indptr.scalar_type() == at::kLong && indptr.size(0) >= 1,
              op, ": argument 'indptr' must be a non-empty 1-D int64 tensor (R + 1,), got shape ",
              indptr.sizes(), " and dtype ", indptr.scalar_type());
  check_index_tensor(op, "indices", indices);
  check_float_tensor(op, "weight", weight, 1, false);
  check_float_tensor(op, "Y", Y, 2, false);
  TORCH_CHECK(gram.defined() && (gram.dim() == 1 || gram.dim() == 2), op,
              ": argument 'gram' must be a (d, d) or (d,) tensor, got ",
              gram.defined() ? gram.dim() : 0, " dimensions");
  check_float_tensor(op, "gram", gram, gram.dim(), false);
  check_float_tensor(op, "X", X, 2, false);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"weight", &weight},
                                {"gram", &gram}, {"X", &X}}) {
    check_same_dtype(op, "Y", Y, name, *t);
  }
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"indptr", &indptr},
                                {"indices", &indices}, {"weight", &weight}, {"gram", &gram},
                                {"X", &X}}) {
    check_same_device(op, "Y", Y, name, *t);
  }
  const int64_t R = indptr.size(0) - 1, n = Y.size(0), d = Y.size(1), nnz = indices.size(0);
  TORCH_CHECK(d >= 1, op, ": Y must have at least one column, got shape ", Y.sizes());
  TORCH_CHECK(weight.size(0) == nnz, op, ": indices and weight must have the same length, got ",
              nnz, " and ", weight.size(0));
  TORCH_CHECK(gram.size(0) == d && (gram.dim() == 1 || gram.size(1) == d), op,
              ": gram must have shape (d, d) = (", d, ", ", d, ") or (d,) = (", d,
              ",) to match Y of shape ", Y.sizes(), ", got ", gram.sizes());
  TORCH_CHECK(X.size(0) == R && X.size(1) == d, op, ": X must have shape (R, d) = (", R, ", ", d,
              ") to match indptr (R + 1 = ", R + 1, ") and Y of shape ", Y.sizes(), ", got ",
              X.sizes());
  for (const auto& [name, t, len] :
       {std::tuple<const char*, const at::Tensor*, int64_t>{"target", &target, nnz},
        {"row_scale", &row_scale, R}}) {
    if (!t->defined()) continue;
    check_float_tensor(op, name, *t, 1, false);
    check_same_dtype(op, "Y", Y, name, *t);
    check_same_device(op, "Y", Y, name, *t);
    TORCH_CHECK(t->size(0) == len, op, ": ", name, " must have length ", len, " (",
                name == std::string("target") ? "one value an entry" : "one value a row",
                "), got ", t->size(0));
  }
  TORCH_CHECK(!row_scale.defined() || gram.dim() == 1, op,
              ": row_scale needs a (d,) gram (a diagonal G scaled per row), got gram of shape ",
              gram.sizes());
  return {R, n, d, nnz};
}

}  // namespace mfext
