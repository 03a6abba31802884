// CUDA implementation of mfext::als_normal_equations and mfext::als_solve:
// checks, allocation, stream, row order and the typed parameters of the
// kernels (als.h).
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
                 double count_exponent, const std::optional<at::Tensor>& base,
                 const std::optional<at::Tensor>& weight) {
  check_als_exponent(op, count_exponent);
  const AlsSizes s =
      check_als_args(op, indptr, indices, vals, F, col_offset, reg_diag, base, weight);
  raise_pending_errors();
  return s;
}

// What both ops share: the device guard, contiguous inputs and the row order.
struct AlsInputs {
  AlsSizes s;
  c10::cuda::CUDAGuard guard;
  at::Tensor indptr, indices, vals, F, offset, reg, order, base, weight;
  DeviceInfo dev;

  AlsInputs(const char* op,
            const at::Tensor& indptr_,                     // (R + 1,) int64
            const at::Tensor& indices_,                    // (nnz,) int32/int64
            const at::Tensor& vals_,                       // (nnz,)
            const at::Tensor& F_,                          // (n, d)
            const std::optional<at::Tensor>& col_offset,   // (n,) or None
            const at::Tensor& reg_diag,                    // (d,)
            double count_exponent,
            const std::optional<at::Tensor>& base_,        // (d, d) or None
            const std::optional<at::Tensor>& weight_)      // (nnz,) or None
      : s(checked(op, indptr_, indices_, vals_, F_, col_offset, reg_diag, count_exponent, base_,
                  weight_)),
        guard(F_.device()),
        indptr(indptr_.contiguous()),
        indices(indices_.contiguous()),
        vals(vals_.contiguous()),
        F(F_.contiguous()),
        reg(reg_diag.contiguous()),
        dev(device_info(F_.device())) {
    if (col_offset.has_value()) offset = col_offset->contiguous();
    if (base_.has_value()) base = base_->contiguous();        // (d, d)
    if (weight_.has_value()) weight = weight_->contiguous();  // (nnz,)
    // Rows by decreasing entry count (on the device, no sync): the long rows
    // start first. Only worth it when there are more rows than resident blocks.
    if (s.R > 8 * int64_t(dev.sm_count)) {
      const at::Tensor counts = indptr.narrow(0, 1, s.R) - indptr.narrow(0, 0, s.R);  // (R,)
      order = at::argsort(counts, /*stable=*/true, /*dim=*/0, /*descending=*/true);  // (R,)
    }
  }

  // The kernels' parameters, filled once; raises when d is too large for them.
  template <typename T, typename I>
  AlsParams<T, I> params(const char* op, bool solve, double count_exponent) const {
    AlsParams<T, I> p;
    p.indptr = indptr.const_data_ptr<int64_t>();
    p.indices = indices.const_data_ptr<I>();
    p.vals = vals.const_data_ptr<T>();
    p.F = F.const_data_ptr<T>();
    p.col_offset = offset.defined() ? offset.const_data_ptr<T>() : nullptr;
    p.reg_diag = reg.const_data_ptr<T>();
    p.base = base.defined() ? base.const_data_ptr<T>() : nullptr;
    p.weight = weight.defined() ? weight.const_data_ptr<T>() : nullptr;
    p.count_exponent = count_exponent;
    p.order = order.defined() ? order.const_data_ptr<int64_t>() : nullptr;
    p.R = s.R;
    p.n = s.n;
    p.d = s.d;
    p.nnz = s.nnz;
    p.mailbox = mailbox_for(F.device());
    TORCH_CHECK(als_supported(p, solve, dev), op, ": d = ", s.d,
                " is too large for the CUDA kernels (one row of F must fit in shared memory)");
    return p;
  }

  template <typename T, typename I>
  at::Tensor workspace(const AlsParams<T, I>& p, bool solve) const {
    const size_t bytes = als_workspace_bytes(p, solve, dev);
    return at::empty({static_cast<int64_t>(bytes)}, F.options().dtype(at::kByte));
  }
};

// Returns gram: (R, d, d), rhs: (R, d).
std::tuple<at::Tensor, at::Tensor> als_normal_equations_cuda(
    const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& vals,
    const at::Tensor& F, const std::optional<at::Tensor>& col_offset, const at::Tensor& reg_diag,
    double count_exponent, const std::optional<at::Tensor>& base,
    const std::optional<at::Tensor>& weight) {
  const AlsInputs c(kOpNormal, indptr, indices, vals, F, col_offset, reg_diag, count_exponent,
                    base, weight);
  return dispatch_value_index(
      kOpNormal, F.scalar_type(), indices.scalar_type(), [&](auto value, auto index) {
        using T = typename decltype(value)::type;
        using I = typename decltype(index)::type;
        const AlsParams<T, I> p = c.params<T, I>(kOpNormal, false, count_exponent);
        at::Tensor gram = at::empty({c.s.R, c.s.d, c.s.d}, F.options());
        at::Tensor rhs = at::empty({c.s.R, c.s.d}, F.options());
        at::Tensor ws = c.workspace(p, false);
        MFEXT_CUDA_LAUNCHED(als_normal_equations_launch(
            p, gram.data_ptr<T>(), rhs.data_ptr<T>(), ws.data_ptr(), ws.numel(), c.dev,
            c10::cuda::getCurrentCUDAStream()));
        return std::make_tuple(gram, rhs);
      });
}

// Returns x: (R, d).
at::Tensor als_solve_cuda(const at::Tensor& indptr, const at::Tensor& indices,
                          const at::Tensor& vals, const at::Tensor& F,
                          const std::optional<at::Tensor>& col_offset,
                          const at::Tensor& reg_diag, double count_exponent,
                          const std::optional<at::Tensor>& base,
                          const std::optional<at::Tensor>& weight) {
  const AlsInputs c(kOpSolve, indptr, indices, vals, F, col_offset, reg_diag, count_exponent,
                    base, weight);
  return dispatch_value_index(
      kOpSolve, F.scalar_type(), indices.scalar_type(), [&](auto value, auto index) {
        using T = typename decltype(value)::type;
        using I = typename decltype(index)::type;
        const AlsParams<T, I> p = c.params<T, I>(kOpSolve, true, count_exponent);
        at::Tensor x = at::empty({c.s.R, c.s.d}, F.options());
        at::Tensor ws = c.workspace(p, true);
        MFEXT_CUDA_LAUNCHED(als_solve_launch(p, x.data_ptr<T>(), ws.data_ptr(), ws.numel(),
                                             c.dev, c10::cuda::getCurrentCUDAStream()));
        return x;
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CUDA, m) {
  m.impl("als_normal_equations", &als_normal_equations_cuda);
  m.impl("als_solve", &als_solve_cuda);
}

}  // namespace cuda
}  // namespace mfext
