// Runs the CUDA kernels of mfext::sparse_loss_grad under the CPU emulation
// (emu.h) against a float64 reference: the fast and deterministic modes, edge
// shapes, heavy rows and columns, row-sorted entries, gradient buffers off
// 16-byte boundaries, and the error path. Built and run by
// .ci/cuda_emu_check.sh; exits non-zero on the first failure.
#include "cuda/sparse_loss_grad.h"
#include "test_util.h"

using namespace mfext::cuda;
using namespace emu_test;

namespace {

// ---------------------------------------------------------------- sparse

struct SparseCase {
  int64_t m, n, k, nnz;
  bool weighted = false;
  bool heavy = false;      // one row and one column with many entries (units cross)
  bool sorted = false;     // entries grouped by row (row-run accumulation)
  int64_t bad_row = -1;    // entry to make out of range
  int64_t bad_col = -1;
  int sms = 2;
  bool odd_grads = false;  // gradient buffers one element past a 16-byte boundary
};

template <typename T, typename I>
void sparse_case(const SparseCase& c, bool det) {
  case_start = std::chrono::steady_clock::now();
  const int64_t m = c.m, n = c.n, k = c.k, nnz = c.nnz;
  std::vector<I> rows(nnz), cols(nnz);
  std::vector<T> vals(nnz), W(m * k), Ht(n * k), wt;
  for (int64_t e = 0; e < nnz; ++e) {
    rows[e] = I(std::uniform_int_distribution<int64_t>(0, m - 1)(rng));
    cols[e] = I(std::uniform_int_distribution<int64_t>(0, n - 1)(rng));
    if (c.heavy && e % 3 == 0) rows[e] = I(m / 2);
    if (c.heavy && e % 4 == 1) cols[e] = I(n / 3);
    vals[e] = T(uniform(-1, 1));
  }
  if (c.sorted) {
    std::vector<int64_t> idx(nnz);
    for (int64_t e = 0; e < nnz; ++e) idx[e] = e;
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return rows[a] < rows[b]; });
    std::vector<I> r2(nnz), c2(nnz);
    for (int64_t e = 0; e < nnz; ++e) {
      r2[e] = rows[idx[e]];
      c2[e] = cols[idx[e]];
    }
    rows = r2;
    cols = c2;
  }
  for (auto& x : W) x = T(uniform(-1, 1));
  for (auto& x : Ht) x = T(uniform(-1, 1));
  if (c.weighted) {
    wt.resize(nnz);
    for (auto& x : wt) x = uniform(0, 1) < 0.2 ? T(0) : T(uniform(0, 2));
  }
  if (c.bad_row >= 0) rows[c.bad_row] = I(m + 3);
  if (c.bad_col >= 0) cols[c.bad_col] = I(-1);
  double loss = 0;
  std::vector<double> gW(m * k, 0.0), gHt(n * k, 0.0);
  for (int64_t e = 0; e < nnz; ++e) {
    const int64_t r = rows[e], cl = cols[e];
    if (r < 0 || r >= m || cl < 0 || cl >= n) continue;
    const double w = c.weighted ? double(wt[e]) : 1.0;
    double d = 0;
    for (int64_t q = 0; q < k; ++q) d += double(W[r * k + q]) * double(Ht[cl * k + q]);
    const double res = d - double(vals[e]);
    if (w == 0) continue;
    loss += w * res * res;
    for (int64_t q = 0; q < k; ++q) {
      gW[r * k + q] += 2 * w * res * double(Ht[cl * k + q]);
      gHt[cl * k + q] += 2 * w * res * double(W[r * k + q]);
    }
  }
  ErrorMailbox& mailbox = fresh_mailbox();
  // A view of a larger buffer, offset by one element when the case asks for it:
  // vector loads and stores must then fall back to scalars, not fault.
  const int64_t shift = c.odd_grads ? 1 : 0;
  Buffer gWbuf(sizeof(T) * (m * k + shift)), gHbuf(sizeof(T) * (n * k + shift)), lossb(sizeof(T));
  T* const gW_out = gWbuf.as<T>() + shift;
  T* const gH_out = gHbuf.as<T>() + shift;
  SparseLossGradParams<T, I> a;
  a.rows = rows.data();
  a.cols = cols.data();
  a.vals = vals.data();
  a.weight = c.weighted ? wt.data() : nullptr;
  a.W = W.data();
  a.Ht = Ht.data();
  a.m = m;
  a.n = n;
  a.k = k;
  a.nnz = nnz;
  a.grad_W = gW_out;
  a.grad_Ht = gH_out;
  a.loss = lossb.as<T>();
  a.mailbox = &mailbox;
  const DeviceInfo dev = device(c.sms, 232448);
  Buffer ws(sparse_loss_grad_workspace_bytes(a, det));
  char name[256];
  std::snprintf(name, sizeof(name), "sparse %s %s i%d m=%lld n=%lld k=%lld nnz=%lld w=%d heavy=%d sorted=%d odd=%d",
                sizeof(T) == 4 ? "f32" : "f64", det ? "det" : "fast", int(sizeof(I) * 8),
                (long long)m, (long long)n, (long long)k, (long long)nnz, int(c.weighted),
                int(c.heavy), int(c.sorted), int(c.odd_grads));
  const cudaError_t err = sparse_loss_grad_launch(a, det, ws.p, ws.bytes, dev, nullptr);
  check(err == cudaSuccess, std::string(name) + ": launch error");
  const double got = double(*lossb.as<T>());
  if (c.bad_row >= 0 || c.bad_col >= 0) {
    const bool row_err = c.bad_row >= 0;
    check(std::isnan(got), std::string(name) + ": loss must be NaN after a bad index");
    check(mailbox.ready == 1 && mailbox.kind == (row_err ? kErrRow : kErrCol) &&
              mailbox.position == (row_err ? c.bad_row : c.bad_col) &&
              mailbox.value == (row_err ? m + 3 : -1) && mailbox.bound == (row_err ? m : n),
          std::string(name) + ": mailbox must describe the bad index");
    bool all_nan = true;
    for (int64_t i = 0; i < m * k; ++i) all_nan = all_nan && std::isnan(double(gW_out[i]));
    check(all_nan, std::string(name) + ": grad_W must be NaN after a bad index");
    return;
  }
  check(mailbox.ready == 0, std::string(name) + ": no error expected");
  const double tol = sizeof(T) == 8 ? 1e-12 : 2e-5;
  const double el = nnz ? std::abs(got - loss) / std::max(loss, 1e-300) : std::abs(got);
  const double ew = rel_err(to_double(gW_out, m * k), gW);
  const double eh = rel_err(to_double(gH_out, n * k), gHt);
  std::printf("  %s: loss %.2e  grad_W %.2e  grad_H %.2e  (%.1f s)\n", name, el, ew, eh, elapsed());
  check(el <= tol && ew <= tol && eh <= tol, std::string(name) + ": error above tolerance");
  if (det) {
    // Bit-identical on a second run with the blocks in reverse order and another grid
    // (same buffer alignment: it picks the vector width, hence the dot's order).
    Buffer gW2buf(sizeof(T) * (m * k + shift)), gH2buf(sizeof(T) * (n * k + shift)),
        loss2(sizeof(T)), ws2(ws.bytes);
    T* const gW2 = gW2buf.as<T>() + shift;
    T* const gH2 = gH2buf.as<T>() + shift;
    a.grad_W = gW2;
    a.grad_Ht = gH2;
    a.loss = loss2.as<T>();
    setenv("EMU_REVERSE_BLOCKS", "1", 1);
    sparse_loss_grad_launch(a, det, ws2.p, ws2.bytes, device(c.sms + 3, 232448), nullptr);
    setenv("EMU_REVERSE_BLOCKS", "0", 1);
    check(std::memcmp(gW2, gW_out, sizeof(T) * m * k) == 0 &&
              std::memcmp(gH2, gH_out, sizeof(T) * n * k) == 0 &&
              std::memcmp(loss2.p, lossb.p, sizeof(T)) == 0,
          std::string(name) + ": deterministic mode must repeat bit for bit");
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  std::printf("sparse:\n");
  const SparseCase sparse_cases[] = {
      {1, 1, 1, 1},
      {5, 4, 3, 0},
      {9, 7, 3, 40, true},
      {40, 30, 8, 700, false, true},                 // units crossed by heavy rows/columns
      {60, 50, 16, 900, true, true, true},           // row-sorted
      {30, 20, 130, 300, true},                      // V=1 (k % 4 != 0), re-read chunks
      {20, 25, 128, 600, false, true},
      {16, 12, 516, 200, true},                      // vector chunks, re-read (k > 512)
      {25, 20, 16, 400, true, true, false, -1, -1, 2, true},  // gradients off 16-byte boundaries
      {12, 10, 6, 50, false, false, false, 17, -1},  // bad row
      {12, 10, 6, 50, true, false, false, -1, 21},   // bad column
  };
  for (const auto& c : sparse_cases) {
    for (bool det : {false, true}) {
      sparse_case<float, int64_t>(c, det);
      if (!quick) sparse_case<double, int32_t>(c, det);
    }
  }
  return finish("emulated sparse_loss_grad kernels");
}
