// Argument checks of mfext::dense_loss_grad (see dense_loss_grad_checks.h).
#include "dense_loss_grad_checks.h"

#include "tensor_checks.h"

namespace mfext {

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

}  // namespace mfext
