#include "checks.h"

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

static void check_factors(const char* op, const at::Tensor& W, const at::Tensor& H,
                          bool allow_half) {
  check_float_tensor(op, "W", W, 2, allow_half);
  check_float_tensor(op, "H", H, 2, allow_half);
  check_same_dtype(op, "W", W, "H", H);
  check_same_device(op, "W", W, "H", H);
  TORCH_CHECK(W.size(1) == H.size(0), op, ": W of shape ", W.sizes(), " and H of shape ",
              H.sizes(), " disagree on the rank k (W is (m, k), H is (k, n))");
  TORCH_CHECK(W.size(1) >= 1, op, ": the rank k must be at least 1, got W of shape ", W.sizes());
}

DenseSizes check_dense_inputs(const char* op, const at::Tensor& A, const at::Tensor& W,
                              const at::Tensor& H, const std::optional<at::Tensor>& weight) {
  const bool allow_half = A.is_cuda();
  check_float_tensor(op, "A", A, 2, allow_half);
  check_float_tensor(op, "W", W, 2, allow_half);
  check_float_tensor(op, "H", H, 2, allow_half);
  check_same_dtype(op, "A", A, "W", W);
  check_same_dtype(op, "A", A, "H", H);
  check_same_device(op, "A", A, "W", W);
  check_same_device(op, "A", A, "H", H);
  check_factors(op, W, H, allow_half);
  TORCH_CHECK(A.size(0) == W.size(0), op, ": A of shape ", A.sizes(), " and W of shape ",
              W.sizes(), " disagree on m (A is (m, n), W is (m, k))");
  TORCH_CHECK(A.size(1) == H.size(1), op, ": A of shape ", A.sizes(), " and H of shape ",
              H.sizes(), " disagree on n (A is (m, n), H is (k, n))");
  if (weight.has_value()) {
    check_float_tensor(op, "weight", *weight, 2, allow_half);
    check_same_dtype(op, "A", A, "weight", *weight);
    check_same_device(op, "A", A, "weight", *weight);
    TORCH_CHECK(weight->sizes() == A.sizes(), op, ": weight must have the shape of A ",
                A.sizes(), ", got ", weight->sizes());
  }
  return {A.size(0), A.size(1), W.size(1)};
}

void check_index_pair(const char* op, const at::Tensor& rows, const at::Tensor& cols) {
  check_index_tensor(op, "rows", rows);
  check_index_tensor(op, "cols", cols);
  TORCH_CHECK(rows.scalar_type() == cols.scalar_type(), op, ": 'rows' (", rows.scalar_type(),
              ") and 'cols' (", cols.scalar_type(), ") must have the same index dtype");
}

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

SparseSizes check_sparse_dot_inputs(const char* op, const at::Tensor& rows,
                                    const at::Tensor& cols, const at::Tensor& W,
                                    const at::Tensor& H_t) {
  check_index_pair(op, rows, cols);
  check_float_tensor(op, "W", W, 2, false);
  check_float_tensor(op, "H_t", H_t, 2, false);
  check_same_dtype(op, "W", W, "H_t", H_t);
  check_same_device(op, "W", W, "H_t", H_t);
  check_same_device(op, "W", W, "rows", rows);
  check_same_device(op, "W", W, "cols", cols);
  TORCH_CHECK(W.size(1) == H_t.size(1), op, ": W of shape ", W.sizes(), " and H_t of shape ",
              H_t.sizes(), " disagree on the rank k (W is (m, k), H_t is (n, k))");
  TORCH_CHECK(rows.size(0) == cols.size(0), op,
              ": rows and cols must have the same length, got ", rows.size(0), " and ",
              cols.size(0));
  return {W.size(0), H_t.size(0), W.size(1), rows.size(0)};
}

}  // namespace mfext
