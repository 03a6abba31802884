// The CPU kernel of mfext::_bucket_sort (and its TORCH_LIBRARY_IMPL; there is
// no CUDA kernel). Stable counting sort of entry ids by a small integer key (a
// user, an item, or an SGD block): the groupings the CF solvers build once per
// fit, in O(nnz + buckets) instead of a comparison sort. Reuses the counting
// sort of sparse_loss_grad (bucket_order.h).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>

#include "../tensor_checks.h"
#include "bucket_order.h"

namespace mfext {
namespace {

constexpr const char* kOp = "mfext::_bucket_sort";

// keys: (nnz,) int32/int64 in [0, n_buckets). Returns order: (nnz,) int64, the
// entry ids grouped by key and in their original order within a key, and
// offsets: (n_buckets + 1,) int64, key b at order[offsets[b]:offsets[b + 1]].
std::tuple<at::Tensor, at::Tensor> bucket_sort_cpu(const at::Tensor& keys, int64_t n_buckets) {
  check_index_tensor(kOp, "keys", keys);
  TORCH_CHECK(n_buckets >= 0, kOp, ": n_buckets must be >= 0, got ", n_buckets);
  const int64_t nnz = keys.size(0);
  const at::Tensor keys_c = keys.contiguous();
  at::Tensor order;
  at::Tensor offsets = at::empty({n_buckets + 1}, keys.options().dtype(at::kLong));
  AT_DISPATCH_INDEX_TYPES(keys.scalar_type(), "bucket_sort_cpu", [&] {
    const index_t* k = keys_c.const_data_ptr<index_t>();
    int64_t bad = -1;
    auto b = std::make_unique<cpu::BucketOrder>(cpu::stable_bucket_order(k, nnz, n_buckets, &bad));
    TORCH_CHECK_INDEX(bad < 0, kOp, ": keys[", bad, "] = ", bad >= 0 ? int64_t(k[bad]) : 0,
                      " is out of range for ", n_buckets, " buckets");
    std::copy(b->offsets.begin(), b->offsets.end(), offsets.data_ptr<int64_t>());
    // The tensor takes over the sort's own buffer instead of a copy of it: at
    // 100M entries a copy would be 0.8 GB more at the peak.
    if (nnz == 0) {
      order = at::empty({0}, keys.options().dtype(at::kLong));
      return;
    }
    int64_t* data = b->order.data();
    cpu::BucketOrder* owner = b.release();
    order = at::from_blob(
        data, {nnz}, [owner](void*) { delete owner; }, keys.options().dtype(at::kLong));
  });
  return {order, offsets};
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CPU, m) {
  m.impl("_bucket_sort", &bucket_sort_cpu);
}

}  // namespace mfext
