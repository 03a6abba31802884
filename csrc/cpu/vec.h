// Row arithmetic of the CPU kernels, in one place: y += alpha x (axpy) and two
// dot products of rows of k contiguous elements. K > 0 is the rank known at
// compile time (the loops then unroll into registers); K == 0 reads it from k.
//
// The two dots sum in different orders, so they give different last bits, and
// each kernel keeps the one it has always used (the ops' results must not change):
//   dot<K>       the tuned dot (AVX-512 two-accumulator tree where the rank allows):
//                sgd_epoch_, _sparse_dot.
//   dot_loop<K>  the plain `omp simd` reduction loop: sparse_loss_grad.
#pragma once

#include <cstdint>
#include <type_traits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace mfext {
namespace cpu {

// y += alpha x over k coordinates. y: (k,), x: (k,).
template <int K, typename scalar_t>
inline void axpy(scalar_t* __restrict y, scalar_t alpha, const scalar_t* __restrict x,
                 int64_t k) {
  const int64_t len = K > 0 ? K : k;
#pragma omp simd
  for (int64_t p = 0; p < len; ++p) y[p] += alpha * x[p];
}

// a . b over k coordinates, a: (k,), b: (k,), as one `omp simd` reduction: the
// compiler picks the lanes and their final sum.
template <int K, typename scalar_t>
inline scalar_t dot_loop(const scalar_t* __restrict a, const scalar_t* __restrict b, int64_t k) {
  const int64_t len = K > 0 ? K : k;
  scalar_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t p = 0; p < len; ++p) s += a[p] * b[p];
  return s;
}

// w . h over k coordinates, w: (k,), h: (k,), for the kernels that score one
// (user, item) pair at a time. The generic loop leaves the final horizontal sum
// to the compiler, which (without -ffast-math) adds the lanes one by one: a
// 16-add dependency chain per entry. With AVX-512 and a rank that is a multiple
// of the vector width, two accumulators and a shuffle-tree reduction are used.
template <int K, typename scalar_t>
inline scalar_t dot(const scalar_t* __restrict w, const scalar_t* __restrict h, int64_t k) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<scalar_t, float> && K > 0 && K % 16 == 0) {
    __m512 a0 = _mm512_mul_ps(_mm512_loadu_ps(w), _mm512_loadu_ps(h));
    __m512 a1 = _mm512_setzero_ps();
    for (int q = 16; q < K; q += 32) {
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + q), _mm512_loadu_ps(h + q), a1);
      if (q + 16 < K) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + q + 16), _mm512_loadu_ps(h + q + 16), a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  }
  if constexpr (std::is_same_v<scalar_t, double> && K > 0 && K % 8 == 0) {
    __m512d a0 = _mm512_mul_pd(_mm512_loadu_pd(w), _mm512_loadu_pd(h));
    __m512d a1 = _mm512_setzero_pd();
    for (int q = 8; q < K; q += 16) {
      a1 = _mm512_fmadd_pd(_mm512_loadu_pd(w + q), _mm512_loadu_pd(h + q), a1);
      if (q + 8 < K) a0 = _mm512_fmadd_pd(_mm512_loadu_pd(w + q + 8), _mm512_loadu_pd(h + q + 8), a0);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
  }
#endif
  scalar_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t q = 0; q < k; ++q) s += w[q] * h[q];
  return s;
}

}  // namespace cpu
}  // namespace mfext
