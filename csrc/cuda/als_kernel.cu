// The CUDA kernels of mfext::als_normal_equations and mfext::als_solve (see
// als.h): the per-row least-squares problems of ALS on the GPU (semantics: the
// CPU op, csrc/cpu/als_kernel.cpp). Row r owns the entries [indptr[r], indptr[r + 1]):
//   gram[r] = base + sum_e w_e f_c f_c^T + diag(reg_diag) * n_r^count_exponent,
//   rhs[r]  = sum_e (vals[e] - col_offset[c]) f_c,        f_c = F[indices[e]]
// (base: 0 and w_e = 1 when absent) and an empty row gets gram = I, rhs = 0.
//
// base and weight: every kernel takes a template flag kExtras; the kernels
// without it are the unweighted ones, unchanged. With it, each gathered entry's
// weight sits beside its value in shared memory and scales the row side of
// its outer product (a = w_e f_P, as on the CPU: a zero weight needs no sqrt),
// and base is added to the lower triangle before the ridge.
//
// Kernels (each call: validate, build or solve, then poison + report on error):
//   als_validate_kernel          indptr non-decreasing within [0, nnz], indices in [0, n)
//                                over indptr[0]..indptr[R], reg_diag finite and >= 0;
//                                first bad positions -> Status (reg_diag: bad_weight).
//   als_normal_equations_kernel  one block per (row, tile pass): the full symmetric
//                                gram (R, d, d) and rhs (R, d).
//   als_solve_kernel             one block per row: builds the lower triangle as 8x8
//                                tiles, then a blocked right-looking Cholesky with the
//                                forward substitution folded in, then the back
//                                substitution; the tiles live in shared memory when they
//                                fit (kSmemTiles), else in a per-block global workspace
//                                (the large-d path: d > 224 in float64 on an H100).
//
// Building. The lower triangle of the d x d Gram matrix is cut into 8x8 tiles
// (tile rows nt = ceil(d / 8), tiles = nt (nt + 1) / 2); thread t of a block owns
// tile t (blocks of up to 512 float32 / 256 float64 threads; more tiles take
// several passes over the entries). The factor rows of a row's entries are
// gathered into shared memory in chunks (16-byte loads when F's rows are
// aligned), zero-padded to dp = 8 nt columns; per gathered row each thread
// loads 8 + 8 values and does 64 FMAs into its register tile. The 16-byte units
// of each tile are XOR-swizzled across banks so that a quarter warp's loads of
// 8 consecutive tiles hit 8 different bank groups.
//
// Expected bound (Netflix, d = 129 float32: 153 tiles of 64 FMAs, 86% of them on
// the triangle): 100M entries x 9,792 FMAs x 2 half-steps = 2.0e12 FMAs per epoch,
// about 58 ms at the H200's FP32 peak (67 TFLOPS); the block's shared-memory
// loads (4 LDS.128 per 64 FMAs, broadcasts on the row side) come close to
// co-limiting, so about 60-70% of peak is what this design can reach. Gathers
// are 52 GB per half-step, from L2 for the user half-step (F = 9 MB of items),
// from HBM for the item half-step (~11 ms at 4.8 TB/s). The Cholesky (d^3 / 6 =
// 0.36M FMAs per row, about 5 nt barriers) is latency-bound; other resident
// blocks' builds hide it.
//
// Load balance: one block per row (the hardware hands out blocks as SMs free
// up); the glue passes `order`, the rows by decreasing entry count, so the long
// rows (items) start first and the short ones fill in behind them.
//
// Determinism: every sum runs in a fixed order that depends on d and the dtype
// only (entries in order for every Gram and rhs element; the Cholesky updates
// in column order, as on the CPU), never on the grid or on timing.
//
// Errors: the later kernels return at once when the Status holds an error (so
// bad offsets or indices are never dereferenced), the outputs are overwritten
// with NaN and the first error goes to the mailbox; nothing synchronizes.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "als.h"
#include "common.cuh"

namespace mfext {
namespace cuda {
namespace als {
namespace {

constexpr int kTile = 8;                      // tile edge (register tile of 8 x 8)
constexpr int kMaxChunk = 64;                 // entries gathered per step
constexpr size_t kChunkBytes = 40 * 1024;     // target size of one gathered chunk
constexpr int kValidateThreads = 256;
constexpr size_t kMiscBytes = 128;            // flag, the 8 pivot reciprocals, the pivot floor
static_assert(16 + kTile * sizeof(double) <= 96 && 96 + sizeof(double) <= kMiscBytes,
              "carve(): the flag at 0, inv at 16, floor at 96");
constexpr size_t kWorkBudget = 256ull << 20;  // large-d path: global tiles of all blocks
constexpr size_t kAlign = 256;

template <typename T>
constexpr int max_threads() {
  return sizeof(T) == 4 ? 512 : 256;  // 64 float32 / 128 float64 accumulator registers
}
// The solve kernel also holds the factorization's state: float32 takes 384
// threads (168 registers each), and more passes only where d > 216.
template <typename T>
constexpr int max_solve_threads() {
  return sizeof(T) == 4 ? 384 : 256;
}
// The normal equations with base/weight hold the weight too: float32 takes 384
// threads there (168 registers each; at 512 the 128-register cap spills).
template <typename T, bool kExtras>
constexpr int max_normal_threads() {
  return kExtras ? max_solve_threads<T>() : max_threads<T>();
}
template <typename T>
constexpr int kUnit = 16 / int(sizeof(T));  // elements per 16-byte vector
template <typename T>
constexpr int kTileStride = kTile * kTile + kUnit<T>;  // padded: tiles fall in other banks

__host__ __device__ __forceinline__ int64_t tri(int64_t i) { return i * (i + 1) / 2; }

// Position of column q of a gathered row: tile J's 16-byte units are XOR-swizzled.
template <typename T>
__host__ __device__ __forceinline__ int gpos(int q) {
  constexpr int U = kUnit<T>, TU = kTile / U;  // units per tile: 2 (f32), 4 (f64)
  const int J = q / kTile, h = (q % kTile) / U;
  const int sw = (J / (8 / TU)) % TU;
  return J * kTile + (h ^ sw) * U + q % U;
}

// Tile t of the lower triangle, row-major: (I, J) with J <= I.
__device__ __forceinline__ void tile_coords(int64_t t, int64_t& I, int64_t& J) {
  int64_t i = int64_t((sqrt(8.0 * double(t) + 1.0) - 1.0) * 0.5);
  while (tri(i) > t) --i;
  while (tri(i + 1) <= t) ++i;
  I = i;
  J = t - tri(i);
}

template <typename T>
__device__ __forceinline__ T root(T x) {
  if constexpr (sizeof(T) == 4) {
    return sqrtf(x);
  } else {
    return sqrt(x);
  }
}

// std::numeric_limits' max(), min() and epsilon() (not device functions without
// relaxed constexpr).
template <typename T>
struct Limits {
  static constexpr T max = FLT_MAX, min = FLT_MIN, eps = FLT_EPSILON;
};
template <>
struct Limits<double> {
  static constexpr double max = DBL_MAX, min = DBL_MIN, eps = DBL_EPSILON;
};

template <typename T>
__device__ __forceinline__ T count_scale(int64_t cnt, double exponent) {
  return exponent == 0.0   ? T(1)
         : exponent == 1.0 ? T(cnt)
                           : T(pow(double(cnt), exponent));
}

// The kernels' argument: the fields of AlsParams they read and what the plan
// and the launch add. Its layout is the kernels' own: the compiled kernels
// (registers, no spills) depend on it.
template <typename T, typename Idx>
struct Params {
  const int64_t* indptr;  // (R + 1,), validated
  const Idx* indices;     // (nnz,)
  const T* vals;          // (nnz,)
  const T* F;             // (n, d)
  const T* offset;        // (n,) or null
  const T* reg;           // (d,)
  const int64_t* order;   // (R,) or null
  double exponent;
  int64_t R, d;
  int64_t nt, tiles, passes;  // tile rows, lower-triangle tiles, passes of blockDim.x tiles
  int dp, chunk;              // padded width 8 nt, entries per gathered chunk
  bool vec;                   // F's rows are 16-byte aligned
  int off_rhs, off_tv, off_g, off_a;  // shared-memory layout (bytes)
  T* gram;                    // (R, d, d) als_normal_equations
  T* rhs;                     // (R, d)    als_normal_equations
  T* x;                       // (R, d)    als_solve
  T* work;                    // (gridDim.x, tiles, kTileStride) large-d tiles, or null
  const Status* status;
  const T* base;              // (d, d) or null (kExtras kernels only)
  const T* weight;            // (nnz,) or null (kExtras kernels only)
  int off_tw;                 // kExtras: (chunk,) weights of the gathered entries (bytes)
};

template <typename T>
struct Smem {
  int* flag;  // factorization succeeded
  T* inv;     // (8,) reciprocals of the current diagonal tile's pivots
  T* floor;   // (1,) the system's pivot floor (math::pivot_floor)
  T* rhs;     // (dp,) rhs, then y, then x
  T* tv;      // (chunk,) vals - col_offset of the gathered entries
  T* tw;      // (chunk,) their weights (kExtras kernels only)
  T* G;       // (chunk, dp) gathered factor rows (swizzled columns)
  T* A;       // (tiles, kTileStride) lower-triangle tiles (solve, shared-memory path)
};

template <typename T, typename Idx>
__device__ __forceinline__ Smem<T> carve(unsigned char* smem, const Params<T, Idx>& p) {
  Smem<T> s;
  s.flag = reinterpret_cast<int*>(smem);
  s.inv = reinterpret_cast<T*>(smem + 16);
  s.floor = reinterpret_cast<T*>(smem + 96);
  s.rhs = reinterpret_cast<T*>(smem + p.off_rhs);
  s.tv = reinterpret_cast<T*>(smem + p.off_tv);
  s.tw = reinterpret_cast<T*>(smem + p.off_tw);
  s.G = reinterpret_cast<T*>(smem + p.off_g);
  s.A = reinterpret_cast<T*>(smem + p.off_a);
  return s;
}

// Gathers entries [e_begin, e_begin + kc) into G (one warp per entry), tv and
// (kExtras) tw.
template <bool kExtras, typename T, typename Idx>
__device__ __forceinline__ void gather(const Params<T, Idx>& p, const Smem<T>& s,
                                       int64_t e_begin, int kc) {
  constexpr int U = kUnit<T>;
  const int lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
  const int d = int(p.d);
  for (int k = threadIdx.x / kWarp; k < kc; k += warps) {
    const int64_t e = e_begin + k;
    const int64_t c = int64_t(p.indices[e]);
    const T* __restrict__ f = p.F + c * p.d;
    T* g = s.G + int64_t(k) * p.dp;
    if (lane == 0) s.tv[k] = p.offset != nullptr ? p.vals[e] - p.offset[c] : p.vals[e];
    if constexpr (kExtras) {
      if (lane == 0) s.tw[k] = p.weight != nullptr ? p.weight[e] : T(1);
    }
    if (p.vec) {
      for (int q = lane * U; q < d; q += kWarp * U) {
        T v[U];
        load_vec<T, U>(f + q, v);
        store_vec<T, U>(g + gpos<T>(q), v);
      }
    } else {
      for (int q = lane; q < d; q += kWarp) g[gpos<T>(q)] = f[q];
    }
    for (int q = d + lane; q < p.dp; q += kWarp) g[gpos<T>(q)] = T(0);
  }
}

// The 8 columns of one tile in a gathered row: its swizzled 16-byte units at off[].
template <typename T>
__device__ __forceinline__ void load_tile_row(const T* g, const int (&off)[kTile / kUnit<T>],
                                              T (&out)[kTile]) {
  constexpr int U = kUnit<T>;
#pragma unroll
  for (int h = 0; h < kTile / U; ++h) {
    T v[U];
    load_vec<T, U>(g + off[h], v);
#pragma unroll
    for (int u = 0; u < U; ++u) out[h * U + u] = v[u];
  }
}

// One tile row (8 consecutive values, 16-byte aligned) to and from registers.
template <typename T>
__device__ __forceinline__ void load8(const T* p, T (&out)[kTile]) {
#pragma unroll
  for (int h = 0; h < kTile / kUnit<T>; ++h) {
    T v[kUnit<T>];
    load_vec<T, kUnit<T>>(p + h * kUnit<T>, v);
#pragma unroll
    for (int u = 0; u < kUnit<T>; ++u) out[h * kUnit<T> + u] = v[u];
  }
}
template <typename T>
__device__ __forceinline__ void store8(T* p, const T (&x)[kTile]) {
#pragma unroll
  for (int h = 0; h < kTile / kUnit<T>; ++h) {
    T v[kUnit<T>];
#pragma unroll
    for (int u = 0; u < kUnit<T>; ++u) v[u] = x[h * kUnit<T> + u];
    store_vec<T, kUnit<T>>(p + h * kUnit<T>, v);
  }
}

// One pass over the row's entries: acc = the tile (I, J) of sum_e w_e f f^T (when
// `active`; w_e = 1 unless kExtras), and s.rhs[q] += (vals - offset) f[q] in
// entry order (when with_rhs). Every thread of the block must call it; it ends
// with a barrier, after which G may be reused (the shared tiles may alias it).
template <bool kExtras, typename T, typename Idx>
__device__ __forceinline__ void build_pass(const Params<T, Idx>& p, const Smem<T>& s,
                                           int64_t e0, int64_t cnt, bool active, int64_t I,
                                           int64_t J, bool with_rhs, T (&acc)[kTile][kTile]) {
  constexpr int U = kUnit<T>, TU = kTile / U;
#pragma unroll
  for (int i = 0; i < kTile; ++i) {
#pragma unroll
    for (int j = 0; j < kTile; ++j) acc[i][j] = T(0);
  }
  int offa[TU], offb[TU];
#pragma unroll
  for (int h = 0; h < TU; ++h) {
    offa[h] = gpos<T>(int(I) * kTile + h * U);
    offb[h] = gpos<T>(int(J) * kTile + h * U);
  }
  for (int64_t c0 = 0; c0 < cnt; c0 += p.chunk) {
    const int kc = int(cnt - c0 < p.chunk ? cnt - c0 : p.chunk);
    __syncthreads();  // the previous chunk (or the caller's use of the space) is done
    gather<kExtras>(p, s, e0 + c0, kc);
    __syncthreads();
    if (active) {
      for (int k = 0; k < kc; ++k) {
        const T* g = s.G + int64_t(k) * p.dp;
        T a[kTile], b[kTile];
        load_tile_row<T>(g, offa, a);
        load_tile_row<T>(g, offb, b);
        if constexpr (kExtras) {
          const T we = s.tw[k];
#pragma unroll
          for (int i = 0; i < kTile; ++i) a[i] = we * a[i];
        }
#pragma unroll
        for (int i = 0; i < kTile; ++i) {
#pragma unroll
          for (int j = 0; j < kTile; ++j) acc[i][j] += a[i] * b[j];
        }
      }
    }
    if (with_rhs) {
      for (int q = threadIdx.x; q < p.d; q += blockDim.x) {
        const int pq = gpos<T>(q);
        T v = s.rhs[q];
        for (int k = 0; k < kc; ++k) v += s.tv[k] * s.G[int64_t(k) * p.dp + pq];
        s.rhs[q] = v;
      }
    }
  }
  __syncthreads();
}

template <typename T, typename Idx>
__device__ __forceinline__ int64_t row_at(const Params<T, Idx>& p, int64_t pos) {
  return p.order != nullptr ? p.order[pos] : pos;
}

// ------------------------------------------------------------------ validation

template <typename T, typename Idx>
__global__ void __launch_bounds__(kValidateThreads)
    als_validate_kernel(const int64_t* __restrict__ indptr,  // (R + 1,)
                        const Idx* __restrict__ indices,     // (nnz,)
                        const T* __restrict__ reg,           // (d,)
                        int64_t R, int64_t n, int64_t nnz, int64_t d,
                        Status* __restrict__ status) {
  unsigned long long bad_ptr = kNoError, bad_idx = kNoError, bad_reg = kNoError;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t start = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  // A NaN or negative ridge makes the systems indefinite, an infinite one their
  // solutions NaN: refused, as on the CPU (NaN fails both comparisons).
  for (int64_t q = start; q < d; q += stride) {
    const T v = reg[q];
    if (!(v >= T(0) && v <= Limits<T>::max)) note_bad(bad_reg, q);
  }
  scan_csr(indptr, indices, R, n, nnz, start, stride, bad_ptr, bad_idx);
  flush_bad(&status->bad_aux[0], bad_ptr);
  flush_bad(&status->bad_col, bad_idx);
  flush_bad(&status->bad_weight, bad_reg);
}

// ------------------------------------------------------------ normal equations

// gram[r] and rhs[r]; block (x, y) = (row position, tile pass).
template <typename T, typename Idx, bool kExtras>
__global__ void __launch_bounds__(max_normal_threads<T, kExtras>())
    als_normal_equations_kernel(Params<T, Idx> p) {
  if (has_error(p.status)) return;  // offsets or indices are bad: read nothing
  MFEXT_DYNAMIC_SMEM(smem);
  const Smem<T> s = carve(smem, p);
  const int64_t d = p.d;
  for (int64_t pos = blockIdx.x; pos < p.R; pos += gridDim.x) {
    const int64_t r = row_at(p, pos);
    const int64_t e0 = p.indptr[r], cnt = p.indptr[r + 1] - e0;
    const T scale = count_scale<T>(cnt, p.exponent);
    for (int64_t pass = blockIdx.y; pass < p.passes; pass += gridDim.y) {
      const int64_t t = pass * blockDim.x + threadIdx.x;
      const bool active = t < p.tiles;
      int64_t I = 0, J = 0;
      if (active) tile_coords(t, I, J);
      const bool with_rhs = pass == 0;
      if (with_rhs) {
        for (int64_t q = threadIdx.x; q < d; q += blockDim.x) s.rhs[q] = T(0);
      }
      T acc[kTile][kTile];
      build_pass<kExtras>(p, s, e0, cnt, active, I, J, with_rhs, acc);
      if (active) {
        T* g = p.gram + r * d * d;  // (d, d) of row r
#pragma unroll
        for (int i = 0; i < kTile; ++i) {
#pragma unroll
          for (int j = 0; j < kTile; ++j) {
            const int64_t P = I * kTile + i, Q = J * kTile + j;
            if (P < d && Q <= P) {
              T v = acc[i][j];
              if constexpr (kExtras) {
                if (cnt > 0 && p.base != nullptr) v += p.base[P * d + Q];  // not for I
              }
              if (P == Q) v = cnt > 0 ? v + p.reg[P] * scale : T(1);  // empty row: I
              g[P * d + Q] = v;
              g[Q * d + P] = v;
            }
          }
        }
      }
      if (with_rhs) {
        for (int64_t q = threadIdx.x; q < d; q += blockDim.x) p.rhs[r * d + q] = s.rhs[q];
      }
    }
  }
}

// ------------------------------------------------------------------- the solve

// Builds the row's system into the tiles A (ridge on the diagonal, 1 on the
// padded diagonal) and s.rhs (zero-padded to dp). Ends with a barrier.
template <bool kExtras, typename T, typename Idx>
__device__ __forceinline__ void build_system(const Params<T, Idx>& p, const Smem<T>& s, T* A,
                                             int64_t e0, int64_t cnt, T scale) {
  for (int q = threadIdx.x; q < p.dp; q += blockDim.x) s.rhs[q] = T(0);
  for (int64_t pass = 0; pass < p.passes; ++pass) {
    const int64_t t = pass * blockDim.x + threadIdx.x;
    const bool active = t < p.tiles;
    int64_t I = 0, J = 0;
    if (active) tile_coords(t, I, J);
    T acc[kTile][kTile];
    build_pass<kExtras>(p, s, e0, cnt, active, I, J, pass == 0, acc);
    if (active) {
      if constexpr (kExtras) {
        if (p.base != nullptr) {  // the lower triangle (the padding stays out)
#pragma unroll
          for (int i = 0; i < kTile; ++i) {
#pragma unroll
            for (int j = 0; j < kTile; ++j) {
              const int64_t P = I * kTile + i, Q = J * kTile + j;
              if (P < p.d && Q <= P) acc[i][j] += p.base[P * p.d + Q];
            }
          }
        }
      }
      if (I == J) {
#pragma unroll
        for (int i = 0; i < kTile; ++i) {
          const int64_t q = I * kTile + i;
          acc[i][i] = q < p.d ? acc[i][i] + p.reg[q] * scale : T(1);
        }
      }
      T* tile = A + t * kTileStride<T>;
#pragma unroll
      for (int i = 0; i < kTile; ++i) store8(tile + i * kTile, acc[i]);
    }
  }
  __syncthreads();
}

template <typename T>
__device__ __forceinline__ T* tile_at(T* A, int64_t I, int64_t J) {
  return A + (tri(I) + J) * kTileStride<T>;
}

// The diagonal of the system in tiles: entry (q, q).
template <typename T>
__device__ __forceinline__ T& diagonal(T* A, int64_t q) {
  return tile_at(A, q / kTile, q / kTile)[(q % kTile) * (kTile + 1)];
}

// The largest diagonal entry of the system in tiles (q < d), 0 at least.
template <typename T>
__device__ __forceinline__ T max_diagonal(T* A, int64_t d) {
  T max_diag = T(0);
  for (int64_t q = 0; q < d; ++q) max_diag = fmax(max_diag, diagonal(A, q));
  return max_diag;
}

// Thread 0 notes the system's pivot floor in s.floor before factor()
// overwrites the diagonal (math::pivot_floor; the padding stays out).
template <typename T, typename Idx>
__device__ __forceinline__ void note_pivot_floor(const Params<T, Idx>& p, const Smem<T>& s, T* A) {
  if (threadIdx.x == 0) *s.floor = math::pivot_floor(max_diagonal(A, p.d), p.d, Limits<T>::eps);
}

// After factor() succeeded: every pivot (L_qq^2, q < d) must clear the floor,
// as on the CPU, or the system takes the fallback. One thread, O(d), outside
// factor()'s register-bound loop.
template <typename T, typename Idx>
__device__ __forceinline__ bool pivots_clear_floor(const Params<T, Idx>& p, const Smem<T>& s,
                                                   T* A) {
  if (threadIdx.x == 0) {
    bool ok = true;
    for (int64_t q = 0; q < p.d && ok; ++q) {
      const T l = diagonal(A, q);
      ok = math::good_pivot(l * l, *s.floor, Limits<T>::max);
    }
    *s.flag = ok ? 1 : 0;
  }
  __syncthreads();
  const bool ok = *s.flag != 0;
  __syncthreads();  // s.flag is written again by the next factor()
  return ok;
}

// The CPU's fallback for a matrix that is not positive definite:
// math::fallback_ridge on the diagonal.
template <typename T, typename Idx>
__device__ __forceinline__ void add_fallback_ridge(const Params<T, Idx>& p, T* A) {
  if (threadIdx.x == 0) {
    const T ridge =
        math::fallback_ridge(max_diagonal(A, p.d), p.d, Limits<T>::eps, Limits<T>::min);
    for (int64_t q = 0; q < p.d; ++q) diagonal(A, q) += ridge;
  }
  __syncthreads();
}

// Blocked right-looking Cholesky of the tiles A (in place, lower triangle) with
// the forward substitution L y = rhs folded in (s.rhs becomes y). The updates
// of every element run in column order, as in the CPU's unblocked loop.
// Returns false (uniformly) at a pivot that is not positive and finite.
template <typename T, typename Idx>
__device__ __forceinline__ bool factor(const Params<T, Idx>& p, const Smem<T>& s, T* A) {
  const int64_t nt = p.nt;
  for (int64_t K = 0; K < nt; ++K) {
    T* akk = tile_at(A, K, K);
    if (threadIdx.x == 0) {
      // The diagonal tile, unblocked in registers, then y_K.
      T l[kTile][kTile];
      bool ok = true;
#pragma unroll
      for (int i = 0; i < kTile; ++i) {
#pragma unroll
        for (int j = 0; j <= i; ++j) l[i][j] = akk[i * kTile + j];
      }
#pragma unroll
      for (int j = 0; j < kTile; ++j) {
        const T pivot = l[j][j];
        // > 0 and finite here; the floor is checked after the factorization
        // (pivots_clear_floor), away from this register-bound loop.
        ok = ok && math::good_pivot(pivot, T(0), Limits<T>::max);
        const T ljj = root(pivot);
        const T inv = T(1) / ljj;
        l[j][j] = ljj;
        s.inv[j] = inv;
#pragma unroll
        for (int i = j + 1; i < kTile; ++i) l[i][j] *= inv;
#pragma unroll
        for (int i = j + 1; i < kTile; ++i) {
#pragma unroll
          for (int q = j + 1; q <= i; ++q) l[i][q] -= l[i][j] * l[q][j];
        }
      }
      if (ok) {
        T* y = s.rhs + K * kTile;
#pragma unroll
        for (int i = 0; i < kTile; ++i) {
          T v = y[i];
#pragma unroll
          for (int t = 0; t < i; ++t) v -= l[i][t] * y[t];
          y[i] = v / l[i][i];
#pragma unroll
          for (int j = 0; j <= i; ++j) akk[i * kTile + j] = l[i][j];
        }
      }
      *s.flag = ok ? 1 : 0;
    }
    __syncthreads();
    if (*s.flag == 0) return false;
    // The panel below: L_IK = A_IK L_KK^-T, one row per thread, and y's update.
    const int64_t below = (nt - K - 1) * kTile;
    for (int64_t g = threadIdx.x; g < below; g += blockDim.x) {
      const int64_t row = (K + 1) * kTile + g;
      T* a = tile_at(A, row / kTile, K) + (row % kTile) * kTile;
      T x[kTile];
      load8(a, x);
#pragma unroll
      for (int j = 0; j < kTile; ++j) {
#pragma unroll
        for (int t = 0; t < j; ++t) x[j] -= x[t] * akk[j * kTile + t];
        x[j] *= s.inv[j];
      }
      store8(a, x);
      T b = s.rhs[row];
#pragma unroll
      for (int j = 0; j < kTile; ++j) b -= x[j] * s.rhs[K * kTile + j];
      s.rhs[row] = b;
    }
    __syncthreads();
    // The trailing tiles: A_IJ -= L_IK L_JK^T for K < J <= I.
    const int64_t m = nt - K - 1;
    for (int64_t u = threadIdx.x; u < tri(m); u += blockDim.x) {
      int64_t I, J;
      tile_coords(u, I, J);
      I += K + 1;
      J += K + 1;
      T* c = tile_at(A, I, J);
      const T* li = tile_at(A, I, K);
      const T* lj = tile_at(A, J, K);
      T acc[kTile][kTile];
#pragma unroll
      for (int i = 0; i < kTile; ++i) load8(c + i * kTile, acc[i]);
#pragma unroll 1
      for (int k = 0; k < kTile; ++k) {  // rolled: keeps the loads of one column live only
        T a[kTile], b[kTile];
#pragma unroll
        for (int i = 0; i < kTile; ++i) {
          a[i] = li[i * kTile + k];
          b[i] = lj[i * kTile + k];
        }
#pragma unroll
        for (int i = 0; i < kTile; ++i) {
#pragma unroll
          for (int j = 0; j < kTile; ++j) acc[i][j] -= a[i] * b[j];
        }
      }
#pragma unroll
      for (int i = 0; i < kTile; ++i) store8(c + i * kTile, acc[i]);
    }
    __syncthreads();
  }
  return true;
}

// L^T x = y in place in s.rhs, tile column by tile column from the last, in the
// CPU's order (each x_i subtracted from the rows above it, i descending).
template <typename T, typename Idx>
__device__ __forceinline__ void back_substitute(const Params<T, Idx>& p, const Smem<T>& s,
                                                T* A) {
  for (int64_t K = p.nt - 1; K >= 0; --K) {
    T* xk = s.rhs + K * kTile;
    if (threadIdx.x == 0) {
      const T* l = tile_at(A, K, K);
      T x[kTile];
#pragma unroll
      for (int i = 0; i < kTile; ++i) x[i] = xk[i];
#pragma unroll
      for (int i = kTile - 1; i >= 0; --i) {
        x[i] = x[i] / l[i * kTile + i];
#pragma unroll
        for (int t = 0; t < i; ++t) x[t] -= l[i * kTile + t] * x[i];
      }
#pragma unroll
      for (int i = 0; i < kTile; ++i) xk[i] = x[i];
    }
    __syncthreads();
    for (int64_t row = threadIdx.x; row < K * kTile; row += blockDim.x) {
      const T* l = tile_at(A, K, row / kTile) + row % kTile;  // column `row` of tile row K
      T b = s.rhs[row];
#pragma unroll
      for (int i = kTile - 1; i >= 0; --i) b -= l[i * kTile] * xk[i];
      s.rhs[row] = b;
    }
    __syncthreads();
  }
}

// x[r] for every row; block b takes rows order[b], order[b + gridDim.x], ...
template <typename T, typename Idx, bool kSmemTiles, bool kExtras>
__global__ void __launch_bounds__(max_solve_threads<T>()) als_solve_kernel(Params<T, Idx> p) {
  if (has_error(p.status)) return;  // offsets or indices are bad: read nothing
  MFEXT_DYNAMIC_SMEM(smem);
  const Smem<T> s = carve(smem, p);
  T* A;
  if constexpr (kSmemTiles) {
    A = s.A;
  } else {
    A = p.work + int64_t(blockIdx.x) * p.tiles * kTileStride<T>;
  }
  const int64_t d = p.d;
  for (int64_t pos = blockIdx.x; pos < p.R; pos += gridDim.x) {
    const int64_t r = row_at(p, pos);
    const int64_t e0 = p.indptr[r], cnt = p.indptr[r + 1] - e0;
    T* x = p.x + r * d;
    if (cnt == 0) {  // gram = I, rhs = 0
      for (int64_t q = threadIdx.x; q < d; q += blockDim.x) x[q] = T(0);
      continue;
    }
    const T scale = count_scale<T>(cnt, p.exponent);
    bool solved = false;
    for (int attempt = 0; attempt < 2 && !solved; ++attempt) {
      build_system<kExtras>(p, s, A, e0, cnt, scale);
      if (attempt == 1) add_fallback_ridge(p, A);
      note_pivot_floor(p, s, A);
      solved = factor(p, s, A) && pivots_clear_floor(p, s, A);
    }
    if (solved) back_substitute(p, s, A);
    for (int64_t q = threadIdx.x; q < d; q += blockDim.x) {
      x[q] = solved ? s.rhs[q] : T(NAN);
    }
    __syncthreads();  // s.rhs and the tiles are free for the next row
  }
}

// ----------------------------------------------------------------------- plans

struct Plan {
  bool ok = false;
  int64_t nt = 0, tiles = 0, passes = 0;
  int threads = 0, dp = 0, chunk = 0;
  bool smem_tiles = false;  // solve: the tiles in shared memory
  size_t off_rhs = 0, off_tv = 0, off_tw = 0, off_g = 0, off_a = 0, smem = 0;
  unsigned grid = 1, grid_y = 1;
  size_t slot_bytes = 0, work_bytes = 0;  // large-d solve: per block, all blocks
};

size_t align16(size_t x) { return (x + 15) / 16 * 16; }
size_t tiles_bytes(int64_t tiles, size_t sz) {
  return size_t(tiles) * (kTile * kTile + 16 / sz) * sz;  // kTileStride<T> elements each
}
size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// Shared-memory layout for a chunk of k entries (with their weights when
// `extras`); the tiles alias the chunk when one pass builds them (the chunk is
// dead by then).
void layout(Plan& pl, size_t sz, int k, bool tiles_in_smem, bool extras) {
  pl.chunk = k;
  pl.off_rhs = kMiscBytes;
  const size_t base = kMiscBytes + align16(size_t(pl.dp) * sz);
  pl.off_tv = base;
  pl.off_tw = base + align16(size_t(k) * sz);
  pl.off_g = pl.off_tw + (extras ? align16(size_t(k) * sz) : 0);
  const size_t chunk_end = pl.off_g + size_t(k) * size_t(pl.dp) * sz;
  if (!tiles_in_smem) {
    pl.off_a = 0;
    pl.smem = chunk_end;
    return;
  }
  const size_t a_bytes = tiles_bytes(pl.tiles, sz);
  pl.off_a = pl.passes == 1 ? base : align16(chunk_end);
  pl.smem = pl.passes == 1 ? std::max(chunk_end, base + a_bytes) : pl.off_a + a_bytes;
}

template <typename T, typename Idx>
Plan make_plan(const AlsParams<T, Idx>& a, bool solve, const DeviceInfo& dev) {
  Plan pl;
  const size_t sz = sizeof(T);
  const int64_t d = a.d;
  if (d < 1 || d > (1 << 28)) return pl;
  pl.nt = ceil_div(d, kTile);
  pl.dp = int(pl.nt * kTile);
  pl.tiles = tri(pl.nt);
  const bool extras = a.base != nullptr || a.weight != nullptr;
  const int64_t cap =
      solve    ? (sz == 4 ? max_solve_threads<float>() : max_solve_threads<double>())
      : extras ? (sz == 4 ? max_normal_threads<float, true>() : max_normal_threads<double, true>())
               : (sz == 4 ? max_threads<float>() : max_threads<double>());
  pl.threads = int(std::min<int64_t>(cap, ceil_div(pl.tiles, kWarp) * kWarp));
  pl.passes = ceil_div(pl.tiles, pl.threads);
  const size_t row_bytes = size_t(pl.dp) * sz;
  const size_t budget = dev.smem_optin;
  auto chunk_for = [&](size_t target) {
    return int(std::max<size_t>(1, std::min<size_t>(kMaxChunk, target / row_bytes)));
  };
  if (solve) {
    // Shared-memory tiles when they fit with a chunk of at least 4 entries.
    const size_t a_bytes = tiles_bytes(pl.tiles, sz);
    for (int k = chunk_for(std::max(kChunkBytes, pl.passes == 1 ? a_bytes : 0)); k >= 4; k /= 2) {
      layout(pl, sz, k, true, extras);
      if (pl.smem <= budget) {
        pl.smem_tiles = true;
        break;
      }
    }
  }
  if (!pl.smem_tiles) {
    int k = chunk_for(kChunkBytes);
    layout(pl, sz, k, false, extras);
    while (pl.smem > budget && k > 1) layout(pl, sz, k = k / 2, false, extras);
    if (pl.smem > budget) return pl;
  }
  const int64_t R = std::max<int64_t>(a.R, 1);
  const int64_t max_grid = 0x7FFFFFFF;
  pl.grid = unsigned(std::min(R, max_grid));
  if (!solve) pl.grid_y = unsigned(std::min<int64_t>(pl.passes, 65535));
  if (solve && !pl.smem_tiles) {
    pl.slot_bytes = align_up(tiles_bytes(pl.tiles, sz));
    const int64_t slots = int64_t(std::max<size_t>(1, kWorkBudget / pl.slot_bytes));
    pl.grid = unsigned(std::min({R, int64_t(4) * dev.sm_count, slots}));
    pl.work_bytes = size_t(pl.grid) * pl.slot_bytes;
  }
  pl.ok = true;
  return pl;
}

// Workspace: [Status][a dummy loss for the report][large-d tiles].
constexpr size_t kStatusOffset = 0, kLossOffset = kAlign, kWorkOffset = 2 * kAlign;

template <typename T, typename Idx>
Params<T, Idx> params_for(const AlsParams<T, Idx>& a, const Plan& pl, char* ws) {
  Params<T, Idx> p;
  p.indptr = a.indptr;
  p.indices = a.indices;
  p.vals = a.vals;
  p.F = a.F;
  p.offset = a.col_offset;
  p.reg = a.reg_diag;
  p.order = a.order;
  p.exponent = a.count_exponent;
  p.R = a.R;
  p.d = a.d;
  p.nt = pl.nt;
  p.tiles = pl.tiles;
  p.passes = pl.passes;
  p.dp = pl.dp;
  p.chunk = pl.chunk;
  p.vec = a.d % kUnit<T> == 0 && reinterpret_cast<uintptr_t>(a.F) % 16 == 0;
  p.off_rhs = int(pl.off_rhs);
  p.off_tv = int(pl.off_tv);
  p.off_g = int(pl.off_g);
  p.off_a = int(pl.off_a);
  p.base = a.base;
  p.weight = a.weight;
  p.off_tw = int(pl.off_tw);
  p.gram = p.rhs = p.x = nullptr;
  p.work = pl.work_bytes > 0 ? reinterpret_cast<T*>(ws + kWorkOffset) : nullptr;
  p.status = reinterpret_cast<const Status*>(ws + kStatusOffset);
  return p;
}

template <typename Kernel>
cudaError_t allow_smem(Kernel kernel, size_t smem) {
  if (smem <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
}

// What every call does first: the status, then the validation.
template <typename T, typename Idx>
cudaError_t validate(const AlsParams<T, Idx>& a, char* ws, const DeviceInfo& dev,
                     cudaStream_t stream) {
  Status* status = reinterpret_cast<Status*>(ws + kStatusOffset);
  MFEXT_RETURN_IF_ERROR(status_init(status, stream));
  const int64_t work = std::max<int64_t>({a.R + 1, a.nnz, a.d});
  const unsigned grid = unsigned(std::max<int64_t>(
      1, std::min<int64_t>(ceil_div(work, kValidateThreads), int64_t(dev.sm_count) * 8)));
  auto kernel = als_validate_kernel<T, Idx>;
  MFEXT_LAUNCH(kernel, grid, kValidateThreads, 0, stream, a.indptr, a.indices, a.reg_diag, a.R,
               a.n, a.nnz, a.d, status);
  MFEXT_LAUNCH_CHECK();
  return cudaSuccess;
}

// ... and last: NaN outputs and the mailbox report when the status holds an error.
template <typename T, typename Idx>
cudaError_t finish(const AlsParams<T, Idx>& a, bool solve, T* out0, int64_t count0, T* out1,
                   int64_t count1, char* ws, const DeviceInfo& dev, cudaStream_t stream) {
  const Status* status = reinterpret_cast<const Status*>(ws + kStatusOffset);
  const int sms = dev.sm_count;
  const DType dt = dtype_of<T>();
  MFEXT_RETURN_IF_ERROR(poison_on_error_launch(status, out0, count0, dt, sms, stream));
  if (out1 != nullptr) {
    MFEXT_RETURN_IF_ERROR(poison_on_error_launch(status, out1, count1, dt, sms, stream));
  }
  ErrorContext ctx;
  ctx.op = solve ? kOpAlsSolve : kOpAlsNormal;
  ctx.cols = a.indices;
  ctx.idx64 = sizeof(Idx) == 8;
  ctx.n = a.n;
  ctx.aux[0] = reinterpret_cast<const long long*>(a.indptr);
  ctx.aux_bound[0] = a.nnz;
  ctx.weight = a.reg_diag;  // a bad reg_diag entry is reported as a weight error
  ctx.ws0 = 1;
  ctx.ws1 = 0;
  // The reduction of zero partial losses only carries the report. Its scratch
  // "loss" takes F's dtype, the dtype in which the report reads reg_diag.
  return finalize_loss_launch(nullptr, 0, status, ws + kLossOffset, dt, ctx, a.mailbox, stream);
}

template <typename T, typename Idx>
cudaError_t normal_typed(const AlsParams<T, Idx>& a, T* gram, T* rhs, char* ws, const Plan& pl,
                         const DeviceInfo& dev, cudaStream_t stream) {
  MFEXT_RETURN_IF_ERROR(validate<T, Idx>(a, ws, dev, stream));
  if (a.R > 0) {
    Params<T, Idx> p = params_for<T, Idx>(a, pl, ws);
    p.gram = gram;
    p.rhs = rhs;
    auto kernel = a.base != nullptr || a.weight != nullptr
                      ? als_normal_equations_kernel<T, Idx, true>
                      : als_normal_equations_kernel<T, Idx, false>;
    MFEXT_RETURN_IF_ERROR(allow_smem(kernel, pl.smem));
    MFEXT_LAUNCH(kernel, dim3(pl.grid, pl.grid_y), pl.threads, pl.smem, stream, p);
    MFEXT_LAUNCH_CHECK();
  }
  return finish<T, Idx>(a, false, gram, a.R * a.d * a.d, rhs, a.R * a.d, ws, dev, stream);
}

template <typename T, typename Idx>
cudaError_t solve_typed(const AlsParams<T, Idx>& a, T* x, char* ws, const Plan& pl, const DeviceInfo& dev,
                        cudaStream_t stream) {
  MFEXT_RETURN_IF_ERROR(validate<T, Idx>(a, ws, dev, stream));
  if (a.R > 0) {
    Params<T, Idx> p = params_for<T, Idx>(a, pl, ws);
    p.x = x;
    const bool extras = a.base != nullptr || a.weight != nullptr;
    auto kernel = pl.smem_tiles ? (extras ? als_solve_kernel<T, Idx, true, true>
                                          : als_solve_kernel<T, Idx, true, false>)
                                : (extras ? als_solve_kernel<T, Idx, false, true>
                                          : als_solve_kernel<T, Idx, false, false>);
    MFEXT_RETURN_IF_ERROR(allow_smem(kernel, pl.smem));
    MFEXT_LAUNCH(kernel, pl.grid, pl.threads, pl.smem, stream, p);
    MFEXT_LAUNCH_CHECK();
  }
  return finish<T, Idx>(a, true, x, a.R * a.d, nullptr, 0, ws, dev, stream);
}

size_t workspace_for(const Plan& pl) { return kWorkOffset + pl.work_bytes; }

}  // namespace
}  // namespace als

template <typename T, typename I>
bool als_supported(const AlsParams<T, I>& p, bool solve, const DeviceInfo& dev) {
  return als::make_plan(p, solve, dev).ok;
}

template <typename T, typename I>
bool als_solve_in_smem(const AlsParams<T, I>& p, const DeviceInfo& dev) {
  return als::make_plan(p, true, dev).smem_tiles;
}

template <typename T, typename I>
size_t als_workspace_bytes(const AlsParams<T, I>& p, bool solve, const DeviceInfo& dev) {
  return als::workspace_for(als::make_plan(p, solve, dev));
}

template <typename T, typename I>
cudaError_t als_normal_equations_launch(const AlsParams<T, I>& p, T* gram, T* rhs,
                                        void* workspace, size_t workspace_bytes,
                                        const DeviceInfo& dev, cudaStream_t stream) {
  const als::Plan pl = als::make_plan(p, false, dev);
  if (!pl.ok || workspace_bytes < als::workspace_for(pl)) return cudaErrorInvalidValue;
  return als::normal_typed<T, I>(p, gram, rhs, static_cast<char*>(workspace), pl, dev, stream);
}

template <typename T, typename I>
cudaError_t als_solve_launch(const AlsParams<T, I>& p, T* x, void* workspace,
                             size_t workspace_bytes, const DeviceInfo& dev, cudaStream_t stream) {
  const als::Plan pl = als::make_plan(p, true, dev);
  if (!pl.ok || workspace_bytes < als::workspace_for(pl)) return cudaErrorInvalidValue;
  return als::solve_typed<T, I>(p, x, static_cast<char*>(workspace), pl, dev, stream);
}

#define MFEXT_INSTANTIATE(T, I)                                                              \
  template bool als_supported<T, I>(const AlsParams<T, I>&, bool, const DeviceInfo&);       \
  template bool als_solve_in_smem<T, I>(const AlsParams<T, I>&, const DeviceInfo&);         \
  template size_t als_workspace_bytes<T, I>(const AlsParams<T, I>&, bool, const DeviceInfo&); \
  template cudaError_t als_normal_equations_launch<T, I>(const AlsParams<T, I>&, T*, T*,    \
                                                         void*, size_t, const DeviceInfo&,  \
                                                         cudaStream_t);                     \
  template cudaError_t als_solve_launch<T, I>(const AlsParams<T, I>&, T*, void*, size_t,    \
                                              const DeviceInfo&, cudaStream_t);
MFEXT_INSTANTIATE(float, int32_t)
MFEXT_INSTANTIATE(float, int64_t)
MFEXT_INSTANTIATE(double, int32_t)
MFEXT_INSTANTIATE(double, int64_t)
#undef MFEXT_INSTANTIATE

}  // namespace cuda
}  // namespace mfext
