// The CUDA kernels of mfext::sgd_epoch_: one in-place SGD epoch over observed
// ratings on the GPU (see sgd_epoch.h for the two schedules). The element math
// is shared with the CPU kernel through element_math.h, and the update rule,
// its order of operations and the loss are the CPU's (cpu/sgd_epoch_kernel.cpp).
//
// One group of lanes scores and updates one entry: the group's lanes read w_u
// and h_i with 16-byte loads (rows.cuh: chunk c of a row belongs to lane
// c % lanes; k = 128 float32 is one float4 per lane of a warp, and small k
// uses sub-warp groups so that several entries are in flight per warp), reduce
// the dot product with shuffles, and each lane updates its own coordinates of
// w_u and h_i. The group's first lane owns the biases: it reads them and
// broadcasts their sum, so every lane sees the same error. The indices and the
// value of the group's next entry are loaded one step ahead.
//
// Errors: a validation kernel checks every index, offset and block id first and
// records the first bad position of each array in the Status; the update
// kernels return at once when the Status holds an error, so bad input leaves W,
// Ht and the biases untouched. The last kernel (errors_kernel.cu) sums the
// per-warp (Hogwild) or per-slot (blocked) float64 partials in a fixed order
// into sse, or writes NaN and describes the error in the mailbox.
#include <algorithm>

#include "rows.cuh"
#include "sgd_epoch.h"

namespace mfext {
namespace cuda {
namespace sgd {
namespace {

constexpr int kThreads = 256;        // validation and Hogwild blocks
constexpr int kBlockedThreads = 64;  // blocked: two warps per block, so the few warps of a
                                     // stratum spread over many SMs (and their L1 caches)
constexpr int kBlocksPerSm = 8;      // 2048 resident threads per SM at most
// Hogwild: a warp claims kClaimSteps steps of its groups at a time from a
// global counter: one atomic per claim, and blocks that start late (more
// blocks than fit at once) simply find the work taken.
constexpr int64_t kClaimSteps = 64;
constexpr size_t kAlign = 256;
constexpr unsigned kFullMask = 0xffffffffu;

size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

__host__ __device__ __forceinline__ int64_t max4(int64_t a, int64_t b, int64_t c, int64_t d) {
  const int64_t ab = a > b ? a : b, cd = c > d ? c : d;
  return ab > cd ? ab : cd;
}

// The kernels' argument: the fields of SgdEpochParams they read, with the rank
// as an int, and what the launch adds (the row shape, the decay). Its layout is
// the kernels' own: the compiled kernels (registers, no spills) depend on it.
template <typename T, typename I>
struct Params {
  T* W;               // (m, k), in place
  T* Ht;              // (n, k), in place
  T* bu;              // (m,), in place; null without biases
  T* bi;              // (n,), in place; null without biases
  const I* rows;      // (nnz,)
  const I* cols;      // (nnz,)
  const T* vals;      // (nnz,)
  const int64_t* order;  // (len,) or null
  int k, chunks, lanes_log2;
  T lr, decay, bias_reg, mu;  // decay = 1 - lr reg, computed as on the CPU
  bool biases, nonnegative;
};

// One entry of the order: its row, column and value (zeros past the end).
template <typename T>
struct Entry {
  int64_t u = 0, i = 0;
  T r = T(0);
};

template <typename T, typename I>
__device__ __forceinline__ Entry<T> fetch(const Params<T, I>& p, int64_t s, int64_t end) {
  Entry<T> x;
  if (s < end) {
    const int64_t e = p.order != nullptr ? p.order[s] : s;
    x.u = int64_t(p.rows[e]);
    x.i = int64_t(p.cols[e]);
    x.r = p.vals[e];
  }
  return x;
}

// w = decay w + g h, h = decay h + g w_old on V coordinates, then the clamp.
template <typename T, int V>
__device__ __forceinline__ void update_chunk(T (&w)[V], T (&h)[V], T g, T decay,
                                             bool nonnegative) {
#pragma unroll
  for (int t = 0; t < V; ++t) {
    math::sgd_pair_step(w[t], h[t], g, decay);
    if (nonnegative) {
      w[t] = math::clamp_nonnegative(w[t]);
      h[t] = math::clamp_nonnegative(h[t]);
    }
  }
}

// One SGD step on entry x by the calling group; `act` false: the group only
// joins the shuffles. Every lane of the warp must call it. Returns err^2 on the
// group's first lane, 0 elsewhere.
template <typename T, typename I, int V, int CPL>
__device__ __forceinline__ double sgd_step(const Params<T, I>& p, bool act, const Entry<T>& x,
                                           int lane_g, int lanes, int first_lane) {
  using C = Chunks<T, V, CPL>;
  const int k = p.k, chunks = p.chunks;
  T* w = p.W + x.u * k;
  T* h = p.Ht + x.i * k;
  // The biases are loaded first so that their latency overlaps the rows'.
  T b_u = T(0), b_i = T(0);
  if (p.biases && act && lane_g == 0) {
    b_u = p.bu[x.u];
    b_i = p.bi[x.i];
  }
  C wv, hv;
  const T d = group_row_dot(wv, hv, p.W, x.u, p.Ht, x.i, k, chunks, lane_g, lanes, act);
  // pred = dot + (mu + b_u + b_i), summed as on the CPU; the first lane's sum
  // goes to the whole group, so that every lane computes the same error.
  T bias = T(0);
  if (p.biases) bias = __shfl_sync(kFullMask, p.mu + b_u + b_i, first_lane);
  if (!act) return 0.0;
  T pred = d;
  if (p.biases) pred += bias;
  const T err = x.r - pred;
  const T g = p.lr * err;
  if constexpr (CPL > 0) {
#pragma unroll
    for (int q = 0; q < CPL; ++q) {
      const int ch = lane_g + q * lanes;
      if (ch < chunks) {
        T a[V], b[V];
#pragma unroll
        for (int t = 0; t < V; ++t) {
          a[t] = wv.v[q * V + t];
          b[t] = hv.v[q * V + t];
        }
        update_chunk<T, V>(a, b, g, p.decay, p.nonnegative);
        store_vec<T, V>(w + int64_t(ch) * V, a);
        store_vec<T, V>(h + int64_t(ch) * V, b);
      }
    }
  } else {
#pragma unroll 1
    for (int ch = lane_g; ch < chunks; ch += lanes) {
      T a[V], b[V];
      load_vec<T, V>(w + int64_t(ch) * V, a);
      load_vec<T, V>(h + int64_t(ch) * V, b);
      update_chunk<T, V>(a, b, g, p.decay, p.nonnegative);
      store_vec<T, V>(w + int64_t(ch) * V, a);
      store_vec<T, V>(h + int64_t(ch) * V, b);
    }
  }
  if (lane_g != 0) return 0.0;
  if (p.biases) {
    p.bu[x.u] = math::sgd_bias_step(b_u, err, p.lr, p.bias_reg);
    p.bi[x.i] = math::sgd_bias_step(b_i, err, p.lr, p.bias_reg);
  }
  return math::square<double>(double(err));
}

// Checks every index array before any update; resets the Hogwild work counter.
template <typename I>
__global__ void __launch_bounds__(kThreads)
    sgd_validate_kernel(const I* __restrict__ rows,          // (nnz,)
                        const I* __restrict__ cols,          // (nnz,)
                        int64_t nnz, int64_t m, int64_t n,
                        const int64_t* __restrict__ order,   // (len,) or null
                        int64_t len,
                        const int64_t* __restrict__ block_ptr,  // (n_blocks + 1,) or null
                        int64_t n_blocks,
                        const int64_t* __restrict__ schedule,   // (n_slots,) or null
                        int64_t n_slots, Status* __restrict__ status,
                        unsigned long long* __restrict__ counter) {
  if (blockIdx.x == 0 && threadIdx.x == 0) *counter = 0;
  unsigned long long bad_r = kNoError, bad_c = kNoError, bad_bp = kNoError, bad_sc = kNoError,
                     bad_or = kNoError;
  const int64_t n_ptr = block_ptr != nullptr ? n_blocks + 1 : 0;
  const int64_t n_sched = schedule != nullptr ? n_slots : 0;
  const int64_t n_order = order != nullptr ? len : 0;
  const int64_t total = max4(nnz, n_order, n_ptr, n_sched);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    if (e < nnz) {
      const int64_t r = int64_t(rows[e]), c = int64_t(cols[e]);
      if (r < 0 || r >= m) note_bad(bad_r, e);
      if (c < 0 || c >= n) note_bad(bad_c, e);
    }
    if (e < n_order) {
      const int64_t v = order[e];
      if (v < 0 || v >= nnz) note_bad(bad_or, e);
    }
    if (e < n_ptr) {
      const int64_t v = block_ptr[e];
      if (v < 0 || v > len || (e > 0 && v < block_ptr[e - 1])) note_bad(bad_bp, e);
    }
    if (e < n_sched) {
      const int64_t v = schedule[e];
      if (v < -1 || v >= n_blocks) note_bad(bad_sc, e);
    }
  }
  flush_bad(&status->bad_row, bad_r);
  flush_bad(&status->bad_col, bad_c);
  flush_bad(&status->bad_aux[0], bad_bp);
  flush_bad(&status->bad_aux[1], bad_sc);
  flush_bad(&status->bad_aux[2], bad_or);
}

// Hogwild: warps claim runs of the order; group j of a warp takes positions
// start + j, start + j + groups_per_warp, ... of each run.
template <typename T, typename I, int V, int CPL>
__global__ void __launch_bounds__(kThreads)
    sgd_hogwild_kernel(Params<T, I> p, int64_t len,
                       unsigned long long* __restrict__ counter,  // (1,), zeroed by validation
                       double* __restrict__ parts,                // (warps in the grid,)
                       const Status* __restrict__ status) {
  if (has_error(status)) return;
  const int lanes = 1 << p.lanes_log2;
  const int lane = threadIdx.x % kWarp;
  const int lane_g = lane & (lanes - 1);
  const int gw = lane >> p.lanes_log2;            // group within the warp
  const int64_t gpw = kWarp >> p.lanes_log2;      // groups per warp
  const int64_t claim = gpw * kClaimSteps;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  double sse = 0.0;
  for (;;) {
    unsigned long long start = 0;
    if (lane == 0) start = atomicAdd(counter, static_cast<unsigned long long>(claim));
    start = __shfl_sync(kFullMask, start, 0);
    if (start >= static_cast<unsigned long long>(len)) break;
    const int64_t begin = int64_t(start);
    const int64_t end = begin + claim < len ? begin + claim : len;
    int64_t s = begin + gw;
    Entry<T> cur = fetch(p, s, end);
#pragma unroll 1
    for (int64_t base = begin; base < end; base += gpw) {
      const Entry<T> next = fetch(p, s + gpw, end);
      sse += sgd_step<T, I, V, CPL>(p, s < end, cur, lane_g, lanes, lane - lane_g);
      cur = next;
      s += gpw;
    }
  }
  sse = group_allreduce(sse, kWarp);
  if (lane == 0) parts[warp] = sse;
}

// Blocked: one stratum. Group j runs block slots[j] (none when -1) in order.
template <typename T, typename I, int V, int CPL>
// (At most 128 registers: with the default bound ptxas spilled a few bytes.)
__global__ void __launch_bounds__(kBlockedThreads, 8)
    sgd_blocked_kernel(Params<T, I> p,
                       const int64_t* __restrict__ block_ptr,  // (n_blocks + 1,)
                       const int64_t* __restrict__ slots,      // (width,): this stratum's row
                       int64_t width,
                       double* __restrict__ parts,             // (width,): this stratum's partials
                       const Status* __restrict__ status) {
  if (has_error(status)) return;
  const int lanes = 1 << p.lanes_log2;
  const int lane = threadIdx.x % kWarp;
  const int lane_g = lane & (lanes - 1);
  const int64_t slot = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> p.lanes_log2;
  const int64_t b = slot < width ? slots[slot] : -1;
  const int64_t begin = b >= 0 ? block_ptr[b] : 0;
  const int64_t end = b >= 0 ? block_ptr[b + 1] : 0;
  // The shuffles need a warp-uniform trip count: the longest block of the warp.
  int64_t steps = end - begin;
  for (int offset = lanes; offset < kWarp; offset <<= 1) {
    const int64_t other = __shfl_xor_sync(kFullMask, steps, offset);
    steps = other > steps ? other : steps;
  }
  Entry<T> cur = fetch(p, begin, end);
  double sse = 0.0;
#pragma unroll 1
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t s = begin + t;
    const Entry<T> next = fetch(p, s + 1, end);
    sse += sgd_step<T, I, V, CPL>(p, s < end, cur, lane_g, lanes, lane - lane_g);
    cur = next;
  }
  if (slot < width && lane_g == 0) parts[slot] = sse;
}

// ---------------------------------------------------------------- launch helpers

struct Layout {
  size_t status, counter, parts, total;
  int64_t n_parts;
};

struct HogwildGrid {
  unsigned blocks;
  int threads;
  int64_t warps;
};

template <typename T, typename I>
HogwildGrid hogwild_grid(const SgdEpochParams<T, I>& a, const Shape& s, const DeviceInfo& dev) {
  const int64_t claim = (int64_t(kWarp) >> s.lanes_log2) * kClaimSteps;
  int64_t warps = std::max<int64_t>(1, ceil_div(a.len, claim));
  warps = std::min<int64_t>(warps, int64_t(dev.sm_count) * kBlocksPerSm * (kThreads / kWarp));
  if (a.max_warps > 0) warps = std::min<int64_t>(warps, a.max_warps);
  HogwildGrid g;
  g.threads = int(std::min<int64_t>(warps, kThreads / kWarp)) * kWarp;
  g.blocks = unsigned(ceil_div(warps * kWarp, g.threads));
  g.warps = int64_t(g.blocks) * (g.threads / kWarp);
  return g;
}

template <typename T, typename I>
Layout layout_for(const SgdEpochParams<T, I>& a, const DeviceInfo& dev) {
  Layout l{};
  const bool blocked = a.block_ptr != nullptr;
  if (blocked) {
    l.n_parts = a.n_strata * a.width;
  } else {
    l.n_parts = a.len > 0 ? hogwild_grid(a, shape_for<T>(a.k, {a.W, a.Ht}), dev).warps : 0;
  }
  l.status = 0;
  l.counter = align_up(sizeof(Status));
  l.parts = l.counter + align_up(sizeof(unsigned long long));
  l.total = l.parts + align_up(sizeof(double) * size_t(std::max<int64_t>(1, l.n_parts)));
  return l;
}

template <typename T, typename I>
struct HogwildLaunch {
  const Params<T, I>& p;
  int64_t len;
  HogwildGrid grid;
  unsigned long long* counter;
  double* parts;
  const Status* status;
  cudaStream_t stream;
  template <int V, int CPL>
  cudaError_t operator()() const {
    auto kernel = sgd_hogwild_kernel<T, I, V, CPL>;
    MFEXT_LAUNCH(kernel, grid.blocks, grid.threads, 0, stream, p, len, counter, parts, status);
    MFEXT_LAUNCH_CHECK();
    return cudaSuccess;
  }
};

template <typename T, typename I>
struct BlockedLaunch {
  const Params<T, I>& p;
  const int64_t* block_ptr;
  const int64_t* schedule;  // (n_strata, width)
  int64_t n_strata, width;
  double* parts;            // (n_strata, width)
  const Status* status;
  cudaStream_t stream;
  template <int V, int CPL>
  cudaError_t operator()() const {
    auto kernel = sgd_blocked_kernel<T, I, V, CPL>;
    const unsigned blocks = unsigned(ceil_div(width << p.lanes_log2, kBlockedThreads));
    // One launch per stratum: launches on a stream run in order, which is the
    // barrier between strata.
    for (int64_t st = 0; st < n_strata; ++st) {
      MFEXT_LAUNCH(kernel, blocks, kBlockedThreads, 0, stream, p, block_ptr,
                   schedule + st * width, width, parts + st * width, status);
      MFEXT_LAUNCH_CHECK();
    }
    return cudaSuccess;
  }
};

template <typename T, typename I>
cudaError_t launch_typed(const SgdEpochParams<T, I>& a, void* workspace, size_t workspace_bytes,
                         const DeviceInfo& dev, cudaStream_t stream) {
  const Layout l = layout_for(a, dev);
  if (workspace_bytes < l.total) return cudaErrorInvalidValue;
  char* ws = static_cast<char*>(workspace);
  Status* status = reinterpret_cast<Status*>(ws + l.status);
  auto* counter = reinterpret_cast<unsigned long long*>(ws + l.counter);
  double* parts = reinterpret_cast<double*>(ws + l.parts);
  const bool blocked = a.block_ptr != nullptr;
  const int64_t n_slots = blocked ? a.n_strata * a.width : 0;
  MFEXT_RETURN_IF_ERROR(status_init(status, stream));
  {
    const int64_t total = max4(a.nnz, a.order != nullptr ? a.len : 0,
                               blocked ? a.n_blocks + 1 : 0, n_slots);
    const unsigned grid = unsigned(std::max<int64_t>(
        1, std::min<int64_t>(ceil_div(total, kThreads), int64_t(dev.sm_count) * kBlocksPerSm)));
    auto kernel = sgd_validate_kernel<I>;
    MFEXT_LAUNCH(kernel, grid, kThreads, 0, stream, a.rows, a.cols, a.nnz, a.m, a.n, a.order,
                 a.len, a.block_ptr, a.n_blocks, a.schedule, n_slots, status, counter);
    MFEXT_LAUNCH_CHECK();
  }
  const Shape s = shape_for<T>(a.k, {a.W, a.Ht});
  Params<T, I> p;
  p.W = a.W;
  p.Ht = a.Ht;
  p.bu = a.biases ? a.user_bias : nullptr;  // never touched without biases
  p.bi = a.biases ? a.item_bias : nullptr;
  p.rows = a.rows;
  p.cols = a.cols;
  p.vals = a.vals;
  p.order = a.order;
  p.k = int(a.k);
  p.chunks = s.chunks;
  p.lanes_log2 = s.lanes_log2;
  // Cast first (the glue did), then combine, as the CPU kernel does.
  p.lr = a.lr;
  p.decay = T(1) - a.lr * a.reg;
  p.bias_reg = a.bias_reg;
  p.mu = a.global_mean;
  p.biases = a.biases;
  p.nonnegative = a.nonnegative;
  if (blocked) {
    if (n_slots > 0) {
      MFEXT_RETURN_IF_ERROR(dispatch_shape<T>(
          s, BlockedLaunch<T, I>{p, a.block_ptr, a.schedule, a.n_strata, a.width, parts, status,
                                 stream}));
    }
  } else if (a.len > 0) {
    MFEXT_RETURN_IF_ERROR(dispatch_shape<T>(
        s, HogwildLaunch<T, I>{p, a.len, hogwild_grid(a, s, dev), counter, parts, status, stream}));
  }
  ErrorContext ctx;
  ctx.op = kOpSgd;
  ctx.rows = a.rows;
  ctx.cols = a.cols;
  ctx.idx64 = sizeof(I) == 8;
  ctx.m = a.m;
  ctx.n = a.n;
  ctx.aux[0] = reinterpret_cast<const long long*>(a.block_ptr);
  ctx.aux[1] = reinterpret_cast<const long long*>(a.schedule);
  ctx.aux[2] = reinterpret_cast<const long long*>(a.order);
  ctx.aux_bound[0] = a.len;
  ctx.aux_bound[1] = a.n_blocks;
  ctx.aux_bound[2] = a.nnz;
  return finalize_loss_launch(parts, l.n_parts, status, a.sse, DType::f64, ctx, a.mailbox,
                              stream);
}

}  // namespace
}  // namespace sgd

template <typename T, typename I>
size_t sgd_epoch_workspace_bytes(const SgdEpochParams<T, I>& p, const DeviceInfo& dev) {
  return sgd::layout_for(p, dev).total;
}

template <typename T, typename I>
cudaError_t sgd_epoch_launch(const SgdEpochParams<T, I>& p, void* workspace,
                             size_t workspace_bytes, const DeviceInfo& dev, cudaStream_t stream) {
  if (p.k < 1 || (p.block_ptr == nullptr) != (p.schedule == nullptr))
    return cudaErrorInvalidValue;
  return sgd::launch_typed<T, I>(p, workspace, workspace_bytes, dev, stream);
}

#define MFEXT_INSTANTIATE(T, I)                                                              \
  template size_t sgd_epoch_workspace_bytes<T, I>(const SgdEpochParams<T, I>&,              \
                                                  const DeviceInfo&);                       \
  template cudaError_t sgd_epoch_launch<T, I>(const SgdEpochParams<T, I>&, void*, size_t,   \
                                              const DeviceInfo&, cudaStream_t);
MFEXT_INSTANTIATE(float, int32_t)
MFEXT_INSTANTIATE(float, int64_t)
MFEXT_INSTANTIATE(double, int32_t)
MFEXT_INSTANTIATE(double, int64_t)
#undef MFEXT_INSTANTIATE

}  // namespace cuda
}  // namespace mfext
