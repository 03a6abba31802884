// Device facts, the sync-free error mailbox and the dense path switch.
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
  return op == kOpDense ? "mfext::dense_loss_grad" : "mfext::sparse_loss_grad";
}

constexpr const char* kDeferred =
    " (found on the GPU by an earlier call, which returned a NaN loss and NaN gradients: "
    "CUDA ops report bad input at the next mfext call or at mfext.cuda_check_errors(), "
    "so that they never synchronize the device)";

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
    std::atomic_thread_fence(std::memory_order_acquire);
    const ErrorMailbox e = {0,           mb->op,    mb->kind,  mb->has_weight,
                            mb->position, mb->value, mb->bound, mb->weight};
    mb->ready = 0;
    {
      // Let the kernels report the next error.
      const at::Device device(at::kCUDA, static_cast<c10::DeviceIndex>(idx));
      c10::cuda::CUDAGuard guard(device);
      MFEXT_CUDA_LAUNCHED(mailbox_rearm_launch(c10::cuda::getCurrentCUDAStream()));
    }
    std::ostringstream msg;
    msg << op_name(e.op) << ": ";
    if (e.kind == kErrRow) {
      msg << "rows[" << e.position << "] = " << e.value << " is out of range for W with "
          << e.bound << " rows" << kDeferred;
      TORCH_CHECK_INDEX(false, msg.str());
    } else if (e.kind == kErrCol) {
      msg << "cols[" << e.position << "] = " << e.value << " is out of range for H with "
          << e.bound << " columns" << kDeferred;
      TORCH_CHECK_INDEX(false, msg.str());
    } else {
      msg << "argument 'weight' must be finite and non-negative";
      if (e.op == kOpDense) {
        msg << " (0 marks a missing entry); found weight[" << e.position / e.bound << ", "
            << e.position % e.bound << "]";
      } else {
        msg << "; found weight[" << e.position << "]";
      }
      if (e.has_weight) msg << " = " << e.weight;
      msg << kDeferred;
      TORCH_CHECK_VALUE(false, msg.str());
    }
  }
}

int dense_path() { return g_dense_path.load(std::memory_order_relaxed); }

void set_dense_path(int path) {
  TORCH_CHECK(path >= 0 && path <= 2, "mfext: dense path must be 0 (auto), 1 (fused) or 2 (tiled)");
  g_dense_path.store(path, std::memory_order_relaxed);
}

}  // namespace cuda
}  // namespace mfext
