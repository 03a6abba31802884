// Input errors found on the device, reported without synchronizing; and the
// last step of every op, which reduces its partial losses and reports them.
// Torch-free (see types.h). Kernels in errors_kernel.cu; the host side (the
// mailbox's memory, the messages) in errors_glue.cpp.
//
// Each call gets a Status in its workspace (memset to 0x7F bytes = "none"); the
// kernels atomicMin the position of the first bad entry into it. The loss
// kernel then writes NaN into the loss and, for the first error only, copies a
// description into the process-wide ErrorMailbox, which lives in mapped
// (zero-copy) pinned host memory. The host reads the mailbox, a plain memory
// read, at the start of the next mfext CUDA op or in mfext.cuda_check_errors()
// and raises the error there.
#pragma once

#include "types.h"

namespace mfext {
namespace cuda {

constexpr unsigned long long kNoError = 0x7F7F7F7F7F7F7F7FULL;

struct Status {
  unsigned long long bad_row;     // first entry whose row is out of range
  unsigned long long bad_col;     // first entry whose column is out of range
  unsigned long long bad_weight;  // first negative/NaN/Inf weight (linear index); als_*: reg_diag
  // First bad position in each of the op's int64 auxiliary arrays
  // (ErrorContext::aux): sgd_epoch_ 0 = block_ptr, 1 = schedule, 2 = order;
  // als_* and implicit_als_cg_ 0 = indptr. Reported before rows and columns, as on the CPU.
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
  kOpImplicitCg = 7,
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

}  // namespace cuda
}  // namespace mfext
