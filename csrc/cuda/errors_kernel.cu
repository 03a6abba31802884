// The last step of every op (errors.h): the fixed-order loss reduction, and
// the sync-free error path (NaN loss and gradients, a description for the
// host in the mailbox).
#include <atomic>
#include <cmath>

#include "common.cuh"

namespace mfext {
namespace cuda {
namespace {

// Claims taken on the mailbox so far (see ErrorMailbox): a claim succeeds only
// when it equals the host's `consumed` count.
__device__ unsigned int g_mailbox_claims = 0;

constexpr int kFinalizeThreads = 256;

__device__ long long read_index(const void* p, bool idx64, long long pos) {
  return idx64 ? static_cast<const long long*>(p)[pos]
               : static_cast<long long>(static_cast<const int*>(p)[pos]);
}

template <typename T>
__device__ void report_error(const Status* status, const ErrorContext& ctx, ErrorMailbox* mb) {
  int kind = kErrNone;
  unsigned long long pos = kNoError;
  // Order of precedence as on the CPU: the auxiliary arrays (offsets, schedule,
  // order), then rows, then columns, then weights.
  for (int a = 0; a < 3 && kind == kErrNone; ++a) {
    if (status->bad_aux[a] != kNoError) {
      kind = kErrAux0 + a;
      pos = status->bad_aux[a];
    }
  }
  if (kind != kErrNone) {
    // an auxiliary array comes first
  } else if (status->bad_row != kNoError) {
    kind = kErrRow;
    pos = status->bad_row;
  } else if (status->bad_col != kNoError) {
    kind = kErrCol;
    pos = status->bad_col;
  } else if (status->bad_weight != kNoError) {
    kind = kErrWeight;
    pos = status->bad_weight;
  }
  if (kind == kErrNone || mb == nullptr) return;
  // A stale read of `consumed` can only make the claim fail (the error is then
  // dropped, its NaN results stay), never let two kernels write the mailbox.
  const unsigned int consumed = mb->consumed;
  if (atomicCAS(&g_mailbox_claims, consumed, consumed + 1u) != consumed) return;  // one pending
  const long long p = static_cast<long long>(pos);
  mb->op = ctx.op;
  mb->kind = kind;
  mb->position = p;
  mb->value = 0;
  mb->weight = 0.0;
  mb->has_weight = 0;
  if (kind >= kErrAux0) {
    mb->value = ctx.aux[kind - kErrAux0][p];
    mb->bound = ctx.aux_bound[kind - kErrAux0];
  } else if (kind == kErrRow) {
    mb->value = read_index(ctx.rows, ctx.idx64, p);
    mb->bound = ctx.m;
  } else if (kind == kErrCol) {
    mb->value = read_index(ctx.cols, ctx.idx64, p);
    mb->bound = ctx.n;
  } else {
    mb->bound = ctx.n;
    const T* w = static_cast<const T*>(ctx.weight);
    if (w != nullptr) {
      const long long i = ctx.op == kOpDense ? p / ctx.n : p;
      const long long j = ctx.op == kOpDense ? p % ctx.n : 0;
      mb->weight = static_cast<double>(w[i * ctx.ws0 + j * ctx.ws1]);
      mb->has_weight = 1;
    }
  }
  __threadfence_system();
  mb->ready = 1;
  __threadfence_system();
}

// One block: each thread sums a strided subset in order, then a fixed tree.
template <typename T>
__global__ void __launch_bounds__(kFinalizeThreads)
    finalize_loss_kernel(const double* __restrict__ parts, int64_t count,
                         const Status* __restrict__ status, T* __restrict__ loss,
                         ErrorContext ctx, ErrorMailbox* mailbox) {
  MFEXT_DYNAMIC_SMEM(smem_raw);
  double* scratch = reinterpret_cast<double*>(smem_raw);
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += parts[i];
  const double total = block_sum(s, scratch);
  if (threadIdx.x == 0) {
    if (has_error(status)) {
      *loss = static_cast<T>(NAN);
      report_error<T>(status, ctx, mailbox);
    } else {
      *loss = static_cast<T>(total);
    }
  }
}

template <typename T>
__global__ void poison_on_error_kernel(const Status* __restrict__ status, T* __restrict__ data,
                                       int64_t count) {
  if (!has_error(status)) return;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    data[i] = static_cast<T>(NAN);
  }
}

}  // namespace

cudaError_t status_init(Status* status, cudaStream_t stream) {
  return cudaMemsetAsync(status, 0x7F, sizeof(Status), stream);
}

cudaError_t finalize_loss_launch(const double* parts, int64_t count, const Status* status,
                                 void* loss, DType dtype, const ErrorContext& ctx,
                                 ErrorMailbox* mailbox, cudaStream_t stream) {
  const size_t smem = sizeof(double) * (kFinalizeThreads / kWarp);
  if (dtype == DType::f32) {
    auto kernel = finalize_loss_kernel<float>;
    MFEXT_LAUNCH(kernel, 1, kFinalizeThreads, smem, stream, parts, count, status,
                 static_cast<float*>(loss), ctx, mailbox);
  } else {
    auto kernel = finalize_loss_kernel<double>;
    MFEXT_LAUNCH(kernel, 1, kFinalizeThreads, smem, stream, parts, count, status,
                 static_cast<double*>(loss), ctx, mailbox);
  }
  MFEXT_LAUNCH_CHECK();
  return cudaSuccess;
}

cudaError_t poison_on_error_launch(const Status* status, void* data, int64_t count, DType dtype,
                                   int sm_count, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  const int threads = 256;
  const int64_t want = ceil_div(count, threads);
  const unsigned blocks = static_cast<unsigned>(want < 2LL * sm_count ? want : 2LL * sm_count);
  if (dtype == DType::f32) {
    auto kernel = poison_on_error_kernel<float>;
    MFEXT_LAUNCH(kernel, blocks, threads, 0, stream, status, static_cast<float*>(data), count);
  } else {
    auto kernel = poison_on_error_kernel<double>;
    MFEXT_LAUNCH(kernel, blocks, threads, 0, stream, status, static_cast<double*>(data), count);
  }
  MFEXT_LAUNCH_CHECK();
  return cudaSuccess;
}

void mailbox_consume(ErrorMailbox* host_view) {
  host_view->ready = 0;
  // The device must see ready == 0 before the count that lets it claim again.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  host_view->consumed = host_view->consumed + 1u;
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

}  // namespace cuda
}  // namespace mfext
