// Shared pieces of the CUDA glue (torch side): device facts, the error
// mailbox, the dense path switch, and launch checking.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include "kernels.h"

namespace mfext {
namespace cuda {

// Facts about `device` that the planners need (read once per device).
DeviceInfo device_info(const at::Device& device);

// The process-wide mailbox of `device` (mapped pinned host memory, created on
// first use). The kernels write to it; the host reads it without a CUDA call.
ErrorMailbox* mailbox_for(const at::Device& device);

// Raises (IndexError / ValueError) the first input error that a CUDA kernel
// reported since the last call, if any. Reads host memory only: it never
// synchronizes, so it sees errors of work that has finished.
void raise_pending_errors();

// Dense path: 0 = auto (fused tensor-core kernel when k <= 64, else tiled),
// 1 = always fused (error if it cannot run), 2 = always tiled. For tests and
// benchmarks (mfext._C._set_cuda_dense_path).
int dense_path();
void set_dense_path(int path);

}  // namespace cuda
}  // namespace mfext

// A launcher's returned error, then the last launch error (C10's check).
#define MFEXT_CUDA_LAUNCHED(expr)        \
  do {                                   \
    C10_CUDA_CHECK(expr);                \
    C10_CUDA_KERNEL_LAUNCH_CHECK();      \
  } while (0)
