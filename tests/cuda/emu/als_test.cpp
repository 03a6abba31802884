// Runs the CUDA ALS kernels (als_kernel.cu) under the CPU emulation against a
// float64 reference: the normal equations built entry by entry, then a plain
// Cholesky solve with the CPU op's pivot test and fallback (math::pivot_floor
// and math::fallback_ridge with the kernel dtype's epsilon, then NaN). Covers
// d = 1 .. 65 (40: vector gathers; 200 and 300 without --quick), float32/float64,
// int32/int64 indices, empty and long rows, count_exponent 0 / 1 / 0.75,
// col_offset, indptr slices, a processing order, the large-d (global workspace)
// path, base and per-entry weights (zeros among them) on every path, a non-positive-definite row, large entries, NaN factors, and bad
// offsets, indices and reg_diag entries (NaN outputs, the mailbox). Built and
// run by .ci/cuda_emu_check.sh.
#include "cuda/als.h"
#include "element_math.h"
#include "test_util.h"

using namespace mfext::cuda;
using namespace emu_test;

namespace {

struct AlsCase {
  const char* what;
  int64_t R, n, d;
  int avg = 6;                // mean entries per row
  int64_t long_row = 0;       // entries of row 0 (0: random like the others)
  double exponent = 0.0;
  bool offset = true;
  int64_t slice = 0;          // the rows are indptr[slice : slice + R + 1] of a larger CSR
  bool order = false;         // pass a processing order (rows reversed)
  size_t smem = 232448;       // the device's opt-in shared memory
  bool singular = false;      // reg = 0; row 0 uses only factors with zeros past column 2
  bool nan_factor = false;    // one factor row holds a NaN: its rows give NaN
  int64_t bad_ptr = -1;       // indptr entry (in the slice) to push past nnz
  int64_t bad_idx = -1;       // entry to make out of range (-2: one outside the span)
  bool decreasing = false;    // bad_ptr: one less than its predecessor instead
  double magnitude = 1.0;     // factor entries in [-magnitude, magnitude]
  int64_t bad_reg = -1;       // reg_diag entry to make bad (its value: reg_value)
  double reg_value = 0.0;
  bool base = false;          // a symmetric positive semi-definite base (d, d)
  bool weight = false;        // per-entry weights in [0, 3), every third one 0
};

// Normal equations and the solve in float64, as the CPU op computes them.
struct Reference {
  std::vector<double> gram, rhs, x;
  int fallbacks = 0;  // rows that needed the ridge
};

// eps: the kernel dtype's (its pivot test decides which systems fall back).
double max_diagonal(const std::vector<double>& A, int64_t d) {
  double max_diag = 0;
  for (int64_t q = 0; q < d; ++q) max_diag = std::max(max_diag, A[q * d + q]);
  return max_diag;
}

bool cholesky_solve(std::vector<double> A, std::vector<double>& b, int64_t d, double eps) {
  const double floor = mfext::math::pivot_floor(max_diagonal(A, d), d, eps);
  for (int64_t j = 0; j < d; ++j) {
    const double pivot = A[j * d + j];
    if (!mfext::math::good_pivot(pivot, floor, DBL_MAX)) return false;
    const double l = std::sqrt(pivot);
    for (int64_t i = j; i < d; ++i) A[i * d + j] /= l;
    for (int64_t i = j + 1; i < d; ++i)
      for (int64_t q = j + 1; q <= i; ++q) A[i * d + q] -= A[i * d + j] * A[q * d + j];
  }
  for (int64_t i = 0; i < d; ++i) {
    double s = b[i];
    for (int64_t t = 0; t < i; ++t) s -= A[i * d + t] * b[t];
    b[i] = s / A[i * d + i];
  }
  for (int64_t i = d - 1; i >= 0; --i) {
    double s = b[i];
    for (int64_t t = i + 1; t < d; ++t) s -= A[t * d + i] * b[t];
    b[i] = s / A[i * d + i];
  }
  return true;
}

template <typename T, typename I>
Reference reference(const int64_t* indptr, const std::vector<I>& idx, const std::vector<T>& vals,
                    const std::vector<T>& F, const std::vector<T>& off, bool use_off,
                    const std::vector<T>& reg, double exponent, int64_t R, int64_t d,
                    const T* base, const T* weight) {
  Reference ref;
  ref.gram.assign(R * d * d, 0.0);
  ref.rhs.assign(R * d, 0.0);
  ref.x.assign(R * d, 0.0);
  for (int64_t r = 0; r < R; ++r) {
    double* A = ref.gram.data() + r * d * d;
    double* b = ref.rhs.data() + r * d;
    const int64_t cnt = indptr[r + 1] - indptr[r];
    for (int64_t e = indptr[r]; e < indptr[r + 1]; ++e) {
      const int64_t c = idx[e];
      const double t = double(vals[e]) - (use_off ? double(off[c]) : 0.0);
      const double w = weight != nullptr ? double(weight[e]) : 1.0;
      for (int64_t p = 0; p < d; ++p) {
        b[p] += t * double(F[c * d + p]);
        for (int64_t q = 0; q < d; ++q)
          A[p * d + q] += w * double(F[c * d + p]) * double(F[c * d + q]);
      }
    }
    if (base != nullptr && cnt > 0) {
      for (int64_t q = 0; q < d * d; ++q) A[q] += double(base[q]);
    }
    const double scale = std::pow(double(cnt), exponent);
    for (int64_t q = 0; q < d; ++q)
      A[q * d + q] = cnt ? A[q * d + q] + double(reg[q]) * scale : 1.0;
    std::vector<double> a(A, A + d * d), x(b, b + d);
    const double eps = std::numeric_limits<T>::epsilon();
    if (!cholesky_solve(a, x, d, eps)) {
      ++ref.fallbacks;
      const double ridge = mfext::math::fallback_ridge(max_diagonal(a, d), d, eps,
                                                       double(std::numeric_limits<T>::min()));
      for (int64_t q = 0; q < d; ++q) a[q * d + q] += ridge;
      x.assign(b, b + d);
      if (!cholesky_solve(a, x, d, eps)) x.assign(d, NAN);
    }
    std::copy(x.begin(), x.end(), ref.x.begin() + r * d);
  }
  return ref;
}

// Relative error over the elements whose reference is finite; NaN where the
// reference is NaN (and only there) is required.
double compare(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(ref[i]) != std::isnan(got[i])) return INFINITY;
    if (std::isnan(ref[i])) continue;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

bool all_nan(const std::vector<double>& v) {
  for (double x : v)
    if (!std::isnan(x)) return false;
  return true;
}

template <typename T, typename I>
void als_case(const AlsCase& c, bool quick) {
  case_start = std::chrono::steady_clock::now();
  const int64_t d = c.d, n = c.n, total = c.R + 2 * c.slice;
  // CSR of `total` rows; the case uses rows [slice, slice + R).
  std::vector<int64_t> indptr(total + 1, 0);
  for (int64_t r = 0; r < total; ++r) {
    int64_t cnt = std::uniform_int_distribution<int64_t>(0, 2 * c.avg)(rng);
    if (r == c.slice + 1) cnt = 0;                        // an empty row
    if (r == c.slice && c.long_row > 0) cnt = c.long_row;  // a long row (several chunks)
    if (c.singular) cnt = r == c.slice ? 3 : 2 * d + 3;
    if (r < c.slice || (c.nan_factor && r == c.slice + 2)) cnt = std::max<int64_t>(cnt, 1);
    indptr[r + 1] = indptr[r] + cnt;
  }
  const int64_t nnz = indptr[total];
  std::vector<I> idx(nnz);
  std::vector<T> vals(nnz), F(n * d), off(n), reg(d);
  const int64_t sparse_ids = 4;  // singular: ids [0, 4) have zeros past column 2
  for (int64_t e = 0; e < nnz; ++e) {
    const int64_t lo = c.singular ? sparse_ids : 0;
    idx[e] = I(std::uniform_int_distribution<int64_t>(lo, n - 1)(rng));
    vals[e] = T(uniform(-2, 2));
  }
  for (int64_t e = indptr[c.slice]; c.singular && e < indptr[c.slice + 1]; ++e)
    idx[e] = I(e % sparse_ids);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t q = 0; q < d; ++q)
      F[i * d + q] = c.singular && i < sparse_ids && q > 2 ? T(0)
                                                           : T(c.magnitude * uniform(-1, 1));
  for (auto& x : off) x = T(uniform(-0.5, 0.5));
  // The ridge scales with the entries squared: the same conditioning at any magnitude.
  for (auto& x : reg) x = c.singular ? T(0) : T(c.magnitude * c.magnitude * uniform(0.05, 0.2));
  if (c.nan_factor) F[idx[indptr[c.slice + 2]] * d] = T(NAN);  // row 2's first entry
  if (c.bad_idx >= 0) idx[indptr[c.slice] + c.bad_idx] = I(n + 2);
  if (c.bad_idx == -2 && c.slice > 0) idx[0] = I(-7);  // outside the rows' span: not an error
  int64_t* ip = indptr.data() + c.slice;
  const int64_t bad_value = c.decreasing ? ip[c.bad_ptr - 1] - 1 : nnz + 5;
  if (c.bad_ptr >= 0) ip[c.bad_ptr] = bad_value;
  if (c.bad_reg >= 0) reg[c.bad_reg] = T(c.reg_value);
  // base = M^T M / d (symmetric, positive semi-definite), weights with zeros.
  std::vector<T> base(c.base ? d * d : 0), weight(c.weight ? nnz : 0);
  if (c.base) {
    std::vector<double> M(d * d);
    for (auto& x : M) x = c.magnitude * uniform(-1, 1);
    for (int64_t i = 0; i < d; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double v = 0;
        for (int64_t k = 0; k < d; ++k) v += M[k * d + i] * M[k * d + j];
        base[i * d + j] = base[j * d + i] = T(v / double(d));
      }
  }
  for (int64_t e = 0; e < int64_t(weight.size()); ++e) weight[e] = e % 3 == 0 ? T(0) : T(uniform(0, 3));
  std::vector<int64_t> order(c.R);
  for (int64_t i = 0; i < c.R; ++i) order[i] = c.R - 1 - i;

  const bool bad = c.bad_ptr >= 0 || c.bad_idx >= 0 || c.bad_reg >= 0;
  Reference ref;
  if (!bad)
    ref = reference<T, I>(ip, idx, vals, F, off, c.offset, reg, c.exponent, c.R, d,
                          c.base ? base.data() : nullptr, c.weight ? weight.data() : nullptr);

  AlsParams<T, I> a;
  a.indptr = ip;
  a.indices = idx.data();
  a.vals = vals.data();
  a.F = F.data();
  a.col_offset = c.offset ? off.data() : nullptr;
  a.reg_diag = reg.data();
  a.base = c.base ? base.data() : nullptr;
  a.weight = c.weight ? weight.data() : nullptr;
  a.count_exponent = c.exponent;
  a.order = c.order ? order.data() : nullptr;
  a.R = c.R;
  a.n = n;
  a.d = d;
  a.nnz = nnz;
  ErrorMailbox& mailbox = fresh_mailbox();
  a.mailbox = &mailbox;
  const DeviceInfo dev = device(2, c.smem);
  char name[256];
  std::snprintf(name, sizeof(name), "%s: %s i%d R=%lld d=%lld exp=%g off=%d base=%d w=%d %s",
                c.what, sizeof(T) == 4 ? "f32" : "f64", int(sizeof(I) * 8), (long long)c.R,
                (long long)d, c.exponent, int(c.offset), int(c.base), int(c.weight),
                als_solve_in_smem(a, dev) ? "smem" : "global");
  check(als_supported(a, false, dev) && als_supported(a, true, dev),
        std::string(name) + ": supported");

  auto expect_error = [&](const char* op_name, int op) {
    const int64_t first_bad_ptr = c.bad_ptr;
    const bool ptr_err = c.bad_ptr >= 0;
    // indptr, then indices, then reg_diag: the CPU's order of checks.
    const bool reg_err = !ptr_err && c.bad_idx < 0;
    const double reported = double(T(c.reg_value));
    const bool ok =
        mailbox.ready == 1 && mailbox.op == op &&
        (reg_err ? mailbox.kind == kErrWeight && mailbox.position == c.bad_reg &&
                       mailbox.has_weight == 1 &&
                       (std::isnan(reported) ? std::isnan(mailbox.weight)
                                             : mailbox.weight == reported)
                 : mailbox.kind == (ptr_err ? kErrAux0 : kErrCol) &&
                       mailbox.position == (ptr_err ? first_bad_ptr : ip[0] + c.bad_idx) &&
                       mailbox.value == (ptr_err ? bad_value : n + 2) &&
                       mailbox.bound == (ptr_err ? nnz : n));
    if (!ok)
      std::printf("  mailbox: ready=%d op=%d kind=%d position=%lld value=%lld bound=%lld\n",
                  mailbox.ready, mailbox.op, mailbox.kind, (long long)mailbox.position,
                  (long long)mailbox.value, (long long)mailbox.bound);
    check(ok, std::string(name) + ": " + op_name + " mailbox must describe the bad input");
  };

  // The normal equations.
  {
    fresh_mailbox();
    Buffer gram(sizeof(T) * c.R * d * d), rhs(sizeof(T) * c.R * d);
    Buffer ws(als_workspace_bytes(a, false, dev));
    const cudaError_t err =
        als_normal_equations_launch(a, gram.as<T>(), rhs.as<T>(), ws.p, ws.bytes, dev, nullptr);
    check(err == cudaSuccess, std::string(name) + ": normal equations launch");
    const auto g = to_double(gram.as<T>(), c.R * d * d), b = to_double(rhs.as<T>(), c.R * d);
    if (bad) {
      check(all_nan(g) && all_nan(b), std::string(name) + ": gram and rhs must be NaN");
      expect_error("normal equations", kOpAlsNormal);
    } else {
      check(mailbox.ready == 0, std::string(name) + ": normal equations: no error expected");
      const double tol = sizeof(T) == 8 ? 1e-12 : 1e-5;
      const double eg = compare(g, ref.gram), eb = compare(b, ref.rhs);
      std::printf("  %s: gram %.1e rhs %.1e", name, eg, eb);
      check(eg <= tol && eb <= tol, std::string(name) + ": normal equations above tolerance");
    }
  }
  // The solve.
  fresh_mailbox();
  Buffer x(sizeof(T) * c.R * d);
  Buffer ws(als_workspace_bytes(a, true, dev));
  check(als_solve_launch(a, x.as<T>(), ws.p, ws.bytes, dev, nullptr) == cudaSuccess,
        std::string(name) + ": solve launch");
  const auto got = to_double(x.as<T>(), c.R * d);
  if (bad) {
    check(all_nan(got), std::string(name) + ": x must be NaN");
    expect_error("solve", kOpAlsSolve);
    std::printf("  %s: NaN outputs, mailbox ok (%.1f s)\n", name, elapsed());
    return;
  }
  check(mailbox.ready == 0, std::string(name) + ": solve: no error expected");
  const double tol = sizeof(T) == 8 ? 1e-9 : 2e-3;
  const double ex = compare(got, ref.x);
  std::printf("  x %.1e, %d fallback(s) (%.1f s)\n", ex, ref.fallbacks, elapsed());
  check(ex <= tol, std::string(name) + ": solve above tolerance");
  check(c.nan_factor ? ref.fallbacks >= 1 : ref.fallbacks == (c.singular ? 1 : 0),
        std::string(name) + ": the fallback must run where meant, and only there");
  if (c.nan_factor) check(std::isnan(got[2 * d]), std::string(name) + ": NaN factor row");

  // Bit for bit again with the blocks in reverse, another grid and no order.
  if (!quick || c.order) {
    Buffer x2(sizeof(T) * c.R * d);
    AlsParams<T, I> a2 = a;
    a2.order = c.order ? nullptr : order.data();
    const DeviceInfo dev2 = device(5, c.smem);
    Buffer ws2(als_workspace_bytes(a2, true, dev2));
    setenv("EMU_REVERSE_BLOCKS", "1", 1);
    als_solve_launch(a2, x2.as<T>(), ws2.p, ws2.bytes, dev2, nullptr);
    setenv("EMU_REVERSE_BLOCKS", "0", 1);
    check(std::memcmp(x.p, x2.p, sizeof(T) * c.R * d) == 0,
          std::string(name) + ": the solve must repeat bit for bit");
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  std::vector<AlsCase> cases = {
      {"tiny", 5, 4, 1, 3, 0, 0.0, true},
      {"d=3", 6, 7, 3, 5, 0, 1.0, false},
      {"long row", 4, 30, 8, 6, 150, 0.75, true},
      {"slice+order", 5, 40, 33, 8, 0, 0.75, true, 3, true},
      {"d=65", 3, 90, 65, 10, 140, 1.0, true},
      {"vector gathers", 3, 50, 40, 8, 0, 0.75, true},  // d % 4 == 0, swizzled tiles
      {"global path", 3, 80, 65, 12, 0, 0.75, true, 0, false, 12 * 1024},
      {"not pos. def.", 3, 20, 8, 0, 0, 0.0, false, 0, false, 232448, true},
      {"nan factor", 4, 12, 5, 4, 0, 1.0, true, 0, false, 232448, false, true},
      {"indptr past end", 5, 10, 4, 3, 0, 1.0, true, 2, false, 232448, false, false, 3},
      {"indptr decreasing", 5, 10, 4, 3, 0, 1.0, true, 0, false, 232448, false, false, 3, -1, true},
      {"bad index", 5, 10, 4, 3, 0, 1.0, true, 0, false, 232448, false, false, -1, 2},
      {"outside span", 4, 10, 4, 3, 0, 1.0, true, 2, false, 232448, false, false, -1, -2},
      // Diagonal ~1e7 (ridge ~1e6): the floor is far above the padding's pivots of 1.
      {"large entries", 4, 12, 5, 8, 0, 1.0, true, 0, false, 232448, false, false, -1, -1, false,
       3000.0},
      {"negative reg_diag", 4, 10, 6, 3, 0, 1.0, true, 0, false, 232448, false, false, -1, -1,
       false, 1.0, 4, -0.5},
      {"NaN reg_diag", 4, 10, 6, 3, 0, 0.75, true, 0, false, 232448, false, false, -1, -1, false,
       1.0, 0, NAN},
      {"Inf reg_diag", 4, 10, 70, 3, 0, 0.0, true, 0, false, 232448, false, false, -1, -1, false,
       1.0, 69, INFINITY},
      // A bad index is reported before a bad reg_diag, as on the CPU.
      {"bad index and reg_diag", 5, 10, 4, 3, 0, 1.0, true, 0, false, 232448, false, false, -1, 2,
       false, 1.0, 1, -1.0},
  };
  // base and weight (the kExtras kernels): d = 1, 7, 64, a long row, the global path.
  auto extras = [](AlsCase c, bool base, bool weight) {
    c.base = base;
    c.weight = weight;
    return c;
  };
  cases.push_back(extras({"base+weight", 5, 4, 1, 3, 0, 0.0, true}, true, true));
  cases.push_back(extras({"base+weight", 6, 9, 7, 5, 0, 1.0, false}, true, true));
  cases.push_back(extras({"weight only", 6, 9, 7, 5, 0, 0.75, true}, false, true));
  cases.push_back(extras({"base only", 5, 20, 64, 6, 0, 0.0, true}, true, false));
  cases.push_back(extras({"base+weight long row", 4, 90, 64, 6, 150, 0.0, true}, true, true));
  cases.push_back(
      extras({"base+weight global", 3, 80, 65, 12, 0, 0.75, true, 0, false, 12 * 1024}, true, true));
  cases.push_back(extras({"base+weight bad index", 5, 10, 4, 3, 0, 1.0, true, 0, false, 232448,
                          false, false, -1, 2},
                         true, true));
  if (!quick) {
    cases.push_back(extras({"base+weight large d", 3, 40, 300, 12, 0, 0.0, true, 0, true}, true, true));
    cases.push_back({"multi-pass smem", 2, 30, 200, 10, 0, 1.0, true});
    cases.push_back({"large d", 3, 40, 300, 12, 0, 0.75, true, 0, true});
  }
  for (const AlsCase& c : cases) {
    const bool big = c.d >= 200;  // float64 only (float32 takes shared memory up to d = 320)
    if (!big) als_case<float, int32_t>(c, quick);
    als_case<double, int64_t>(c, quick);
    if (!quick) {
      if (!big) als_case<float, int64_t>(c, quick);
      als_case<double, int32_t>(c, quick);
    }
  }
  return finish("emulated ALS kernels");
}
