// Launcher of the CUDA SGD epoch (csrc/cuda/sgd_epoch.cu), for
// mfext::sgd_epoch_. Torch-free like kernels.h: raw pointers, sizes, a
// DeviceInfo and a stream, so the kernels compile with nvcc alone and run
// under the CPU emulation (emu/emu.h).
#pragma once

#include "kernels.h"

namespace mfext {
namespace cuda {

struct SgdArgs {
  void* W = nullptr;                  // W: (m, k), row-major contiguous, updated in place
  void* Ht = nullptr;                 // Ht: (n, k), row-major contiguous (H transposed), in place
  void* user_bias = nullptr;          // user_bias: (m,), in place; null without biases
  void* item_bias = nullptr;          // item_bias: (n,), in place; null without biases
  const void* rows = nullptr;         // rows: (nnz,), contiguous, int32 or int64
  const void* cols = nullptr;         // cols: (nnz,), same dtype
  bool idx64 = true;
  const void* vals = nullptr;         // vals: (nnz,), contiguous, dtype of W
  const int64_t* order = nullptr;     // order: (len,) entry ids, or null (storage order, len = nnz)
  const int64_t* block_ptr = nullptr; // block_ptr: (n_blocks + 1,) offsets into the order, or null
  const int64_t* schedule = nullptr;  // schedule: (n_strata, width) block ids or -1, or null
  int64_t m = 0, n = 0, k = 0, nnz = 0, len = 0;
  int64_t n_blocks = 0, n_strata = 0, width = 0;
  DType dtype = DType::f32;
  double lr = 0, reg = 0, bias_reg = 0, global_mean = 0;  // cast to dtype, as on the CPU
  bool biases = false, nonnegative = false;
  double* sse = nullptr;              // sse: 0-dim float64 (NaN on bad input)
  ErrorMailbox* mailbox = nullptr;
  // Hogwild only: at most this many warps (0: as many as the device keeps
  // resident). Tests use 1 to compare with a sequential reference.
  int max_warps = 0;
};

// Bytes of workspace sgd_epoch_launch needs (a Status, a work counter and the
// float64 partial sums: one per warp in Hogwild, one per schedule slot blocked).
size_t sgd_workspace_bytes(const SgdArgs& args, const DeviceInfo& dev);

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
// first error goes to args.mailbox (see kernels.h). Never synchronizes.
cudaError_t sgd_epoch_launch(const SgdArgs& args, void* workspace, size_t workspace_bytes,
                             const DeviceInfo& dev, cudaStream_t stream);

}  // namespace cuda
}  // namespace mfext
