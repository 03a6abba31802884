// Stable counting sort of entry ids by a key (a row or a column index), used to
// give every output row to exactly one thread: no atomics, no lost updates, and
// results that do not depend on the thread count.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace mfext {
namespace cpu {

struct BucketOrder {
  std::vector<int64_t> offsets;  // (buckets + 1,): entries of bucket b are order[offsets[b]:offsets[b+1]]
  std::vector<int64_t> order;    // (nnz,): entry ids, stable within a bucket
};

// keys: (nnz,). Every key must lie in [0, buckets); otherwise the first bad
// position is returned through *bad_position (and the order is left empty).
template <typename index_t>
BucketOrder stable_bucket_order(const index_t* keys, int64_t nnz, int64_t buckets,
                                int64_t* bad_position) {
  BucketOrder out;
  *bad_position = -1;
  const int64_t n_chunks =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), nnz / 32768));
  // counts[c * buckets + b]: entries of chunk c with key b; later, their first slot.
  std::vector<int64_t> counts(n_chunks * buckets, 0);
  std::vector<int64_t> chunk_bad(n_chunks, -1);
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t* count = counts.data() + c * buckets;
      for (int64_t e = nnz * c / n_chunks, end = nnz * (c + 1) / n_chunks; e < end; ++e) {
        const int64_t key = static_cast<int64_t>(keys[e]);
        if (key < 0 || key >= buckets) {
          chunk_bad[c] = e;
          break;
        }
        ++count[key];
      }
    }
  });
  for (int64_t bad : chunk_bad) {
    if (bad >= 0) {
      *bad_position = bad;
      return out;
    }
  }
  out.offsets.resize(buckets + 1);
  int64_t running = 0;
  for (int64_t b = 0; b < buckets; ++b) {
    out.offsets[b] = running;
    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t count = counts[c * buckets + b];
      counts[c * buckets + b] = running;
      running += count;
    }
  }
  out.offsets[buckets] = running;
  out.order.resize(nnz);
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t* slot = counts.data() + c * buckets;
      for (int64_t e = nnz * c / n_chunks, end = nnz * (c + 1) / n_chunks; e < end; ++e) {
        out.order[slot[static_cast<int64_t>(keys[e])]++] = e;
      }
    }
  });
  return out;
}

// When the keys (already range-checked) are non-decreasing (CSR order), the
// bucket offsets alone describe the grouping: returns them with an empty order
// and sets *sorted. Otherwise sets *sorted = false.
template <typename index_t>
BucketOrder bucket_offsets_if_sorted(const index_t* keys, int64_t nnz, int64_t buckets,
                                     bool* sorted) {
  BucketOrder out;
  *sorted = false;
  for (int64_t e = 1; e < nnz; ++e) {
    if (keys[e] < keys[e - 1]) return out;
  }
  *sorted = true;
  out.offsets.assign(buckets + 1, 0);
  for (int64_t e = 0; e < nnz; ++e) ++out.offsets[static_cast<int64_t>(keys[e]) + 1];
  for (int64_t b = 0; b < buckets; ++b) out.offsets[b + 1] += out.offsets[b];
  return out;
}

}  // namespace cpu
}  // namespace mfext
