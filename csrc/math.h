// Element-wise math shared by the CPU and CUDA kernels.
//
// Conventions: the residual is r = prediction - target, so the loss of one
// entry is w * r^2 and its derivative with respect to the prediction is 2 w r.
// A weight of exactly 0 marks a missing entry: it contributes exactly 0 to the
// loss and to the gradients, even when its target is NaN or Inf.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define MFEXT_HD __host__ __device__ __forceinline__
#else
#define MFEXT_HD inline
#endif

namespace mfext {
namespace math {

// Loss contribution of one entry, in the accumulation type.
template <typename acc_t>
MFEXT_HD acc_t weighted_square(acc_t residual, acc_t weight) {
  return weight == acc_t(0) ? acc_t(0) : weight * residual * residual;
}

// d(w r^2)/d(prediction) for one entry.
template <typename scalar_t>
MFEXT_HD scalar_t residual_grad(scalar_t residual, scalar_t weight) {
  return weight == scalar_t(0) ? scalar_t(0) : scalar_t(2) * weight * residual;
}

// Unweighted forms (weight == 1), kept separate so the hot loops need no select.
template <typename acc_t>
MFEXT_HD acc_t square(acc_t residual) {
  return residual * residual;
}

template <typename scalar_t>
MFEXT_HD scalar_t unit_residual_grad(scalar_t residual) {
  return scalar_t(2) * residual;
}

// True for a weight the ops accept: finite and non-negative (NaN fails too).
template <typename scalar_t>
MFEXT_HD bool valid_weight(scalar_t weight) {
  return weight >= scalar_t(0) && weight <= scalar_t(3.4e38);
}

}  // namespace math
}  // namespace mfext
