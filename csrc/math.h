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

// ---- Stochastic gradient descent on one observed entry (biased MF) --------
// The SGD kernels minimize, per entry, (r - pred)^2 / 2 + reg (|w|^2 + |h|^2) / 2
// + bias_reg (b_u^2 + b_i^2) / 2, whose per-entry step with error e = r - pred is
// below (Funk / Koren). Every factor update reads the other factor's old value.

// The factor step in the form the kernels vectorize: with g = lr e and
// decay = 1 - lr reg, one coordinate of w and h becomes
//   w = decay w + g h,  h = decay h + g w_old
// which equals w += lr (e h - reg w), h += lr (e w_old - reg h).
template <typename scalar_t>
MFEXT_HD void sgd_pair_step(scalar_t& w, scalar_t& h, scalar_t g, scalar_t decay) {
  const scalar_t w_old = w;
  w = decay * w + g * h;
  h = decay * h + g * w_old;
}

// One bias: b += lr (e - reg b).
template <typename scalar_t>
MFEXT_HD scalar_t sgd_bias_step(scalar_t b, scalar_t err, scalar_t lr, scalar_t reg) {
  return b + lr * (err - reg * b);
}

// Projection onto the non-negative orthant (projected SGD for nonnegative=True).
template <typename scalar_t>
MFEXT_HD scalar_t clamp_nonnegative(scalar_t x) {
  return x < scalar_t(0) ? scalar_t(0) : x;
}

}  // namespace math
}  // namespace mfext
