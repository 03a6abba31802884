"""``bucket_sort``: a stable counting sort of entry ids by key (internal op ``_bucket_sort``).

The input forms use it to group ratings by user or item (CSR orders, SGD
blocks) in one pass. This module owns the op's typed wrapper and fake
kernel; the kernels live in ``csrc/``.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .. import _library  # noqa: F401  (loads the compiled ops)

__all__ = ["bucket_sort"]


def bucket_sort(keys: Tensor, n_buckets: int) -> Tuple[Tensor, Tensor]:
    """Stable counting sort of entry ids by key (internal op).

    Parameters
    ----------
    keys : Tensor, (nnz,), int32 or int64, values in [0, n_buckets)
    n_buckets : int

    Returns
    -------
    order : Tensor, (nnz,), int64
        Entry ids grouped by key, in their original order within a key.
    offsets : Tensor, (n_buckets + 1,), int64
        Key ``b`` occupies ``order[offsets[b]:offsets[b + 1]]``.
    """
    return torch.ops.mfext._bucket_sort.default(keys, int(n_buckets))


# --------------------------------------------------------------------------- fake kernel


@torch.library.register_fake("mfext::_bucket_sort")
def _bucket_sort_fake(keys, n_buckets):
    """Outputs: order (nnz,), offsets (n_buckets + 1,), both int64."""
    torch._check(keys.dim() == 1, lambda: "keys must be 1-D")
    return (keys.new_empty((keys.shape[0],), dtype=torch.int64),
            keys.new_empty((n_buckets + 1,), dtype=torch.int64))
