// The CUDA kernels of mfext::implicit_als_cg_, as the glue sees them
// (implicit_als_cg_glue.cpp): the typed parameters and the launchers of one
// call's kernels. The glue runs the GEMMs (cuBLAS, at::mm_out) between them:
//   validate; PG = X @ gram; rows(first); cg_steps x { PG = P @ gram; rows(step) }; finish.
// Torch-free (see types.h): the kernels compile and run under the emulator
// (emu/emu.h) as well as under nvcc. Every template is instantiated for T in
// {float, double} and I in {int32_t, int64_t}.
#pragma once

#include "errors.h"
#include "types.h"

namespace mfext {
namespace cuda {

template <typename T, typename I>
struct ImplicitCgParams {
  const int64_t* indptr = nullptr;  // indptr: (R + 1,) offsets into indices/weight
  const I* indices = nullptr;       // indices: (nnz,) rows of Y
  const T* weight = nullptr;        // weight: (nnz,) c_e - 1
  const T* Y = nullptr;             // Y: (n, d) row-major contiguous
  T* X = nullptr;                   // X: (R, d) contiguous, updated in place
  T* r = nullptr;                   // r: (R, d) residuals
  T* p = nullptr;                   // p: (R, d) search directions
  T* PG = nullptr;                  // PG: (R, d) P @ gram (X @ gram before the first pass)
  T* rs = nullptr;                  // rs: (R,) |r|^2 of each row
  unsigned char* active = nullptr;  // active: (R,) 1 while the row iterates
  int64_t R = 0, n = 0, d = 0, nnz = 0;
  ErrorMailbox* mailbox = nullptr;
};

// Largest d the kernels take (the row in registers up to 256, in global memory beyond).
constexpr int64_t kImplicitCgMaxD = int64_t(1) << 24;

// Bytes of the call's workspace (the Status and the report's scratch).
size_t implicit_cg_workspace_bytes();

// Status := none, then the checks of indptr (non-decreasing within [0, nnz])
// and of indices over indptr[0]..indptr[R] (in [0, n)).
template <typename T, typename I>
cudaError_t implicit_cg_validate_launch(const ImplicitCgParams<T, I>& p, void* workspace,
                                        const DeviceInfo& dev, cudaStream_t stream);

// One pass over the rows. first: PG holds X @ gram; r = p = b - A x, rs, active.
// Else: PG holds P @ gram; the CG step of every active row. Does nothing when
// the Status holds an error.
template <typename T, typename I>
cudaError_t implicit_cg_rows_launch(const ImplicitCgParams<T, I>& p, bool first,
                                    const void* workspace, const DeviceInfo& dev,
                                    cudaStream_t stream);

// Last: X := NaN and the mailbox report when the Status holds an error.
template <typename T, typename I>
cudaError_t implicit_cg_finish_launch(const ImplicitCgParams<T, I>& p, void* workspace,
                                      const DeviceInfo& dev, cudaStream_t stream);

}  // namespace cuda
}  // namespace mfext
