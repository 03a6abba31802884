// CUDA implementation of mfext::sgd_epoch_: checks, allocation, stream, the
// schedule, and the typed parameters of the kernels (sgd_epoch.h).
//
// The argument checks are the CPU op's (csrc/sgd_epoch_checks.cpp), minus those
// that read tensor values: indices, order entries, block offsets and block ids
// are checked on the device by a validation kernel, which reports through the
// error mailbox (raised by the next mfext CUDA call) and keeps the update
// kernels from touching W, H_t and the biases. Blocked when block_ptr and
// schedule are given (deterministic), Hogwild otherwise. Nothing here
// synchronizes the device.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>

#include "../sgd_epoch_checks.h"
#include "glue.h"
#include "sgd_epoch.h"

namespace mfext {
namespace cuda {
namespace {

constexpr const char* kOp = "mfext::sgd_epoch_";

const int64_t* optional_ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<int64_t>() : nullptr;
}

at::Tensor sgd_epoch_cuda(const at::Tensor& W,                         // (m, k), in place
                          const at::Tensor& H_t,                       // (n, k), in place
                          const at::Tensor& user_bias,                 // (m,), in place
                          const at::Tensor& item_bias,                 // (n,), in place
                          const at::Tensor& rows,                      // (nnz,) int32/int64
                          const at::Tensor& cols,                      // (nnz,) same dtype
                          const at::Tensor& vals,                      // (nnz,)
                          const std::optional<at::Tensor>& order,      // (len,) int64 or None
                          const std::optional<at::Tensor>& block_ptr,  // (n_blocks + 1,) or None
                          const std::optional<at::Tensor>& schedule,   // (n_strata, width) or None
                          double lr, double reg, double bias_reg, double global_mean,
                          bool use_biases, bool nonnegative) {
  const SgdSizes s = check_sgd_inputs(kOp, W, H_t, user_bias, item_bias, rows, cols, vals, order,
                                      block_ptr, schedule, lr, reg, bias_reg, global_mean,
                                      use_biases);
  raise_pending_errors();
  // Hogwild's racing warps make the result depend on timing: refuse it (or
  // warn) under torch.use_deterministic_algorithms, as torch's own atomics-based
  // CUDA ops do. The blocked schedule is the deterministic mode.
  if (!block_ptr.has_value()) {
    at::globalContext().alertNotDeterministic(
        "mfext::sgd_epoch_ on CUDA without block_ptr and schedule (Hogwild mode)");
  }
  const c10::cuda::CUDAGuard guard(W.device());
  const at::NoGradGuard no_grad;
  // Read-only inputs in the layout the kernels read; copies only when strided.
  const at::Tensor rows_c = rows.contiguous(), cols_c = cols.contiguous();  // (nnz,)
  const at::Tensor vals_c = vals.contiguous();                              // (nnz,)
  const at::Tensor order_c = order ? order->contiguous() : at::Tensor();            // (len,)
  const at::Tensor block_ptr_c = block_ptr ? block_ptr->contiguous() : at::Tensor();  // (n_blocks + 1,)
  const at::Tensor schedule_c = schedule ? schedule->contiguous() : at::Tensor();   // (n_strata, width)
  at::Tensor sse = at::empty({}, W.options().dtype(at::kDouble));  // 0-dim float64
  const DeviceInfo dev = device_info(W.device());

  dispatch_value_index(kOp, W.scalar_type(), rows.scalar_type(), [&](auto value, auto index) {
    using T = typename decltype(value)::type;
    using I = typename decltype(index)::type;
    SgdEpochParams<T, I> p;
    p.W = W.data_ptr<T>();
    p.Ht = H_t.data_ptr<T>();
    p.user_bias = use_biases ? user_bias.data_ptr<T>() : nullptr;
    p.item_bias = use_biases ? item_bias.data_ptr<T>() : nullptr;
    p.rows = rows_c.const_data_ptr<I>();
    p.cols = cols_c.const_data_ptr<I>();
    p.vals = vals_c.const_data_ptr<T>();
    p.order = optional_ptr(order_c);
    p.block_ptr = optional_ptr(block_ptr_c);
    p.schedule = optional_ptr(schedule_c);
    p.m = s.m;
    p.n = s.n;
    p.k = s.k;
    p.nnz = s.nnz;
    p.len = s.len;
    p.n_blocks = s.n_blocks;
    p.n_strata = s.n_strata;
    p.width = s.width;
    // Cast to the factors' dtype before any arithmetic, as the CPU op does.
    p.lr = static_cast<T>(lr);
    p.reg = static_cast<T>(reg);
    p.bias_reg = static_cast<T>(bias_reg);
    p.global_mean = static_cast<T>(global_mean);
    p.biases = use_biases;
    p.nonnegative = nonnegative;
    p.sse = sse.data_ptr<double>();
    p.mailbox = mailbox_for(W.device());
    const size_t bytes = sgd_epoch_workspace_bytes(p, dev);
    at::Tensor workspace =
        at::empty({static_cast<int64_t>(bytes)}, W.options().dtype(at::kByte));
    MFEXT_CUDA_LAUNCHED(
        sgd_epoch_launch(p, workspace.data_ptr(), bytes, dev, c10::cuda::getCurrentCUDAStream()));
  });
  return sse;
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CUDA, m) {
  m.impl("sgd_epoch_", &sgd_epoch_cuda);
}

}  // namespace cuda
}  // namespace mfext
