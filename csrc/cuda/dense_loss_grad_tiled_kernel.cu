// The tiled path of mfext::dense_loss_grad (large k, float16/bfloat16, or GPUs
// without the fused kernel): the glue runs the three products on row tiles with
// cuBLAS (through ATen, on the current stream); this kernel is the fused step
// between them. It reads each element of the tile's W H once, with A and the
// weight, adds the loss, and leaves G = 2 weight (W H - A) in place for the two
// gradient products.
#include <algorithm>

#include "common.cuh"
#include "dense_loss_grad.h"

#ifndef MFEXT_CUDA_EMU
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace mfext {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct Load {
  static __device__ __forceinline__ T get(const T* p) { return *p; }
};
#ifndef MFEXT_CUDA_EMU
template <>
struct Load<__half> {
  static __device__ __forceinline__ float get(const __half* p) { return __half2float(*p); }
};
template <>
struct Load<__nv_bfloat16> {
  static __device__ __forceinline__ float get(const __nv_bfloat16* p) {
    return __bfloat162float(*p);
  }
};
#endif

// R: (rows, n) contiguous, acc_t. A, weight: strided, T (the input dtype).
template <typename T, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    dense_residual_kernel(acc_t* __restrict__ R, const T* __restrict__ A, int64_t sa0, int64_t sa1,
                          const T* __restrict__ weight, int64_t sw0, int64_t sw1, int64_t rows,
                          int64_t n, int64_t row0, double* __restrict__ loss_parts,
                          Status* __restrict__ status) {
  MFEXT_DYNAMIC_SMEM(smem_raw);
  double* scratch = reinterpret_cast<double*>(smem_raw);
  const int64_t total = rows * n;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  double loss = 0.0;
  unsigned long long bad_w = kNoError;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t i = row0 + idx / n, j = idx % n;
    const acc_t r = R[idx] - acc_t(Load<T>::get(A + i * sa0 + j * sa1));
    if (weight != nullptr) {
      const acc_t w = acc_t(Load<T>::get(weight + i * sw0 + j * sw1));
      if (!math::valid_weight(w)) note_bad(bad_w, i * n + j);
      loss += math::weighted_square<double>(double(r), double(w));
      R[idx] = math::residual_grad(r, w);
    } else {
      loss += math::square<double>(double(r));
      R[idx] = math::unit_residual_grad(r);
    }
  }
  const double s = block_sum(loss, scratch);
  if (threadIdx.x == 0) loss_parts[blockIdx.x] = s;
  flush_bad(&status->bad_weight, bad_w);
}

}  // namespace

int dense_residual_parts(int64_t rows, int64_t n, const DeviceInfo& dev) {
  const int64_t want = ceil_div(rows * n, int64_t(kThreads) * 8);
  return int(std::max<int64_t>(1, std::min<int64_t>(want, int64_t(dev.sm_count) * 4)));
}

template <typename T>
cudaError_t dense_residual_launch(typename DenseAcc<T>::type* R, const DenseLossGradParams<T>& p,
                                  int64_t row0, int64_t rows, double* loss_parts, int parts,
                                  Status* status, cudaStream_t stream) {
  if (parts <= 0 || rows < 0) return cudaErrorInvalidValue;
  // One block per slot, however small this tile is: the grid-stride loop takes
  // any block count, and a slot left unwritten would add stale memory to the loss.
  const int blocks = parts;
  auto kernel = dense_residual_kernel<T, typename DenseAcc<T>::type>;
  MFEXT_LAUNCH(kernel, blocks, kThreads, sizeof(double) * (kThreads / kWarp), stream, R, p.A,
               p.sa0, p.sa1, p.weight, p.sw0, p.sw1, rows, p.n, row0, loss_parts, status);
  MFEXT_LAUNCH_CHECK();
  return cudaSuccess;
}

#define MFEXT_INSTANTIATE(T)                                                                \
  template cudaError_t dense_residual_launch<T>(typename DenseAcc<T>::type*,                \
                                                const DenseLossGradParams<T>&, int64_t,     \
                                                int64_t, double*, int, Status*, cudaStream_t);
MFEXT_INSTANTIATE(float)
MFEXT_INSTANTIATE(double)
#ifndef MFEXT_CUDA_EMU
MFEXT_INSTANTIATE(__half)
MFEXT_INSTANTIATE(__nv_bfloat16)
#endif
#undef MFEXT_INSTANTIATE

}  // namespace cuda
}  // namespace mfext
