// The instances of the fused dense_loss_grad kernel for float (one file per dtype:
// they build in parallel).
#include "dense_loss_grad_kernel.cuh"

namespace mfext {
namespace cuda {
namespace dense {

template <>
cudaError_t launch_fused_kernel<float>(const FusedArgs<float>& p, int kp, bool split, dim3 grid,
                                       size_t smem, cudaStream_t stream) {
  switch (kp) {
    case 16: return split ? launch_one<float, 16, true>(p, grid, smem, stream)
                          : launch_one<float, 16, false>(p, grid, smem, stream);
    case 32: return split ? launch_one<float, 32, true>(p, grid, smem, stream)
                          : launch_one<float, 32, false>(p, grid, smem, stream);
    case 48: return split ? launch_one<float, 48, true>(p, grid, smem, stream)
                          : launch_one<float, 48, false>(p, grid, smem, stream);
    case 64: return split ? launch_one<float, 64, true>(p, grid, smem, stream)
                          : launch_one<float, 64, false>(p, grid, smem, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace dense
}  // namespace cuda
}  // namespace mfext
