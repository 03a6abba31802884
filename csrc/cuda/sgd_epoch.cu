// One Hogwild SGD epoch over observed ratings on the GPU (see sgd_epoch.h).
// Element math is shared with the CPU kernel through math.h. One warp scores
// and updates one entry: coalesced loads of w_u and h_i (lane q reads
// coordinates q, q + 32, ...), a shuffle reduction for the dot product, lane 0
// updates the biases, and every lane updates its coordinates of w_u and h_i.
#include "../math.h"
#include "sgd_epoch.h"

namespace mfext {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    sgd_epoch_kernel(const SgdEpochArgs<scalar_t, index_t> a) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t n_warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const scalar_t decay = scalar_t(1) - a.lr * a.reg;
  const int64_t k = a.k;
  double local_sse = 0.0;
  for (int64_t s = warp; s < a.len; s += n_warps) {
    const int64_t e = a.order != nullptr ? a.order[s] : s;
    const int64_t u = static_cast<int64_t>(a.rows[e]);
    const int64_t i = static_cast<int64_t>(a.cols[e]);
    scalar_t* w = a.W + u * k;
    scalar_t* h = a.Ht + i * k;
    scalar_t part = 0;
    for (int64_t q = lane; q < k; q += 32) part += w[q] * h[q];
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) part += __shfl_xor_sync(kFullMask, part, offset);
    scalar_t pred = part;
    if (a.biases) pred += a.global_mean + a.user_bias[u] + a.item_bias[i];
    const scalar_t err = a.vals[e] - pred;
    __syncwarp();  // every lane has read the biases before lane 0 writes them
    if (lane == 0) {
      local_sse += static_cast<double>(err) * static_cast<double>(err);
      if (a.biases) {
        a.user_bias[u] = math::sgd_bias_step(a.user_bias[u], err, a.lr, a.bias_reg);
        a.item_bias[i] = math::sgd_bias_step(a.item_bias[i], err, a.lr, a.bias_reg);
      }
    }
    const scalar_t g = a.lr * err;
    for (int64_t q = lane; q < k; q += 32) {
      scalar_t wq = w[q], hq = h[q];
      math::sgd_pair_step(wq, hq, g, decay);
      if (a.nonnegative) {
        wq = math::clamp_nonnegative(wq);
        hq = math::clamp_nonnegative(hq);
      }
      w[q] = wq;
      h[q] = hq;
    }
    __syncwarp();
  }
  if (lane == 0 && local_sse != 0.0) atomicAdd(a.sse, local_sse);
}

}  // namespace

template <typename scalar_t, typename index_t>
cudaError_t launch_sgd_epoch(const SgdEpochArgs<scalar_t, index_t>& args, cudaStream_t stream) {
  if (args.len <= 0) return cudaSuccess;
  int device = 0, sms = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) return status;
  status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (status != cudaSuccess) return status;
  // Enough resident warps to hide memory latency, few enough that each warp
  // runs a long strided loop (one atomicAdd per warp at the end).
  const int64_t warps_needed = args.len;
  const int64_t blocks_needed = (warps_needed * 32 + kThreads - 1) / kThreads;
  const int64_t max_blocks = static_cast<int64_t>(sms) * 8;
  const int blocks = static_cast<int>(blocks_needed < max_blocks ? blocks_needed : max_blocks);
  sgd_epoch_kernel<scalar_t, index_t><<<blocks, kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

template cudaError_t launch_sgd_epoch<float, int32_t>(const SgdEpochArgs<float, int32_t>&, cudaStream_t);
template cudaError_t launch_sgd_epoch<float, int64_t>(const SgdEpochArgs<float, int64_t>&, cudaStream_t);
template cudaError_t launch_sgd_epoch<double, int32_t>(const SgdEpochArgs<double, int32_t>&, cudaStream_t);
template cudaError_t launch_sgd_epoch<double, int64_t>(const SgdEpochArgs<double, int64_t>&, cudaStream_t);

}  // namespace cuda
}  // namespace mfext
