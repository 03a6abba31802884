// Shared pieces of the CUDA glue (the torch side, *_glue.cpp): device facts,
// the error mailbox, the dense path switch, launch checking, and the dtype
// dispatch that turns tensors into the kernels' typed parameters.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include <cstdint>

#include "errors.h"
#include "types.h"

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

// A type as a value, for the generic lambdas of the dispatch helpers:
// `[&](auto value, auto index) { using T = typename decltype(value)::type; ... }`.
template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) with T the C++ type of a float32 or float64 tensor: the
// one place where a value dtype becomes the T of an <Op>Params<T, I>. The op's
// checks have already accepted the dtype; anything else is an internal error.
template <typename F>
decltype(auto) dispatch_value(const char* op, at::ScalarType value, F&& f) {
  TORCH_CHECK(value == at::kFloat || value == at::kDouble, op,
              ": internal error: no CUDA kernel for dtype ", value);
  if (value == at::kFloat) return f(TypeTag<float>{});
  return f(TypeTag<double>{});
}

// Calls f(TypeTag<T>{}, TypeTag<I>{}) with T the C++ type of a float32/float64
// value tensor and I that of an int32/int64 index tensor (rows, cols, indices).
template <typename F>
decltype(auto) dispatch_value_index(const char* op, at::ScalarType value, at::ScalarType index,
                                    F&& f) {
  TORCH_CHECK(index == at::kInt || index == at::kLong, op,
              ": internal error: no CUDA kernel for index dtype ", index);
  return dispatch_value(op, value, [&](auto value_tag) -> decltype(auto) {
    if (index == at::kInt) return f(value_tag, TypeTag<int32_t>{});
    return f(value_tag, TypeTag<int64_t>{});
  });
}

}  // namespace cuda
}  // namespace mfext

// A launcher's returned error, then the last launch error (C10's check).
#define MFEXT_CUDA_LAUNCHED(expr)        \
  do {                                   \
    C10_CUDA_CHECK(expr);                \
    C10_CUDA_KERNEL_LAUNCH_CHECK();      \
  } while (0)
