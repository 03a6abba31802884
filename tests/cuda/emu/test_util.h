// Shared pieces of the emulation tests (tests/cuda/emu/*_test.cpp, built with
// -Icsrc by .ci/cuda_emu_check.sh): checks, error measures, poisoned buffers
// and a fake device. Header-only; each test file is its own program.
#pragma once

#include <algorithm>
#include <chrono>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/errors.h"
#include "cuda/types.h"

namespace emu_test {

using namespace mfext::cuda;

inline int failures = 0;
inline std::chrono::steady_clock::time_point case_start;

inline double elapsed() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - case_start).count();
}
inline std::mt19937_64 rng(1234);

inline double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }

inline void check(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what.c_str());
    ++failures;
  }
}

inline double rel_err(const std::vector<double>& x, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) return INFINITY;
    num += (x[i] - ref[i]) * (x[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// The process's one mailbox, as the host glue keeps one per device: any error
// left in it is consumed the way the host consumes it (mailbox_consume), and
// its fields are cleared, so the next bad input is reported afresh.
inline ErrorMailbox& fresh_mailbox() {
  static ErrorMailbox mailbox{};
  if (mailbox.ready) mailbox_consume(&mailbox);
  const unsigned int consumed = mailbox.consumed;
  std::memset(&mailbox, 0, sizeof(mailbox));
  mailbox.consumed = consumed;
  return mailbox;
}

// 256-byte aligned, poisoned buffer (NaN bytes) for outputs and workspaces.
struct Buffer {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Buffer(size_t n) : bytes(std::max<size_t>(n, 1)) {
    p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    std::memset(p, 0xFF, bytes);
  }
  ~Buffer() { std::free(p); }
  Buffer(const Buffer&) = delete;
  template <typename T>
  T* as() { return static_cast<T*>(p); }
};

inline DeviceInfo device(int sms, size_t smem) {
  DeviceInfo d;
  d.sm_count = sms;
  d.cc_major = 9;
  d.cc_minor = 0;
  d.smem_optin = smem;
  return d;
}

template <typename T>
std::vector<double> to_double(const T* p, size_t n) {
  return std::vector<double>(p, p + n);
}

// Prints the summary line and returns the process exit status.
inline int finish(const char* what) {
  if (failures) {
    std::printf("%s: %d FAILED\n", what, failures);
    return 1;
  }
  std::printf("%s: all checks passed\n", what);
  return 0;
}

}  // namespace emu_test
