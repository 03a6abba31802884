// Dot product of two rows of k contiguous elements, shared by the CPU kernels
// that score one (user, item) pair at a time.
#pragma once

#include <cstdint>
#include <type_traits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace mfext {
namespace cpu {

// w . h over k coordinates. The generic loop leaves the final horizontal sum to
// the compiler, which (without -ffast-math) adds the lanes one by one: a
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
