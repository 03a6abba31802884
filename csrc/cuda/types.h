// What every torch-free CUDA header shares: the CUDA runtime types (or, with
// MFEXT_CUDA_EMU, their CPU emulation in emu/emu.h), the dtype tag of the
// error helpers, and the device facts the launchers plan with. No torch
// headers: the kernels (*_kernel.cu) compile with nvcc alone and under the
// emulation, so that CI checks them on machines without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef MFEXT_CUDA_EMU
#include "emu/emu.h"
#else
#include <cuda_runtime_api.h>
#endif

namespace mfext {
namespace cuda {

// The dtype of an untyped buffer: the loss the error helpers (errors.h) write
// and the data they poison. Everything else is typed (<op>Params<T, I>).
enum class DType : int { f32 = 0, f64 = 1 };

template <typename T>
constexpr DType dtype_of() {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "float or double");
  return sizeof(T) == 4 ? DType::f32 : DType::f64;
}

// What the planners need to know about the device (the glue reads it once).
struct DeviceInfo {
  int sm_count = 1;
  int cc_major = 0;
  int cc_minor = 0;
  size_t smem_optin = 48 * 1024;  // largest dynamic shared memory a block may opt in to
};

}  // namespace cuda
}  // namespace mfext
