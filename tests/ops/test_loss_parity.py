"""Parity of the fused ops with the autograd reference, over devices, dtypes and shapes."""
from __future__ import annotations

import pytest
import torch

import mfext
from mfext import reference as ref
from helpers import RTOL, deterministic_algorithms, rel_err

# (m, n, k): 1x1, primes, k=1, tall, wide, k > min(m, n)
SHAPES = [(1, 1, 1), (7, 13, 3), (31, 17, 1), (257, 5, 4), (3, 211, 2), (61, 59, 8), (5, 4, 9)]


def _rand(gen, *shape, dtype, device, low=-1.0):
    x = torch.rand(*shape, generator=gen, dtype=torch.float64) * (1.0 - low) + low
    return x.to(dtype=dtype, device=device)


def _dense_inputs(gen, m, n, k, dtype, device, weighted):
    A = _rand(gen, m, n, dtype=dtype, device=device)
    W = _rand(gen, m, k, dtype=dtype, device=device)
    H = _rand(gen, k, n, dtype=dtype, device=device)
    weight = None
    if weighted:
        weight = _rand(gen, m, n, dtype=dtype, device=device, low=0.0)
        weight[weight < 0.3] = 0.0  # zero weights: missing entries
    return A, W, H, weight


def _sparse_inputs(gen, m, n, k, nnz, dtype, device, weighted, index_dtype=torch.int64):
    rows = torch.randint(0, m, (nnz,), generator=gen).to(index_dtype).to(device)
    cols = torch.randint(0, n, (nnz,), generator=gen).to(index_dtype).to(device)
    vals = _rand(gen, nnz, dtype=dtype, device=device)
    W = _rand(gen, m, k, dtype=dtype, device=device)
    H = _rand(gen, n, k, dtype=dtype, device=device).t()  # the fast layout
    weight = _rand(gen, nnz, dtype=dtype, device=device, low=0.0) if weighted else None
    if weighted:
        weight[weight < 0.2] = 0.0
    return rows, cols, vals, W, H, weight


def _assert_parity(out, expected, dtype):
    tol = RTOL[dtype]
    names = ("loss", "grad_W", "grad_H")
    for name, x, y in zip(names, out, expected):
        assert x.shape == y.shape, f"{name}: shape {tuple(x.shape)} != {tuple(y.shape)}"
        assert x.dtype == y.dtype, f"{name}: dtype {x.dtype} != {y.dtype}"
        err = rel_err(x, y)
        assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.0e}"


def _reference_inputs(tensors):
    """Upcast to float64 on the CPU, so float32 results are compared with the exact value."""
    return [None if t is None else (t.double() if t.is_floating_point() else t).cpu() for t in tensors]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_dense_parity(shape, weighted, dtype, device, gen):
    inputs = _dense_inputs(gen, *shape, dtype, device, weighted)
    out = mfext.dense_loss_grad(*inputs)
    expected = ref.dense_loss_grad(*_reference_inputs(inputs))
    _assert_parity(out, [e.to(dtype) for e in expected], dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_sparse_parity(shape, weighted, index_dtype, dtype, device, gen):
    m, n, k = shape
    nnz = max(1, (m * n) // 2) + 3  # more than m*n/2 draws: duplicates are certain on small shapes
    inputs = _sparse_inputs(gen, m, n, k, nnz, dtype, device, weighted, index_dtype)
    out = mfext.sparse_loss_grad(*inputs)
    expected = ref.sparse_loss_grad(*_reference_inputs(inputs))
    _assert_parity(out, [e.to(dtype) for e in expected], dtype)


def test_sparse_duplicates_count_each_time(dtype, device, gen):
    m, n, k = 4, 3, 2
    rows = torch.tensor([1, 1, 1, 2], device=device)
    cols = torch.tensor([2, 2, 2, 0], device=device)
    vals = torch.tensor([1.0, 1.0, 1.0, -3.0], dtype=dtype, device=device)
    W = _rand(gen, m, k, dtype=dtype, device=device)
    H = _rand(gen, k, n, dtype=dtype, device=device)
    once = mfext.sparse_loss_grad(rows[2:], cols[2:], vals[2:], W, H)
    thrice = mfext.sparse_loss_grad(rows, cols, vals, W, H)
    single_dup = mfext.sparse_loss_grad(rows[:1], cols[:1], vals[:1], W, H)
    tol = RTOL[dtype]
    # loss(3 copies + other) == loss(other) + 2 * loss(one copy)
    assert rel_err(thrice[0], once[0] + 2 * single_dup[0]) <= tol
    assert rel_err(thrice[1], once[1] + 2 * single_dup[1]) <= tol
    expected = ref.sparse_loss_grad(*_reference_inputs((rows, cols, vals, W, H, None)))
    _assert_parity(thrice, [e.to(dtype) for e in expected], dtype)


@pytest.mark.parametrize("layout", ["A.t()", "W.t()", "H.t()", "strided", "weight.t()"])
def test_dense_any_strides(layout, dtype, device, gen):
    m, n, k = 23, 19, 5
    A, W, H, weight = _dense_inputs(gen, m, n, k, dtype, device, weighted=True)
    if layout == "A.t()":
        A = A.t().contiguous().t()
    elif layout == "W.t()":
        W = W.t().contiguous().t()
    elif layout == "H.t()":
        H = H.t().contiguous().t()
    elif layout == "weight.t()":
        weight = weight.t().contiguous().t()
    else:  # every tensor a strided slice of a larger one
        big = lambda t: _rand(gen, t.shape[0] * 2, t.shape[1] * 3, dtype=dtype, device=device)
        A2, W2, H2, w2 = big(A), big(W), big(H), big(weight).abs()
        A2[::2, ::3] = A
        W2[::2, ::3] = W
        H2[::2, ::3] = H
        w2[::2, ::3] = weight
        A, W, H, weight = A2[::2, ::3], W2[::2, ::3], H2[::2, ::3], w2[::2, ::3]
        assert not A.is_contiguous()
    out = mfext.dense_loss_grad(A, W, H, weight)
    expected = ref.dense_loss_grad(*_reference_inputs((A, W, H, weight)))
    _assert_parity(out, [e.to(dtype) for e in expected], dtype)
    # Gradients take the layout of their factor, as empty_like does.
    assert out[1].stride() == torch.empty_like(W).stride()
    assert out[2].stride() == torch.empty_like(H).stride()


@pytest.mark.parametrize("layout", ["H contiguous", "H strided", "W.t()", "strided 1-D"])
def test_sparse_any_strides(layout, dtype, device, gen):
    m, n, k = 17, 11, 4
    rows, cols, vals, W, H, weight = _sparse_inputs(gen, m, n, k, 60, dtype, device, True)
    if layout == "H contiguous":
        H = H.contiguous()
    elif layout == "H strided":
        H = _rand(gen, k, 2 * n, dtype=dtype, device=device)[:, ::2]
    elif layout == "W.t()":
        W = W.t().contiguous().t()
    else:
        rows = torch.stack([rows, rows], 1)[:, 0]
        cols = torch.stack([cols, cols], 1)[:, 1]
        vals = torch.stack([vals, vals], 1)[:, 0]
        weight = torch.stack([weight, weight], 1)[:, 1]
        assert not vals.is_contiguous()
    out = mfext.sparse_loss_grad(rows, cols, vals, W, H, weight)
    expected = ref.sparse_loss_grad(*_reference_inputs((rows, cols, vals, W, H, weight)))
    _assert_parity(out, [e.to(dtype) for e in expected], dtype)
    assert out[2].stride() == torch.empty_like(H).stride()


def test_all_zero_weight_gives_zero(dtype, device, gen):
    A, W, H, _ = _dense_inputs(gen, 9, 7, 3, dtype, device, weighted=False)
    A[0, 0] = float("nan")  # a missing entry may hold anything
    zero = torch.zeros_like(A)
    loss, gW, gH = mfext.dense_loss_grad(A, W, H, zero)
    assert loss.item() == 0.0
    assert torch.count_nonzero(gW).item() == 0 and torch.count_nonzero(gH).item() == 0


def test_zero_weight_masks_nan_target(dtype, device, gen):
    A, W, H, weight = _dense_inputs(gen, 12, 10, 3, dtype, device, weighted=True)
    A_nan = A.clone()
    A_nan[weight == 0] = float("nan")
    out = mfext.dense_loss_grad(A_nan, W, H, weight)
    expected = ref.dense_loss_grad(*_reference_inputs((A, W, H, weight)))
    _assert_parity(out, [e.to(dtype) for e in expected], dtype)


def test_near_exact_fit_loss_is_accurate(device, gen):
    """A = W0 H0, evaluated at W0 + 1e-6 noise: the loss must not cancel away."""
    m, n, k = 200, 150, 6
    W0 = _rand(gen, m, k, dtype=torch.float64, device=device)
    H0 = _rand(gen, k, n, dtype=torch.float64, device=device)
    A = W0 @ H0
    W = W0 + 1e-6 * _rand(gen, m, k, dtype=torch.float64, device=device)
    loss = mfext.dense_loss_grad(A, W, H0)[0]
    expected = ref.dense_loss(A.cpu(), W.cpu(), H0.cpu())
    assert expected.item() > 0
    assert rel_err(loss, expected) <= 1e-8
    # The expansion ||A||^2 - 2<W, A H^T> + <W^T W, H H^T> fails this bar badly.
    expansion = (A * A).sum() - 2 * (W * (A @ H0.t())).sum() + ((W.t() @ W) * (H0 @ H0.t())).sum()
    assert rel_err(expansion, expected) > 1e-8


def test_results_repeat_bitwise(device, gen):
    # On CUDA the sparse op repeats bit for bit in its deterministic mode (the
    # default fast mode adds gradients with atomics); the dense op always does.
    with deterministic_algorithms(device == "cuda"):
        inputs = _sparse_inputs(gen, 300, 200, 16, 5000, torch.float32, device, True)
        first = mfext.sparse_loss_grad(*inputs)
        dense_inputs = _dense_inputs(gen, 300, 257, 16, torch.float32, device, True)
        dense_first = mfext.dense_loss_grad(*dense_inputs)
        for _ in range(3):
            again = mfext.sparse_loss_grad(*inputs)
            dense_again = mfext.dense_loss_grad(*dense_inputs)
            for x, y in zip(first + dense_first, again + dense_again):
                assert torch.equal(x, y)


def test_empty_matrices(dtype, device):
    W = torch.zeros(0, 3, dtype=dtype, device=device)
    H = torch.ones(3, 4, dtype=dtype, device=device)
    loss, gW, gH = mfext.dense_loss_grad(torch.zeros(0, 4, dtype=dtype, device=device), W, H)
    assert loss.item() == 0 and gW.shape == (0, 3) and torch.count_nonzero(gH).item() == 0
    idx = torch.zeros(0, dtype=torch.long, device=device)
    vals = torch.zeros(0, dtype=dtype, device=device)
    W = torch.ones(5, 3, dtype=dtype, device=device)
    loss, gW, gH = mfext.sparse_loss_grad(idx, idx, vals, W, H)
    assert loss.item() == 0 and torch.count_nonzero(gW).item() == 0


@pytest.mark.parametrize("order", ["sorted rows", "unsorted rows"])
def test_sparse_row_order_paths(order, device, gen):
    """CSR-ordered input skips the sort; both orders give the reference result."""
    inputs = list(_sparse_inputs(gen, 40, 30, 5, 700, torch.float64, device, True))
    if order == "sorted rows":
        perm = torch.argsort(inputs[0].cpu(), stable=True).to(device)
        for i in (0, 1, 2, 5):
            inputs[i] = inputs[i][perm]
    out = mfext.sparse_loss_grad(*inputs)
    expected = ref.sparse_loss_grad(*_reference_inputs(inputs))
    _assert_parity(out, expected, torch.float64)


def test_sparse_wide_matrix_column_pass(device, gen):
    """A very wide H makes per-thread grad_H partials too large: the column-ordered pass runs."""
    m, n, k = 50, 70_000, 64
    inputs = _sparse_inputs(gen, m, n, k, 5000, torch.float64, device, True)
    out = mfext.sparse_loss_grad(*inputs)
    expected = ref.sparse_loss_grad(*_reference_inputs(inputs))
    _assert_parity(out, expected, torch.float64)
