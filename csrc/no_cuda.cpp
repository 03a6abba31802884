// Compiled only when the CUDA kernels are not: a CUDA tensor given to any mfext
// op then gets one clear error instead of the dispatcher's missing-kernel text.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace {

void cuda_not_built(const c10::OperatorHandle& op, torch::jit::Stack* /*stack*/) {
  TORCH_CHECK(false, op.schema().name(),
              ": got a CUDA tensor, but this mfext build has no CUDA kernels "
              "(mfext._C.cuda_built() is False). Rebuild on a machine with nvcc and a CUDA "
              "build of torch: FORCE_CUDA=1 pip install --no-build-isolation --no-deps -e .");
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CUDA, m) {
  for (const char* name : {"dense_loss_grad", "sparse_loss_grad", "sgd_epoch_", "als_normal_equations",
                           "als_solve", "implicit_als_cg_", "_sparse_dot",
                           "_bucket_sort"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&cuda_not_built>());
  }
}
