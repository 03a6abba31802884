// Runs the SGD epoch kernels (sgd_epoch_kernel.cu) under the CPU emulation
// (emu.h) against a sequential float64 reference of the same update rule:
// blocked mode (several strata, empty slots and blocks, a block run twice, with
// and without an `order` that skips entries), Hogwild with one warp
// (sequential), Hogwild with many warps on entries that share no row and no
// column (every entry exactly once), and the error path (bad input leaves the
// factors and biases bit-identical, gives a NaN sse and a mailbox entry). Built
// and run by .ci/cuda_emu_check.sh; --quick runs a subset.
#include "cuda/sgd_epoch.h"
#include "test_util.h"

using namespace mfext::cuda;
using namespace emu_test;

namespace {

enum class Bad { none, row, col, order, block_ptr, schedule, row_and_block_ptr };

struct SgdCase {
  int64_t m, n, k, nnz;
  int P = 0;                // blocked with P x P blocks; 0: Hogwild
  bool biases = true;
  bool nonnegative = false;
  bool with_order = false;  // an order that skips about 1 in 8 entries
  int max_warps = 0;        // Hogwild: 1 = sequential (needs a whole warp per entry)
  bool disjoint = false;    // Hogwild: no two entries share a row or a column
  bool misaligned = false;  // W and Ht rows not 16-byte aligned (scalar loads)
  Bad bad = Bad::none;
  int sms = 2;
};

constexpr double kLr = 0.05, kReg = 0.02, kBiasReg = 0.01, kMu = 0.5;

struct Problem {
  std::vector<int64_t> rows, cols, order, block_ptr, schedule;
  std::vector<double> vals;
  int64_t n_blocks = 0, n_strata = 0, width = 0;
};

Problem make_problem(const SgdCase& c) {
  Problem p;
  const int64_t nnz = c.nnz;
  p.rows.resize(nnz);
  p.cols.resize(nnz);
  p.vals.resize(nnz);
  if (c.disjoint) {
    std::vector<int64_t> r(c.m), q(c.n);
    for (int64_t i = 0; i < c.m; ++i) r[i] = i;
    for (int64_t i = 0; i < c.n; ++i) q[i] = i;
    std::shuffle(r.begin(), r.end(), rng);
    std::shuffle(q.begin(), q.end(), rng);
    for (int64_t e = 0; e < nnz; ++e) {
      p.rows[e] = r[e];
      p.cols[e] = q[e];
    }
  } else {
    for (int64_t e = 0; e < nnz; ++e) {
      p.rows[e] = std::uniform_int_distribution<int64_t>(0, c.m - 1)(rng);
      p.cols[e] = std::uniform_int_distribution<int64_t>(0, c.n - 1)(rng);
    }
  }
  for (auto& v : p.vals) v = uniform(0, 2);
  // Positions to process: every entry, or a random subset in random order.
  std::vector<int64_t> ids(nnz);
  for (int64_t e = 0; e < nnz; ++e) ids[e] = e;
  if (c.with_order) {
    std::shuffle(ids.begin(), ids.end(), rng);
    ids.resize(nnz - nnz / 8);
  }
  if (c.P > 0) {
    const int64_t P = c.P;
    // Block (1, 1) stays empty.
    for (int64_t e = 0; e < nnz; ++e)
      if (p.rows[e] % P == 1 && p.cols[e] % P == 1) p.cols[e] = (p.cols[e] + 1) % c.n;
    auto block = [&](int64_t e) { return (p.rows[e] % P) * P + p.cols[e] % P; };
    std::stable_sort(ids.begin(), ids.end(),
                     [&](int64_t a, int64_t b) { return block(a) < block(b); });
    p.n_blocks = P * P;
    p.block_ptr.assign(p.n_blocks + 1, 0);
    for (int64_t e : ids) ++p.block_ptr[block(e) + 1];
    for (int64_t b = 0; b < p.n_blocks; ++b) p.block_ptr[b + 1] += p.block_ptr[b];
    // P strata of disjoint blocks with some empty slots, then stratum 0 again
    // with another empty slot (its blocks run twice).
    p.width = P;
    p.n_strata = P + 1;
    for (int64_t s = 0; s <= P; ++s)
      for (int64_t t = 0; t < P; ++t) {
        const int64_t id = t * P + (t + (s % P)) % P;
        const bool empty = (s < P && (s + t) % 3 == 2) || (s == P && t == 1);
        p.schedule.push_back(empty ? -1 : id);
      }
  }
  if (c.with_order) {
    p.order = ids;
  } else {
    // Storage order is processing order.
    std::vector<int64_t> r(ids.size()), q(ids.size());
    std::vector<double> v(ids.size());
    for (size_t s = 0; s < ids.size(); ++s) {
      r[s] = p.rows[ids[s]];
      q[s] = p.cols[ids[s]];
      v[s] = p.vals[ids[s]];
    }
    p.rows = r;
    p.cols = q;
    p.vals = v;
  }
  return p;
}

// The sequential float64 reference: positions in schedule order (blocked) or 0 .. len - 1.
struct Model {
  std::vector<double> W, Ht, bu, bi;
  double sse = 0;
};

void reference(const SgdCase& c, const Problem& p, Model& x) {
  const int64_t k = c.k;
  const double decay = 1 - kLr * kReg;
  auto step = [&](int64_t s) {
    const int64_t e = p.order.empty() ? s : p.order[s];
    const int64_t u = p.rows[e], i = p.cols[e];
    double pred = 0;
    for (int64_t q = 0; q < k; ++q) pred += x.W[u * k + q] * x.Ht[i * k + q];
    if (c.biases) pred += kMu + x.bu[u] + x.bi[i];
    const double err = p.vals[e] - pred;
    x.sse += err * err;
    if (c.biases) {
      x.bu[u] += kLr * (err - kBiasReg * x.bu[u]);
      x.bi[i] += kLr * (err - kBiasReg * x.bi[i]);
    }
    const double g = kLr * err;
    for (int64_t q = 0; q < k; ++q) {
      double& w = x.W[u * k + q];
      double& h = x.Ht[i * k + q];
      const double w_old = w;
      w = decay * w + g * h;
      h = decay * h + g * w_old;
      if (c.nonnegative) {
        w = std::max(w, 0.0);
        h = std::max(h, 0.0);
      }
    }
  };
  const int64_t len = p.order.empty() ? int64_t(p.rows.size()) : int64_t(p.order.size());
  if (c.P == 0) {
    for (int64_t s = 0; s < len; ++s) step(s);
    return;
  }
  for (int64_t b : p.schedule)
    if (b >= 0)
      for (int64_t s = p.block_ptr[b]; s < p.block_ptr[b + 1]; ++s) step(s);
}

template <typename T>
std::vector<T> cast(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

// What an epoch updates, in T. `shift` elements of padding before W and Ht
// make their rows misaligned for 16-byte loads (the scalar fallback).
template <typename T>
struct State {
  std::vector<T> W, Ht, bu, bi;
  double sse = NAN;
  int shift = 0;
  State(const Model& x, int shift_) : bu(cast<T>(x.bu)), bi(cast<T>(x.bi)), shift(shift_) {
    W.assign(shift, T(0));
    Ht.assign(shift, T(0));
    W.insert(W.end(), x.W.begin(), x.W.end());
    Ht.insert(Ht.end(), x.Ht.begin(), x.Ht.end());
  }
  template <typename I>
  void bind(SgdEpochParams<T, I>& a) {
    a.W = W.data() + shift;
    a.Ht = Ht.data() + shift;
    a.user_bias = bu.data();  // given even without biases: they must stay untouched
    a.item_bias = bi.data();
    a.sse = &sse;
  }
  std::vector<double> w() const { return {W.begin() + shift, W.end()}; }
  std::vector<double> ht() const { return {Ht.begin() + shift, Ht.end()}; }
  // Bit for bit (the sse too when `with_sse`).
  bool same(const State& o, bool with_sse) const {
    auto eq = [](const std::vector<T>& a, const std::vector<T>& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(T) * a.size()) == 0;
    };
    return eq(W, o.W) && eq(Ht, o.Ht) && eq(bu, o.bu) && eq(bi, o.bi) &&
           (!with_sse || std::memcmp(&sse, &o.sse, sizeof(double)) == 0);
  }
};

template <typename T, typename I>
void sgd_case(const SgdCase& c) {
  case_start = std::chrono::steady_clock::now();
  Problem p = make_problem(c);
  const int64_t m = c.m, n = c.n, k = c.k, nnz = c.nnz;
  Model init;
  init.W.resize(m * k);
  init.Ht.resize(n * k);
  init.bu.resize(m);
  init.bi.resize(n);
  const double lo = c.nonnegative ? 0.0 : -0.3;
  for (auto* v : {&init.W, &init.Ht}) for (auto& x : *v) x = double(T(uniform(lo, 0.3)));
  for (auto* v : {&init.bu, &init.bi}) for (auto& x : *v) x = double(T(uniform(-0.2, 0.2)));
  for (auto& v : p.vals) v = double(T(v));

  std::vector<I> rows(p.rows.begin(), p.rows.end()), cols(p.cols.begin(), p.cols.end());
  const std::vector<T> vals = cast<T>(p.vals);
  std::vector<int64_t> order = p.order, block_ptr = p.block_ptr, schedule = p.schedule;
  const int64_t len = c.with_order ? int64_t(order.size()) : nnz;
  int64_t bad_pos = -1, bad_value = 0, bad_bound = 0;
  int bad_kind = kErrNone;
  switch (c.bad) {
    case Bad::none: break;
    case Bad::row:
      bad_pos = nnz / 2, bad_value = m + 3, bad_bound = m, bad_kind = kErrRow;
      rows[bad_pos] = I(bad_value);
      break;
    case Bad::col:
      bad_pos = nnz / 3, bad_value = -1, bad_bound = n, bad_kind = kErrCol;
      cols[bad_pos] = I(bad_value);
      break;
    case Bad::order:
      bad_pos = len / 2, bad_value = nnz, bad_bound = nnz, bad_kind = kErrAux0 + 2;
      order[bad_pos] = bad_value;
      break;
    case Bad::row_and_block_ptr:  // block_ptr comes first, as on the CPU
      rows[1] = I(-5);
      [[fallthrough]];
    case Bad::block_ptr:
      bad_pos = 3, bad_value = len + 1, bad_bound = len, bad_kind = kErrAux0;
      block_ptr[bad_pos] = bad_value;
      break;
    case Bad::schedule:
      bad_pos = int64_t(schedule.size()) - 2, bad_value = int64_t(block_ptr.size()) - 1;
      bad_bound = bad_value, bad_kind = kErrAux0 + 1;
      schedule[bad_pos] = bad_value;
      break;
  }

  State<T> got(init, c.misaligned ? 1 : 0);
  ErrorMailbox& mailbox = fresh_mailbox();
  SgdEpochParams<T, I> a;
  got.bind(a);
  a.rows = rows.data();
  a.cols = cols.data();
  a.vals = vals.data();
  a.order = c.with_order ? order.data() : nullptr;
  a.block_ptr = c.P > 0 ? block_ptr.data() : nullptr;
  a.schedule = c.P > 0 ? schedule.data() : nullptr;
  a.m = m;
  a.n = n;
  a.k = k;
  a.nnz = nnz;
  a.len = len;
  a.n_blocks = p.n_blocks;
  a.n_strata = p.n_strata;
  a.width = p.width;
  // Cast to T before any arithmetic, as the glue does.
  a.lr = T(kLr);
  a.reg = T(kReg);
  a.bias_reg = T(kBiasReg);
  a.global_mean = T(kMu);
  a.biases = c.biases;
  a.nonnegative = c.nonnegative;
  a.mailbox = &mailbox;
  a.max_warps = c.max_warps;
  const DeviceInfo dev = device(c.sms, 232448);
  char name[256];
  std::snprintf(name, sizeof(name),
                "sgd %s i%d %s m=%lld n=%lld k=%lld nnz=%lld bias=%d nonneg=%d order=%d%s%s%s",
                sizeof(T) == 4 ? "f32" : "f64", int(sizeof(I) * 8),
                c.P > 0 ? "blocked" : c.max_warps == 1 ? "hogwild-1warp" : "hogwild",
                (long long)m, (long long)n, (long long)k, (long long)nnz, int(c.biases),
                int(c.nonnegative), int(c.with_order), c.disjoint ? " disjoint" : "",
                c.misaligned ? " misaligned" : "", c.bad != Bad::none ? " bad" : "");
  Buffer ws(sgd_epoch_workspace_bytes(a, dev));
  check(sgd_epoch_launch(a, ws.p, ws.bytes, dev, nullptr) == cudaSuccess,
        std::string(name) + ": launch error");

  const State<T> before(init, got.shift);
  if (c.bad != Bad::none) {
    check(std::isnan(got.sse), std::string(name) + ": sse must be NaN");
    check(got.same(before, false),
          std::string(name) + ": bad input must leave W, Ht and the biases unchanged");
    check(mailbox.ready == 1 && mailbox.op == kOpSgd && mailbox.kind == bad_kind &&
              mailbox.position == bad_pos && mailbox.value == bad_value &&
              mailbox.bound == bad_bound,
          std::string(name) + ": mailbox must describe the bad input");
    std::printf("  %s: kind %d at %lld = %lld (bound %lld)  (%.1f s)\n", name, mailbox.kind,
                (long long)mailbox.position, (long long)mailbox.value, (long long)mailbox.bound,
                elapsed());
    return;
  }
  check(mailbox.ready == 0, std::string(name) + ": no error expected");
  Model ref = init;
  reference(c, p, ref);
  const double tol = sizeof(T) == 8 ? 1e-12 : 2e-5;
  const double ew = rel_err(got.w(), ref.W);
  const double eh = rel_err(got.ht(), ref.Ht);
  const std::vector<double> bu(got.bu.begin(), got.bu.end()), bi(got.bi.begin(), got.bi.end());
  const double eb = c.biases ? std::max(rel_err(bu, ref.bu), rel_err(bi, ref.bi)) : 0.0;
  const double es = std::abs(got.sse - ref.sse) / std::max(ref.sse, 1e-300);
  std::printf("  %s: W %.1e  Ht %.1e  biases %.1e  sse %.1e  (%.1f s)\n", name, ew, eh, eb, es,
              elapsed());
  check(ew <= tol && eh <= tol && eb <= tol && es <= tol, std::string(name) + ": above tolerance");
  if (!c.biases) {
    check(got.bu == before.bu && got.bi == before.bi,
          std::string(name) + ": biases must stay untouched without use_biases");
  }
  if (c.P > 0) {
    // Bit-identical on a second run with the blocks in reverse order and another grid.
    State<T> again(init, got.shift);
    again.bind(a);
    const DeviceInfo dev2 = device(c.sms + 3, 232448);
    Buffer ws2(sgd_epoch_workspace_bytes(a, dev2));
    setenv("EMU_REVERSE_BLOCKS", "1", 1);
    sgd_epoch_launch(a, ws2.p, ws2.bytes, dev2, nullptr);
    setenv("EMU_REVERSE_BLOCKS", "0", 1);
    check(again.same(got, true), std::string(name) + ": blocked mode must repeat bit for bit");
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  std::printf("sgd, blocked:\n");
  for (int64_t k : {1, 3, 8, 33, 128}) {
    SgdCase c{23, 19, k, 160};
    c.P = 4;
    sgd_case<double, int64_t>(c);
    c.with_order = true;
    c.nonnegative = k == 8;
    c.biases = k != 3;
    sgd_case<float, int32_t>(c);
    if (!quick) {
      sgd_case<double, int32_t>(c);
      c.with_order = false;
      sgd_case<float, int64_t>(c);
    }
  }
  {
    SgdCase c{10, 9, 5, 60};  // odd width; k = 5: scalar loads, groups of 8 lanes
    c.P = 3;
    c.biases = false;
    sgd_case<double, int64_t>(c);
    SgdCase v{9, 8, 8, 50};   // float4-sized k, misaligned rows: scalar loads
    v.P = 3;
    v.misaligned = true;
    sgd_case<float, int32_t>(v);
    SgdCase r{9, 8, 520, 40};  // 130 float4 chunks: re-read from memory, not held in registers
    r.P = 2;
    sgd_case<float, int64_t>(r);
    if (!quick) {
      r.k = 256;  // four double2 chunks per lane
      sgd_case<double, int32_t>(r);
    }
  }

  std::printf("sgd, Hogwild with one warp (sequential):\n");
  for (int64_t k : {33, 128}) {
    SgdCase c{15, 12, k, 150};  // f32: k = 33 (scalar) and 128 (float4) fill a warp
    c.max_warps = 1;
    c.with_order = k == 33;
    c.nonnegative = k == 128;
    sgd_case<float, int32_t>(c);
  }
  {
    SgdCase c{15, 12, 64, 150};  // f64: k = 64 is one double2 per lane
    c.max_warps = 1;
    sgd_case<double, int64_t>(c);
    if (!quick) {
      c.with_order = true;
      c.biases = false;
      sgd_case<double, int32_t>(c);
    }
    // Misaligned float32 rows: k = 128 (four scalars per lane), k = 160 (re-read).
    for (int64_t k : {128, 160}) {
      SgdCase v{11, 9, k, 60};
      v.max_warps = 1;
      v.misaligned = true;
      if (!quick || k == 160) sgd_case<float, int32_t>(v);
    }
  }

  std::printf("sgd, Hogwild, many warps on disjoint entries:\n");
  for (int64_t k : {1, 3, 8, 33, 128}) {
    // k = 128 f32: 64 entries per claim, so several warps and blocks share the order.
    SgdCase c{400, 420, k, k == 128 ? 380 : 300};
    c.disjoint = true;
    c.with_order = k % 2 == 1;
    sgd_case<float, int64_t>(c);
    if (!quick || k == 8) sgd_case<double, int32_t>(c);
  }

  std::printf("sgd, bad input:\n");
  {
    SgdCase h{12, 10, 8, 50};
    h.with_order = true;
    SgdCase b = h;
    b.P = 3;
    for (Bad bad : {Bad::row, Bad::col, Bad::order}) {
      h.bad = bad;
      sgd_case<float, int32_t>(h);
      b.bad = bad;
      if (!quick) sgd_case<double, int64_t>(b);
    }
    for (Bad bad : {Bad::block_ptr, Bad::schedule, Bad::row_and_block_ptr}) {
      b.bad = bad;
      sgd_case<double, int64_t>(b);
    }
  }
  return finish("emulated SGD epoch kernels");
}
