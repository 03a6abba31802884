// Launchers of the CUDA ALS kernels (als.cu): mfext::als_normal_equations and
// mfext::als_solve. Torch-free (raw pointers, sizes, a stream), so the kernels
// compile and run under the emulator (emu/emu.h) as well as under nvcc.
#pragma once

#include "kernels.h"

namespace mfext {
namespace cuda {

struct AlsArgs {
  const int64_t* indptr = nullptr;   // indptr: (R + 1,) offsets into indices/vals
  const void* indices = nullptr;     // indices: (nnz,) int32 or int64 rows of F
  bool idx64 = true;
  const void* vals = nullptr;        // vals: (nnz,)
  const void* F = nullptr;           // F: (n, d) row-major contiguous
  const void* col_offset = nullptr;  // col_offset: (n,) or null
  const void* reg_diag = nullptr;    // reg_diag: (d,)
  double count_exponent = 0.0;
  const int64_t* order = nullptr;    // order: (R,) a permutation of the rows, the order in
                                     // which blocks take them (longest first), or null
  int64_t R = 0, n = 0, d = 0, nnz = 0;
  DType dtype = DType::f32;          // f32 or f64
  ErrorMailbox* mailbox = nullptr;
};

// False when d is too large for the kernels: one gathered factor row must fit
// the block's shared memory with its rhs (d up to about 14,500 in float64 and
// 29,000 in float32 on an H100).
bool als_supported(const AlsArgs& args, bool solve, const DeviceInfo& dev);

// als_solve: true when every row's system is built and solved in shared memory
// (d up to 224 in float64 and 320 in float32 with 227 KiB of shared memory);
// false: the large-d path, each block's system in a global workspace.
bool als_solve_in_smem(const AlsArgs& args, const DeviceInfo& dev);

// Workspace of one call (status and, for the large-d solve, the systems).
size_t als_workspace_bytes(const AlsArgs& args, bool solve, const DeviceInfo& dev);

// gram: (R, d, d) full symmetric, rhs: (R, d). Bad indptr or indices: both NaN,
// the first bad position reported to args.mailbox.
cudaError_t als_normal_equations_launch(const AlsArgs& args, void* gram, void* rhs,
                                        void* workspace, size_t workspace_bytes,
                                        const DeviceInfo& dev, cudaStream_t stream);

// x: (R, d) with gram[r] x[r] = rhs[r]. Bad input: x NaN, reported as above.
cudaError_t als_solve_launch(const AlsArgs& args, void* x, void* workspace,
                             size_t workspace_bytes, const DeviceInfo& dev, cudaStream_t stream);

}  // namespace cuda
}  // namespace mfext
