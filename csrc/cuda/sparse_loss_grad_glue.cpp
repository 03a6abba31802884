// CUDA implementation of mfext::sparse_loss_grad: checks, allocation, stream,
// the mode, and the typed parameters of the kernels (sparse_loss_grad.h).
//
// Mode: fast (atomics) by default, deterministic (sorted segment reductions,
// bit-identical across runs) under torch.use_deterministic_algorithms(True).
// Fast is the default for the same reason as in PyTorch's own scatter/index_add
// ops: it is one pass with no sorting, and its gradients differ between runs
// only in the last bits. The loss is computed in a fixed order in both modes.
//
// float16/bfloat16 inputs are computed in float32 copies of the factors and
// values (accumulating in float32) and the results are converted back.
// Nothing here synchronizes the device.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>

#include "../sparse_loss_grad_checks.h"
#include "glue.h"
#include "sparse_loss_grad.h"

namespace mfext {
namespace cuda {
namespace {

constexpr const char* kOp = "mfext::sparse_loss_grad";

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_loss_grad_cuda(
    const at::Tensor& rows,                     // (nnz,) int32/int64
    const at::Tensor& cols,                     // (nnz,) same dtype
    const at::Tensor& vals,                     // (nnz,)
    const at::Tensor& W,                        // (m, k)
    const at::Tensor& H,                        // (k, n); fast as the .t() of a contiguous (n, k)
    const std::optional<at::Tensor>& weight) {  // (nnz,) or None
  const SparseSizes s = check_sparse_inputs(kOp, rows, cols, vals, W, H, weight);
  raise_pending_errors();
  const c10::cuda::CUDAGuard guard(W.device());
  const at::NoGradGuard no_grad;
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  TORCH_CHECK(!deterministic || (s.m < int64_t(UINT32_MAX) && s.n < int64_t(UINT32_MAX)), kOp,
              ": the deterministic CUDA mode sorts 32-bit row and column keys, so it needs "
              "m, n < 2^32 - 1; got W of shape ", W.sizes(), " and H of shape ", H.sizes(),
              ". Turn off torch.use_deterministic_algorithms to use the fast mode.");

  const at::ScalarType dtype = vals.scalar_type();
  const at::ScalarType acc = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const auto acc_opts = W.options().dtype(acc);
  // Row-major views the kernels read; copies only when a layout (or dtype) differs.
  const at::Tensor rows_c = rows.contiguous(), cols_c = cols.contiguous();
  const at::Tensor vals_c = vals.to(acc).contiguous();
  const std::optional<at::Tensor> weight_c =
      weight ? std::optional<at::Tensor>(weight->to(acc).contiguous()) : std::nullopt;
  const at::Tensor W_c = W.to(acc).contiguous();     // (m, k)
  const at::Tensor Ht_c = H.t().to(acc).contiguous();  // (n, k): no copy in the fast layout

  at::Tensor grad_W = at::empty_like(W);
  at::Tensor grad_H = at::empty_like(H);
  const bool direct_W = grad_W.scalar_type() == acc && grad_W.is_contiguous();
  const bool direct_H = grad_H.scalar_type() == acc && grad_H.t().is_contiguous();
  at::Tensor gW = direct_W ? grad_W : at::empty({s.m, s.k}, acc_opts);
  at::Tensor gHt = direct_H ? grad_H.t() : at::empty({s.n, s.k}, acc_opts);
  at::Tensor loss = at::empty({}, acc_opts);  // 0-dim
  const DeviceInfo dev = device_info(W.device());

  dispatch_value_index(kOp, acc, rows.scalar_type(), [&](auto value, auto index) {
    using T = typename decltype(value)::type;
    using I = typename decltype(index)::type;
    SparseLossGradParams<T, I> p;
    p.rows = rows_c.const_data_ptr<I>();
    p.cols = cols_c.const_data_ptr<I>();
    p.vals = vals_c.const_data_ptr<T>();
    p.weight = weight_c ? weight_c->const_data_ptr<T>() : nullptr;
    p.W = W_c.const_data_ptr<T>();
    p.Ht = Ht_c.const_data_ptr<T>();
    p.m = s.m;
    p.n = s.n;
    p.k = s.k;
    p.nnz = s.nnz;
    p.grad_W = gW.data_ptr<T>();
    p.grad_Ht = gHt.data_ptr<T>();
    p.loss = loss.data_ptr<T>();
    p.mailbox = mailbox_for(W.device());
    const size_t bytes = sparse_loss_grad_workspace_bytes(p, deterministic);
    at::Tensor workspace =
        at::empty({static_cast<int64_t>(bytes)}, W.options().dtype(at::kByte));
    MFEXT_CUDA_LAUNCHED(sparse_loss_grad_launch(p, deterministic, workspace.data_ptr(), bytes,
                                                dev, c10::cuda::getCurrentCUDAStream()));
  });
  if (!direct_W) grad_W.copy_(gW);
  if (!direct_H) grad_H.copy_(gHt.t());
  return {loss.scalar_type() == dtype ? loss : loss.to(dtype), grad_W, grad_H};
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CUDA, m) {
  m.impl("sparse_loss_grad", &sparse_loss_grad_cuda);
}

}  // namespace cuda
}  // namespace mfext
