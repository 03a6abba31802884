// The CUDA kernels of mfext::als_normal_equations and mfext::als_solve, as the
// glue sees them (als_glue.cpp): the typed parameters, the plan queries, the
// workspace and the launchers. Torch-free (see types.h): the kernels
// (als_kernel.cu) compile and run under the emulator (emu/emu.h) as well as
// under nvcc. Every template here is instantiated for T in {float, double} and
// I in {int32_t, int64_t}.
#pragma once

#include "errors.h"
#include "types.h"

namespace mfext {
namespace cuda {

// The op's tensors as the kernels read them, filled once by the glue; both ALS
// ops take the same. T: float or double; I: int32_t or int64_t, the dtype of indices.
template <typename T, typename I>
struct AlsParams {
  const int64_t* indptr = nullptr;   // indptr: (R + 1,) offsets into indices/vals
  const I* indices = nullptr;        // indices: (nnz,) rows of F
  const T* vals = nullptr;           // vals: (nnz,)
  const T* F = nullptr;              // F: (n, d) row-major contiguous
  const T* col_offset = nullptr;     // col_offset: (n,) or null
  const T* reg_diag = nullptr;       // reg_diag: (d,)
  const T* base = nullptr;           // base: (d, d) row-major symmetric, or null
  const T* weight = nullptr;         // weight: (nnz,) per-entry Gram weights, or null
  double count_exponent = 0.0;
  const int64_t* order = nullptr;    // order: (R,) a permutation of the rows, the order in
                                     // which blocks take them (longest first), or null
  int64_t R = 0, n = 0, d = 0, nnz = 0;
  ErrorMailbox* mailbox = nullptr;
};

// False when d is too large for the kernels: one gathered factor row must fit
// the block's shared memory with its rhs (d up to about 14,500 in float64 and
// 29,000 in float32 on an H100).
template <typename T, typename I>
bool als_supported(const AlsParams<T, I>& p, bool solve, const DeviceInfo& dev);

// als_solve: true when every row's system is built and solved in shared memory
// (d up to 224 in float64 and 320 in float32 with 227 KiB of shared memory);
// false: the large-d path, each block's system in a global workspace.
template <typename T, typename I>
bool als_solve_in_smem(const AlsParams<T, I>& p, const DeviceInfo& dev);

// Workspace of one call (status and, for the large-d solve, the systems).
template <typename T, typename I>
size_t als_workspace_bytes(const AlsParams<T, I>& p, bool solve, const DeviceInfo& dev);

// gram: (R, d, d) full symmetric, rhs: (R, d). Bad indptr or indices: both NaN,
// the first bad position reported to p.mailbox.
template <typename T, typename I>
cudaError_t als_normal_equations_launch(const AlsParams<T, I>& p, T* gram, T* rhs,
                                        void* workspace, size_t workspace_bytes,
                                        const DeviceInfo& dev, cudaStream_t stream);

// x: (R, d) with gram[r] x[r] = rhs[r]. Bad input: x NaN, reported as above.
template <typename T, typename I>
cudaError_t als_solve_launch(const AlsParams<T, I>& p, T* x, void* workspace,
                             size_t workspace_bytes, const DeviceInfo& dev, cudaStream_t stream);

}  // namespace cuda
}  // namespace mfext
