// Launcher of the CUDA SGD epoch (csrc/cuda/sgd_epoch.cu). Raw pointers, sizes
// and a stream: no torch headers, so the kernel compiles with nvcc alone.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace mfext {
namespace cuda {

template <typename scalar_t, typename index_t>
struct SgdEpochArgs {
  scalar_t* W;              // (m, k) row-major, updated in place
  scalar_t* Ht;             // (n, k) row-major (H transposed), updated in place
  scalar_t* user_bias;      // (m,), updated in place when biases
  scalar_t* item_bias;      // (n,), updated in place when biases
  const index_t* rows;      // (nnz,), every value in [0, m) (checked by the caller)
  const index_t* cols;      // (nnz,), every value in [0, n)
  const scalar_t* vals;     // (nnz,)
  const int64_t* order;     // (len,) entry ids in [0, nnz), or null for 0 .. len - 1
  int64_t len;              // entries to process
  int64_t k;                // rank
  scalar_t lr, reg, bias_reg, global_mean;
  bool biases, nonnegative;
  double* sse;              // (1,): the squared errors before each update are added here
};

// One Hogwild epoch: each warp updates one entry at a time (a lane per 1/32 of
// the rank), warps run through the order with a grid-wide stride, and updates
// race without locks as in Hogwild! and cuMF_SGD. The result depends on timing.
// Returns the launch status; never synchronizes the device.
template <typename scalar_t, typename index_t>
cudaError_t launch_sgd_epoch(const SgdEpochArgs<scalar_t, index_t>& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace mfext
