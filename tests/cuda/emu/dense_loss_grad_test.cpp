// Runs the CUDA kernels of mfext::dense_loss_grad under the CPU emulation
// (emu.h) against a float64 reference: the fused path (float32 3xTF32/1xTF32,
// float64), the tiled path's residual step, edge shapes, strided and
// transposed inputs, and the error path. Built and run by
// .ci/cuda_emu_check.sh; exits non-zero on the first failure.
#include "cuda/dense_loss_grad.h"
#include "test_util.h"

using namespace mfext::cuda;
using namespace emu_test;

namespace {

// ---------------------------------------------------------------- dense

struct DenseCase {
  int64_t m, n, k;
  bool weighted = false;
  bool transposed_A = false;  // A stored column-major
  int64_t pad = 0;            // extra row stride of A
  bool bad_weight = false;
  int sms = 3;
  size_t smem = 232448;
};

template <typename T>
void dense_case(const DenseCase& c, bool split, bool tiled) {
  case_start = std::chrono::steady_clock::now();
  const int64_t m = c.m, n = c.n, k = c.k;
  const int64_t lda = c.transposed_A ? m : n + c.pad;
  std::vector<T> A((c.transposed_A ? n * m : m * lda), T(NAN)), W(m * k), H(k * n), wt;
  auto a_at = [&](int64_t i, int64_t j) -> T& {
    return c.transposed_A ? A[j * m + i] : A[i * lda + j];
  };
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) a_at(i, j) = T(uniform(-1, 1));
  for (auto& x : W) x = T(uniform(-1, 1));
  for (auto& x : H) x = T(uniform(-1, 1));
  if (c.weighted) {
    wt.resize(m * n);
    for (auto& x : wt) x = uniform(0, 1) < 0.3 ? T(0) : T(uniform(0, 2));
    // A zero weight masks a NaN target.
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        if (wt[i * n + j] == T(0)) a_at(i, j) = T(NAN);
    if (c.bad_weight) wt[(m / 2) * n + n / 2] = T(-1);
  }
  // float64 reference
  double loss = 0;
  std::vector<double> gW(m * k, 0.0), gH(k * n, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double w = c.weighted ? double(wt[i * n + j]) : 1.0;
      if (w == 0) continue;
      double p = 0;
      for (int64_t q = 0; q < k; ++q) p += double(W[i * k + q]) * double(H[q * n + j]);
      const double r = p - double(a_at(i, j));
      loss += w * r * r;
      const double g = 2 * w * r;
      for (int64_t q = 0; q < k; ++q) {
        gW[i * k + q] += g * double(H[q * n + j]);
        gH[q * n + j] += g * double(W[i * k + q]);
      }
    }

  Buffer gWb(sizeof(T) * m * k), gHb(sizeof(T) * k * n), lossb(sizeof(T));
  ErrorMailbox& mailbox = fresh_mailbox();
  DenseLossGradParams<T> a;
  a.A = A.data();
  a.sa0 = c.transposed_A ? 1 : lda;
  a.sa1 = c.transposed_A ? m : 1;
  a.weight = c.weighted ? wt.data() : nullptr;
  a.sw0 = n;
  a.sw1 = 1;
  a.W = W.data();
  a.H = H.data();
  a.m = m;
  a.n = n;
  a.k = k;
  a.split_tf32 = split;
  a.grad_W = gWb.as<T>();
  a.sgw0 = k;
  a.sgw1 = 1;
  a.grad_H = gHb.as<T>();
  a.sgh0 = n;
  a.sgh1 = 1;
  a.loss = lossb.as<T>();
  a.mailbox = &mailbox;
  const DeviceInfo dev = device(c.sms, c.smem);
  char name[256];
  std::snprintf(name, sizeof(name), "dense %s %s m=%lld n=%lld k=%lld w=%d tA=%d pad=%lld smem=%zu",
                sizeof(T) == 4 ? (split ? "f32x3" : "f32x1") : "f64", tiled ? "tiled" : "fused",
                (long long)m, (long long)n, (long long)k, int(c.weighted), int(c.transposed_A),
                (long long)c.pad, c.smem);
  if (!tiled) {
    const DensePlan plan = dense_fused_plan<T>(m, n, k, c.weighted, dev, c.smem);
    if (!plan.supported) {
      check(false, std::string(name) + ": plan unsupported");
      return;
    }
    Buffer ws(plan.workspace_bytes);
    const cudaError_t err = dense_fused_launch(a, plan, ws.p, dev, nullptr);
    check(err == cudaSuccess, std::string(name) + ": launch error");
    std::printf("  %s: plan pr=%d pc=%d group_tiles=%d smem=%zu\n", name, plan.pr, plan.pc,
                plan.max_group_col_tiles, plan.smem_bytes);
  } else {
    // The glue's loop, with naive products standing in for cuBLAS.
    const int64_t tile = std::max<int64_t>(1, std::min<int64_t>(m, 37));
    int64_t tiles = (m + tile - 1) / tile;
    const int per = dense_residual_parts(tile, n, dev);
    // NaN in every slot: a slot the kernel leaves unwritten poisons the loss.
    std::vector<double> parts(size_t(tiles) * per, std::numeric_limits<double>::quiet_NaN());
    Buffer st(sizeof(Status));
    status_init(st.as<Status>(), nullptr);
    std::vector<T> R(tile * n);
    std::fill(gHb.as<T>(), gHb.as<T>() + k * n, T(0));
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * tile, rows = std::min(tile, m - r0);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < n; ++j) {
          T s = 0;
          for (int64_t q = 0; q < k; ++q) s += W[(r0 + i) * k + q] * H[q * n + j];
          R[i * n + j] = s;
        }
      check(dense_residual_launch(R.data(), a, r0, rows, parts.data() + t * per, per,
                                  st.as<Status>(), nullptr) == cudaSuccess,
            std::string(name) + ": residual launch");
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t q = 0; q < k; ++q) {
          T s = 0;
          for (int64_t j = 0; j < n; ++j) s += R[i * n + j] * H[q * n + j];
          gWb.as<T>()[(r0 + i) * k + q] = s;
        }
      for (int64_t q = 0; q < k; ++q)
        for (int64_t j = 0; j < n; ++j) {
          T s = 0;
          for (int64_t i = 0; i < rows; ++i) s += W[(r0 + i) * k + q] * R[i * n + j];
          gHb.as<T>()[q * n + j] += s;
        }
    }
    ErrorContext ctx;
    ctx.op = kOpDense;
    ctx.weight = a.weight;
    ctx.ws0 = n;
    ctx.ws1 = 1;
    ctx.m = m;
    ctx.n = n;
    finalize_loss_launch(parts.data(), int64_t(parts.size()), st.as<Status>(), lossb.p,
                         dtype_of<T>(), ctx, &mailbox, nullptr);
  }
  const double got_loss = double(*lossb.as<T>());
  if (c.bad_weight) {
    check(std::isnan(got_loss), std::string(name) + ": loss must be NaN after a bad weight");
    check(mailbox.ready == 1 && mailbox.kind == kErrWeight && mailbox.op == kOpDense &&
              mailbox.position == (m / 2) * n + n / 2 && mailbox.weight == -1.0,
          std::string(name) + ": mailbox must describe the bad weight");
    if (!tiled) {
      bool all_nan = true;
      for (int64_t i = 0; i < m * k; ++i) all_nan = all_nan && std::isnan(double(gWb.as<T>()[i]));
      check(all_nan, std::string(name) + ": grad_W must be NaN after a bad weight");
    }
    return;
  }
  check(mailbox.ready == 0, std::string(name) + ": no error expected");
  const double tol = sizeof(T) == 8 ? 1e-12 : (split ? 2e-5 : 3e-3);
  const double el = std::abs(got_loss - loss) / std::max(loss, 1e-300);
  const double ew = rel_err(to_double(gWb.as<T>(), m * k), gW);
  const double eh = rel_err(to_double(gHb.as<T>(), k * n), gH);
  std::printf("  %s: loss %.2e  grad_W %.2e  grad_H %.2e  (%.1f s)\n", name, el, ew, eh, elapsed());
  check(el <= tol && ew <= tol && eh <= tol, std::string(name) + ": error above tolerance");
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  std::printf("dense, fused:\n");
  const DenseCase dense_cases[] = {
      {1, 1, 1},
      {7, 13, 3, true},
      {130, 70, 17},                                   // two row tiles, two column tiles
      {130, 700, 16, true, false, 0, false, 3, 140000},  // small smem: several column groups
      {67, 131, 33, false, true},                      // column-major A, KP 48
      {50, 66, 64, true, false, 3},                    // strided rows (scalar loads), KP 64
      {40, 36, 5, true, false, 0, true},               // bad weight
  };
  for (const auto& c : dense_cases) {
    dense_case<float>(c, true, false);
    if (!quick) dense_case<float>(c, false, false);
    // Emulated FP64 fragments are slow: the quick run keeps the small float64 cases.
    if (!quick || c.m * c.n <= 4000) dense_case<double>(c, false, false);
  }
  std::printf("dense, tiled residual step:\n");
  dense_case<float>({45, 29, 70, true}, true, true);
  dense_case<float>({40, 200, 70}, true, true);  // the last tile wants fewer parts than the first
  dense_case<double>({80, 17, 3}, false, true);
  dense_case<double>({20, 9, 4, true, true, 0, true}, false, true);
  return finish("emulated dense_loss_grad kernels");
}
