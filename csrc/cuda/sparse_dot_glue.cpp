// CUDA implementation of mfext::_sparse_dot: checks, allocation, stream and the
// typed parameters of the kernel (sparse_dot.h). Index errors are reported at
// the next mfext call, as for the other CUDA ops; nothing here synchronizes the
// device.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../sparse_dot_checks.h"
#include "glue.h"
#include "sparse_dot.h"

namespace mfext {
namespace cuda {
namespace {

constexpr const char* kOp = "mfext::_sparse_dot";

// Returns out: (nnz,).
at::Tensor sparse_dot_cuda(const at::Tensor& rows,   // (nnz,) int32/int64
                           const at::Tensor& cols,   // (nnz,) same dtype
                           const at::Tensor& W,      // (m, k)
                           const at::Tensor& H_t) {  // (n, k)
  const SparseDotSizes s = check_sparse_dot_inputs(kOp, rows, cols, W, H_t);
  raise_pending_errors();
  const c10::cuda::CUDAGuard guard(W.device());
  const at::Tensor rows_c = rows.contiguous(), cols_c = cols.contiguous();
  const at::Tensor W_c = W.contiguous(), Ht_c = H_t.contiguous();
  at::Tensor out = at::empty({s.nnz}, W.options());  // (nnz,)
  at::Tensor workspace = at::empty({static_cast<int64_t>(sparse_dot_workspace_bytes())},
                                   W.options().dtype(at::kByte));
  dispatch_value_index(kOp, W.scalar_type(), rows.scalar_type(), [&](auto value, auto index) {
    using T = typename decltype(value)::type;
    using I = typename decltype(index)::type;
    SparseDotParams<T, I> p;
    p.rows = rows_c.const_data_ptr<I>();
    p.cols = cols_c.const_data_ptr<I>();
    p.W = W_c.const_data_ptr<T>();
    p.Ht = Ht_c.const_data_ptr<T>();
    p.m = s.m;
    p.n = s.n;
    p.k = s.k;
    p.nnz = s.nnz;
    p.out = out.data_ptr<T>();
    p.mailbox = mailbox_for(W.device());
    MFEXT_CUDA_LAUNCHED(sparse_dot_launch(p, workspace.data_ptr(), device_info(W.device()),
                                          c10::cuda::getCurrentCUDAStream()));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CUDA, m) {
  m.impl("_sparse_dot", &sparse_dot_cuda);
}

}  // namespace cuda
}  // namespace mfext
