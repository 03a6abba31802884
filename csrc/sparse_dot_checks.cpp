// Argument checks of mfext::_sparse_dot (see sparse_dot_checks.h).
#include "sparse_dot_checks.h"

#include "tensor_checks.h"

namespace mfext {

SparseDotSizes check_sparse_dot_inputs(const char* op, const at::Tensor& rows,
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
