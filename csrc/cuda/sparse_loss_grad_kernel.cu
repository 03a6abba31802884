// The CUDA kernels of mfext::sparse_loss_grad: the fused sparse loss and
// gradients over observed entries, in two modes (see sparse_loss_grad.h).
//
// Fast (the default): one pass over the entries in their given order. A group
// of `lanes` threads (lanes * V >= k where possible) takes each entry: the W
// row and the H row (a row of Ht, the fast layout) are read with coalesced
// 16-byte loads, the dot product is reduced with shuffles, and the gradients
// are added with atomics: grad_Ht[col] per entry, grad_W[row] once per run of
// equal rows (so input grouped by row, the usual order of ratings data, needs
// few atomics for grad_W). Float atomics make the gradients' last bits depend
// on timing.
//
// Deterministic (torch.use_deterministic_algorithms(True)): entry ids are
// sorted by row and by column (stable radix sorts), then two segment-reduction
// passes own every output row: the row pass computes residuals, the loss, the
// per-entry gradient g_e and grad_W; the column pass computes grad_Ht from g_e.
// Work is cut into units of kSparseUnit sorted entries, so a heavy row or
// column is shared by many groups: the unit where a segment starts writes its
// part to the output, each later unit that the segment crosses writes its part
// to part[unit], and a fix-up pass adds those in unit order. Every sum runs in
// a fixed order: results repeat bit for bit, on any grid size.
//
// Both modes sum the loss in float64 per unit (fixed), then in a fixed order.
// Out-of-range indices never touch memory: the entry is skipped, its position
// recorded in the Status, and the loss and gradients become NaN (see errors.h).
#include <algorithm>

#include "rows.cuh"
#include "sparse_loss_grad.h"

namespace mfext {
namespace cuda {
namespace sparse {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kUnit = kSparseUnit;
constexpr size_t kAlign = 256;

size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// ------------------------------------------------------------------------ fast mode

// The fast kernel's argument: the fields of SparseLossGradParams it reads, with
// the rank as an int, and what the launch adds (the row shape, the partial
// losses, the Status). Its layout is the kernel's own: the compiled kernel
// (registers, no spills) depends on it.
template <typename T, typename I>
struct FastArgs {
  const I* rows;     // (nnz,)
  const I* cols;     // (nnz,)
  const T* vals;     // (nnz,)
  const T* weight;   // (nnz,) or null
  const T* W;        // (m, k)
  const T* Ht;       // (n, k)
  int64_t m, n, nnz;
  int k, chunks, lanes_log2;
  T* gW;             // (m, k), zeroed
  T* gHt;            // (n, k), zeroed
  double* loss_parts;  // (units,)
  Status* status;
};

template <typename T, typename I, int V, int CPL>
__global__ void __launch_bounds__(kThreads) sparse_fast_kernel(FastArgs<T, I> p) {
  using C = Chunks<T, V, CPL>;
  const LaneGroups lg = lane_groups(p.lanes_log2);
  const int lanes = lg.lanes, lane_g = lg.lane;
  const int64_t units = ceil_div(p.nnz, kUnit);
  const int k = p.k, chunks = p.chunks;
  unsigned long long bad_r = kNoError, bad_c = kNoError, bad_w = kNoError;

  // The loop bounds are the same for every lane of a warp (shuffles inside).
  for (int64_t base = lg.warp_first; base < units; base += lg.count) {
    const int64_t u = base + (lg.group - lg.warp_first);
    const bool unit_ok = u < units;
    double uloss = 0.0;
    int64_t cur_row = -1;
    C acc;  // grad_W of the current run of equal rows
    acc.zero();
#pragma unroll 1
    for (int t = 0; t < kUnit; ++t) {
      const int64_t e = u * kUnit + t;
      const bool act = unit_ok && e < p.nnz;
      const int64_t r = act ? int64_t(p.rows[e]) : 0;
      const int64_t c = act ? int64_t(p.cols[e]) : 0;
      const bool r_ok = r >= 0 && r < p.m, c_ok = c >= 0 && c < p.n;
      if (act && !r_ok) note_bad(bad_r, e);
      if (act && !c_ok) note_bad(bad_c, e);
      const bool in = act && r_ok && c_ok;
      T wt = T(1);
      if (p.weight != nullptr && act) {
        wt = p.weight[e];
        if (!math::valid_weight(wt)) note_bad(bad_w, e);
      }
      const T val = in ? p.vals[e] : T(0);

      C wv, hv;
      const T d = group_row_dot(wv, hv, p.W, r, p.Ht, c, k, chunks, lane_g, lanes, in);
      const T res = d - val;
      T g = T(0);
      if (in) {
        if (p.weight != nullptr) {
          if (lane_g == 0) uloss += math::weighted_square<double>(double(res), double(wt));
          g = math::residual_grad(res, wt);
        } else {
          if (lane_g == 0) uloss += math::square<double>(double(res));
          g = math::unit_residual_grad(res);
        }
      }
      if (!in || g == T(0)) continue;  // nothing to add (no shuffles below)

      if constexpr (CPL > 0) {
        wv.atomic_add_scaled(p.gHt + c * k, g, chunks, lane_g, lanes);  // grad_Ht[c] += g W[r]
        // grad_W[r] += g H[c], held in registers while the row repeats.
        if (r != cur_row) {
          if (cur_row >= 0) acc.atomic_add_scaled(p.gW + cur_row * k, T(1), chunks, lane_g, lanes);
          cur_row = r;
          acc.zero();
        }
#pragma unroll
        for (int i = 0; i < C::N; ++i) acc.v[i] += g * hv.v[i];
      } else {
        for (int ch = lane_g; ch < chunks; ch += lanes) {
          T a[V], b[V], x[V], y[V];
          load_vec<T, V>(p.W + r * k + int64_t(ch) * V, a);
          load_vec<T, V>(p.Ht + c * k + int64_t(ch) * V, b);
#pragma unroll
          for (int i = 0; i < V; ++i) {
            x[i] = g * a[i];
            y[i] = g * b[i];
          }
          atomic_add_vec<T, V>(p.gHt + c * k + int64_t(ch) * V, x);
          atomic_add_vec<T, V>(p.gW + r * k + int64_t(ch) * V, y);
        }
      }
    }
    if constexpr (CPL > 0) {
      if (cur_row >= 0) acc.atomic_add_scaled(p.gW + cur_row * k, T(1), chunks, lane_g, lanes);
    }
    if (unit_ok && lane_g == 0) p.loss_parts[u] = uloss;
  }
  flush_bad(&p.status->bad_row, bad_r);
  flush_bad(&p.status->bad_col, bad_c);
  flush_bad(&p.status->bad_weight, bad_w);
}

// ---------------------------------------------------------------- deterministic mode

// Validates every entry and writes the sort keys: the row (column) of a valid
// entry, or the sentinel m (n) for an invalid one, which sorts last and is
// skipped by both passes.
template <typename T, typename I, typename ID>
__global__ void __launch_bounds__(kThreads, 1)
    sparse_prepare_kernel(const I* __restrict__ rows, const I* __restrict__ cols,
                          const T* __restrict__ weight, int64_t m, int64_t n, int64_t nnz,
                          uint32_t* __restrict__ rkey, uint32_t* __restrict__ ckey,
                          ID* __restrict__ ids, Status* __restrict__ status) {
  unsigned long long bad_r = kNoError, bad_c = kNoError, bad_w = kNoError;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < nnz; e += stride) {
    const int64_t r = int64_t(rows[e]), c = int64_t(cols[e]);
    const bool r_ok = r >= 0 && r < m, c_ok = c >= 0 && c < n;
    if (!r_ok) note_bad(bad_r, e);
    if (!c_ok) note_bad(bad_c, e);
    if (weight != nullptr && !math::valid_weight(weight[e])) note_bad(bad_w, e);
    const bool ok = r_ok && c_ok;
    rkey[e] = uint32_t(ok ? r : m);
    ckey[e] = uint32_t(ok ? c : n);
    ids[e] = ID(e);
  }
  flush_bad(&status->bad_row, bad_r);
  flush_bad(&status->bad_col, bad_c);
  flush_bad(&status->bad_weight, bad_w);
}

template <typename T, typename ID>
struct SegParams {
  const uint32_t* keys;   // (nnz,) sorted keys (rows in the row pass, columns in the column pass)
  const ID* perm;         // (nnz,) entry id at each sorted position
  const uint32_t* other;  // (nnz,) by entry id: its column (row pass) or row (column pass)
  const T* vals;          // (nnz,)
  const T* weight;        // (nnz,) or null
  const T* own;           // row pass: W (m, k);  column pass: unused
  const T* oth;           // row pass: Ht (n, k); column pass: W (m, k)
  T* entry_grad;          // (nnz,) g_e, written by the row pass, read by the column pass
  T* out;                 // row pass: grad_W (m, k); column pass: grad_Ht (n, k); zeroed
  T* part;                // (units, k) parts of segments that began in an earlier unit
  double* loss_parts;     // (units,) row pass only
  int64_t nnz;
  uint32_t bound;         // m (row pass) or n (column pass): keys >= bound are invalid entries
  int k, chunks, lanes_log2;
};

template <typename T, typename ID, int V, int CPL, bool ROW>
__global__ void __launch_bounds__(kThreads, 1) sparse_segment_kernel(SegParams<T, ID> p) {
  using C = Chunks<T, V, CPL>;
  const LaneGroups lg = lane_groups(p.lanes_log2);
  const int lanes = lg.lanes, lane_g = lg.lane;
  const int64_t units = ceil_div(p.nnz, kUnit);
  const int k = p.k, chunks = p.chunks;

  for (int64_t base = lg.warp_first; base < units; base += lg.count) {
    const int64_t u = base + (lg.group - lg.warp_first);
    const bool unit_ok = u < units;
    const int64_t s0 = u * kUnit;
    const uint32_t first_key = unit_ok ? p.keys[s0] : p.bound;
    // The unit's first segment began in an earlier unit: its part goes to part[u].
    const bool head = unit_ok && s0 > 0 && p.keys[s0 - 1] == first_key;
    double uloss = 0.0;
    uint32_t cur = p.bound;  // key of the open segment (bound: none)
    T* target = nullptr;     // where the open segment's sum goes
    C acc, own;
    acc.zero();
    own.zero();

#pragma unroll 1
    for (int t = 0; t < kUnit; ++t) {
      const int64_t s = s0 + t;
      const bool act = unit_ok && s < p.nnz;
      const uint32_t key = act ? p.keys[s] : p.bound;
      const bool valid = key < p.bound;
      if (valid && key != cur) {
        // Close the open segment, open the next one.
        if constexpr (CPL > 0) {
          if (target != nullptr) acc.store(target, chunks, lane_g, lanes);
        }
        cur = key;
        target = (key == first_key && head) ? p.part + u * k : p.out + int64_t(key) * k;
        acc.zero();
        if constexpr (CPL == 0) {
          // Accumulate in place (this group owns `target`); each lane zeroes the
          // chunks it will add to, so no lane races another.
#pragma unroll 1
          for (int ch = lane_g; ch < chunks; ch += lanes) {
#pragma unroll
            for (int i = 0; i < V; ++i) target[int64_t(ch) * V + i] = T(0);
          }
        }
        if constexpr (ROW && CPL > 0) own.load(p.own, key, k, chunks, lane_g, lanes, true);
      }
      const int64_t e = valid ? int64_t(p.perm[s]) : 0;
      const int64_t o = valid ? int64_t(p.other[e]) : 0;
      T g = T(0);
      C ov;
      if constexpr (ROW) {
        // Residual of entry e: W[key] . Ht[o] - vals[e]  (all lanes shuffle).
        T d = T(0);
        if constexpr (CPL > 0) {
          ov.load(p.oth, o, k, chunks, lane_g, lanes, valid);
          d = chunk_dot(own, ov);
        } else if (valid) {
          d = reread_dot<T, V>(p.own + int64_t(key) * k, p.oth + o * k, chunks, lane_g, lanes);
        }
        d = group_allreduce(d, lanes);
        if (valid) {
          const T res = d - p.vals[e];
          if (p.weight != nullptr) {
            const T w = p.weight[e];
            if (lane_g == 0) uloss += math::weighted_square<double>(double(res), double(w));
            g = math::residual_grad(res, w);
          } else {
            if (lane_g == 0) uloss += math::square<double>(double(res));
            g = math::unit_residual_grad(res);
          }
          if (lane_g == 0) p.entry_grad[e] = g;
        }
      } else {
        if (valid) g = p.entry_grad[e];
        if constexpr (CPL > 0) ov.load(p.oth, o, k, chunks, lane_g, lanes, valid);
      }
      if (!valid) continue;
      if constexpr (CPL > 0) {
#pragma unroll
        for (int i = 0; i < C::N; ++i) acc.v[i] += g * ov.v[i];
      } else {
#pragma unroll 1
        for (int ch = lane_g; ch < chunks; ch += lanes) {
          T b[V], x[V];
          load_vec<T, V>(p.oth + o * k + int64_t(ch) * V, b);
          load_vec<T, V>(target + int64_t(ch) * V, x);
#pragma unroll
          for (int i = 0; i < V; ++i) x[i] += g * b[i];
          store_vec<T, V>(target + int64_t(ch) * V, x);
        }
      }
    }
    if constexpr (CPL > 0) {
      if (target != nullptr) acc.store(target, chunks, lane_g, lanes);
    }
    if (ROW && unit_ok && lane_g == 0) p.loss_parts[u] = uloss;
  }
}

// For each segment that runs past the end of the unit where it began, adds the
// parts of the units it crosses, in unit order, to the owner's partial sum.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    sparse_fixup_kernel(const uint32_t* __restrict__ keys, T* __restrict__ out,
                        const T* __restrict__ part, int64_t nnz, uint32_t bound, int k) {
  const int64_t units = ceil_div(nnz, kUnit);
  const int warps_total = int(gridDim.x * (blockDim.x / kWarp));
  const int warp_id = int(blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp);
  const int lane = threadIdx.x % kWarp;
  for (int64_t u = warp_id; u < units; u += warps_total) {
    const int64_t end = (u + 1) * kUnit;  // first position after the unit
    if (end >= nnz) continue;
    const uint32_t key = keys[end - 1];
    if (key >= bound || keys[end] != key) continue;              // no segment runs past
    if (u > 0 && keys[u * kUnit] == key && keys[u * kUnit - 1] == key) continue;  // not its owner
    for (int i = lane; i < k; i += kWarp) {
      T s = out[int64_t(key) * k + i];
      for (int64_t q = u + 1; q < units && keys[q * kUnit] == key; ++q) s += part[q * k + i];
      out[int64_t(key) * k + i] = s;
    }
  }
}

// ---------------------------------------------------------------- launch helpers

unsigned grid_for(int64_t units, int lanes_log2, const DeviceInfo& dev) {
  const int64_t groups_per_block = kThreads >> lanes_log2;
  const int64_t want = std::max<int64_t>(1, ceil_div(units, groups_per_block));
  return unsigned(std::min<int64_t>(want, int64_t(dev.sm_count) * 8));
}


struct Layout {
  size_t status, loss_parts, rkey, ckey, ids, srow, scol, prow, pcol, grad, part, temp, total;
};

template <typename T, typename I, typename ID>
Layout layout_for(const SparseLossGradParams<T, I>& a, bool deterministic, size_t temp_bytes) {
  Layout l{};
  const int64_t units = ceil_div(a.nnz, kUnit);
  const size_t nnz = size_t(a.nnz);
  size_t off = 0;
  auto take = [&](size_t bytes) {
    const size_t at = off;
    off = align_up(off + bytes);
    return at;
  };
  l.status = take(sizeof(Status));
  l.loss_parts = take(sizeof(double) * size_t(std::max<int64_t>(units, 1)));
  if (deterministic) {
    l.rkey = take(sizeof(uint32_t) * nnz);
    l.ckey = take(sizeof(uint32_t) * nnz);
    l.ids = take(sizeof(ID) * nnz);
    l.srow = take(sizeof(uint32_t) * nnz);
    l.scol = take(sizeof(uint32_t) * nnz);
    l.prow = take(sizeof(ID) * nnz);
    l.pcol = take(sizeof(ID) * nnz);
    l.grad = take(sizeof(T) * nnz);
    l.part = take(sizeof(T) * size_t(units) * size_t(a.k));
    l.temp = take(temp_bytes);
  }
  l.total = off;
  return l;
}

int bit_width(uint64_t x) {
  int b = 0;
  while (x) {
    ++b;
    x >>= 1;
  }
  return b;
}

template <typename ID, typename T, typename I>
size_t sort_temp_bytes(const SparseLossGradParams<T, I>& a) {
  size_t bytes = 0;
  const int end_bit = std::max(1, bit_width(uint64_t(std::max(a.m, a.n))));
  sort_pairs<ID>(nullptr, bytes, nullptr, nullptr, nullptr, nullptr, a.nnz, end_bit, nullptr);
  return bytes;
}

template <typename T, typename I>
struct FastLaunch {
  const FastArgs<T, I>& p;
  unsigned grid;
  cudaStream_t stream;
  template <int V, int CPL>
  cudaError_t operator()() const {
    auto kernel = sparse_fast_kernel<T, I, V, CPL>;
    MFEXT_LAUNCH(kernel, grid, kThreads, 0, stream, p);
    MFEXT_LAUNCH_CHECK();
    return cudaSuccess;
  }
};

template <typename T, typename ID>
struct SegmentLaunch {
  const SegParams<T, ID>& p;
  bool row;
  unsigned grid;
  cudaStream_t stream;
  template <int V, int CPL>
  cudaError_t operator()() const {
    if (row) {
      auto kernel = sparse_segment_kernel<T, ID, V, CPL, true>;
      MFEXT_LAUNCH(kernel, grid, kThreads, 0, stream, p);
    } else {
      auto kernel = sparse_segment_kernel<T, ID, V, CPL, false>;
      MFEXT_LAUNCH(kernel, grid, kThreads, 0, stream, p);
    }
    MFEXT_LAUNCH_CHECK();
    return cudaSuccess;
  }
};

template <typename T, typename ID>
cudaError_t launch_segment(const SegParams<T, ID>& p, bool row, const Shape& s, unsigned grid,
                           cudaStream_t stream) {
  return dispatch_shape<T>(s, SegmentLaunch<T, ID>{p, row, grid, stream});
}

template <typename T, typename I>
cudaError_t launch_fast(const SparseLossGradParams<T, I>& a, const Layout& l, char* ws,
                        const DeviceInfo& dev, cudaStream_t stream) {
  const Shape s = shape_for<T>(a.k, {a.W, a.Ht, a.grad_W, a.grad_Ht});
  FastArgs<T, I> p;
  p.rows = a.rows;
  p.cols = a.cols;
  p.vals = a.vals;
  p.weight = a.weight;
  p.W = a.W;
  p.Ht = a.Ht;
  p.m = a.m;
  p.n = a.n;
  p.nnz = a.nnz;
  p.k = int(a.k);
  p.chunks = s.chunks;
  p.lanes_log2 = s.lanes_log2;
  p.gW = a.grad_W;
  p.gHt = a.grad_Ht;
  p.loss_parts = reinterpret_cast<double*>(ws + l.loss_parts);
  p.status = reinterpret_cast<Status*>(ws + l.status);
  const unsigned grid = grid_for(ceil_div(a.nnz, kUnit), s.lanes_log2, dev);
  return dispatch_shape<T>(s, FastLaunch<T, I>{p, grid, stream});
}



template <typename T, typename I, typename ID>
cudaError_t launch_deterministic(const SparseLossGradParams<T, I>& a, const Layout& l, char* ws,
                                 const DeviceInfo& dev, cudaStream_t stream) {
  Status* status = reinterpret_cast<Status*>(ws + l.status);
  uint32_t* rkey = reinterpret_cast<uint32_t*>(ws + l.rkey);
  uint32_t* ckey = reinterpret_cast<uint32_t*>(ws + l.ckey);
  ID* ids = reinterpret_cast<ID*>(ws + l.ids);
  uint32_t* srow = reinterpret_cast<uint32_t*>(ws + l.srow);
  uint32_t* scol = reinterpret_cast<uint32_t*>(ws + l.scol);
  ID* prow = reinterpret_cast<ID*>(ws + l.prow);
  ID* pcol = reinterpret_cast<ID*>(ws + l.pcol);
  T* grad = reinterpret_cast<T*>(ws + l.grad);
  T* part = reinterpret_cast<T*>(ws + l.part);
  const unsigned prep_grid = unsigned(
      std::max<int64_t>(1, std::min<int64_t>(ceil_div(a.nnz, kThreads), int64_t(dev.sm_count) * 8)));
  {
    auto kernel = sparse_prepare_kernel<T, I, ID>;
    MFEXT_LAUNCH(kernel, prep_grid, kThreads, 0, stream, a.rows, a.cols, a.weight, a.m, a.n,
                 a.nnz, rkey, ckey, ids, status);
    MFEXT_LAUNCH_CHECK();
  }
  size_t temp_bytes = l.total - l.temp;
  MFEXT_RETURN_IF_ERROR(sort_pairs<ID>(ws + l.temp, temp_bytes, rkey, srow, ids, prow, a.nnz,
                                       std::max(1, bit_width(uint64_t(a.m))), stream));
  temp_bytes = l.total - l.temp;
  MFEXT_RETURN_IF_ERROR(sort_pairs<ID>(ws + l.temp, temp_bytes, ckey, scol, ids, pcol, a.nnz,
                                       std::max(1, bit_width(uint64_t(a.n))), stream));

  const Shape s = shape_for<T>(a.k, {a.W, a.Ht, a.grad_W, a.grad_Ht});
  const int64_t units = ceil_div(a.nnz, kUnit);
  const unsigned grid = grid_for(units, s.lanes_log2, dev);
  const unsigned fix_grid = unsigned(std::max<int64_t>(
      1, std::min<int64_t>(ceil_div(units, kThreads / kWarp), int64_t(dev.sm_count) * 8)));
  SegParams<T, ID> p;
  p.vals = a.vals;
  p.weight = a.weight;
  p.entry_grad = grad;
  p.part = part;
  p.loss_parts = reinterpret_cast<double*>(ws + l.loss_parts);
  p.nnz = a.nnz;
  p.k = int(a.k);
  p.chunks = s.chunks;
  p.lanes_log2 = s.lanes_log2;
  // Row pass: residuals, loss, g_e and grad_W.
  p.keys = srow;
  p.perm = prow;
  p.other = ckey;
  p.own = a.W;
  p.oth = a.Ht;
  p.out = a.grad_W;
  p.bound = uint32_t(a.m);
  MFEXT_RETURN_IF_ERROR(launch_segment<T, ID>(p, true, s, grid, stream));
  {
    auto kernel = sparse_fixup_kernel<T>;
    MFEXT_LAUNCH(kernel, fix_grid, kThreads, 0, stream, srow, a.grad_W, part, a.nnz,
                 uint32_t(a.m), int(a.k));
    MFEXT_LAUNCH_CHECK();
  }
  // Column pass: grad_Ht from g_e.
  p.keys = scol;
  p.perm = pcol;
  p.other = rkey;
  p.own = nullptr;
  p.oth = a.W;
  p.out = a.grad_Ht;
  p.bound = uint32_t(a.n);
  p.loss_parts = nullptr;
  MFEXT_RETURN_IF_ERROR(launch_segment<T, ID>(p, false, s, grid, stream));
  {
    auto kernel = sparse_fixup_kernel<T>;
    MFEXT_LAUNCH(kernel, fix_grid, kThreads, 0, stream, scol, a.grad_Ht, part, a.nnz,
                 uint32_t(a.n), int(a.k));
    MFEXT_LAUNCH_CHECK();
  }
  return cudaSuccess;
}

template <typename T, typename I>
bool ids64(const SparseLossGradParams<T, I>& a) { return a.nnz > int64_t(INT32_MAX); }

// The deterministic mode's sort scratch (0 in the fast mode).
template <typename T, typename I>
size_t sort_bytes(const SparseLossGradParams<T, I>& a, bool deterministic) {
  if (!deterministic) return 0;
  return ids64(a) ? sort_temp_bytes<int64_t>(a) : sort_temp_bytes<int32_t>(a);
}

template <typename T, typename I>
Layout layout_of(const SparseLossGradParams<T, I>& a, bool deterministic) {
  const size_t temp = sort_bytes(a, deterministic);
  return ids64(a) ? layout_for<T, I, int64_t>(a, deterministic, temp)
                  : layout_for<T, I, int32_t>(a, deterministic, temp);
}

template <typename T, typename I>
cudaError_t launch_typed(const SparseLossGradParams<T, I>& a, bool deterministic, void* workspace,
                         size_t workspace_bytes, const DeviceInfo& dev, cudaStream_t stream) {
  const bool wide = ids64(a);
  const Layout l = layout_of(a, deterministic);
  if (workspace_bytes < l.total) return cudaErrorInvalidValue;
  char* ws = static_cast<char*>(workspace);
  Status* status = reinterpret_cast<Status*>(ws + l.status);
  MFEXT_RETURN_IF_ERROR(status_init(status, stream));
  MFEXT_RETURN_IF_ERROR(cudaMemsetAsync(a.grad_W, 0, sizeof(T) * size_t(a.m) * a.k, stream));
  MFEXT_RETURN_IF_ERROR(cudaMemsetAsync(a.grad_Ht, 0, sizeof(T) * size_t(a.n) * a.k, stream));
  const int64_t units = ceil_div(a.nnz, kUnit);
  if (a.nnz > 0) {
    if (deterministic) {
      MFEXT_RETURN_IF_ERROR(wide ? launch_deterministic<T, I, int64_t>(a, l, ws, dev, stream)
                                 : launch_deterministic<T, I, int32_t>(a, l, ws, dev, stream));
    } else {
      MFEXT_RETURN_IF_ERROR(launch_fast<T, I>(a, l, ws, dev, stream));
    }
  }
  const DType dt = dtype_of<T>();
  MFEXT_RETURN_IF_ERROR(poison_on_error_launch(status, a.grad_W, a.m * a.k, dt, dev.sm_count, stream));
  MFEXT_RETURN_IF_ERROR(poison_on_error_launch(status, a.grad_Ht, a.n * a.k, dt, dev.sm_count, stream));
  ErrorContext ctx;
  ctx.op = kOpSparse;
  ctx.rows = a.rows;
  ctx.cols = a.cols;
  ctx.idx64 = sizeof(I) == 8;
  ctx.weight = a.weight;
  ctx.ws0 = 1;
  ctx.ws1 = 0;
  ctx.m = a.m;
  ctx.n = a.n;
  return finalize_loss_launch(reinterpret_cast<double*>(ws + l.loss_parts), units, status, a.loss,
                              dt, ctx, a.mailbox, stream);
}

}  // namespace
}  // namespace sparse

template <typename T, typename I>
size_t sparse_loss_grad_workspace_bytes(const SparseLossGradParams<T, I>& p, bool deterministic) {
  return sparse::layout_of(p, deterministic).total;
}

template <typename T, typename I>
cudaError_t sparse_loss_grad_launch(const SparseLossGradParams<T, I>& p, bool deterministic,
                                    void* workspace, size_t workspace_bytes,
                                    const DeviceInfo& dev, cudaStream_t stream) {
  if (deterministic && (p.m >= int64_t(UINT32_MAX) || p.n >= int64_t(UINT32_MAX)))
    return cudaErrorInvalidValue;  // 32-bit sort keys (the glue says so first)
  return sparse::launch_typed<T, I>(p, deterministic, workspace, workspace_bytes, dev, stream);
}

#define MFEXT_INSTANTIATE(T, I)                                                                 \
  template size_t sparse_loss_grad_workspace_bytes<T, I>(const SparseLossGradParams<T, I>&,    \
                                                         bool);                                \
  template cudaError_t sparse_loss_grad_launch<T, I>(const SparseLossGradParams<T, I>&, bool,  \
                                                     void*, size_t, const DeviceInfo&,         \
                                                     cudaStream_t);
MFEXT_INSTANTIATE(float, int32_t)
MFEXT_INSTANTIATE(float, int64_t)
MFEXT_INSTANTIATE(double, int32_t)
MFEXT_INSTANTIATE(double, int64_t)
#undef MFEXT_INSTANTIATE

}  // namespace cuda
}  // namespace mfext
