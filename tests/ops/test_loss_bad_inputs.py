"""Bad input raises a clear RuntimeError/ValueError/IndexError naming the argument."""
from __future__ import annotations

import re

import pytest
import torch

import mfext


def _dense(m=4, n=3, k=2, dtype=torch.float64):
    return torch.randn(m, n, dtype=dtype), torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)


def _sparse(m=4, n=3, k=2, nnz=5, dtype=torch.float64):
    rows = torch.tensor([0, 1, 2, 3, 0][:nnz])
    cols = torch.tensor([0, 1, 2, 0, 2][:nnz])
    return rows, cols, torch.randn(nnz, dtype=dtype), torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)


def _raises(fn, pattern, exc=(RuntimeError, ValueError, IndexError)):
    with pytest.raises(exc) as info:
        fn()
    assert re.search(pattern, str(info.value)), str(info.value)
    return info.value


DENSE_CASES = {
    "shape mismatch A/W": (lambda A, W, H: (A[:3], W, H, None), r"'?A'? of shape .* disagree on m"),
    "shape mismatch A/H": (lambda A, W, H: (A[:, :2], W, H, None), r"disagree on n"),
    "rank mismatch": (lambda A, W, H: (A, W[:, :1], H, None), r"disagree on the rank k"),
    "mixed dtypes": (lambda A, W, H: (A, W.float(), H, None), r"argument 'W' has dtype Float.*'A' has dtype Double"),
    "integer values": (lambda A, W, H: (A.long(), W, H, None), r"argument 'A' must be float32 or float64.*Long"),
    "bool values": (lambda A, W, H: (A, W, H > 0, None), r"argument 'H' must be float32 or float64.*Bool"),
    "complex values": (lambda A, W, H: (A.to(torch.complex128), W, H, None), r"argument 'A' must be float32"),
    "3-D A": (lambda A, W, H: (A[None], W, H, None), r"argument 'A' must be 2-D, got shape \[1, 4, 3\]"),
    "1-D W": (lambda A, W, H: (A, W[:, 0], H, None), r"argument 'W' must be 2-D"),
    "negative weight": (lambda A, W, H: (A, W, H, -torch.ones_like(A)), r"'weight' must be finite and non-negative"),
    "NaN weight": (lambda A, W, H: (A, W, H, torch.full_like(A, float("nan"))), r"'weight' must be finite"),
    "weight shape": (lambda A, W, H: (A, W, H, torch.ones(4, 2, dtype=A.dtype)), r"weight must have the shape of A"),
    "k = 0": (lambda A, W, H: (A, W[:, :0], H[:0], None), r"rank k must be at least 1"),
}


@pytest.mark.parametrize("case", list(DENSE_CASES), ids=list(DENSE_CASES))
def test_dense_bad_input(case):
    make, pattern = DENSE_CASES[case]
    args = make(*_dense())
    _raises(lambda: mfext.dense_loss_grad(*args), pattern)


SPARSE_CASES = {
    "row out of range": (lambda r, c, v, W, H: (r.clone().index_fill_(0, torch.tensor([2]), 4), c, v, W, H), r"rows\[2\] = 4 is out of range for W with 4 rows"),
    "negative row": (lambda r, c, v, W, H: (r.clone().index_fill_(0, torch.tensor([1]), -1), c, v, W, H), r"rows\[1\] = -1 is out of range"),
    "col out of range": (lambda r, c, v, W, H: (r, c.clone().index_fill_(0, torch.tensor([4]), 3), v, W, H), r"cols\[4\] = 3 is out of range for H with 3 columns"),
    "lengths differ": (lambda r, c, v, W, H: (r, c[:4], v, W, H), r"same length, got 5, 4 and 5"),
    "float indices": (lambda r, c, v, W, H: (r.double(), c, v, W, H), r"'rows' must hold int32 or int64 indices"),
    "mixed index dtypes": (lambda r, c, v, W, H: (r.int(), c, v, W, H), r"'rows' \(Int\) and 'cols' \(Long\)"),
    "2-D vals": (lambda r, c, v, W, H: (r, c, v[:, None], W, H), r"'vals' must be 1-D"),
    "integer vals": (lambda r, c, v, W, H: (r, c, v.long(), W, H), r"'vals' must be float32 or float64"),
    "mixed dtypes": (lambda r, c, v, W, H: (r, c, v.float(), W, H), r"'vals' has dtype Float but 'W' has dtype Double"),
    "3-D H": (lambda r, c, v, W, H: (r, c, v, W, H[None]), r"'H' must be 2-D"),
}


@pytest.mark.parametrize("case", list(SPARSE_CASES), ids=list(SPARSE_CASES))
def test_sparse_bad_input(case):
    make, pattern = SPARSE_CASES[case]
    args = make(*_sparse())
    _raises(lambda: mfext.sparse_loss_grad(*args), pattern)


def test_sparse_negative_weight():
    r, c, v, W, H = _sparse()
    _raises(lambda: mfext.sparse_loss_grad(r, c, v, W, H, -torch.ones_like(v)), r"'weight' must be finite and non-negative")
    _raises(lambda: mfext.sparse_loss_grad(r, c, v, W, H, torch.ones(3, dtype=v.dtype)), r"weight must have one entry per value")


def test_cuda_tensor_on_cpu_only_build():
    """Dispatching to the CUDA key reaches mfext's own message when CUDA was not built."""
    if mfext.build_info()["cuda"]:
        pytest.skip("this build has CUDA kernels")
    keyset = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    A, W, H = _dense()
    with pytest.raises(RuntimeError, match=r"mfext::dense_loss_grad: got a CUDA tensor, but this mfext build has no CUDA"):
        torch.ops.mfext.dense_loss_grad.default.redispatch(keyset, A, W, H, None)
    r, c, v, W, H = _sparse()
    with pytest.raises(RuntimeError, match=r"mfext::sparse_loss_grad: got a CUDA tensor"):
        torch.ops.mfext.sparse_loss_grad.default.redispatch(keyset, r, c, v, W, H, None)


def test_mixed_devices_are_rejected():
    """A meta tensor stands in for another device: the dispatcher or the checks refuse it."""
    A, W, H = _dense()
    with pytest.raises(RuntimeError, match=r"all tensors must share a device.*W on meta"):
        mfext.dense_loss_grad(A, W.to("meta"), H)
    r, c, v, W, H = _sparse()
    with pytest.raises(RuntimeError, match=r"all tensors must share a device.*rows on meta"):
        mfext.sparse_loss_grad(r.to("meta"), c, v, W, H)
