// The host side of errors.h and glue.h: device facts, the sync-free error
// mailbox (its memory and the messages it raises) and the dense path switch.
//
// Why a mailbox: checking indices or weights on the host would need a device
// synchronization in every call. Instead the kernels skip bad entries, the loss
// and gradients come back as NaN, and the loss kernel copies a description of
// the first bad entry into mapped pinned host memory. The next mfext CUDA op
// (or mfext.cuda_check_errors()) reads it with a plain memory load and raises
// the same IndexError / ValueError text the CPU gives at once.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cstring>
#include <atomic>
#include <mutex>
#include <sstream>

#include "glue.h"

namespace mfext {
namespace cuda {
namespace {

constexpr int kMaxDevices = 64;

std::mutex g_mutex;
std::array<ErrorMailbox*, kMaxDevices> g_host{};    // host view (null until created)
std::array<ErrorMailbox*, kMaxDevices> g_device{};  // device view of the same memory
std::atomic<int> g_dense_path{0};

const char* op_name(int op) {
  switch (op) {
    case kOpDense: return "mfext::dense_loss_grad";
    case kOpSparse: return "mfext::sparse_loss_grad";
    case kOpSgd: return "mfext::sgd_epoch_";
    case kOpAlsNormal: return "mfext::als_normal_equations";
    case kOpSparseDot: return "mfext::_sparse_dot";
    case kOpImplicitCg: return "mfext::implicit_als_cg_";
    default: return "mfext::als_solve";
  }
}

// What the reporting call returned instead of its results.
const char* deferred_note(int op) {
  switch (op) {
    case kOpSgd:
      return " (found on the GPU by an earlier call, which left W, H_t and the biases "
             "unchanged and returned a NaN loss: CUDA ops report bad input at the next mfext "
             "call or at mfext.cuda_check_errors(), so that they never synchronize the device)";
    case kOpAlsNormal:
    case kOpAlsSolve:
    case kOpSparseDot:
      return " (found on the GPU by an earlier call, which returned NaN results: CUDA ops "
             "report bad input at the next mfext call or at mfext.cuda_check_errors(), so "
             "that they never synchronize the device)";
    case kOpImplicitCg:
      return " (found on the GPU by an earlier call, which set X to NaN: CUDA ops "
             "report bad input at the next mfext call or at mfext.cuda_check_errors(), so "
             "that they never synchronize the device)";
    default:
      return " (found on the GPU by an earlier call, which returned a NaN loss and NaN "
             "gradients: CUDA ops report bad input at the next mfext call or at "
             "mfext.cuda_check_errors(), so that they never synchronize the device)";
  }
}

// The CPU kernels' message for a bad entry of an index array (index_range.h and
// the ops' own checks), so that both devices say the same thing.
void describe_index_error(std::ostringstream& msg, const ErrorMailbox& e) {
  // sgd_epoch_ and _sparse_dot index H_t (n, k) by cols.
  const bool sgd = e.op == kOpSgd || e.op == kOpSparseDot;
  const bool als = e.op == kOpAlsNormal || e.op == kOpAlsSolve;
  const bool cg = e.op == kOpImplicitCg;
  if (e.kind == kErrRow) {
    msg << "rows[" << e.position << "] = " << e.value << " is out of range for W with "
        << e.bound << " rows";
  } else if (e.kind == kErrCol && sgd) {
    msg << "cols[" << e.position << "] = " << e.value << " is out of range for H_t with "
        << e.bound << " rows (items)";
  } else if (e.kind == kErrCol && cg) {
    msg << "indices[" << e.position << "] = " << e.value << " is out of range for Y with "
        << e.bound << " rows";
  } else if (e.kind == kErrCol && als) {
    msg << "indices[" << e.position << "] = " << e.value << " is out of range for F with "
        << e.bound << " rows";
  } else if (e.kind == kErrCol) {
    msg << "cols[" << e.position << "] = " << e.value << " is out of range for H with "
        << e.bound << " columns";
  } else if (als || cg) {  // kErrAux0: indptr
    msg << "indptr must hold non-decreasing offsets within [0, " << e.bound << "], got indptr["
        << e.position << "] = " << e.value;
  } else if (e.kind == kErrAux0) {  // sgd: block_ptr
    msg << "block_ptr must be non-decreasing offsets within [0, " << e.bound
        << "], got block_ptr[" << e.position << "] = " << e.value;
  } else if (e.kind == kErrAux0 + 1) {  // sgd: schedule
    msg << "schedule holds block id " << e.value << " at flat position " << e.position
        << "; block ids must lie in [0, " << e.bound << ") or be -1 (an empty slot)";
  } else {  // sgd: order
    msg << "order[" << e.position << "] = " << e.value << " is out of range for " << e.bound
        << " entries";
  }
}

}  // namespace

DeviceInfo device_info(const at::Device& device) {
  const int idx = device.index();
  TORCH_CHECK(idx >= 0 && idx < kMaxDevices, "mfext: CUDA device index ", idx, " out of range");
  static std::array<std::once_flag, kMaxDevices> once;
  static std::array<DeviceInfo, kMaxDevices> info;
  std::call_once(once[idx], [idx] {
    int sms = 0, major = 0, minor = 0, smem = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, idx));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, idx));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, idx));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, idx));
    info[idx].sm_count = sms;
    info[idx].cc_major = major;
    info[idx].cc_minor = minor;
    info[idx].smem_optin = static_cast<size_t>(smem);
  });
  return info[idx];
}

ErrorMailbox* mailbox_for(const at::Device& device) {
  const int idx = device.index();
  TORCH_CHECK(idx >= 0 && idx < kMaxDevices, "mfext: CUDA device index ", idx, " out of range");
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_device[idx] == nullptr) {
    c10::cuda::CUDAGuard guard(device);
    void* host = nullptr;
    C10_CUDA_CHECK(cudaHostAlloc(&host, sizeof(ErrorMailbox),
                                 cudaHostAllocMapped | cudaHostAllocPortable));
    std::memset(host, 0, sizeof(ErrorMailbox));
    void* dev = nullptr;
    C10_CUDA_CHECK(cudaHostGetDevicePointer(&dev, host, 0));
    g_host[idx] = static_cast<ErrorMailbox*>(host);
    g_device[idx] = static_cast<ErrorMailbox*>(dev);  // kept for the process's lifetime
  }
  return g_device[idx];
}

void raise_pending_errors() {
  for (int idx = 0; idx < kMaxDevices; ++idx) {
    ErrorMailbox* mb = g_host[idx];
    if (mb == nullptr || mb->ready == 0) continue;
    ErrorMailbox e{};
    {
      // One host thread consumes each error: a second bump of `consumed` would
      // put it ahead of the device's claims and lock the mailbox for good.
      std::lock_guard<std::mutex> lock(g_mutex);
      if (mb->ready == 0) continue;
      std::atomic_thread_fence(std::memory_order_acquire);
      e = *mb;
      mailbox_consume(mb);  // the kernels may report the next error
    }
    std::ostringstream msg;
    msg << op_name(e.op) << ": ";
    if (e.kind != kErrWeight) {
      describe_index_error(msg, e);
      msg << deferred_note(e.op);
      TORCH_CHECK_INDEX(false, msg.str());
    }
    if (e.op == kOpAlsNormal || e.op == kOpAlsSolve) {  // the ALS ops' "weight" is reg_diag
      msg << "argument 'reg_diag' must be finite and non-negative; found reg_diag[" << e.position
          << "]";
      if (e.has_weight) msg << " = " << e.weight;
      msg << deferred_note(e.op);
      TORCH_CHECK_VALUE(false, msg.str());
    }
    msg << "argument 'weight' must be finite and non-negative";
    if (e.op == kOpDense) {
      msg << " (0 marks a missing entry); found weight[" << e.position / e.bound << ", "
          << e.position % e.bound << "]";
    } else {
      msg << "; found weight[" << e.position << "]";
    }
    if (e.has_weight) msg << " = " << e.weight;
    msg << deferred_note(e.op);
    TORCH_CHECK_VALUE(false, msg.str());
  }
}

int dense_path() { return g_dense_path.load(std::memory_order_relaxed); }

void set_dense_path(int path) {
  TORCH_CHECK(path >= 0 && path <= 2, "mfext: dense path must be 0 (auto), 1 (fused) or 2 (tiled)");
  g_dense_path.store(path, std::memory_order_relaxed);
}

}  // namespace cuda
}  // namespace mfext
