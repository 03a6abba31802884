// The CUDA kernels of mfext::dense_loss_grad, as the glue sees them
// (dense_loss_grad_glue.cpp): the typed parameters and the launchers of the two
// paths. Torch-free (see types.h). Kernels in dense_loss_grad_kernel*.cu (the
// fused path) and dense_loss_grad_tiled_kernel.cu (the tiled path's residual step).
//
// loss = sum(weight * (W H - A)^2), grad_W = 2 (weight * R) H^T,
// grad_H = 2 W^T (weight * R), with R = W H - A.
// Every launcher only enqueues work on `stream` (none synchronizes the device)
// and returns the first error that a launch reported (cudaSuccess otherwise).
#pragma once

#include "errors.h"
#include "types.h"

namespace mfext {
namespace cuda {

// The op's tensors as the kernels read them, filled once by the glue. T is the
// dtype of A and weight. The fused path (T = float or double) reads every
// field. The tiled path (T may also be __half or __nv_bfloat16) reads A,
// weight, their strides and n only: its three products run in cuBLAS from the
// glue, in DenseAcc<T>, so W, H, the gradients and the loss stay null.
template <typename T>
struct DenseLossGradParams {
  const T* A = nullptr;       // A: (m, n), strides (sa0, sa1), any layout
  int64_t sa0 = 0, sa1 = 1;
  const T* weight = nullptr;  // weight: (m, n), strides (sw0, sw1), or null
  int64_t sw0 = 0, sw1 = 1;
  const T* W = nullptr;       // W: (m, k), row-major contiguous
  const T* H = nullptr;       // H: (k, n), row-major contiguous
  int64_t m = 0, n = 0, k = 0;
  bool split_tf32 = true;     // float32 only: 3xTF32 (float32 accuracy) or 1xTF32
  T* grad_W = nullptr;        // grad_W: (m, k), strides (sgw0, sgw1)
  int64_t sgw0 = 0, sgw1 = 1;
  T* grad_H = nullptr;        // grad_H: (k, n), strides (sgh0, sgh1)
  int64_t sgh0 = 0, sgh1 = 1;
  T* loss = nullptr;          // loss: 0-dim
  ErrorMailbox* mailbox = nullptr;
};

// The dtype the tiled path computes in: float64 for float64 inputs, float32
// for float32, float16 and bfloat16.
template <typename T>
struct DenseAcc {
  using type = float;
};
template <>
struct DenseAcc<double> {
  using type = double;
};

// ---------------------------------------------------------------------------
// The fused tensor-core kernel: one pass over A in BM x BN tiles (float32, float64).
constexpr int kDenseFusedMaxK = 64;

struct DensePlan {
  bool supported = false;  // false: use the tiled path (k > 64 or compute capability < 8.0)
  int bm = 0, bn = 0, kp = 0;
  int row_tiles = 0, col_tiles = 0;
  int pr = 0, pc = 0;       // row groups x column groups = blocks
  int max_group_col_tiles = 0;
  size_t smem_bytes = 0;
  size_t workspace_bytes = 0;
};

// The fused path's plan for A: (m, n), rank k, weighted or not, within
// smem_budget bytes of shared memory per block. T: float or double.
template <typename T>
DensePlan dense_fused_plan(int64_t m, int64_t n, int64_t k, bool weighted, const DeviceInfo& dev,
                           size_t smem_budget);

// loss, grad_W and grad_H of `p` in one pass; workspace: plan.workspace_bytes.
template <typename T>
cudaError_t dense_fused_launch(const DenseLossGradParams<T>& p, const DensePlan& plan,
                               void* workspace, const DeviceInfo& dev, cudaStream_t stream);

// ---------------------------------------------------------------------------
// The tiled path's fused residual step on the rows [row0, row0 + rows) of A:
// R: (rows, n) contiguous, DenseAcc<T>, holds W_tile H on entry and
// G = 2 weight (W_tile H - A_tile) on exit. A and weight are read from `p` with
// their strides. The tile's partial losses go to loss_parts[0 : parts], every
// slot written (0 where a block found no work), so the caller sizes the slots
// once, for its largest tile: parts = dense_residual_parts(largest_rows, n, dev) >= 1.
// T: float, double, and (not under the emulation) __half and __nv_bfloat16.
int dense_residual_parts(int64_t rows, int64_t n, const DeviceInfo& dev);

template <typename T>
cudaError_t dense_residual_launch(typename DenseAcc<T>::type* R, const DenseLossGradParams<T>& p,
                                  int64_t row0, int64_t rows, double* loss_parts, int parts,
                                  Status* status, cudaStream_t stream);

}  // namespace cuda
}  // namespace mfext
