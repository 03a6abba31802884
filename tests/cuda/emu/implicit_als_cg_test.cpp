// Runs the CUDA kernels of implicit_als_cg_ (implicit_als_cg_kernel.cu) under
// the CPU emulation, driven as the glue drives them (validate; PG = X @ gram;
// rows(first); steps x {PG = P @ gram; rows(step)}; finish) with a plain GEMM in
// the kernel dtype standing in for cuBLAS, against implicit's CG run per row in
// float64 on the dense system A = gram + sum_e w_e y y^T, b = sum_e (1 + w_e) y.
// Covers d = 1, 7, 32, 64, 128, 200 (registers) and 300 (the row in global
// memory, without --quick), float32/float64, int32/int64 indices, R = n = 1,
// empty rows, duplicate entries, zero weights, 1, 3 and d + 2 steps, runs
// repeated bit for bit with the blocks in reverse, and bad offsets and indices
// (X NaN, the mailbox). Built and run by .ci/cuda_emu_check.sh.
#include "cuda/implicit_als_cg.h"
#include "test_util.h"

using namespace mfext::cuda;
using namespace emu_test;

namespace {

struct CgCase {
  const char* what;
  int64_t R, n, d;
  int avg = 5;              // mean entries per row
  int steps = 3;            // cg_steps (0: d + 2)
  int64_t bad_ptr = -1;     // indptr entry to push past nnz
  int64_t bad_idx = -1;     // entry to make out of range
};

// implicit's CG on the dense float64 system of every row, from X.
std::vector<double> reference(const std::vector<int64_t>& indptr, const std::vector<int64_t>& idx,
                              const std::vector<double>& w, const std::vector<double>& Y,
                              const std::vector<double>& gram, std::vector<double> X, int64_t R,
                              int64_t d, int steps) {
  for (int64_t row = 0; row < R; ++row) {
    std::vector<double> A(gram), b(d, 0.0);
    for (int64_t e = indptr[row]; e < indptr[row + 1]; ++e) {
      const double* y = Y.data() + idx[e] * d;
      for (int64_t p = 0; p < d; ++p) {
        b[p] += (1.0 + w[e]) * y[p];
        for (int64_t q = 0; q < d; ++q) A[p * d + q] += w[e] * y[p] * y[q];
      }
    }
    double* x = X.data() + row * d;
    auto matvec = [&](const std::vector<double>& v, std::vector<double>& out) {
      for (int64_t p = 0; p < d; ++p) {
        double s = 0;
        for (int64_t q = 0; q < d; ++q) s += A[p * d + q] * v[q];
        out[p] = s;
      }
    };
    std::vector<double> xv(x, x + d), r(d), Ap(d);
    matvec(xv, Ap);
    for (int64_t q = 0; q < d; ++q) r[q] = b[q] - Ap[q];
    std::vector<double> pv(r);
    double rs = 0;
    for (double v : r) rs += v * v;
    for (int s = 0; s < steps; ++s) {
      if (rs < 1e-20) break;
      matvec(pv, Ap);
      double pAp = 0;
      for (int64_t q = 0; q < d; ++q) pAp += pv[q] * Ap[q];
      if (pAp <= 0) break;
      const double a = rs / pAp;
      double rs_new = 0;
      for (int64_t q = 0; q < d; ++q) {
        x[q] += a * pv[q];
        r[q] -= a * Ap[q];
        rs_new += r[q] * r[q];
      }
      if (rs_new < 1e-20) break;
      for (int64_t q = 0; q < d; ++q) pv[q] = r[q] + rs_new / rs * pv[q];
      rs = rs_new;
    }
  }
  return X;
}

// out (R, d) = A (R, d) @ B (d, d), in T (the stand-in for cuBLAS).
template <typename T>
void gemm(const T* A, const T* B, T* out, int64_t R, int64_t d) {
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < d; ++j) {
      T s = T(0);
      for (int64_t k = 0; k < d; ++k) s += A[i * d + k] * B[k * d + j];
      out[i * d + j] = s;
    }
}

template <typename T, typename I>
void run(const ImplicitCgParams<T, I>& p, const T* gram, int steps, void* ws,
         const DeviceInfo& dev) {
  check(implicit_cg_validate_launch(p, ws, dev, nullptr) == cudaSuccess, "validate launch");
  gemm(p.X, gram, p.PG, p.R, p.d);
  check(implicit_cg_rows_launch(p, true, ws, dev, nullptr) == cudaSuccess, "first launch");
  for (int s = 0; s < steps; ++s) {
    gemm(p.p, gram, p.PG, p.R, p.d);
    check(implicit_cg_rows_launch(p, false, ws, dev, nullptr) == cudaSuccess, "step launch");
  }
  check(implicit_cg_finish_launch(p, ws, dev, nullptr) == cudaSuccess, "finish launch");
}

template <typename T, typename I>
void cg_case(const CgCase& c, bool quick) {
  case_start = std::chrono::steady_clock::now();
  const int64_t R = c.R, n = c.n, d = c.d;
  const int steps = c.steps > 0 ? c.steps : int(d) + 2;
  std::vector<int64_t> indptr(R + 1, 0);
  for (int64_t r = 0; r < R; ++r) {
    int64_t cnt = std::uniform_int_distribution<int64_t>(0, 2 * c.avg)(rng);
    if (r == 1) cnt = 0;  // an empty row
    indptr[r + 1] = indptr[r] + cnt;
  }
  const int64_t nnz = indptr[R];
  std::vector<int64_t> idx64(nnz);
  std::vector<I> idx(nnz);
  std::vector<T> w(nnz), Y(n * d), gram(d * d), X(R * d);
  for (int64_t e = 0; e < nnz; ++e) {
    // Every fourth entry repeats its predecessor's column (duplicates count twice).
    idx64[e] = e % 4 == 3 ? idx64[e - 1] : std::uniform_int_distribution<int64_t>(0, n - 1)(rng);
    idx[e] = I(idx64[e]);
    w[e] = e % 3 == 0 ? T(0) : T(uniform(0, 3));
  }
  for (auto& v : Y) v = T(uniform(-1, 1));
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j) {
      double s = i == j ? 1.0 : 0.0;  // reg = 1
      for (int64_t k = 0; k < n; ++k) s += double(Y[k * d + i]) * double(Y[k * d + j]);
      gram[i * d + j] = T(s);
    }
  for (auto& v : X) v = T(0.1 * uniform(-1, 1));
  if (c.bad_idx >= 0 && c.bad_idx < nnz) idx[c.bad_idx] = I(n + 2);
  if (c.bad_ptr >= 0) indptr[c.bad_ptr] = nnz + 5;
  const bool bad = c.bad_ptr >= 0 || (c.bad_idx >= 0 && c.bad_idx < nnz);

  Buffer Xb(sizeof(T) * R * d), rb(sizeof(T) * R * d), pb(sizeof(T) * R * d),
      PGb(sizeof(T) * R * d), rsb(sizeof(T) * R), actb(R), ws(implicit_cg_workspace_bytes());
  std::memcpy(Xb.p, X.data(), sizeof(T) * R * d);
  ImplicitCgParams<T, I> p;
  p.indptr = indptr.data();
  p.indices = idx.data();
  p.weight = w.data();
  p.Y = Y.data();
  p.X = Xb.as<T>();
  p.r = rb.as<T>();
  p.p = pb.as<T>();
  p.PG = PGb.as<T>();
  p.rs = rsb.as<T>();
  p.active = actb.as<unsigned char>();
  p.R = R;
  p.n = n;
  p.d = d;
  p.nnz = nnz;
  ErrorMailbox& mailbox = fresh_mailbox();
  p.mailbox = &mailbox;
  const DeviceInfo dev = device(2, 232448);
  char name[256];
  std::snprintf(name, sizeof(name), "%s: %s i%d R=%lld n=%lld d=%lld steps=%d", c.what,
                sizeof(T) == 4 ? "f32" : "f64", int(sizeof(I) * 8), (long long)R, (long long)n,
                (long long)d, steps);
  run(p, gram.data(), steps, ws.p, dev);
  const auto got = to_double(Xb.as<T>(), R * d);
  if (bad) {
    bool all_nan = true;
    for (double v : got) all_nan = all_nan && std::isnan(v);
    check(all_nan, std::string(name) + ": X must be NaN");
    const bool ptr = c.bad_ptr >= 0;
    const bool ok = mailbox.ready == 1 && mailbox.op == kOpImplicitCg &&
                    mailbox.kind == (ptr ? kErrAux0 : kErrCol) &&
                    mailbox.position == (ptr ? c.bad_ptr : c.bad_idx) &&
                    mailbox.value == (ptr ? nnz + 5 : n + 2) && mailbox.bound == (ptr ? nnz : n);
    if (!ok)
      std::printf("  mailbox: ready=%d op=%d kind=%d position=%lld value=%lld bound=%lld\n",
                  mailbox.ready, mailbox.op, mailbox.kind, (long long)mailbox.position,
                  (long long)mailbox.value, (long long)mailbox.bound);
    check(ok, std::string(name) + ": the mailbox must describe the bad input");
    std::printf("  %s: NaN X, mailbox ok (%.1f s)\n", name, elapsed());
    return;
  }
  check(mailbox.ready == 0, std::string(name) + ": no error expected");
  const auto ref = reference(indptr, idx64, to_double(w.data(), nnz), to_double(Y.data(), n * d),
                             to_double(gram.data(), d * d), to_double(X.data(), R * d), R, d,
                             steps);
  // Run to convergence (steps = d + 2), the float64 iterates drift apart at the
  // level of the system's condition number times the rounding: a looser bound.
  const double tol = sizeof(T) == 8 ? (c.steps > 0 ? 1e-9 : 1e-7) : 3e-3;
  // Relative to the larger of |ref| and |x0| (a row whose solution is 0 ends near
  // the rounding of its start, not at 0 exactly).
  double num = 0, den = 0, den0 = 0;
  for (int64_t i = 0; i < R * d; ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
    den0 += double(X[i]) * double(X[i]);
  }
  const double err = std::isnan(num) ? INFINITY : std::sqrt(num / std::max({den, den0, 1e-300}));
  std::printf("  %s: x %.1e (%.1f s)\n", name, err, elapsed());
  if (err > tol && R * d <= 4) {
    for (int64_t i = 0; i < R * d; ++i)
      std::printf("    x0 %.9g got %.9g ref %.9g\n", double(X[i]), got[i], ref[i]);
    for (int64_t e = 0; e < nnz; ++e)
      std::printf("    e %lld idx %lld w %.9g\n", (long long)e, (long long)idx64[e], double(w[e]));
    for (int64_t i = 0; i < n * d; ++i) std::printf("    Y %.9g\n", double(Y[i]));
    std::printf("    gram %.9g\n", double(gram[0]));
  }
  check(err <= tol, std::string(name) + ": above tolerance");
  if (!quick || d == 7) {  // the same bits with the blocks in reverse and another grid
    Buffer X2(sizeof(T) * R * d);
    std::memcpy(X2.p, X.data(), sizeof(T) * R * d);
    ImplicitCgParams<T, I> p2 = p;
    p2.X = X2.as<T>();
    setenv("EMU_REVERSE_BLOCKS", "1", 1);
    run(p2, gram.data(), steps, ws.p, device(5, 232448));
    setenv("EMU_REVERSE_BLOCKS", "0", 1);
    check(std::memcmp(Xb.p, X2.p, sizeof(T) * R * d) == 0,
          std::string(name) + ": must repeat bit for bit");
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  std::vector<CgCase> cases = {
      {"R=n=d=1", 1, 1, 1, 1, 1},
      {"d=1", 13, 3, 1, 4, 3},
      {"d=7", 11, 17, 7, 6, 3},
      {"d=7 one step", 5, 13, 7, 6, 1},
      {"d=7 to convergence", 7, 19, 7, 6, 0},
      {"d=32", 9, 23, 32, 6, 3},
      {"d=64", 10, 29, 64, 9, 3},
      {"d=128", 3, 31, 128, 5, 2},
      {"d=200", 3, 37, 200, 5, 2},
      {"bad indptr", 5, 10, 7, 3, 2, 3},
      {"bad index", 5, 10, 7, 3, 2, -1, 4},
  };
  if (!quick) {
    cases.push_back({"d=33 to convergence", 4, 41, 33, 8, 0});
    cases.push_back({"d=300 (global)", 3, 41, 300, 5, 2});
  }
  for (const CgCase& c : cases) {
    cg_case<double, int64_t>(c, quick);
    cg_case<float, int32_t>(c, quick);
    if (!quick) {
      cg_case<double, int32_t>(c, quick);
      cg_case<float, int64_t>(c, quick);
    }
  }
  return finish("emulated implicit_als_cg_ kernels");
}
