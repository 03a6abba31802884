// CUDA implementation of mfext::als_normal_equations and mfext::als_solve:
// checks, allocation, stream and row order (kernels in als.cu).
//
// The argument checks are the CPU op's own (../als_checks.h); the indptr and
// indices values are checked on the GPU by the validation kernel, which turns
// the outputs into NaN and reports the first bad position at the next mfext
// call, so that nothing here reads device data or synchronizes the device.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>

#include "../als_checks.h"
#include "als.h"
#include "glue.h"

namespace mfext {
namespace cuda {
namespace {

constexpr const char* kOpNormal = "mfext::als_normal_equations";
constexpr const char* kOpSolve = "mfext::als_solve";

// The data-free checks, then any error an earlier call left in the mailbox.
AlsSizes checked(const char* op, const at::Tensor& indptr, const at::Tensor& indices,
                 const at::Tensor& vals, const at::Tensor& F,
                 const std::optional<at::Tensor>& col_offset, const at::Tensor& reg_diag,
                 double count_exponent) {
  check_als_exponent(op, count_exponent);
  const AlsSizes s = check_als_args(op, indptr, indices, vals, F, col_offset, reg_diag);
  raise_pending_errors();
  return s;
}

// What both ops share: the device guard, contiguous inputs, the row order and
// the kernels' arguments.
struct AlsCall {
  AlsSizes s;
  c10::cuda::CUDAGuard guard;
  at::Tensor indptr, indices, vals, F, offset, reg, order;
  DeviceInfo dev;
  AlsArgs args;

  AlsCall(const char* op, bool solve,
          const at::Tensor& indptr_,                     // (R + 1,) int64
          const at::Tensor& indices_,                    // (nnz,) int32/int64
          const at::Tensor& vals_,                       // (nnz,)
          const at::Tensor& F_,                          // (n, d)
          const std::optional<at::Tensor>& col_offset,   // (n,) or None
          const at::Tensor& reg_diag,                    // (d,)
          double count_exponent)
      : s(checked(op, indptr_, indices_, vals_, F_, col_offset, reg_diag, count_exponent)),
        guard(F_.device()),
        indptr(indptr_.contiguous()),
        indices(indices_.contiguous()),
        vals(vals_.contiguous()),
        F(F_.contiguous()),
        reg(reg_diag.contiguous()),
        dev(device_info(F_.device())) {
    if (col_offset.has_value()) offset = col_offset->contiguous();
    // Rows by decreasing entry count (on the device, no sync): the long rows
    // start first. Only worth it when there are more rows than resident blocks.
    if (s.R > 8 * int64_t(dev.sm_count)) {
      const at::Tensor counts = indptr.narrow(0, 1, s.R) - indptr.narrow(0, 0, s.R);  // (R,)
      order = at::argsort(counts, /*stable=*/true, /*dim=*/0, /*descending=*/true);  // (R,)
    }
    args.indptr = indptr.const_data_ptr<int64_t>();
    args.indices = indices.const_data_ptr();
    args.idx64 = indices.scalar_type() == at::kLong;
    args.vals = vals.const_data_ptr();
    args.F = F.const_data_ptr();
    args.col_offset = offset.defined() ? offset.const_data_ptr() : nullptr;
    args.reg_diag = reg.const_data_ptr();
    args.count_exponent = count_exponent;
    args.order = order.defined() ? order.const_data_ptr<int64_t>() : nullptr;
    args.R = s.R;
    args.n = s.n;
    args.d = s.d;
    args.nnz = s.nnz;
    args.dtype = F.scalar_type() == at::kDouble ? DType::f64 : DType::f32;
    args.mailbox = mailbox_for(F.device());
    TORCH_CHECK(als_supported(args, solve, dev), op, ": d = ", s.d,
                " is too large for the CUDA kernels (one row of F must fit in shared memory)");
  }

  at::Tensor workspace(bool solve) const {
    const size_t bytes = als_workspace_bytes(args, solve, dev);
    return at::empty({static_cast<int64_t>(bytes)}, F.options().dtype(at::kByte));
  }
};

// Returns gram: (R, d, d), rhs: (R, d).
std::tuple<at::Tensor, at::Tensor> als_normal_equations_cuda(
    const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& vals,
    const at::Tensor& F, const std::optional<at::Tensor>& col_offset, const at::Tensor& reg_diag,
    double count_exponent) {
  const AlsCall c(kOpNormal, false, indptr, indices, vals, F, col_offset, reg_diag,
                  count_exponent);
  at::Tensor gram = at::empty({c.s.R, c.s.d, c.s.d}, F.options());
  at::Tensor rhs = at::empty({c.s.R, c.s.d}, F.options());
  at::Tensor ws = c.workspace(false);
  MFEXT_CUDA_LAUNCHED(als_normal_equations_launch(c.args, gram.data_ptr(), rhs.data_ptr(),
                                                  ws.data_ptr(), ws.numel(), c.dev,
                                                  c10::cuda::getCurrentCUDAStream()));
  return {gram, rhs};
}

// Returns x: (R, d).
at::Tensor als_solve_cuda(const at::Tensor& indptr, const at::Tensor& indices,
                          const at::Tensor& vals, const at::Tensor& F,
                          const std::optional<at::Tensor>& col_offset,
                          const at::Tensor& reg_diag, double count_exponent) {
  const AlsCall c(kOpSolve, true, indptr, indices, vals, F, col_offset, reg_diag,
                  count_exponent);
  at::Tensor x = at::empty({c.s.R, c.s.d}, F.options());
  at::Tensor ws = c.workspace(true);
  MFEXT_CUDA_LAUNCHED(als_solve_launch(c.args, x.data_ptr(), ws.data_ptr(), ws.numel(), c.dev,
                                       c10::cuda::getCurrentCUDAStream()));
  return x;
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CUDA, m) {
  m.impl("als_normal_equations", &als_normal_equations_cuda);
  m.impl("als_solve", &als_solve_cuda);
}

}  // namespace cuda
}  // namespace mfext
