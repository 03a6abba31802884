// Sparse kernels shared by sparse.cu (the kernels and launchers) and sort.cu
// (the radix sorts of the deterministic mode).
#pragma once

#include "common.cuh"

namespace mfext {
namespace cuda {
namespace sparse {

// Sorts (keys_in, ids_in) by key (stable: equal keys keep their entry order),
// considering key bits [0, end_bit). temp may be null to query temp_bytes.
template <typename ID>
cudaError_t sort_pairs(void* temp, size_t& temp_bytes, const uint32_t* keys_in,
                       uint32_t* keys_out, const ID* ids_in, ID* ids_out, int64_t count,
                       int end_bit, cudaStream_t stream);

}  // namespace sparse
}  // namespace cuda
}  // namespace mfext
