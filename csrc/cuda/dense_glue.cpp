// CUDA implementation of mfext::dense_loss_grad: checks, allocation, stream
// and the choice between the two paths (kernels in dense_fused*.cu, dense_tiled.cu).
//
//   fused  (k <= 64, compute capability >= 8.0, float32/float64): one kernel
//          reads each tile of A once; tensor cores (3xTF32, or 1xTF32 when torch
//          allows TF32 matmuls; FP64 DMMA for float64).
//   tiled  (any k, any GPU, also float16/bfloat16): per block of rows,
//          R = W_blk H (cuBLAS), the fused residual kernel (loss, G in place),
//          grad_W_blk = G H^T, grad_H += W_blk^T G (cuBLAS). The row block
//          is sized to stay in L2; nothing m x n is allocated.
// Outputs follow the CPU contract: loss 0-dim in A's dtype, grad_W / grad_H
// laid out like W / H (empty_like). Nothing here synchronizes the device.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../checks.h"
#include "glue.h"

namespace mfext {
namespace cuda {
namespace {

constexpr const char* kOp = "mfext::dense_loss_grad";
// Row blocks of the tiled path hold about this many bytes of residual (L2-sized).
constexpr int64_t kTiledBlockBytes = 32LL << 20;

at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

DType dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::f32;
    case at::kDouble: return DType::f64;
    case at::kHalf: return DType::f16;
    case at::kBFloat16: return DType::bf16;
    default: TORCH_CHECK(false, kOp, ": unsupported dtype ", t);
  }
}

DenseArgs base_args(const at::Tensor& A, const std::optional<at::Tensor>& weight, int64_t m,
                    int64_t n, int64_t k) {
  DenseArgs a;
  a.A = A.const_data_ptr();
  a.sa0 = A.stride(0);
  a.sa1 = A.stride(1);
  if (weight) {
    a.weight = weight->const_data_ptr();
    a.sw0 = weight->stride(0);
    a.sw1 = weight->stride(1);
  }
  a.m = m;
  a.n = n;
  a.k = k;
  a.dtype = dtype_of(A.scalar_type());
  a.split_tf32 = !at::globalContext().allowTF32CuBLAS();
  a.mailbox = mailbox_for(A.device());
  return a;
}

void run_fused(const at::Tensor& A, const at::Tensor& W, const at::Tensor& H,
               const std::optional<at::Tensor>& weight, const DensePlan& plan, DenseArgs a,
               const DeviceInfo& dev, at::Tensor& loss, at::Tensor& grad_W, at::Tensor& grad_H) {
  const at::Tensor W_c = W.contiguous();  // (m, k): small, copied only if strided
  const at::Tensor H_c = H.contiguous();  // (k, n)
  a.W = W_c.const_data_ptr();
  a.H = H_c.const_data_ptr();
  a.grad_W = grad_W.data_ptr();  // written with its strides by the reduction kernel
  a.sgw0 = grad_W.stride(0);
  a.sgw1 = grad_W.stride(1);
  a.grad_H = grad_H.data_ptr();
  a.sgh0 = grad_H.stride(0);
  a.sgh1 = grad_H.stride(1);
  a.loss = loss.data_ptr();
  at::Tensor workspace =
      at::empty({static_cast<int64_t>(plan.workspace_bytes)}, A.options().dtype(at::kByte));
  MFEXT_CUDA_LAUNCHED(dense_fused_launch(a, plan, workspace.data_ptr(), dev,
                                         c10::cuda::getCurrentCUDAStream()));
  (void)weight;
}

void run_tiled(const at::Tensor& A, const at::Tensor& W, const at::Tensor& H,
               const std::optional<at::Tensor>& weight, DenseArgs a, const DeviceInfo& dev,
               at::Tensor& loss, at::Tensor& grad_W, at::Tensor& grad_H) {
  const int64_t m = a.m, n = a.n, k = a.k;
  const at::ScalarType acc = acc_type(A.scalar_type());
  const auto acc_opts = A.options().dtype(acc);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor W_c = W.to(acc).contiguous();  // (m, k)
  const at::Tensor H_c = H.to(acc).contiguous();  // (k, n)
  const at::Tensor Ht = H_c.t();                  // (n, k) view
  // Gradients in the accumulation dtype, contiguous; copied out at the end if needed.
  const bool direct_W = grad_W.scalar_type() == acc && grad_W.is_contiguous();
  const bool direct_H = grad_H.scalar_type() == acc && grad_H.is_contiguous();
  at::Tensor gW = direct_W ? grad_W : at::empty({m, k}, acc_opts);
  at::Tensor gH = direct_H ? grad_H : at::empty({k, n}, acc_opts);
  const int64_t elem = at::elementSize(acc);
  const int64_t block_rows = std::clamp<int64_t>(kTiledBlockBytes / std::max<int64_t>(1, n * elem), 1, m);
  const int64_t blocks = (m + block_rows - 1) / block_rows;
  const int parts_per_block = dense_residual_parts(block_rows, n, dev);  // the largest block's
  at::Tensor R = at::empty({block_rows, n}, acc_opts);
  // Status, then the partial losses of every row block.
  const int64_t status_bytes = 256;
  at::Tensor small = at::empty({status_bytes + blocks * parts_per_block * 8}, A.options().dtype(at::kByte));
  Status* status = static_cast<Status*>(small.data_ptr());
  double* loss_parts = reinterpret_cast<double*>(static_cast<char*>(small.data_ptr()) + status_bytes);
  C10_CUDA_CHECK(status_init(status, stream));
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = b * block_rows, rows = std::min(block_rows, m - r0);
    at::Tensor R_b = R.narrow(0, 0, rows);
    const at::Tensor W_b = W_c.narrow(0, r0, rows);
    at::mm_out(R_b, W_b, H_c);  // W_blk H
    MFEXT_CUDA_LAUNCHED(dense_residual_launch(R_b.data_ptr(), a, r0, rows,
                                              loss_parts + b * parts_per_block, parts_per_block,
                                              status, stream));
    at::Tensor gW_b = gW.narrow(0, r0, rows);
    at::mm_out(gW_b, R_b, Ht);  // G H^T
    if (b == 0) {
      at::mm_out(gH, W_b.t(), R_b);  // W_blk^T G
    } else {
      gH.addmm_(W_b.t(), R_b);
    }
  }
  const DType acc_dt = acc == at::kDouble ? DType::f64 : DType::f32;
  MFEXT_CUDA_LAUNCHED(poison_on_error_launch(status, gW.data_ptr(), m * k, acc_dt, dev.sm_count, stream));
  MFEXT_CUDA_LAUNCHED(poison_on_error_launch(status, gH.data_ptr(), k * n, acc_dt, dev.sm_count, stream));
  at::Tensor loss_acc = loss.scalar_type() == acc ? loss : at::empty({}, acc_opts);
  ErrorContext ctx;
  ctx.op = kOpDense;
  ctx.weight = nullptr;  // the weight value in the message needs its dtype: f32/f64 only
  if (weight && (A.scalar_type() == at::kFloat || A.scalar_type() == at::kDouble)) {
    ctx.weight = weight->const_data_ptr();
    ctx.ws0 = weight->stride(0);
    ctx.ws1 = weight->stride(1);
  }
  ctx.m = m;
  ctx.n = n;
  MFEXT_CUDA_LAUNCHED(finalize_loss_launch(loss_parts, blocks * parts_per_block, status,
                                           loss_acc.data_ptr(), acc_dt, ctx, a.mailbox, stream));
  if (!loss_acc.is_same(loss)) loss.copy_(loss_acc);
  if (!direct_W) grad_W.copy_(gW);
  if (!direct_H) grad_H.copy_(gH);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dense_loss_grad_cuda(
    const at::Tensor& A,                       // (m, n)
    const at::Tensor& W,                       // (m, k)
    const at::Tensor& H,                       // (k, n)
    const std::optional<at::Tensor>& weight) {  // (m, n) or None
  const DenseSizes s = check_dense_inputs(kOp, A, W, H, weight);
  raise_pending_errors();
  const c10::cuda::CUDAGuard guard(A.device());
  const at::NoGradGuard no_grad;  // the tiled path's products must not record history
  at::Tensor grad_W = at::empty_like(W);
  at::Tensor grad_H = at::empty_like(H);
  at::Tensor loss = at::empty({}, A.options());
  if (s.m == 0 || s.n == 0) {
    grad_W.zero_();
    grad_H.zero_();
    loss.zero_();
    return {loss, grad_W, grad_H};
  }
  const DeviceInfo dev = device_info(A.device());
  const DenseArgs a = base_args(A, weight, s.m, s.n, s.k);
  const bool fusable = A.scalar_type() == at::kFloat || A.scalar_type() == at::kDouble;
  const DensePlan plan = fusable ? dense_fused_plan(a, dev, dev.smem_optin) : DensePlan{};
  const int path = dense_path();
  TORCH_CHECK(path != 1 || plan.supported, kOp,
              ": the fused CUDA path was requested but cannot run here (it needs float32 or "
              "float64, k <= ", kDenseFusedMaxK, " and compute capability >= 8.0; got ",
              A.scalar_type(), ", k = ", s.k, ", compute capability ", dev.cc_major, ".",
              dev.cc_minor, ")");
  if (plan.supported && path != 2) {
    run_fused(A, W, H, weight, plan, a, dev, loss, grad_W, grad_H);
  } else {
    run_tiled(A, W, H, weight, a, dev, loss, grad_W, grad_H);
  }
  return {loss, grad_W, grad_H};
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CUDA, m) {
  m.impl("dense_loss_grad", &dense_loss_grad_cuda);
}

}  // namespace cuda
}  // namespace mfext
