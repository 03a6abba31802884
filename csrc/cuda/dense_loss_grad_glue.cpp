// CUDA implementation of mfext::dense_loss_grad: checks, allocation, stream,
// the choice between the two paths and the typed parameters of their kernels
// (dense_loss_grad.h; kernels in dense_loss_grad_kernel*.cu, the tiled path's
// residual step in dense_loss_grad_tiled_kernel.cu).
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

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "../dense_loss_grad_checks.h"
#include "dense_loss_grad.h"
#include "glue.h"

namespace mfext {
namespace cuda {
namespace {

constexpr const char* kOp = "mfext::dense_loss_grad";
// Row blocks of the tiled path hold about this many bytes of residual (L2-sized).
constexpr int64_t kTiledBlockBytes = 32LL << 20;

// A tensor's data as T: float, double, __half or __nv_bfloat16 (the CUDA
// types with at::Half's and at::BFloat16's layouts).
template <typename T>
const T* typed_data(const at::Tensor& t) {
  return static_cast<const T*>(t.const_data_ptr());
}

// Calls f(TypeTag<T>{}) with T the C++ type of A's dtype: dispatch_value's
// float32 and float64, and the half types that only the tiled path takes.
template <typename F>
void dispatch_dense_value(at::ScalarType dtype, F&& f) {
  if (dtype == at::kHalf) return f(TypeTag<__half>{});
  if (dtype == at::kBFloat16) return f(TypeTag<__nv_bfloat16>{});
  dispatch_value(kOp, dtype, f);
}

// The fields both paths read: A and weight with their strides, the sizes, the
// TF32 mode and the mailbox. The fused path adds the factors and the outputs.
template <typename T>
DenseLossGradParams<T> input_params(const at::Tensor& A,                       // (m, n)
                                    const std::optional<at::Tensor>& weight,  // (m, n) or None
                                    const DenseSizes& s) {
  DenseLossGradParams<T> p;
  p.A = typed_data<T>(A);
  p.sa0 = A.stride(0);
  p.sa1 = A.stride(1);
  if (weight) {
    p.weight = typed_data<T>(*weight);
    p.sw0 = weight->stride(0);
    p.sw1 = weight->stride(1);
  }
  p.m = s.m;
  p.n = s.n;
  p.k = s.k;
  p.split_tf32 = !at::globalContext().allowTF32CuBLAS();
  p.mailbox = mailbox_for(A.device());
  return p;
}

// T: float or double.
template <typename T>
void run_fused(const at::Tensor& A, const at::Tensor& W, const at::Tensor& H,
               const std::optional<at::Tensor>& weight, const DenseSizes& s,
               const DensePlan& plan, const DeviceInfo& dev, at::Tensor& loss,
               at::Tensor& grad_W, at::Tensor& grad_H) {
  const at::Tensor W_c = W.contiguous();  // (m, k): small, copied only if strided
  const at::Tensor H_c = H.contiguous();  // (k, n)
  DenseLossGradParams<T> p = input_params<T>(A, weight, s);
  p.W = W_c.const_data_ptr<T>();
  p.H = H_c.const_data_ptr<T>();
  p.grad_W = grad_W.data_ptr<T>();  // written with its strides by the reduction kernel
  p.sgw0 = grad_W.stride(0);
  p.sgw1 = grad_W.stride(1);
  p.grad_H = grad_H.data_ptr<T>();
  p.sgh0 = grad_H.stride(0);
  p.sgh1 = grad_H.stride(1);
  p.loss = loss.data_ptr<T>();
  at::Tensor workspace =
      at::empty({static_cast<int64_t>(plan.workspace_bytes)}, A.options().dtype(at::kByte));
  MFEXT_CUDA_LAUNCHED(dense_fused_launch(p, plan, workspace.data_ptr(), dev,
                                         c10::cuda::getCurrentCUDAStream()));
}

// T: float, double, __half or __nv_bfloat16; computed in DenseAcc<T>.
template <typename T>
void run_tiled(const at::Tensor& A, const at::Tensor& W, const at::Tensor& H,
               const std::optional<at::Tensor>& weight, const DenseSizes& s,
               const DeviceInfo& dev, at::Tensor& loss, at::Tensor& grad_W, at::Tensor& grad_H) {
  using Acc = typename DenseAcc<T>::type;
  const int64_t m = s.m, n = s.n, k = s.k;
  const DenseLossGradParams<T> p = input_params<T>(A, weight, s);  // A and weight only
  const at::ScalarType acc = std::is_same_v<Acc, double> ? at::kDouble : at::kFloat;
  const auto acc_opts = A.options().dtype(acc);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor W_c = W.to(acc).contiguous();  // (m, k)
  const at::Tensor H_c = H.to(acc).contiguous();  // (k, n)
  const at::Tensor Ht = H_c.t();                  // (n, k) view
  // Gradients in the accumulation dtype, contiguous; copied out at the end if needed.
  const bool direct_W = grad_W.scalar_type() == acc && grad_W.is_contiguous();
  const bool direct_H = grad_H.scalar_type() == acc && grad_H.is_contiguous();
  at::Tensor gW = direct_W ? grad_W : at::empty({m, k}, acc_opts);  // (m, k)
  at::Tensor gH = direct_H ? grad_H : at::empty({k, n}, acc_opts);  // (k, n)
  const int64_t elem = at::elementSize(acc);
  const int64_t block_rows = std::clamp<int64_t>(kTiledBlockBytes / std::max<int64_t>(1, n * elem), 1, m);
  const int64_t blocks = (m + block_rows - 1) / block_rows;
  const int parts_per_block = dense_residual_parts(block_rows, n, dev);  // the largest block's
  at::Tensor R = at::empty({block_rows, n}, acc_opts);  // (block_rows, n)
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
    MFEXT_CUDA_LAUNCHED(dense_residual_launch(R_b.data_ptr<Acc>(), p, r0, rows,
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
  const DType acc_dt = dtype_of<Acc>();
  MFEXT_CUDA_LAUNCHED(poison_on_error_launch(status, gW.data_ptr(), m * k, acc_dt, dev.sm_count, stream));
  MFEXT_CUDA_LAUNCHED(poison_on_error_launch(status, gH.data_ptr(), k * n, acc_dt, dev.sm_count, stream));
  at::Tensor loss_acc = loss.scalar_type() == acc ? loss : at::empty({}, acc_opts);
  ErrorContext ctx;
  ctx.op = kOpDense;
  ctx.weight = nullptr;  // the weight value in the message needs its dtype: f32/f64 only
  if (weight && std::is_same_v<T, Acc>) {
    ctx.weight = p.weight;
    ctx.ws0 = p.sw0;
    ctx.ws1 = p.sw1;
  }
  ctx.m = m;
  ctx.n = n;
  MFEXT_CUDA_LAUNCHED(finalize_loss_launch(loss_parts, blocks * parts_per_block, status,
                                           loss_acc.data_ptr(), acc_dt, ctx, p.mailbox, stream));
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
  at::Tensor grad_W = at::empty_like(W);  // (m, k)
  at::Tensor grad_H = at::empty_like(H);  // (k, n)
  at::Tensor loss = at::empty({}, A.options());  // 0-dim
  if (s.m == 0 || s.n == 0) {
    grad_W.zero_();
    grad_H.zero_();
    loss.zero_();
    return {loss, grad_W, grad_H};
  }
  const DeviceInfo dev = device_info(A.device());
  dispatch_dense_value(A.scalar_type(), [&](auto value) {
    using T = typename decltype(value)::type;
    constexpr bool fusable = std::is_same_v<T, float> || std::is_same_v<T, double>;
    DensePlan plan;
    if constexpr (fusable) {
      plan = dense_fused_plan<T>(s.m, s.n, s.k, weight.has_value(), dev, dev.smem_optin);
    }
    const int path = dense_path();
    TORCH_CHECK(path != 1 || plan.supported, kOp,
                ": the fused CUDA path was requested but cannot run here (it needs float32 or "
                "float64, k <= ", kDenseFusedMaxK, " and compute capability >= 8.0; got ",
                A.scalar_type(), ", k = ", s.k, ", compute capability ", dev.cc_major, ".",
                dev.cc_minor, ")");
    if constexpr (fusable) {
      if (plan.supported && path != 2) {
        run_fused<T>(A, W, H, weight, s, plan, dev, loss, grad_W, grad_H);
        return;
      }
    }
    run_tiled<T>(A, W, H, weight, s, dev, loss, grad_W, grad_H);
  });
  return {loss, grad_W, grad_H};
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CUDA, m) {
  m.impl("dense_loss_grad", &dense_loss_grad_cuda);
}

}  // namespace cuda
}  // namespace mfext
