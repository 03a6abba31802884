// The CUDA kernels of mfext::sgd_epoch_, as the glue sees them
// (sgd_epoch_glue.cpp): the typed parameters, the workspace and the launcher.
// Torch-free (see types.h): the kernels (sgd_epoch_kernel.cu) compile with nvcc
// alone and run under the CPU emulation (emu/emu.h).
#pragma once

#include "errors.h"
#include "types.h"

namespace mfext {
namespace cuda {

// The op's tensors and scalars as the kernels read them, filled once by the
// glue. T: float or double; I: int32_t or int64_t, the dtype of rows and cols.
template <typename T, typename I>
struct SgdEpochParams {
  T* W = nullptr;                     // W: (m, k), row-major contiguous, updated in place
  T* Ht = nullptr;                    // Ht: (n, k), row-major contiguous (H transposed), in place
  T* user_bias = nullptr;             // user_bias: (m,), in place; null without biases
  T* item_bias = nullptr;             // item_bias: (n,), in place; null without biases
  const I* rows = nullptr;            // rows: (nnz,), contiguous
  const I* cols = nullptr;            // cols: (nnz,), contiguous
  const T* vals = nullptr;            // vals: (nnz,), contiguous
  const int64_t* order = nullptr;     // order: (len,) entry ids, or null (storage order, len = nnz)
  const int64_t* block_ptr = nullptr; // block_ptr: (n_blocks + 1,) offsets into the order, or null
  const int64_t* schedule = nullptr;  // schedule: (n_strata, width) block ids or -1, or null
  int64_t m = 0, n = 0, k = 0, nnz = 0, len = 0;
  int64_t n_blocks = 0, n_strata = 0, width = 0;
  // The op's float arguments cast to T, as the CPU op does, before any arithmetic.
  T lr = 0, reg = 0, bias_reg = 0, global_mean = 0;
  bool biases = false, nonnegative = false;
  double* sse = nullptr;              // sse: 0-dim float64 (NaN on bad input)
  ErrorMailbox* mailbox = nullptr;
  // Hogwild only: at most this many warps (0: as many as the device keeps
  // resident). Tests use 1 to compare with a sequential reference.
  int max_warps = 0;
};

// Bytes of workspace sgd_epoch_launch needs (a Status, a work counter and the
// float64 partial sums: one per warp in Hogwild, one per schedule slot blocked).
template <typename T, typename I>
size_t sgd_epoch_workspace_bytes(const SgdEpochParams<T, I>& p, const DeviceInfo& dev);

// One epoch, in place. Blocked (block_ptr and schedule given): the strata (rows
// of schedule) run one after another, one launch each; block schedule[s, j]
// goes to one group of lanes, which runs its entries in order. When the blocks
// of a stratum share no row and no column, no factor is written by two groups,
// so the result repeats bit for bit and equals running the blocks one after
// another in schedule order, up to the rounding of the dot products. Hogwild
// (both null): lock-free, as cuMF_SGD; warps claim chunks of the order and
// race on shared factors, so the result depends on timing.
//
// A validation kernel runs first; on any bad index, offset or block id the
// update kernels leave W, Ht and the biases untouched, sse becomes NaN and the
// first error goes to p.mailbox (see errors.h). Never synchronizes.
// Both templates are instantiated for T in {float, double}, I in {int32_t, int64_t}.
template <typename T, typename I>
cudaError_t sgd_epoch_launch(const SgdEpochParams<T, I>& p, void* workspace,
                             size_t workspace_bytes, const DeviceInfo& dev, cudaStream_t stream);

}  // namespace cuda
}  // namespace mfext
