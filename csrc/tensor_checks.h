// Checks of single tensor arguments, shared by every op's checks (<op>_checks.h)
// and by the ops that take only an index tensor (_bucket_sort). Each failure
// names the op, the argument and what was wrong; the tests match these messages.
#pragma once

#include <ATen/ATen.h>

namespace mfext {

// Floating factor/data tensor: defined, strided, `ndim`-D, float32 or float64
// (or float16/bfloat16 when allow_half: the CUDA dense op takes them).
void check_float_tensor(const char* op, const char* name, const at::Tensor& t, int64_t ndim,
                        bool allow_half);

// Index tensor: 1-D int32 or int64.
void check_index_tensor(const char* op, const char* name, const at::Tensor& t);

// rows and cols: 1-D index tensors of one dtype (int32 or int64).
void check_index_pair(const char* op, const at::Tensor& rows, const at::Tensor& cols);

// `t` on the device of `ref`.
void check_same_device(const char* op, const char* ref_name, const at::Tensor& ref,
                       const char* name, const at::Tensor& t);

// `t` of the dtype of `ref`.
void check_same_dtype(const char* op, const char* ref_name, const at::Tensor& ref,
                      const char* name, const at::Tensor& t);

// The factor pair of the loss ops: W: (m, k), H: (k, n), one dtype and device, k >= 1.
void check_factors(const char* op, const at::Tensor& W, const at::Tensor& H, bool allow_half);

}  // namespace mfext
