"""sgd_epoch_ on the CPU: parity with a sequential float64 reference and opcheck.

One epoch against a sequential Python/numpy reference (the same update rule,
entry by entry), in storage order, a given order, and the blocked schedule; the
blocked schedule is bitwise identical for 1 and 2 threads; Hogwild learns.
Bad arguments: test_sgd_epoch_bad_inputs.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mfext  # noqa: F401  (registers the ops)
from mfext import cf_ops
from mfext.recommenders.limits import num_threads as threads
from helpers import RTOL, _blocked_sequence, _grid, _sgd_problem, _sgd_reference, rel_err


SGD_SHAPES = [(1, 1, 1, 5), (7, 5, 3, 60), (13, 11, 17, 200), (9, 14, 64, 150), (20, 30, 33, 300)]


@pytest.mark.parametrize("shape", SGD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("biases", [True, False], ids=["biases", "nobias"])
@pytest.mark.parametrize("mode", ["storage", "order", "blocked"])
def test_sgd_epoch_matches_sequential_reference(shape, biases, mode, dtype, gen):
    m, n, k, nnz = shape
    rows, cols, vals, W, Ht, bu, bi = _sgd_problem(gen, m, n, k, nnz, dtype)
    lr, reg, bias_reg, mu = 0.02, 0.05, 0.01, 3.0
    order = block_ptr = schedule = None
    if mode == "storage":
        seq = list(range(nnz))
    elif mode == "order":  # a permutation with repeats and omissions
        order = torch.randint(0, nnz, (nnz + 7,), generator=gen)
        seq = order.tolist()
    else:
        order, block_ptr, schedule = _grid(gen, rows, cols, m, n, P=3)
        seq = _blocked_sequence(order, block_ptr, schedule)
    (W_ref, Ht_ref, bu_ref, bi_ref), sse_ref = _sgd_reference(
        W, Ht, bu, bi, rows, cols, vals, seq, lr, reg, bias_reg, mu, biases, False)
    with threads(1):
        sse = cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, order=order,
                                block_ptr=block_ptr, schedule=schedule, lr=lr, reg=reg,
                                bias_reg=bias_reg, global_mean=mu, use_biases=biases)
    tol = RTOL[dtype] * 10  # a chain of updates, each rounded
    assert sse.dtype == torch.float64 and sse.dim() == 0
    assert abs(float(sse) - sse_ref) <= tol * max(1.0, sse_ref)
    for name, x, ref in (("W", W, W_ref), ("H_t", Ht, Ht_ref), ("user_bias", bu, bu_ref),
                         ("item_bias", bi, bi_ref)):
        assert rel_err(x, ref) <= tol, name


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_sgd_epoch_nonnegative_and_index_dtypes(index_dtype, gen):
    rows, cols, vals, W, Ht, bu, bi = _sgd_problem(gen, 8, 6, 5, 80, torch.float64, index_dtype)
    W, Ht = W.abs(), Ht.abs()
    (W_ref, Ht_ref, bu_ref, bi_ref), _ = _sgd_reference(
        W, Ht, bu, bi, rows, cols, vals, range(80), 0.05, 0.02, 0.0, 3.5, True, True)
    cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, lr=0.05, reg=0.02, global_mean=3.5,
                      nonnegative=True)
    assert bool((W >= 0).all()) and bool((Ht >= 0).all())
    assert rel_err(W, W_ref) <= 1e-10 and rel_err(Ht, Ht_ref) <= 1e-10
    assert rel_err(bu, bu_ref) <= 1e-10 and rel_err(bi, bi_ref) <= 1e-10


def test_sgd_blocked_is_identical_for_any_thread_count(gen):
    m, n, k, nnz = 300, 200, 16, 20000
    rows, cols, vals, W, Ht, bu, bi = _sgd_problem(gen, m, n, k, nnz, torch.float32)
    order, block_ptr, schedule = _grid(gen, rows, cols, m, n, P=8)
    results = []
    for n_threads in (1, 2):
        state = [t.clone() for t in (W, Ht, bu, bi)]
        with threads(n_threads):
            sse = cf_ops.sgd_epoch_(*state, rows, cols, vals, order=order, block_ptr=block_ptr,
                                    schedule=schedule, lr=0.01, reg=0.05, bias_reg=0.01,
                                    global_mean=3.0)
        results.append((state, float(sse)))
    (s1, e1), (s2, e2) = results
    assert e1 == e2
    for a, b in zip(s1, s2):
        assert torch.equal(a, b)
    assert not torch.equal(s1[0], W)  # the epoch did update W


def test_sgd_hogwild_reduces_the_error(gen):
    m, n, k, nnz = 200, 150, 8, 30000
    W0 = torch.randn(m, k, generator=gen) * 0.5
    H0 = torch.randn(n, k, generator=gen) * 0.5
    rows = torch.randint(0, m, (nnz,), generator=gen)
    cols = torch.randint(0, n, (nnz,), generator=gen)
    vals = (W0[rows] * H0[cols]).sum(1)
    W = torch.randn(m, k, generator=gen) * 0.1
    Ht = torch.randn(n, k, generator=gen) * 0.1
    empty = torch.empty(0)
    with threads(2):
        errors = [float(cf_ops.sgd_epoch_(W, Ht, empty, empty, rows, cols, vals, lr=0.05, reg=0.0,
                                          use_biases=False)) for _ in range(15)]
    assert all(np.isfinite(errors))
    assert errors[-1] < 0.2 * errors[0]


@pytest.mark.parametrize("blocked", [False, True], ids=["hogwild", "blocked"])
def test_opcheck_sgd_epoch(blocked, dtype, gen):
    m, n, k, nnz = 6, 5, 3, 20
    rows, cols, vals, W, Ht, bu, bi = _sgd_problem(gen, m, n, k, nnz, dtype)
    order = block_ptr = schedule = None
    if blocked:
        order, block_ptr, schedule = _grid(gen, rows, cols, m, n, P=2)
    args = (W, Ht, bu, bi, rows, cols, vals, order, block_ptr, schedule, 0.01, 0.05, 0.01, 3.0,
            True, False)
    with threads(1):
        torch.library.opcheck(torch.ops.mfext.sgd_epoch_.default, args)
