// The CUDA kernels of mfext::implicit_als_cg_ (see implicit_als_cg.h): the
// per-row half of implicit ALS's conjugate gradient (semantics: the CPU op,
// csrc/cpu/implicit_als_cg_kernel.cpp). Row r's system is
//   A = gram + sum_e w_e y_c y_c^T,   b = sum_e (1 + w_e) y_c,   c = indices[e];
// the glue computes PG = P @ gram (X @ gram first) with cuBLAS, then one rows
// kernel adds the sparse part to the row of PG and updates the row's CG state:
//   first: r = -PG_r + sum_e (1 + w_e (1 - y_c . x_r)) y_c, p = r, rs = r . r
//   step:  Ap = PG_r + sum_e w_e (y_c . p_r) y_c; pAp = p . Ap (<= 0: stop);
//          a = rs / pAp; x += a p; r -= a Ap; rs' = r . r (< 1e-20: stop);
//          p = r + (rs' / rs) p; rs = rs'
// so Ap never goes to memory. A stopped row is skipped (the GEMM still covers it).
//
// Kernels:
//   implicit_cg_validate_kernel  indptr non-decreasing within [0, nnz], indices in
//                                [0, n) over indptr[0]..indptr[R]: first bad
//                                positions -> Status (indptr: bad_aux[0], indices: bad_col).
//   implicit_cg_rows_kernel      one warp per row. d <= 256: the row's x/p, r and
//                                accumulator in registers, V = ceil(d / 32) rounded
//                                up to 1, 2, 4 or 8 elements per lane (lane l holds
//                                columns l, l + 32, ...: every row load is coalesced);
//                                four entries at a time (four gathers of Y rows in
//                                flight, four interleaved butterfly reductions).
//                                d > 256 (V = 0): the same with the row in global
//                                memory, each lane owning the columns it reads.
//
// Determinism: each row's sums run in entry order and every reduction is the
// same butterfly, so the result depends on d and the dtype only (and on the GEMM).
//
// Errors: the rows kernels return at once when the Status holds an error (bad
// offsets or indices are never dereferenced); finish() sets X to NaN and sends
// the first error to the mailbox; nothing synchronizes.
#include <algorithm>
#include <cstdint>

#include "common.cuh"
#include "implicit_als_cg.h"

namespace mfext {
namespace cuda {
namespace implicit_cg {
namespace {

constexpr int kThreads = 256;  // 8 rows per block
constexpr int kValidateThreads = 256;
constexpr double kConverged = 1e-20;  // implicit's threshold on |r|^2
constexpr size_t kStatusOffset = 0, kLossOffset = 256, kWorkspaceBytes = 512;

template <typename T, typename Idx>
using P = ImplicitCgParams<T, Idx>;

template <typename T, typename Idx>
__global__ void __launch_bounds__(kValidateThreads)
    implicit_cg_validate_kernel(const int64_t* __restrict__ indptr,  // (R + 1,)
                                const Idx* __restrict__ indices,     // (nnz,)
                                int64_t R, int64_t n, int64_t nnz, Status* __restrict__ status) {
  unsigned long long bad_ptr = kNoError, bad_idx = kNoError;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t start = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  scan_csr(indptr, indices, R, n, nnz, start, stride, bad_ptr, bad_idx);
  flush_bad(&status->bad_aux[0], bad_ptr);
  flush_bad(&status->bad_col, bad_idx);
}

// Row vectors in registers: lane l holds columns l + 32 j, j < V (zero past d).
template <typename T, int V>
__device__ __forceinline__ void load_row(const T* __restrict__ row, int lane, int64_t d,
                                         T (&v)[V]) {
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int64_t q = lane + int64_t(j) * kWarp;
    v[j] = q < d ? row[q] : T(0);
  }
}
template <typename T, int V>
__device__ __forceinline__ void store_row(T* __restrict__ row, int lane, int64_t d,
                                          const T (&v)[V]) {
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int64_t q = lane + int64_t(j) * kWarp;
    if (q < d) row[q] = v[j];
  }
}
template <typename T, int V>
__device__ __forceinline__ T lane_dot(const T (&a)[V], const T (&b)[V]) {
  T s = T(0);
#pragma unroll
  for (int j = 0; j < V; ++j) s += a[j] * b[j];
  return s;
}

// Four warp sums at once (the same butterfly as group_allreduce, interleaved).
template <typename T>
__device__ __forceinline__ void allreduce4(T (&s)[4]) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
#pragma unroll
    for (int u = 0; u < 4; ++u) s[u] += __shfl_xor_sync(0xffffffffu, s[u], offset);
  }
}

// The coefficient of y_c: first: 1 + w (1 - y . x); step: w (y . p).
template <bool kFirst, typename T>
__device__ __forceinline__ T coef(T w, T yv) {
  return kFirst ? T(1) + w * (T(1) - yv) : w * yv;
}

// d <= 32 V: the row in registers.
template <typename T, typename Idx, int V, bool kFirst>
__device__ __forceinline__ void row_in_registers(const P<T, Idx>& p, int64_t row, int lane) {
  const int64_t d = p.d, e0 = p.indptr[row], e1 = p.indptr[row + 1];
  T v[V], acc[V];  // v: x (first) or p; acc: the row of PG, then r (first) or Ap
  load_row(kFirst ? p.X + row * d : p.p + row * d, lane, d, v);
  load_row(p.PG + row * d, lane, d, acc);
  if constexpr (kFirst) {
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = -acc[j];
  }
  int64_t e = e0;
  for (; e + 4 <= e1; e += 4) {
    T y[4][V], s[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) load_row(p.Y + int64_t(p.indices[e + u]) * d, lane, d, y[u]);
#pragma unroll
    for (int u = 0; u < 4; ++u) s[u] = lane_dot(y[u], v);
    allreduce4(s);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const T c = coef<kFirst>(p.weight[e + u], s[u]);
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] += c * y[u][j];
    }
  }
  for (; e < e1; ++e) {
    T y[V];
    load_row(p.Y + int64_t(p.indices[e]) * d, lane, d, y);
    const T c = coef<kFirst>(p.weight[e], group_allreduce(lane_dot(y, v), kWarp));
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] += c * y[j];
  }
  if constexpr (kFirst) {
    store_row(p.r + row * d, lane, d, acc);
    store_row(p.p + row * d, lane, d, acc);
    const T rs = group_allreduce(lane_dot(acc, acc), kWarp);
    if (lane == 0) {
      p.rs[row] = rs;
      p.active[row] = rs < T(kConverged) ? 0 : 1;  // a NaN goes on, and reaches X
    }
  } else {
    const T pAp = group_allreduce(lane_dot(v, acc), kWarp);
    if (pAp <= T(0)) {
      if (lane == 0) p.active[row] = 0;
      return;
    }
    const T rs = p.rs[row], a = rs / pAp;
    T x[V], r[V];
    load_row(p.X + row * d, lane, d, x);
    load_row(p.r + row * d, lane, d, r);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      x[j] += a * v[j];
      r[j] -= a * acc[j];
    }
    store_row(p.X + row * d, lane, d, x);
    store_row(p.r + row * d, lane, d, r);
    const T rs_new = group_allreduce(lane_dot(r, r), kWarp);
    if (lane == 0) p.rs[row] = rs_new;
    if (rs_new < T(kConverged)) {
      if (lane == 0) p.active[row] = 0;
      return;
    }
    const T beta = rs_new / rs;
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = r[j] + beta * v[j];
    store_row(p.p + row * d, lane, d, v);
  }
}

// Any d: the row in global memory (the accumulator is the row of PG); lane l
// reads and writes columns l, l + 32, ... only, so no lane waits on another
// except in the reductions.
template <typename T, typename Idx, bool kFirst>
__device__ __forceinline__ void row_in_memory(const P<T, Idx>& p, int64_t row, int lane) {
  const int64_t d = p.d, e0 = p.indptr[row], e1 = p.indptr[row + 1];
  const T* __restrict__ v = (kFirst ? p.X : p.p) + row * d;
  T* __restrict__ acc = p.PG + row * d;
  if constexpr (kFirst) {
    for (int64_t q = lane; q < d; q += kWarp) acc[q] = -acc[q];
  }
  for (int64_t e = e0; e < e1; ++e) {
    const T* __restrict__ y = p.Y + int64_t(p.indices[e]) * d;
    T s = T(0);
    for (int64_t q = lane; q < d; q += kWarp) s += y[q] * v[q];
    const T c = coef<kFirst>(p.weight[e], group_allreduce(s, kWarp));
    for (int64_t q = lane; q < d; q += kWarp) acc[q] += c * y[q];
  }
  T* __restrict__ x = p.X + row * d;
  T* __restrict__ r = p.r + row * d;
  T* __restrict__ pv = p.p + row * d;
  if constexpr (kFirst) {
    T s = T(0);
    for (int64_t q = lane; q < d; q += kWarp) {
      const T a = acc[q];
      r[q] = a;
      pv[q] = a;
      s += a * a;
    }
    const T rs = group_allreduce(s, kWarp);
    if (lane == 0) {
      p.rs[row] = rs;
      p.active[row] = rs < T(kConverged) ? 0 : 1;  // a NaN goes on, and reaches X
    }
  } else {
    T s = T(0);
    for (int64_t q = lane; q < d; q += kWarp) s += pv[q] * acc[q];
    const T pAp = group_allreduce(s, kWarp);
    if (pAp <= T(0)) {
      if (lane == 0) p.active[row] = 0;
      return;
    }
    const T rs = p.rs[row], a = rs / pAp;
    s = T(0);
    for (int64_t q = lane; q < d; q += kWarp) {
      x[q] += a * pv[q];
      const T rq = r[q] - a * acc[q];
      r[q] = rq;
      s += rq * rq;
    }
    const T rs_new = group_allreduce(s, kWarp);
    if (lane == 0) p.rs[row] = rs_new;
    if (rs_new < T(kConverged)) {
      if (lane == 0) p.active[row] = 0;
      return;
    }
    const T beta = rs_new / rs;
    for (int64_t q = lane; q < d; q += kWarp) pv[q] = r[q] + beta * pv[q];
  }
}

// One warp per row (grid-stride over rows). V = 0: the row in global memory.
template <typename T, typename Idx, int V, bool kFirst>
__global__ void __launch_bounds__(kThreads)
    implicit_cg_rows_kernel(ImplicitCgParams<T, Idx> p, const Status* __restrict__ status) {
  if (has_error(status)) return;  // offsets or indices are bad: read nothing
  const int lane = threadIdx.x % kWarp;
  const int64_t per_block = blockDim.x / kWarp;
  const int64_t warps = int64_t(gridDim.x) * per_block;
  for (int64_t row = int64_t(blockIdx.x) * per_block + threadIdx.x / kWarp; row < p.R;
       row += warps) {
    if (!kFirst && p.active[row] == 0) continue;
    if constexpr (V > 0) {
      row_in_registers<T, Idx, V, kFirst>(p, row, lane);
    } else {
      row_in_memory<T, Idx, kFirst>(p, row, lane);
    }
  }
}

template <typename T, typename Idx, bool kFirst>
cudaError_t rows_typed(const P<T, Idx>& p, const Status* status, cudaStream_t stream) {
  const int64_t per_block = kThreads / kWarp;
  const unsigned grid = unsigned(std::min<int64_t>(ceil_div(p.R, per_block), int64_t(1) << 30));
  const int64_t d = p.d;
  auto kernel = d <= 32    ? implicit_cg_rows_kernel<T, Idx, 1, kFirst>
                : d <= 64  ? implicit_cg_rows_kernel<T, Idx, 2, kFirst>
                : d <= 128 ? implicit_cg_rows_kernel<T, Idx, 4, kFirst>
                : d <= 256 ? implicit_cg_rows_kernel<T, Idx, 8, kFirst>
                           : implicit_cg_rows_kernel<T, Idx, 0, kFirst>;
  MFEXT_LAUNCH(kernel, grid, kThreads, 0, stream, p, status);
  MFEXT_LAUNCH_CHECK();
  return cudaSuccess;
}

}  // namespace
}  // namespace implicit_cg

size_t implicit_cg_workspace_bytes() { return implicit_cg::kWorkspaceBytes; }

template <typename T, typename I>
cudaError_t implicit_cg_validate_launch(const ImplicitCgParams<T, I>& p, void* workspace,
                                        const DeviceInfo& dev, cudaStream_t stream) {
  using namespace implicit_cg;
  Status* status = reinterpret_cast<Status*>(static_cast<char*>(workspace) + kStatusOffset);
  MFEXT_RETURN_IF_ERROR(status_init(status, stream));
  const int64_t work = std::max<int64_t>(p.R + 1, p.nnz);
  const unsigned grid = unsigned(std::max<int64_t>(
      1, std::min<int64_t>(ceil_div(work, kValidateThreads), int64_t(dev.sm_count) * 8)));
  auto kernel = implicit_cg_validate_kernel<T, I>;
  MFEXT_LAUNCH(kernel, grid, kValidateThreads, 0, stream, p.indptr, p.indices, p.R, p.n, p.nnz,
               status);
  MFEXT_LAUNCH_CHECK();
  return cudaSuccess;
}

template <typename T, typename I>
cudaError_t implicit_cg_rows_launch(const ImplicitCgParams<T, I>& p, bool first,
                                    const void* workspace, const DeviceInfo&,
                                    cudaStream_t stream) {
  using namespace implicit_cg;
  if (p.R == 0) return cudaSuccess;
  const Status* status =
      reinterpret_cast<const Status*>(static_cast<const char*>(workspace) + kStatusOffset);
  return first ? rows_typed<T, I, true>(p, status, stream)
               : rows_typed<T, I, false>(p, status, stream);
}

template <typename T, typename I>
cudaError_t implicit_cg_finish_launch(const ImplicitCgParams<T, I>& p, void* workspace,
                                      const DeviceInfo& dev, cudaStream_t stream) {
  using namespace implicit_cg;
  char* ws = static_cast<char*>(workspace);
  const Status* status = reinterpret_cast<const Status*>(ws + kStatusOffset);
  const DType dt = dtype_of<T>();
  MFEXT_RETURN_IF_ERROR(poison_on_error_launch(status, p.X, p.R * p.d, dt, dev.sm_count, stream));
  ErrorContext ctx;
  ctx.op = kOpImplicitCg;
  ctx.cols = p.indices;
  ctx.idx64 = sizeof(I) == 8;
  ctx.n = p.n;
  ctx.aux[0] = reinterpret_cast<const long long*>(p.indptr);
  ctx.aux_bound[0] = p.nnz;
  ctx.ws0 = 1;
  ctx.ws1 = 0;
  // The reduction of zero partial losses only carries the report.
  return finalize_loss_launch(nullptr, 0, status, ws + kLossOffset, dt, ctx, p.mailbox, stream);
}

#define MFEXT_INSTANTIATE(T, I)                                                                \
  template cudaError_t implicit_cg_validate_launch<T, I>(const ImplicitCgParams<T, I>&, void*, \
                                                         const DeviceInfo&, cudaStream_t);     \
  template cudaError_t implicit_cg_rows_launch<T, I>(const ImplicitCgParams<T, I>&, bool,      \
                                                     const void*, const DeviceInfo&,           \
                                                     cudaStream_t);                            \
  template cudaError_t implicit_cg_finish_launch<T, I>(const ImplicitCgParams<T, I>&, void*,   \
                                                       const DeviceInfo&, cudaStream_t);
MFEXT_INSTANTIATE(float, int32_t)
MFEXT_INSTANTIATE(float, int64_t)
MFEXT_INSTANTIATE(double, int32_t)
MFEXT_INSTANTIATE(double, int64_t)
#undef MFEXT_INSTANTIATE

}  // namespace cuda
}  // namespace mfext
