// The sorts by row and by column of mfext::sparse_loss_grad's deterministic
// mode (sparse::sort_pairs, declared in sparse_loss_grad.h): CUB's radix sort
// (stable, deterministic) over only the key bits that can be set. In its own
// file because CUB's kernels take a while to compile.
#include "sparse_loss_grad.h"

#ifndef MFEXT_CUDA_EMU
// Keep these CUB instantiations apart from any other library's copy of CUB.
#define CUB_WRAPPED_NAMESPACE mfext_cub
#include <cub/device/device_radix_sort.cuh>
#else
#include <algorithm>
#include <numeric>
#include <vector>
#endif

namespace mfext {
namespace cuda {
namespace sparse {

template <typename ID>
cudaError_t sort_pairs(void* temp, size_t& temp_bytes, const uint32_t* keys_in,
                       uint32_t* keys_out, const ID* ids_in, ID* ids_out, int64_t count,
                       int end_bit, cudaStream_t stream) {
#ifndef MFEXT_CUDA_EMU
  return ::mfext_cub::cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, ids_in,
                                                       ids_out, count, 0, end_bit, stream);
#else
  (void)stream;
  if (temp == nullptr) {
    temp_bytes = 16;
    return cudaSuccess;
  }
  const uint32_t mask = end_bit >= 32 ? 0xFFFFFFFFu : ((1u << end_bit) - 1u);
  std::vector<int64_t> order(count);
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return (keys_in[a] & mask) < (keys_in[b] & mask);
  });
  for (int64_t s = 0; s < count; ++s) {
    keys_out[s] = keys_in[order[s]];
    ids_out[s] = ids_in[order[s]];
  }
  return cudaSuccess;
#endif
}

template cudaError_t sort_pairs<int32_t>(void*, size_t&, const uint32_t*, uint32_t*,
                                         const int32_t*, int32_t*, int64_t, int, cudaStream_t);
template cudaError_t sort_pairs<int64_t>(void*, size_t&, const uint32_t*, uint32_t*,
                                         const int64_t*, int64_t*, int64_t, int, cudaStream_t);

}  // namespace sparse
}  // namespace cuda
}  // namespace mfext
