"""The internal ops ``_sparse_dot`` (against the gather expression) and
``_bucket_sort`` (a stable counting sort): results, errors and opcheck."""
from __future__ import annotations

import pytest
import torch

import mfext  # noqa: F401  (registers the ops)
from mfext import cf_ops
from helpers import RTOL, rel_err


@pytest.mark.parametrize("k", [1, 7, 32, 64, 65, 128])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_sparse_dot_matches_gather(k, index_dtype, dtype, gen):
    m, n, nnz = 23, 17, 301
    rows = torch.randint(0, m, (nnz,), generator=gen).to(index_dtype)
    cols = torch.randint(0, n, (nnz,), generator=gen).to(index_dtype)
    W = torch.randn(m, k, generator=gen, dtype=torch.float64).to(dtype)
    Ht = torch.randn(n, k, generator=gen, dtype=torch.float64).to(dtype)
    out = cf_ops.sparse_dot(rows, cols, W, Ht)
    ref = (W.double()[rows.long()] * Ht.double()[cols.long()]).sum(1)
    assert out.shape == (nnz,) and out.dtype == dtype
    assert rel_err(out, ref) <= RTOL[dtype]


def test_sparse_dot_errors_and_opcheck(gen):
    rows, cols = torch.tensor([0, 1]), torch.tensor([0, 2])
    W, Ht = torch.randn(2, 3, generator=gen), torch.randn(2, 3, generator=gen)
    with pytest.raises(IndexError, match=r"cols\[1\] = 2 is out of range for H_t with 2 rows"):
        cf_ops.sparse_dot(rows, cols, W, Ht)
    with pytest.raises(RuntimeError, match=r"disagree on the rank k"):
        cf_ops.sparse_dot(rows, rows, W, Ht[:, :2])
    torch.library.opcheck(torch.ops.mfext._sparse_dot.default, (rows, rows, W, Ht))


@pytest.mark.parametrize("nnz, buckets", [(0, 3), (1, 1), (50, 7), (100_000, 613)])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_bucket_sort_is_a_stable_sort(nnz, buckets, index_dtype, gen):
    keys = torch.randint(0, buckets, (nnz,), generator=gen).to(index_dtype)
    order, offsets = cf_ops.bucket_sort(keys, buckets)
    assert torch.equal(order, torch.sort(keys, stable=True).indices)
    expected = torch.zeros(buckets + 1, dtype=torch.int64)
    expected[1:] = torch.bincount(keys.long(), minlength=buckets).cumsum(0)
    assert torch.equal(offsets, expected)


def test_bucket_sort_errors_and_opcheck(gen):
    with pytest.raises(IndexError, match=r"keys\[1\] = 5 is out of range for 5 buckets"):
        cf_ops.bucket_sort(torch.tensor([0, 5]), 5)
    with pytest.raises(RuntimeError, match=r"'keys' must hold int32 or int64"):
        cf_ops.bucket_sort(torch.tensor([0.0]), 5)
    torch.library.opcheck(torch.ops.mfext._bucket_sort.default, (torch.tensor([2, 0, 2, 1]), 3))
