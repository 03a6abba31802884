// The CUDA kernel of mfext::_sparse_dot (see sparse_dot.h): scores of observed
// entries, out[e] = W[rows[e]] . Ht[cols[e]], the inner products that predict, score and validation
// need, without the (nnz, k) gathered temporaries of the torch expression.
//
// A group of lanes per entry (rows.cuh): the two rows are read with coalesced
// 16-byte loads and the dot product is reduced with shuffles in a fixed order,
// so the result does not depend on the grid. The bound is memory: 2 k elements
// read per entry (H rows mostly from L2). Out-of-range indices are never
// dereferenced: the entry is skipped, its position recorded in the Status, the
// output becomes NaN and the host raises the error at the next mfext call.
#include <algorithm>

#include "rows.cuh"
#include "sparse_dot.h"

namespace mfext {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// The kernel's argument: the fields of SparseDotParams it reads, with the rank
// as an int, and what the launch adds (the row shape, the Status). Its layout
// is the kernel's own: the compiled kernel (registers, no spills) depends on it.
template <typename T, typename I>
struct DotArgs {
  const I* rows;  // rows: (nnz,)
  const I* cols;  // cols: (nnz,)
  const T* W;     // W: (m, k) row-major
  const T* Ht;    // Ht: (n, k) row-major
  int64_t m, n, nnz;
  int k, chunks, lanes_log2;
  T* out;         // out: (nnz,)
  Status* status;
};

template <typename T, typename I, int V, int CPL>
__global__ void __launch_bounds__(kThreads) sparse_dot_kernel(DotArgs<T, I> p) {
  using C = Chunks<T, V, CPL>;
  const LaneGroups lg = lane_groups(p.lanes_log2);
  unsigned long long bad_r = kNoError, bad_c = kNoError;
  // Warp-uniform loop bounds: every lane reaches the shuffles of each step.
  // Not unrolled: unrolling buys nothing for a latency-bound loop and spills.
#pragma unroll 1
  for (int64_t base = lg.warp_first; base < p.nnz; base += lg.count) {
    const int64_t e = base + (lg.group - lg.warp_first);
    const bool act = e < p.nnz;
    const int64_t r = act ? int64_t(p.rows[e]) : 0;
    const int64_t c = act ? int64_t(p.cols[e]) : 0;
    const bool r_ok = r >= 0 && r < p.m, c_ok = c >= 0 && c < p.n;
    if (act && !r_ok) note_bad(bad_r, e);
    if (act && !c_ok) note_bad(bad_c, e);
    const bool in = act && r_ok && c_ok;
    C wv, hv;
    const T d = group_row_dot(wv, hv, p.W, r, p.Ht, c, p.k, p.chunks, lg.lane, lg.lanes, in);
    if (act && lg.lane == 0) p.out[e] = in ? d : T(0);
  }
  flush_bad(&p.status->bad_row, bad_r);
  flush_bad(&p.status->bad_col, bad_c);
}

template <typename T, typename I>
struct DotLaunch {
  const DotArgs<T, I>& p;
  unsigned grid;
  cudaStream_t stream;
  template <int V, int CPL>
  cudaError_t operator()() const {
    auto kernel = sparse_dot_kernel<T, I, V, CPL>;
    MFEXT_LAUNCH(kernel, grid, kThreads, 0, stream, p);
    MFEXT_LAUNCH_CHECK();
    return cudaSuccess;
  }
};

// The workspace: the Status, then the float64 the error report writes its
// (unused) loss into.
constexpr size_t kLossOffset = (sizeof(Status) + 15) / 16 * 16;

template <typename T, typename I>
cudaError_t launch_typed(const SparseDotParams<T, I>& a, void* workspace, const DeviceInfo& dev,
                         cudaStream_t stream) {
  Status* status = static_cast<Status*>(workspace);
  MFEXT_RETURN_IF_ERROR(status_init(status, stream));
  const DType dt = dtype_of<T>();
  if (a.nnz > 0) {
    const Shape s = shape_for<T>(a.k, {a.W, a.Ht});
    DotArgs<T, I> p;
    p.rows = a.rows;
    p.cols = a.cols;
    p.W = a.W;
    p.Ht = a.Ht;
    p.m = a.m;
    p.n = a.n;
    p.nnz = a.nnz;
    p.k = int(a.k);
    p.chunks = s.chunks;
    p.lanes_log2 = s.lanes_log2;
    p.out = a.out;
    p.status = status;
    const int64_t groups_per_block = kThreads >> s.lanes_log2;
    const unsigned grid = unsigned(std::min<int64_t>(
        std::max<int64_t>(1, ceil_div(a.nnz, groups_per_block)), int64_t(dev.sm_count) * 16));
    MFEXT_RETURN_IF_ERROR(dispatch_shape<T>(s, DotLaunch<T, I>{p, grid, stream}));
    MFEXT_RETURN_IF_ERROR(poison_on_error_launch(status, a.out, a.nnz, dt, dev.sm_count, stream));
  }
  ErrorContext ctx;
  ctx.op = kOpSparseDot;
  ctx.rows = a.rows;
  ctx.cols = a.cols;
  ctx.idx64 = sizeof(I) == 8;
  ctx.m = a.m;
  ctx.n = a.n;
  // No partial sums: the launch only reports an error (the "loss" is scratch).
  return finalize_loss_launch(nullptr, 0, status, static_cast<char*>(workspace) + kLossOffset,
                              DType::f64, ctx, a.mailbox, stream);
}

}  // namespace

size_t sparse_dot_workspace_bytes() { return kLossOffset + sizeof(double); }

template <typename T, typename I>
cudaError_t sparse_dot_launch(const SparseDotParams<T, I>& p, void* workspace,
                              const DeviceInfo& dev, cudaStream_t stream) {
  return launch_typed<T, I>(p, workspace, dev, stream);
}

#define MFEXT_INSTANTIATE(T, I)                                                             \
  template cudaError_t sparse_dot_launch<T, I>(const SparseDotParams<T, I>&, void*,        \
                                               const DeviceInfo&, cudaStream_t);
MFEXT_INSTANTIATE(float, int32_t)
MFEXT_INSTANTIATE(float, int64_t)
MFEXT_INSTANTIATE(double, int32_t)
MFEXT_INSTANTIATE(double, int64_t)
#undef MFEXT_INSTANTIATE

}  // namespace cuda
}  // namespace mfext
