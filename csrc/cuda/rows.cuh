// Rows of factor matrices read by groups of lanes: the layout shared by the
// kernels that score an entry as W[row] . Ht[col] (sparse.cu, sparse_dot.cu).
// A row of k elements is cut into chunks of V elements (one 16-byte vector, or
// one element when k or the pointers do not allow it), and a group of
// 2^lanes_log2 lanes (at most a warp) reads it: chunk c belongs to lane c % lanes.
#pragma once

#include <initializer_list>

#include "common.cuh"

namespace mfext {
namespace cuda {

// One lane's chunks of a row. CPL > 0: each lane keeps its (at most CPL)
// chunks in registers; CPL == 0: any k, chunks are re-read from memory (cache).
template <typename T, int V, int CPL>
struct Chunks {
  static constexpr int N = (CPL > 0 ? CPL : 1) * V;
  T v[N];
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = T(0);
  }
  // Loads row `row` of a (rows, k) row-major matrix (zeros when !ok).
  __device__ __forceinline__ void load(const T* __restrict__ base, int64_t row, int k,
                                       int chunks, int lane_g, int lanes, bool ok) {
#pragma unroll
    for (int q = 0; q < (CPL > 0 ? CPL : 1); ++q) {
      const int c = lane_g + q * lanes;
      T tmp[V];
      if (ok && c < chunks) {
        load_vec<T, V>(base + row * k + int64_t(c) * V, tmp);
      } else {
#pragma unroll
        for (int t = 0; t < V; ++t) tmp[t] = T(0);
      }
#pragma unroll
      for (int t = 0; t < V; ++t) v[q * V + t] = tmp[t];
    }
  }
};

template <typename T, int V, int CPL>
__device__ __forceinline__ T chunk_dot(const Chunks<T, V, CPL>& a, const Chunks<T, V, CPL>& b) {
  T s = T(0);
#pragma unroll
  for (int i = 0; i < Chunks<T, V, CPL>::N; ++i) s += a.v[i] * b.v[i];
  return s;
}

struct Shape {
  int v;           // elements per vector load (1 or 16 / sizeof(T))
  int chunks;      // ceil(k / v)
  int lanes_log2;  // log2(threads per entry)
  int cpl;         // chunks per lane held in registers: 1, 2, 4, or 0 (re-read)
};

// Vector loads and stores need k to be a multiple of V and every row buffer the
// kernel touches (factors and gradients alike) to start on a 16-byte boundary;
// any other view falls back to scalar access instead of faulting.
template <typename T>
inline Shape shape_for(int64_t k, std::initializer_list<const void*> row_buffers) {
  constexpr int V = Vec16<T>::size;
  bool vec = k % V == 0;
  for (const void* p : row_buffers) vec = vec && reinterpret_cast<uintptr_t>(p) % 16 == 0;
  Shape s;
  s.v = vec ? V : 1;
  s.chunks = int(ceil_div(k, s.v));
  int lanes = 1;
  while (lanes < s.chunks && lanes < kWarp) lanes *= 2;
  s.lanes_log2 = 0;
  while ((1 << s.lanes_log2) < lanes) ++s.lanes_log2;
  const int per_lane = int(ceil_div(s.chunks, lanes));
  s.cpl = per_lane <= 1 ? 1 : per_lane <= 2 ? 2 : per_lane <= 4 ? 4 : 0;
  return s;
}

// Calls f.template operator()<V, CPL>() for the shape's instance.
template <typename T, typename F>
cudaError_t dispatch_shape(const Shape& s, F&& f) {
  constexpr int V = Vec16<T>::size;
  if (s.v == V) {
    switch (s.cpl) {
      case 1: return f.template operator()<V, 1>();
      case 2: return f.template operator()<V, 2>();
      case 4: return f.template operator()<V, 4>();
      default: return f.template operator()<V, 0>();
    }
  }
  switch (s.cpl) {
    case 1: return f.template operator()<1, 1>();
    case 2: return f.template operator()<1, 2>();
    case 4: return f.template operator()<1, 4>();
    default: return f.template operator()<1, 0>();
  }
}

}  // namespace cuda
}  // namespace mfext
