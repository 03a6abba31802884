// The CUDA kernel of mfext::_sparse_dot, as the glue sees it
// (sparse_dot_glue.cpp): the typed parameters, the workspace and the launcher.
// Torch-free (see types.h); the kernel is in sparse_dot_kernel.cu.
//
// out[e] = W[rows[e]] . Ht[cols[e]]. The launcher only enqueues work on
// `stream` (it never synchronizes the device) and returns the first error that
// a launch reported (cudaSuccess otherwise).
#pragma once

#include "errors.h"
#include "types.h"

namespace mfext {
namespace cuda {

// The op's tensors as the kernel reads them, filled once by the glue.
// T: float or double; I: int32_t or int64_t, the dtype of rows and cols.
template <typename T, typename I>
struct SparseDotParams {
  const I* rows = nullptr;  // rows: (nnz,), contiguous
  const I* cols = nullptr;  // cols: (nnz,), contiguous
  const T* W = nullptr;     // W: (m, k), row-major contiguous
  const T* Ht = nullptr;    // Ht: (n, k), row-major contiguous
  int64_t m = 0, n = 0, k = 0, nnz = 0;
  T* out = nullptr;         // out: (nnz,)
  ErrorMailbox* mailbox = nullptr;
};

// Workspace bytes of one call (the Status and the error report's scratch).
size_t sparse_dot_workspace_bytes();

// Bad indices: out NaN, the first bad position reported to p.mailbox.
// Instantiated for T in {float, double}, I in {int32_t, int64_t}.
template <typename T, typename I>
cudaError_t sparse_dot_launch(const SparseDotParams<T, I>& p, void* workspace,
                              const DeviceInfo& dev, cudaStream_t stream);

}  // namespace cuda
}  // namespace mfext
