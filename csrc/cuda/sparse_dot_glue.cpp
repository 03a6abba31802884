// CUDA implementation of mfext::_sparse_dot: checks, allocation and stream
// (kernel in sparse_dot.cu). Index errors are reported at the next mfext call,
// as for the other CUDA ops; nothing here synchronizes the device.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"
#include "glue.h"

namespace mfext {
namespace cuda {
namespace {

constexpr const char* kOp = "mfext::_sparse_dot";

// Returns out: (nnz,).
at::Tensor sparse_dot_cuda(const at::Tensor& rows,   // (nnz,) int32/int64
                           const at::Tensor& cols,   // (nnz,) same dtype
                           const at::Tensor& W,      // (m, k)
                           const at::Tensor& H_t) {  // (n, k)
  const SparseSizes s = check_sparse_dot_inputs(kOp, rows, cols, W, H_t);
  raise_pending_errors();
  const c10::cuda::CUDAGuard guard(W.device());
  const at::Tensor rows_c = rows.contiguous(), cols_c = cols.contiguous();
  const at::Tensor W_c = W.contiguous(), Ht_c = H_t.contiguous();
  at::Tensor out = at::empty({s.nnz}, W.options());
  SparseDotArgs a;
  a.rows = rows_c.const_data_ptr();
  a.cols = cols_c.const_data_ptr();
  a.idx64 = rows.scalar_type() == at::kLong;
  a.W = W_c.const_data_ptr();
  a.Ht = Ht_c.const_data_ptr();
  a.m = s.m;
  a.n = s.n;
  a.k = s.k;
  a.nnz = s.nnz;
  a.dtype = W.scalar_type() == at::kDouble ? DType::f64 : DType::f32;
  a.out = out.data_ptr();
  a.mailbox = mailbox_for(W.device());
  at::Tensor workspace = at::empty({static_cast<int64_t>(sparse_dot_workspace_bytes())},
                                   W.options().dtype(at::kByte));
  MFEXT_CUDA_LAUNCHED(sparse_dot_launch(a, workspace.data_ptr(), device_info(W.device()),
                                        c10::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CUDA, m) {
  m.impl("_sparse_dot", &sparse_dot_cuda);
}

}  // namespace cuda
}  // namespace mfext
