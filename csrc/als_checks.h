// Argument checks of the ALS ops (als_normal_equations, als_solve) shared by
// the CPU op and the CUDA glue: everything that needs no tensor data. The
// indptr, indices and reg_diag values are checked by each device where it reads
// them (the CPU before its loop, the GPU in a validation kernel).
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace mfext {

struct AlsSizes {
  int64_t R, n, d, nnz;  // rows, rows of F, columns of F, entries
};

void check_als_exponent(const char* op, double count_exponent);

// indptr: (R + 1,) int64, indices: (nnz,) int32/int64, vals: (nnz,), F: (n, d),
// col_offset: (n,) or None, reg_diag: (d,), base: (d, d) or None, weight: (nnz,) or
// None; dtypes, shapes and devices.
AlsSizes check_als_args(const char* op, const at::Tensor& indptr, const at::Tensor& indices,
                        const at::Tensor& vals, const at::Tensor& F,
                        const std::optional<at::Tensor>& col_offset, const at::Tensor& reg_diag,
                        const std::optional<at::Tensor>& base,
                        const std::optional<at::Tensor>& weight);

// reg_diag's values, for a device that can read them without a synchronization
// (the CPU; CUDA checks them in its validation kernel with the same message):
// each entry finite and >= 0 (a NaN or negative ridge would make the systems
// indefinite, an infinite one their solutions NaN). Raises a ValueError naming
// "reg_diag[q]". reg_diag: (d,) float32/float64, contiguous, on the CPU.
void check_reg_diag_values(const char* op, const at::Tensor& reg_diag);

}  // namespace mfext
