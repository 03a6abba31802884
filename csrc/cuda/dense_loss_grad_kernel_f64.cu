// The instances of the fused dense_loss_grad kernel for double (one file per dtype:
// they build in parallel).
#include "dense_loss_grad_kernel.cuh"

namespace mfext {
namespace cuda {
namespace dense {

template <>
cudaError_t launch_fused_kernel<double>(const FusedArgs<double>& p, int kp, bool split, dim3 grid,
                                        size_t smem, cudaStream_t stream) {
  (void)split;  // float64 runs exact DMMA
  switch (kp) {
    case 16: return launch_one<double, 16, false>(p, grid, smem, stream);
    case 32: return launch_one<double, 32, false>(p, grid, smem, stream);
    case 48: return launch_one<double, 48, false>(p, grid, smem, stream);
    case 64: return launch_one<double, 64, false>(p, grid, smem, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace dense
}  // namespace cuda
}  // namespace mfext
