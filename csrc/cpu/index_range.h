// Range checks for index arrays read by the CPU kernels: run once, up front and
// in parallel, so that a kernel never touches memory out of bounds and an
// in-place kernel never leaves a half-updated result behind a bad index.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace mfext {
namespace cpu {

// idx: (len,). Returns the first position p with idx[p] outside [lo, hi), or -1.
// The answer is the smallest such position for any thread count.
template <typename index_t>
int64_t first_out_of_range(const index_t* idx, int64_t len, int64_t lo, int64_t hi) {
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  int64_t first = kNone;
  // Per-chunk results, combined in chunk order below. A chunk is large: a
  // serial scan of a few million indices costs well under a millisecond,
  // while a parallel region can cost a whole time slice on a busy machine.
  const int64_t grain = 1 << 22;
  const int64_t n_chunks = std::max<int64_t>(1, (len + grain - 1) / grain);
  std::vector<int64_t> chunk_first(n_chunks, kNone);
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t end = std::min(len, (c + 1) * grain);
      for (int64_t p = c * grain; p < end; ++p) {
        const int64_t v = static_cast<int64_t>(idx[p]);
        if (v < lo || v >= hi) {
          chunk_first[c] = p;
          break;
        }
      }
    }
  });
  for (int64_t f : chunk_first) first = std::min(first, f);
  return first == kNone ? -1 : first;
}

// Raises an IndexError naming the argument when an entry of idx (len,) lies outside
// [0, bound): "<op>: <name>[p] = v is out of range for <target> with <bound> <unit>".
template <typename index_t>
void check_index_range(const char* op, const char* name, const index_t* idx, int64_t len,
                       int64_t bound, const char* target, const char* unit) {
  const int64_t bad = first_out_of_range(idx, len, 0, bound);
  TORCH_CHECK_INDEX(bad < 0, op, ": ", name, "[", bad, "] = ",
                    bad >= 0 ? static_cast<int64_t>(idx[bad]) : 0, " is out of range for ",
                    target, " with ", bound, " ", unit);
}

}  // namespace cpu
}  // namespace mfext
