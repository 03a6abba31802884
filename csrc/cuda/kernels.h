// Launchers for the CUDA kernels. Torch-free: raw pointers, sizes and a
// cudaStream_t, so that the .cu files compile (and are checked by CI) on
// machines without a GPU or a CUDA build of torch. The glue in *_glue.cpp does
// the argument checks, the allocation and the registration.
//
// Every launcher only enqueues work on `stream`: none synchronizes the device.
// Each returns the first error that a launch reported (cudaSuccess otherwise).
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

// f16/bf16 only as the input dtype of the tiled dense path's residual step:
// every other kernel takes float32 or float64 (the glue computes half types in float32).
enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

// What the planners need to know about the device (the glue reads it once).
struct DeviceInfo {
  int sm_count = 1;
  int cc_major = 0;
  int cc_minor = 0;
  size_t smem_optin = 48 * 1024;  // largest dynamic shared memory a block may opt in to
};

// ---------------------------------------------------------------------------
// Input errors found on the device, reported without synchronizing.
//
// Each call gets a Status in its workspace (memset to 0x7F bytes = "none"); the
// kernels atomicMin the position of the first bad entry into it. The loss
// kernel then writes NaN into the loss and, for the first error only, copies a
// description into the process-wide ErrorMailbox, which lives in mapped
// (zero-copy) pinned host memory. The host reads the mailbox, a plain memory
// read, at the start of the next mfext CUDA op or in mfext.cuda_check_errors()
// and raises the error there.
constexpr unsigned long long kNoError = 0x7F7F7F7F7F7F7F7FULL;

struct Status {
  unsigned long long bad_row;     // first entry whose row is out of range
  unsigned long long bad_col;     // first entry whose column is out of range
  unsigned long long bad_weight;  // first negative/NaN/Inf weight (linear index); als_*: reg_diag
  // First bad position in each of the op's int64 auxiliary arrays
  // (ErrorContext::aux): sgd_epoch_ 0 = block_ptr, 1 = schedule, 2 = order;
  // als_* 0 = indptr. Reported before rows and columns, as on the CPU.
  unsigned long long bad_aux[3];
};

enum ErrorKind : int {
  kErrNone = 0,
  kErrRow = 1,
  kErrCol = 2,
  kErrWeight = 3,
  kErrAux0 = 4,  // kErrAux0 + a: Status::bad_aux[a]
};
enum OpId : int {
  kOpDense = 1,
  kOpSparse = 2,
  kOpSgd = 3,
  kOpAlsNormal = 4,
  kOpAlsSolve = 5,
  kOpSparseDot = 6,
};

// The device claims the mailbox with a ticket: a loss kernel may fill it only
// while every earlier claim has been consumed (its claim count equals
// `consumed`), so a pending error is never overwritten, and the host frees it
// by bumping `consumed`: no re-arming launch, hence no stream to order it on.
struct ErrorMailbox {
  volatile int ready;  // 1 once the fields below describe an error
  volatile unsigned int consumed;  // errors the host has read (written by the host only)
  int op;              // OpId
  int kind;            // ErrorKind
  int has_weight;      // 1 when `weight` holds the bad weight's value
  long long position;  // entry index (sparse) or i * n + j (dense)
  long long value;     // the bad index value (row/col/aux errors)
  long long bound;     // m (rows), n (columns), ErrorContext::aux_bound (aux); n for dense weights
  double weight;       // the bad weight value (weight errors)
};

// What the loss kernel needs to describe an error.
struct ErrorContext {
  const void* rows = nullptr;  // (nnz,) sparse only
  const void* cols = nullptr;  // (nnz,) sparse only
  bool idx64 = false;          // rows/cols are int64 (else int32)
  const void* weight = nullptr;  // als_*: reg_diag (d,)
  int64_t ws0 = 0, ws1 = 1;    // weight strides (dense: (m, n); sparse and als_*: ws0 = 1)
  int64_t m = 0, n = 0;
  const long long* aux[3] = {nullptr, nullptr, nullptr};  // int64 auxiliary arrays (see Status)
  int64_t aux_bound[3] = {0, 0, 0};  // the bound each one's message names
  int op = 0;
};

// Marks `status` as "no error" (a cudaMemsetAsync).
cudaError_t status_init(Status* status, cudaStream_t stream);

// Reduces `count` float64 partial losses in a fixed order into loss (0-dim,
// dtype), or NaN when `status` holds an error, which is then reported to
// `mailbox` (may be null).
cudaError_t finalize_loss_launch(const double* parts, int64_t count, const Status* status,
                                 void* loss, DType dtype, const ErrorContext& ctx,
                                 ErrorMailbox* mailbox, cudaStream_t stream);

// Overwrites `count` contiguous elements with NaN when `status` holds an error.
// Costs one launch that returns at once otherwise.
cudaError_t poison_on_error_launch(const Status* status, void* data, int64_t count, DType dtype,
                                   int sm_count, cudaStream_t stream);

// The host's side of the mailbox: after copying an error out, frees the
// mailbox for the next one (ready = 0, then consumed + 1, in that order).
void mailbox_consume(ErrorMailbox* host_view);

// ---------------------------------------------------------------------------
// Dense: loss = sum(weight * (W H - A)^2), grad_W = 2 (weight * R) H^T,
// grad_H = 2 W^T (weight * R).
struct DenseArgs {
  const void* A = nullptr;       // A: (m, n), strides (sa0, sa1), any
  int64_t sa0 = 0, sa1 = 1;
  const void* weight = nullptr;  // weight: (m, n), strides (sw0, sw1), or null
  int64_t sw0 = 0, sw1 = 1;
  const void* W = nullptr;       // W: (m, k), row-major contiguous
  const void* H = nullptr;       // H: (k, n), row-major contiguous
  int64_t m = 0, n = 0, k = 0;
  DType dtype = DType::f32;
  bool split_tf32 = true;        // float32 only: 3xTF32 (float32 accuracy) or 1xTF32
  void* grad_W = nullptr;        // grad_W: (m, k), strides (sgw0, sgw1)
  int64_t sgw0 = 0, sgw1 = 1;
  void* grad_H = nullptr;        // grad_H: (k, n), strides (sgh0, sgh1)
  int64_t sgh0 = 0, sgh1 = 1;
  void* loss = nullptr;          // loss: 0-dim, dtype
  ErrorMailbox* mailbox = nullptr;
};

// The fused tensor-core kernel: one pass over A in BM x BN tiles.
constexpr int kDenseFusedMaxK = 64;

struct DensePlan {
  bool supported = false;  // false: use the tiled path (k > 64 or compute capability < 8.0)
  int bm = 0, bn = 0, kp = 0;
  int row_tiles = 0, col_tiles = 0;
  int pr = 0, pc = 0;       // row groups x column groups = blocks
  int max_group_col_tiles = 0;
  size_t smem_bytes = 0;
  size_t workspace_bytes = 0;
};

DensePlan dense_fused_plan(const DenseArgs& args, const DeviceInfo& dev, size_t smem_budget);
cudaError_t dense_fused_launch(const DenseArgs& args, const DensePlan& plan, void* workspace,
                               const DeviceInfo& dev, cudaStream_t stream);

// The tiled path's fused residual step on the rows [row0, row0 + rows) of A:
// R: (rows, n) contiguous, float32 (float32/f16/bf16 inputs) or float64, holds
// W_tile H on entry and G = 2 weight (W_tile H - A_tile) on exit. A and weight
// are read from `args` in args.dtype with their strides. The tile's partial
// losses go to loss_parts[0 : parts], every slot written (0 where a block found
// no work), so the caller sizes the slots once, for its largest tile:
// parts = dense_residual_parts(largest_rows, n, dev) >= 1.
int dense_residual_parts(int64_t rows, int64_t n, const DeviceInfo& dev);
cudaError_t dense_residual_launch(void* R, const DenseArgs& args, int64_t row0, int64_t rows,
                                  double* loss_parts, int parts, Status* status,
                                  cudaStream_t stream);

// ---------------------------------------------------------------------------
// Sparse: the loss over observed entries (rows[e], cols[e], vals[e]).
struct SparseArgs {
  const void* rows = nullptr;    // rows: (nnz,), contiguous, int32 or int64
  const void* cols = nullptr;    // cols: (nnz,), same dtype
  bool idx64 = true;
  const void* vals = nullptr;    // vals: (nnz,), contiguous
  const void* weight = nullptr;  // weight: (nnz,), contiguous, or null
  const void* W = nullptr;       // W: (m, k), row-major contiguous
  const void* Ht = nullptr;      // Ht: (n, k), row-major contiguous (= H.t())
  int64_t m = 0, n = 0, k = 0, nnz = 0;
  DType dtype = DType::f32;
  void* grad_W = nullptr;        // grad_W: (m, k), row-major contiguous (zeroed here)
  void* grad_Ht = nullptr;       // grad_Ht: (n, k), row-major contiguous (zeroed here)
  void* loss = nullptr;          // loss: 0-dim, dtype
  ErrorMailbox* mailbox = nullptr;
};

// Entries per work unit: fixed, so every result is independent of the grid size.
constexpr int64_t kSparseUnit = 256;

size_t sparse_workspace_bytes(const SparseArgs& args, bool deterministic);
cudaError_t sparse_loss_grad_launch(const SparseArgs& args, bool deterministic, void* workspace,
                                    size_t workspace_bytes, const DeviceInfo& dev,
                                    cudaStream_t stream);

// ---------------------------------------------------------------------------
// _sparse_dot: out[e] = W[rows[e]] . Ht[cols[e]].
struct SparseDotArgs {
  const void* rows = nullptr;  // rows: (nnz,), contiguous, int32 or int64
  const void* cols = nullptr;  // cols: (nnz,), same dtype
  bool idx64 = true;
  const void* W = nullptr;     // W: (m, k), row-major contiguous
  const void* Ht = nullptr;    // Ht: (n, k), row-major contiguous
  int64_t m = 0, n = 0, k = 0, nnz = 0;
  DType dtype = DType::f32;
  void* out = nullptr;         // out: (nnz,)
  ErrorMailbox* mailbox = nullptr;
};

size_t sparse_dot_workspace_bytes();
cudaError_t sparse_dot_launch(const SparseDotArgs& args, void* workspace, const DeviceInfo& dev,
                              cudaStream_t stream);

}  // namespace cuda
}  // namespace mfext
