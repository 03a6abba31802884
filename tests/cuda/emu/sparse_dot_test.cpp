// Runs the _sparse_dot kernel (sparse_dot_kernel.cu) under the CPU emulation
// against a float64 reference: vector and scalar row loads, chunks held in
// registers and re-read, several entries per warp, int32/int64 indices, and the
// error path (NaN output, the mailbox filled, kept until consumed). Built and
// run by .ci/cuda_emu_check.sh.
#include "cuda/sparse_dot.h"
#include "test_util.h"

using namespace mfext::cuda;
using namespace emu_test;

namespace {

struct DotCase {
  int64_t m, n, k, nnz;
  int64_t offset = 0;      // W starts this many elements into its buffer (misaligned)
  int64_t bad_row = -1;    // entry to make out of range
  int64_t bad_col = -1;
};

// The kernel's arguments over host vectors (the emulation reads them directly).
template <typename T, typename I>
SparseDotParams<T, I> dot_args(const std::vector<I>& rows, const std::vector<I>& cols,
                               const T* W, const std::vector<T>& Ht, int64_t m, int64_t n,
                               int64_t k, void* out, ErrorMailbox* mailbox) {
  SparseDotParams<T, I> a;
  a.rows = rows.data();
  a.cols = cols.data();
  a.W = W;
  a.Ht = Ht.data();
  a.m = m;
  a.n = n;
  a.k = k;
  a.nnz = int64_t(rows.size());
  a.out = static_cast<T*>(out);
  a.mailbox = mailbox;
  return a;
}

template <typename T, typename I>
void dot_case(const DotCase& c) {
  case_start = std::chrono::steady_clock::now();
  std::vector<I> rows(c.nnz), cols(c.nnz);
  std::vector<T> Wbuf(c.offset + c.m * c.k), Ht(c.n * c.k);
  T* W = Wbuf.data() + c.offset;
  for (auto& x : Wbuf) x = T(uniform(-1, 1));
  for (auto& x : Ht) x = T(uniform(-1, 1));
  for (int64_t e = 0; e < c.nnz; ++e) {
    rows[e] = I(std::uniform_int_distribution<int64_t>(0, c.m - 1)(rng));
    cols[e] = I(std::uniform_int_distribution<int64_t>(0, c.n - 1)(rng));
  }
  if (c.bad_row >= 0) rows[c.bad_row] = I(c.m);
  if (c.bad_col >= 0) cols[c.bad_col] = I(-2);
  std::vector<double> ref(c.nnz, 0.0);
  for (int64_t e = 0; e < c.nnz; ++e)
    for (int64_t q = 0; q < c.k && e != c.bad_row && e != c.bad_col; ++q)
      ref[e] += double(W[int64_t(rows[e]) * c.k + q]) * double(Ht[int64_t(cols[e]) * c.k + q]);

  Buffer out(sizeof(T) * c.nnz), ws(sparse_dot_workspace_bytes());
  ErrorMailbox& mailbox = fresh_mailbox();
  const SparseDotParams<T, I> a = dot_args(rows, cols, W, Ht, c.m, c.n, c.k, out.p, &mailbox);
  char name[160];
  std::snprintf(name, sizeof(name), "sparse_dot %s i%d m=%lld n=%lld k=%lld nnz=%lld off=%lld",
                sizeof(T) == 4 ? "f32" : "f64", int(8 * sizeof(I)), (long long)c.m,
                (long long)c.n, (long long)c.k, (long long)c.nnz, (long long)c.offset);
  check(sparse_dot_launch(a, ws.p, device(1, 232448), nullptr) == cudaSuccess,
        std::string(name) + ": launch error");
  const std::vector<double> got = to_double(out.as<T>(), c.nnz);
  if (c.bad_row >= 0 || c.bad_col >= 0) {
    bool all_nan = true;
    for (double x : got) all_nan = all_nan && std::isnan(x);
    const bool row = c.bad_row >= 0;
    check(all_nan, std::string(name) + ": output must be NaN after a bad index");
    check(mailbox.ready == 1 && mailbox.op == kOpSparseDot &&
              mailbox.kind == (row ? kErrRow : kErrCol) &&
              mailbox.position == (row ? c.bad_row : c.bad_col) &&
              mailbox.value == (row ? c.m : -2) && mailbox.bound == (row ? c.m : c.n),
          std::string(name) + ": mailbox must describe the bad index");
    std::printf("  %s: bad index reported (%.1f s)\n", name, elapsed());
    return;
  }
  check(mailbox.ready == 0, std::string(name) + ": no error expected");
  const double err = rel_err(got, ref);
  std::printf("  %s: %.2e (%.1f s)\n", name, err, elapsed());
  check(err <= (sizeof(T) == 8 ? 1e-14 : 1e-6), std::string(name) + ": error above tolerance");
}

// The mailbox keeps the first error until the host consumes it, then takes the
// next one, with no re-arming launch in between.
void mailbox_case() {
  const int64_t m = 6, n = 5, k = 4, nnz = 8;
  std::vector<int64_t> rows(nnz, 1), cols(nnz, 2);
  std::vector<float> W(m * k, 1.0f), Ht(n * k, 1.0f);
  Buffer out(sizeof(float) * nnz), ws(sparse_dot_workspace_bytes());
  ErrorMailbox& mailbox = fresh_mailbox();
  auto launch_with_bad_row = [&](int64_t position) {
    std::fill(rows.begin(), rows.end(), 1);
    rows[position] = m + position;
    const auto a = dot_args(rows, cols, W.data(), Ht, m, n, k, out.p, &mailbox);
    check(sparse_dot_launch(a, ws.p, device(1, 232448), nullptr) == cudaSuccess,
          "mailbox: launch error");
  };
  launch_with_bad_row(3);
  check(mailbox.ready == 1 && mailbox.position == 3, "mailbox: the first error is reported");
  launch_with_bad_row(5);
  check(mailbox.ready == 1 && mailbox.position == 3 && mailbox.value == m + 3,
        "mailbox: a pending error is never overwritten");
  mailbox_consume(&mailbox);
  check(mailbox.ready == 0, "mailbox: consumed");
  launch_with_bad_row(6);
  check(mailbox.ready == 1 && mailbox.position == 6 && mailbox.value == m + 6,
        "mailbox: the next error is reported once the host consumed the first");
  fresh_mailbox();
  std::printf("  mailbox: first error kept, next one taken after consumption\n");
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const DotCase cases[] = {
      {1, 1, 1, 1},
      {5, 4, 3, 0},
      {9, 7, 3, 300},          // scalar loads, 4 lanes per entry
      {20, 15, 8, 500},        // vector loads, 2 lanes per entry (f32)
      {30, 20, 128, 700},      // one vector per lane (f32)
      {25, 20, 64, 400, 1},    // misaligned W: scalar loads
      {16, 12, 516, 120},      // chunks re-read (more than 4 per lane)
      {12, 10, 6, 50, 0, 17},  // bad row
      {12, 10, 6, 50, 0, -1, 21},  // bad column
  };
  for (const auto& c : cases) {
    dot_case<float, int64_t>(c);
    if (!quick) dot_case<double, int32_t>(c);
  }
  mailbox_case();
  return finish("sparse_dot emulation");
}
