// Device helpers shared by the CUDA kernels (*_kernel.cu): the launch macros,
// 16-byte vector loads and stores, warp and block sums, and the Status
// updates. No torch, only CUDA headers and ../element_math.h. With
// MFEXT_CUDA_EMU defined the same code compiles as plain C++ against
// emu/emu.h, a CPU emulation used to test the kernels without a GPU.
#pragma once

#ifdef MFEXT_CUDA_EMU
#include "emu/emu.h"
#define MFEXT_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::emu::launch(kernel, grid, block, smem, stream, __VA_ARGS__)
#define MFEXT_DYNAMIC_SMEM(name) unsigned char* name = ::emu::dynamic_smem()
#else
#include <cuda_runtime.h>
#include <mma.h>
// `kernel` must be a plain name (take a pointer to a template instance first).
#define MFEXT_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
// All shared memory is dynamic, carved by hand (the emulator poisons it).
#define MFEXT_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

#include <cstdint>

#include "../element_math.h"
#include "errors.h"
#include "types.h"

// Variadic so that template arguments' commas need no parentheses.
#define MFEXT_RETURN_IF_ERROR(...)                \
  do {                                            \
    const cudaError_t mfext_err_ = (__VA_ARGS__); \
    if (mfext_err_ != cudaSuccess) return mfext_err_; \
  } while (0)

// After a launch: the launch error, if any (does not synchronize).
#define MFEXT_LAUNCH_CHECK() MFEXT_RETURN_IF_ERROR(cudaGetLastError())

namespace mfext {
namespace cuda {

constexpr int kWarp = 32;

template <typename T>
struct AccType {
  using type = T;
};

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// 16-byte vector of T (float4 / double2) for coalesced row loads.
template <typename T>
struct Vec16;
template <>
struct Vec16<float> {
  using type = float4;
  static constexpr int size = 4;
};
template <>
struct Vec16<double> {
  using type = double2;
  static constexpr int size = 2;
};

// Loads V consecutive elements starting at p (16-byte aligned when V > 1).
template <typename T, int V>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, T (&out)[V]) {
  if constexpr (V == 1) {
    out[0] = p[0];
  } else {
    using vec_t = typename Vec16<T>::type;
    static_assert(V == Vec16<T>::size, "V must be 1 or one 16-byte vector");
    const vec_t v = *reinterpret_cast<const vec_t*>(p);
    const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = e[i];
  }
}

// y[0:V] += x[0:V] with atomics (16-byte vector atomics on sm_90 for float4).
template <typename T, int V>
__device__ __forceinline__ void atomic_add_vec(T* p, const T (&x)[V]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kVector = V == 4 && sizeof(T) == 4;
#else
  constexpr bool kVector = false;
#endif
  if constexpr (kVector) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float4*>(p), make_float4(x[0], x[1], x[2], x[3]));
#endif
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) atomicAdd(p + i, x[i]);
  }
}

template <typename T, int V>
__device__ __forceinline__ void store_vec(T* p, const T (&x)[V]) {
  if constexpr (V == 1) {
    p[0] = x[0];
  } else {
    using vec_t = typename Vec16<T>::type;
    vec_t v;
    T* e = reinterpret_cast<T*>(&v);
#pragma unroll
    for (int i = 0; i < V; ++i) e[i] = x[i];
    *reinterpret_cast<vec_t*>(p) = v;
  }
}

// Sum over aligned groups of `lanes` lanes (a power of two <= 32); every lane of
// the warp must call it, and every lane of a group gets the group's sum. The
// butterfly order is fixed, so the result is deterministic.
template <typename T>
__device__ __forceinline__ T group_allreduce(T v, int lanes) {
  for (int offset = lanes >> 1; offset > 0; offset >>= 1) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Block-wide sum in a fixed order; `scratch` holds blockDim.x / 32 doubles.
// Every thread must call it; thread 0 gets the result.
__device__ __forceinline__ double block_sum(double v, double* scratch) {
  v = group_allreduce(v, kWarp);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int warps = blockDim.x / kWarp;
  __syncthreads();  // scratch may still be in use by an earlier reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < warps; ++w) total += scratch[w];
  }
  return total;
}

// Keeps the smallest bad position seen by this thread; flushed with one atomic.
__device__ __forceinline__ void note_bad(unsigned long long& slot, int64_t position) {
  const unsigned long long p = static_cast<unsigned long long>(position);
  if (p < slot) slot = p;
}

// True when any field of `status` records a bad input.
__device__ __forceinline__ bool has_error(const Status* status) {
  return status->bad_row != kNoError || status->bad_col != kNoError ||
         status->bad_weight != kNoError || status->bad_aux[0] != kNoError ||
         status->bad_aux[1] != kNoError || status->bad_aux[2] != kNoError;
}

__device__ __forceinline__ void flush_bad(unsigned long long* status_field,
                                          unsigned long long local) {
  if (local != kNoError) atomicMin(status_field, local);
}

// Grid-stride scan of a CSR index: the offsets indptr (R + 1,) must be
// non-decreasing within [0, nnz], and the span of indices (nnz,) they cover must
// lie in [0, n). Notes the first bad offset in bad_ptr and the first bad entry in
// bad_idx (this thread's share; flushed by the caller). The span is clamped, since
// indptr may itself be bad, and is the one the CPU checks.
template <typename Idx>
__device__ __forceinline__ void scan_csr(const int64_t* __restrict__ indptr,
                                         const Idx* __restrict__ indices, int64_t R, int64_t n,
                                         int64_t nnz, int64_t start, int64_t stride,
                                         unsigned long long& bad_ptr,
                                         unsigned long long& bad_idx) {
  for (int64_t r = start; r <= R; r += stride) {
    const int64_t v = indptr[r];
    if (v < 0 || v > nnz || (r > 0 && v < indptr[r - 1])) note_bad(bad_ptr, r);
  }
  const int64_t first = indptr[0], last = indptr[R];
  const int64_t lo = first < 0 ? 0 : (first > nnz ? nnz : first);
  const int64_t hi = last < lo ? lo : (last > nnz ? nnz : last);
  for (int64_t e = lo + start; e < hi; e += stride) {
    const int64_t c = int64_t(indices[e]);
    if (c < 0 || c >= n) note_bad(bad_idx, e);
  }
}

}  // namespace cuda
}  // namespace mfext
