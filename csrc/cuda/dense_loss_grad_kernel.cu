// The fused path of mfext::dense_loss_grad on the GPU: planning, workspace,
// launch and the fixed-order reduction of the per-group partial gradients (the
// kernel itself is in dense_loss_grad_kernel.cuh).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "dense_loss_grad_kernel.cuh"

namespace mfext {
namespace cuda {
namespace dense {
namespace {

constexpr size_t kAlign = 256;

size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The cheapest way to read a (m, n) tile operand with strides (s0, s1).
template <typename T>
int load_mode(const void* p, int64_t s0, int64_t s1, int64_t n) {
  constexpr int V = Vec16<T>::size;
  if (s1 == 1 && aligned16(p) && s0 % V == 0 && n % V == 0) return kModeVec;
  // Column-major (or column-like) layouts: walk down columns so loads coalesce.
  const int64_t a0 = s0 < 0 ? -s0 : s0, a1 = s1 < 0 ? -s1 : s1;
  return (a0 < a1) ? kModeCol : kModeRow;
}

// out[i, j] = sum_p part[p, i, j] in order p = 0, 1, ...; NaN after an input error.
template <typename T>
__global__ void dense_reduce_kernel(const T* __restrict__ part, int parts, int64_t rows,
                                    int64_t cols, T* __restrict__ out, int64_t so0, int64_t so1,
                                    const Status* __restrict__ status) {
  const bool bad = status->bad_weight != kNoError;
  const int64_t total = rows * cols;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    T s = part[idx];
    for (int q = 1; q < parts; ++q) s += part[int64_t(q) * total + idx];
    const int64_t i = idx / cols, j = idx % cols;
    out[i * so0 + j * so1] = bad ? T(NAN) : s;
  }
}

template <typename T>
cudaError_t reduce(const T* part, int parts, int64_t rows, int64_t cols, void* out, int64_t so0,
                   int64_t so1, const Status* status, int sm_count, cudaStream_t stream) {
  const int64_t total = rows * cols;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t want = ceil_div(total, threads);
  const unsigned blocks = unsigned(std::min<int64_t>(want, int64_t(sm_count) * 8));
  auto kernel = dense_reduce_kernel<T>;
  MFEXT_LAUNCH(kernel, blocks, threads, 0, stream, part, parts, rows, cols, static_cast<T*>(out),
               so0, so1, status);
  MFEXT_LAUNCH_CHECK();
  return cudaSuccess;
}

struct Layout {
  size_t status, loss_parts, gw_part, gh_part, total;
};

// The workspace of A: (m, n) and rank k.
template <typename T>
Layout workspace_layout(int64_t m, int64_t n, int64_t k, const DensePlan& plan) {
  Layout l;
  size_t off = 0;
  l.status = off;
  off = align_up(off + sizeof(Status));
  l.loss_parts = off;
  off = align_up(off + sizeof(double) * size_t(plan.pr) * plan.pc);
  l.gw_part = off;
  off = align_up(off + sizeof(T) * size_t(plan.pc) * m * k);
  l.gh_part = off;
  off = align_up(off + sizeof(T) * size_t(plan.pr) * k * n);
  l.total = off;
  return l;
}

template <typename T>
DensePlan plan_for(int64_t m, int64_t n, int64_t k, bool weighted, const DeviceInfo& dev,
                   size_t smem_budget) {
  DensePlan plan;
  if (k < 1 || k > kDenseFusedMaxK || dev.cc_major < 8 || m < 1 || n < 1) return plan;
  constexpr int BM = Cfg<T>::BM, BN = Cfg<T>::BN, PAD = Cfg<T>::PAD;
  const int kp = int((k + 15) / 16 * 16);
  const size_t budget = std::min(dev.smem_optin, smem_budget);
  const size_t fixed = smem_bytes<T>(kp, 0, weighted);
  const size_t per_col = size_t(kp) * sizeof(T);  // one column of the gH accumulator
  if (budget < fixed + per_col * (BN + PAD)) return plan;
  const int64_t ct_max = (int64_t((budget - fixed) / per_col) - PAD) / BN;
  if (ct_max < 1) return plan;

  const int64_t row_tiles = ceil_div(m, BM), col_tiles = ceil_div(n, BN);
  if (row_tiles > INT32_MAX || col_tiles > INT32_MAX) return plan;
  const int64_t sm = std::max(1, dev.sm_count);
  const int64_t pc_min = ceil_div(col_tiles, ct_max);
  // Cost in tile-times per SM: the busiest block's tiles times the waves, plus
  // the partial gradients written and read again (each worth its share of a tile).
  double best = -1.0;
  int64_t best_pr = 1, best_pc = pc_min;
  const int64_t pr_limit = std::min<int64_t>({row_tiles, 4 * sm, 65535});
  for (int64_t pr = 1; pr <= pr_limit; ++pr) {
    const int64_t pc = std::min(col_tiles, std::max(pc_min, ceil_div(sm, pr)));
    const int64_t blocks = pr * pc;
    const double waves = double(ceil_div(blocks, sm));
    const double tiles = double(ceil_div(row_tiles, pr) * ceil_div(col_tiles, pc));
    const double partial = 2.0 * double(pc * m * k + pr * k * n) / (double(BM) * BN) /
                           double(std::min(blocks, sm));
    const double cost = waves * tiles + partial;
    if (best < 0 || cost < best) {
      best = cost;
      best_pr = pr;
      best_pc = pc;
    }
  }
  if (best_pc > INT32_MAX) return plan;
  plan.bm = BM;
  plan.bn = BN;
  plan.kp = kp;
  plan.row_tiles = int(row_tiles);
  plan.col_tiles = int(col_tiles);
  plan.pr = int(best_pr);
  plan.pc = int(best_pc);
  plan.max_group_col_tiles = int(ceil_div(col_tiles, best_pc));
  plan.smem_bytes = smem_bytes<T>(kp, plan.max_group_col_tiles * BN + PAD, weighted);
  plan.workspace_bytes = workspace_layout<T>(m, n, k, plan).total;
  plan.supported = plan.smem_bytes <= budget;
  return plan;
}

template <typename T>
cudaError_t launch_typed(const DenseLossGradParams<T>& a, const DensePlan& plan, void* workspace,
                         const DeviceInfo& dev, cudaStream_t stream) {
  const Layout l = workspace_layout<T>(a.m, a.n, a.k, plan);
  char* ws = static_cast<char*>(workspace);
  Status* status = reinterpret_cast<Status*>(ws + l.status);
  double* loss_parts = reinterpret_cast<double*>(ws + l.loss_parts);
  T* gw_part = reinterpret_cast<T*>(ws + l.gw_part);
  T* gh_part = reinterpret_cast<T*>(ws + l.gh_part);
  MFEXT_RETURN_IF_ERROR(status_init(status, stream));

  FusedArgs<T> p;
  p.A = a.A;
  p.sa0 = a.sa0;
  p.sa1 = a.sa1;
  p.a_mode = load_mode<T>(a.A, a.sa0, a.sa1, a.n);
  p.weight = a.weight;
  p.sw0 = a.sw0;
  p.sw1 = a.sw1;
  p.w_mode = a.weight ? load_mode<T>(a.weight, a.sw0, a.sw1, a.n) : kModeRow;
  p.W = a.W;
  p.H = a.H;
  p.m = a.m;
  p.n = a.n;
  p.k = int(a.k);
  p.row_tiles = plan.row_tiles;
  p.col_tiles = plan.col_tiles;
  p.pr = plan.pr;
  p.pc = plan.pc;
  p.ldgh = plan.max_group_col_tiles * Cfg<T>::BN + Cfg<T>::PAD;
  p.gw_part = gw_part;
  p.gh_part = gh_part;
  p.loss_parts = loss_parts;
  p.status = status;
  MFEXT_RETURN_IF_ERROR(launch_fused_kernel<T>(p, plan.kp, a.split_tf32,
                                               dim3(unsigned(plan.pc), unsigned(plan.pr)),
                                               plan.smem_bytes, stream));
  MFEXT_RETURN_IF_ERROR(reduce<T>(gw_part, plan.pc, a.m, a.k, a.grad_W, a.sgw0, a.sgw1, status,
                                  dev.sm_count, stream));
  MFEXT_RETURN_IF_ERROR(reduce<T>(gh_part, plan.pr, a.k, a.n, a.grad_H, a.sgh0, a.sgh1, status,
                                  dev.sm_count, stream));
  ErrorContext ctx;
  ctx.op = kOpDense;
  ctx.weight = a.weight;
  ctx.ws0 = a.sw0;
  ctx.ws1 = a.sw1;
  ctx.m = a.m;
  ctx.n = a.n;
  return finalize_loss_launch(loss_parts, int64_t(plan.pr) * plan.pc, status, a.loss,
                              dtype_of<T>(), ctx, a.mailbox, stream);
}

}  // namespace
}  // namespace dense

template <typename T>
DensePlan dense_fused_plan(int64_t m, int64_t n, int64_t k, bool weighted, const DeviceInfo& dev,
                           size_t smem_budget) {
  return dense::plan_for<T>(m, n, k, weighted, dev, smem_budget);
}

template <typename T>
cudaError_t dense_fused_launch(const DenseLossGradParams<T>& p, const DensePlan& plan,
                               void* workspace, const DeviceInfo& dev, cudaStream_t stream) {
  if (!plan.supported) return cudaErrorInvalidValue;
  return dense::launch_typed<T>(p, plan, workspace, dev, stream);
}

#define MFEXT_INSTANTIATE(T)                                                                   \
  template DensePlan dense_fused_plan<T>(int64_t, int64_t, int64_t, bool, const DeviceInfo&,  \
                                         size_t);                                              \
  template cudaError_t dense_fused_launch<T>(const DenseLossGradParams<T>&, const DensePlan&, \
                                             void*, const DeviceInfo&, cudaStream_t);
MFEXT_INSTANTIATE(float)
MFEXT_INSTANTIATE(double)
#undef MFEXT_INSTANTIATE

}  // namespace cuda
}  // namespace mfext
