// Checks of single tensor arguments (see tensor_checks.h).
#include "tensor_checks.h"

namespace mfext {

namespace {

bool is_accepted_float(at::ScalarType t, bool allow_half) {
  if (t == at::kFloat || t == at::kDouble) return true;
  return allow_half && (t == at::kHalf || t == at::kBFloat16);
}

}  // namespace

void check_float_tensor(const char* op, const char* name, const at::Tensor& t, int64_t ndim,
                        bool allow_half) {
  TORCH_CHECK(t.defined(), op, ": argument '", name, "' is undefined");
  TORCH_CHECK(t.layout() == at::kStrided, op, ": argument '", name,
              "' must be a dense (strided) tensor, got layout ", t.layout());
  TORCH_CHECK(t.dim() == ndim, op, ": argument '", name, "' must be ", ndim,
              "-D, got shape ", t.sizes());
  TORCH_CHECK(is_accepted_float(t.scalar_type(), allow_half), op, ": argument '", name,
              "' must be float32 or float64", allow_half ? " (or float16/bfloat16 on CUDA)" : "",
              ", got dtype ", t.scalar_type());
}

void check_index_tensor(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": argument '", name, "' is undefined");
  TORCH_CHECK(t.layout() == at::kStrided, op, ": argument '", name,
              "' must be a dense (strided) tensor, got layout ", t.layout());
  TORCH_CHECK(t.dim() == 1, op, ": argument '", name, "' must be 1-D, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kInt || t.scalar_type() == at::kLong, op, ": argument '",
              name, "' must hold int32 or int64 indices, got dtype ", t.scalar_type());
}

void check_same_device(const char* op, const char* ref_name, const at::Tensor& ref,
                       const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device() == ref.device(), op, ": argument '", name, "' is on ", t.device(),
              " but '", ref_name, "' is on ", ref.device(), "; all tensors must share a device");
}

void check_same_dtype(const char* op, const char* ref_name, const at::Tensor& ref,
                      const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": argument '", name, "' has dtype ",
              t.scalar_type(), " but '", ref_name, "' has dtype ", ref.scalar_type(),
              "; mixed dtypes are not accepted");
}

void check_factors(const char* op, const at::Tensor& W, const at::Tensor& H,
                          bool allow_half) {
  check_float_tensor(op, "W", W, 2, allow_half);
  check_float_tensor(op, "H", H, 2, allow_half);
  check_same_dtype(op, "W", W, "H", H);
  check_same_device(op, "W", W, "H", H);
  TORCH_CHECK(W.size(1) == H.size(0), op, ": W of shape ", W.sizes(), " and H of shape ",
              H.sizes(), " disagree on the rank k (W is (m, k), H is (k, n))");
  TORCH_CHECK(W.size(1) >= 1, op, ": the rank k must be at least 1, got W of shape ", W.sizes());
}

void check_index_pair(const char* op, const at::Tensor& rows, const at::Tensor& cols) {
  check_index_tensor(op, "rows", rows);
  check_index_tensor(op, "cols", cols);
  TORCH_CHECK(rows.scalar_type() == cols.scalar_type(), op, ": 'rows' (", rows.scalar_type(),
              ") and 'cols' (", cols.scalar_type(), ") must have the same index dtype");
}

}  // namespace mfext
