// Rows of factor matrices read by groups of lanes: the layout shared by the
// kernels that score an entry as W[row] . Ht[col] (sparse_loss_grad_kernel.cu,
// sparse_dot_kernel.cu, sgd_epoch_kernel.cu).
// A row of k elements is cut into chunks of V elements (one 16-byte vector, or
// one element when k or the pointers do not allow it), and a group of
// 2^lanes_log2 lanes (at most a warp) reads it: chunk c belongs to lane c % lanes.
#pragma once

#include <initializer_list>

#include "common.cuh"

namespace mfext {
namespace cuda {

// This thread's place among the grid's groups of 2^lanes_log2 lanes (a group
// takes one entry at a time; the groups of a warp step together).
struct LaneGroups {
  int lanes;           // lanes per group
  int lane;            // this thread's lane in its group
  int64_t group;       // this thread's group, grid-wide
  int64_t warp_first;  // the first group of this thread's warp
  int64_t count;       // groups in the grid
};

__device__ __forceinline__ LaneGroups lane_groups(int lanes_log2) {
  const int64_t gtid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  LaneGroups g;
  g.lanes = 1 << lanes_log2;
  g.lane = (threadIdx.x % kWarp) & (g.lanes - 1);
  g.group = gtid >> lanes_log2;
  g.warp_first = (gtid & ~int64_t(kWarp - 1)) >> lanes_log2;
  g.count = (int64_t(gridDim.x) * blockDim.x) >> lanes_log2;
  return g;
}

// One lane's chunks of a row. CPL > 0: each lane keeps its (at most CPL)
// chunks in registers; CPL == 0: any k, chunks are re-read from memory (cache).
template <typename T, int V, int CPL>
struct Chunks {
  static constexpr int Q = CPL > 0 ? CPL : 1;  // chunks per lane held
  static constexpr int N = Q * V;
  T v[N];
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = T(0);
  }
  // Loads row `row` of a (rows, k) row-major matrix (zeros when !ok).
  __device__ __forceinline__ void load(const T* __restrict__ base, int64_t row, int k,
                                       int chunks, int lane_g, int lanes, bool ok) {
#pragma unroll
    for (int q = 0; q < Q; ++q) {
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
  // row[the lane's chunks] = v: plain stores, for a row this group owns.
  __device__ __forceinline__ void store(T* row, int chunks, int lane_g, int lanes) const {
    write<false>(row, T(1), chunks, lane_g, lanes);
  }
  // row[the lane's chunks] += scale * v with atomics, for a row other groups share.
  __device__ __forceinline__ void atomic_add_scaled(T* row, T scale, int chunks, int lane_g,
                                                    int lanes) const {
    write<true>(row, scale, chunks, lane_g, lanes);
  }

 private:
  template <bool ATOMIC>
  __device__ __forceinline__ void write(T* row, T scale, int chunks, int lane_g, int lanes) const {
#pragma unroll
    for (int q = 0; q < Q; ++q) {
      const int c = lane_g + q * lanes;
      if (c < chunks) {
        T x[V];
#pragma unroll
        for (int t = 0; t < V; ++t) x[t] = ATOMIC ? scale * v[q * V + t] : v[q * V + t];
        if constexpr (ATOMIC) {
          atomic_add_vec<T, V>(row + int64_t(c) * V, x);
        } else {
          store_vec<T, V>(row + int64_t(c) * V, x);
        }
      }
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

// The lane's part of a_row . b_row, its chunks read from memory (the CPL == 0
// path: rows too long to hold in registers).
template <typename T, int V>
__device__ __forceinline__ T reread_dot(const T* a_row, const T* b_row, int chunks, int lane_g,
                                        int lanes) {
  T d = T(0);
#pragma unroll 1
  for (int ch = lane_g; ch < chunks; ch += lanes) {
    T a[V], b[V];
    load_vec<T, V>(a_row + int64_t(ch) * V, a);
    load_vec<T, V>(b_row + int64_t(ch) * V, b);
#pragma unroll
    for (int t = 0; t < V; ++t) d += a[t] * b[t];
  }
  return d;
}

// A[ra] . B[rb] for (rows, k) row-major A and B, by a group of lanes: every
// lane of the warp must call it (shuffles), and every lane of the group gets
// the sum, in a fixed order. CPL > 0: the lane's chunks of both rows stay in
// `a` and `b` for the caller's update. `ok` false: the rows are not read.
template <typename T, int V, int CPL>
__device__ __forceinline__ T group_row_dot(Chunks<T, V, CPL>& a, Chunks<T, V, CPL>& b,
                                           const T* A, int64_t ra, const T* B, int64_t rb,
                                           int k, int chunks, int lane_g, int lanes, bool ok) {
  T d = T(0);
  if constexpr (CPL > 0) {
    a.load(A, ra, k, chunks, lane_g, lanes, ok);
    b.load(B, rb, k, chunks, lane_g, lanes, ok);
    d = chunk_dot(a, b);
  } else if (ok) {
    d = reread_dot<T, V>(A + ra * k, B + rb * k, chunks, lane_g, lanes);
  }
  return group_allreduce(d, lanes);
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
