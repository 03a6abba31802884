// Element-wise math shared by the CPU and CUDA kernels.
//
// Conventions: the residual is r = prediction - target, so the loss of one
// entry is w * r^2 and its derivative with respect to the prediction is 2 w r.
// A weight of exactly 0 marks a missing entry: it contributes exactly 0 to the
// loss and to the gradients, even when its target is NaN or Inf.
#pragma once

#include <cstdint>

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

// ---- Cholesky of the ALS normal equations ---------------------------------
// A rank-deficient system (reg = 0 and fewer entries than unknowns) leaves
// pivots of rounding size and either sign. Accepting a positive one would give
// an enormous, meaningless solution, and the CPU and the GPU (which fuse
// multiply-adds differently) would not agree on which. So a pivot must clear
// d * eps * the system's largest diagonal entry (eps: the dtype's machine
// epsilon); a system with one that does not takes the fallback ridge.
template <typename scalar_t>
MFEXT_HD scalar_t pivot_floor(scalar_t max_diag, int64_t d, scalar_t eps) {
  return max_diag > scalar_t(0) ? scalar_t(d) * eps * max_diag : scalar_t(0);
}

// True for a pivot above the floor and finite (NaN fails both).
template <typename scalar_t>
MFEXT_HD bool good_pivot(scalar_t pivot, scalar_t floor, scalar_t max_value) {
  return pivot > floor && pivot <= max_value;
}

// The ridge added before the second attempt at a system that failed: 1e-4 x
// its largest diagonal entry, at least 4 floors (rounding moves a pivot by
// about one) and the smallest normal number (an all-zero system).
template <typename scalar_t>
MFEXT_HD scalar_t fallback_ridge(scalar_t max_diag, int64_t d, scalar_t eps, scalar_t smallest) {
  scalar_t scale = scalar_t(1e-4);
  if (scalar_t(4) * scalar_t(d) * eps > scale) scale = scalar_t(4) * scalar_t(d) * eps;
  const scalar_t ridge = scale * max_diag;
  return ridge >= smallest ? ridge : smallest;  // NaN in, the smallest out
}

}  // namespace math
}  // namespace mfext
