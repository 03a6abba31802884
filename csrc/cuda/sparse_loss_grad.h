// The CUDA kernels of mfext::sparse_loss_grad, as the glue sees them
// (sparse_loss_grad_glue.cpp): the typed parameters, the workspace and the
// launcher. Torch-free (see types.h). Kernels in sparse_loss_grad_kernel.cu,
// the deterministic mode's sorts in sparse_loss_grad_sort_kernel.cu.
//
// The loss over observed entries (rows[e], cols[e], vals[e]):
// loss = sum_e weight[e] (W[rows[e]] . Ht[cols[e]] - vals[e])^2, and its gradients.
// The launcher only enqueues work on `stream` (it never synchronizes the device)
// and returns the first error that a launch reported (cudaSuccess otherwise).
#pragma once

#include "errors.h"
#include "types.h"

namespace mfext {
namespace cuda {

// The op's tensors as the kernels read them, filled once by the glue.
// T: float or double (the glue computes float16/bfloat16 in float32 copies);
// I: int32_t or int64_t, the dtype of rows and cols.
template <typename T, typename I>
struct SparseLossGradParams {
  const I* rows = nullptr;    // rows: (nnz,), contiguous
  const I* cols = nullptr;    // cols: (nnz,), contiguous
  const T* vals = nullptr;    // vals: (nnz,), contiguous
  const T* weight = nullptr;  // weight: (nnz,), contiguous, or null
  const T* W = nullptr;       // W: (m, k), row-major contiguous
  const T* Ht = nullptr;      // Ht: (n, k), row-major contiguous (= H.t())
  int64_t m = 0, n = 0, k = 0, nnz = 0;
  T* grad_W = nullptr;        // grad_W: (m, k), row-major contiguous (zeroed here)
  T* grad_Ht = nullptr;       // grad_Ht: (n, k), row-major contiguous (zeroed here)
  T* loss = nullptr;          // loss: 0-dim
  ErrorMailbox* mailbox = nullptr;
};

// Entries per work unit: fixed, so every result is independent of the grid size.
constexpr int64_t kSparseUnit = 256;

// Workspace bytes of one call; deterministic: the sorted mode (see the kernel file).
// Both templates are instantiated for T in {float, double}, I in {int32_t, int64_t}.
template <typename T, typename I>
size_t sparse_loss_grad_workspace_bytes(const SparseLossGradParams<T, I>& p, bool deterministic);

template <typename T, typename I>
cudaError_t sparse_loss_grad_launch(const SparseLossGradParams<T, I>& p, bool deterministic,
                                    void* workspace, size_t workspace_bytes,
                                    const DeviceInfo& dev, cudaStream_t stream);

namespace sparse {

// The deterministic mode's sort (sparse_loss_grad_sort_kernel.cu): sorts
// (keys_in, ids_in) by key (stable: equal keys keep their entry order),
// considering key bits [0, end_bit). temp may be null to query temp_bytes.
// keys_in, keys_out: (count,); ids_in, ids_out: (count,), ID = int32_t or int64_t.
template <typename ID>
cudaError_t sort_pairs(void* temp, size_t& temp_bytes, const uint32_t* keys_in,
                       uint32_t* keys_out, const ID* ids_in, ID* ids_out, int64_t count,
                       int end_bit, cudaStream_t stream);

}  // namespace sparse
}  // namespace cuda
}  // namespace mfext
