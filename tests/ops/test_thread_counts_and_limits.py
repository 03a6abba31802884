"""Threads, long runs and 64-bit sizes for the fused ops."""
from __future__ import annotations

import threading

import pytest
import torch

import mfext
from mfext import cf_ops
from mfext import reference as ref
from helpers import deterministic_algorithms, rel_err


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _small_inputs(seed: int):
    gen = torch.Generator().manual_seed(seed)
    A = torch.rand(33, 29, generator=gen)
    W = torch.rand(33, 4, generator=gen)
    H = torch.rand(4, 29, generator=gen)
    rows = torch.randint(0, 33, (300,), generator=gen)
    cols = torch.randint(0, 29, (300,), generator=gen)
    vals = torch.rand(300, generator=gen)
    return A, W, H, rows, cols, vals


def _reference64(A, W, H, rows, cols, vals):
    """The autograd reference in float64: dense (loss, dW, dH) + sparse (loss, dW, dH)."""
    A, W, H, vals = A.double(), W.double(), H.double(), vals.double()
    return ref.dense_loss_grad(A, W, H) + ref.sparse_loss_grad(rows, cols, vals, W, H)


def test_concurrent_python_threads_get_correct_results():
    inputs = [_small_inputs(seed) for seed in range(8)]
    # Independent of mfext: float64 autograd on the same (float32) inputs.
    expected = [_reference64(*x) for x in inputs]
    failures = []

    def worker(i: int) -> None:
        A, W, H, r, c, v = inputs[i]
        first = None
        for _ in range(50):
            got = mfext.dense_loss_grad(A, W, H) + mfext.sparse_loss_grad(r, c, v, W, H)
            if first is None:
                first = got
                errors = [rel_err(x, y) for x, y in zip(got, expected[i])]
                if max(errors) > 1e-5:  # float32 results against the float64 reference
                    failures.append((i, "wrong", errors))
                    return
            elif not all(torch.equal(x, y) for x, y in zip(got, first)):
                failures.append((i, "changed between calls", None))
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures


# ---------------------------------------------------------------- thread counts
#
# The README promises the same result for every thread count: each case runs on the
# SAME inputs with 1, 2, 3 and 4 torch threads and must give bitwise the 1-thread
# result (and that result must match a float64 reference). The shapes are picked to
# reach every code path of the CPU kernels (their chunking depends on the shapes
# only, see csrc/cpu/sparse_loss_grad_kernel.cpp and dense_loss_grad_kernel.cpp).

THREAD_COUNTS = (1, 2, 3, 4)


def _over_thread_counts(run):
    """[run() with 1, 2, 3, 4 torch threads]; the thread count is restored afterwards."""
    before = torch.get_num_threads()
    results = []
    try:
        for n_threads in THREAD_COUNTS:
            torch.set_num_threads(n_threads)
            results.append(run())
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before
    return results


def _assert_bitwise_same(results, what):
    first = results[0]
    for n_threads, other in zip(THREAD_COUNTS[1:], results[1:]):
        for j, (x, y) in enumerate(zip(first, other)):
            assert torch.equal(x, y), (
                f"{what}: output {j} with {n_threads} threads differs from 1 thread "
                f"(max |diff| {float((x.double() - y.double()).abs().max()):.3g})")


def _sparse_case(gen, m, n, k, nnz, dtype, csr_sorted, weighted):
    rows = torch.randint(0, m, (nnz,), generator=gen)
    cols = torch.randint(0, n, (nnz,), generator=gen)
    if csr_sorted:
        order = torch.argsort(rows * n + cols)
        rows, cols = rows[order], cols[order]
    vals = torch.randn(nnz, generator=gen, dtype=torch.float64).to(dtype)
    W = torch.randn(m, k, generator=gen, dtype=torch.float64).to(dtype)
    H = torch.randn(n, k, generator=gen, dtype=torch.float64).to(dtype).t()  # the fast layout
    weight = (torch.rand(nnz, generator=gen, dtype=torch.float64) * 2).to(dtype) if weighted else None
    return rows, cols, vals, W, H, weight


# (m, n, k, nnz) per path. Entry partials: (m + n) k is small next to nnz k / 32;
# the sort and column pass: not even one (m + n) k (unsorted) or n k (CSR order)
# partial fits, so entries are sorted by row and by column; row partials: CSR order
# with n k small.
SPARSE_PATHS = {
    "entry-partials": ((700, 500, 8, 60_000), False),
    "csr-row-partials": ((700, 500, 8, 60_000), True),
    "unsorted-column-pass": ((20_000, 15_000, 8, 40_000), False),
    "csr-column-pass": ((20_000, 15_000, 8, 40_000), True),
    "entry-partials-k64": ((300, 200, 64, 30_000), False),
}


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("path", list(SPARSE_PATHS), ids=list(SPARSE_PATHS))
def test_sparse_loss_grad_is_bitwise_identical_for_every_thread_count(path, weighted, dtype, gen):
    (m, n, k, nnz), csr_sorted = SPARSE_PATHS[path]
    rows, cols, vals, W, H, weight = _sparse_case(gen, m, n, k, nnz, dtype, csr_sorted, weighted)
    with deterministic_algorithms(weighted):  # the CPU op must not depend on the flag either
        results = _over_thread_counts(lambda: mfext.sparse_loss_grad(rows, cols, vals, W, H, weight))
    _assert_bitwise_same(results, f"sparse_loss_grad {path}")
    expected = ref.sparse_loss_grad(rows, cols, vals.double(), W.double(), H.double(),
                                    None if weight is None else weight.double())
    for x, y in zip(results[0], expected):
        assert rel_err(x, y) < (1e-12 if dtype == torch.float64 else 2e-5)


# Several row-block chunks, and a single one (where BLAS's own threads would decide
# the order of the sums if they ran).
DENSE_SHAPES = [(700, 500, 8), (333, 1100, 40), (60, 2000, 64), (64, 512, 128)]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense_loss_grad_is_bitwise_identical_for_every_thread_count(shape, weighted, dtype, gen):
    m, n, k = shape
    A = torch.randn(m, n, generator=gen, dtype=torch.float64).to(dtype)
    W = torch.randn(m, k, generator=gen, dtype=torch.float64).to(dtype)
    H = torch.randn(k, n, generator=gen, dtype=torch.float64).to(dtype)
    weight = (torch.rand(m, n, generator=gen, dtype=torch.float64)).to(dtype) if weighted else None
    results = _over_thread_counts(lambda: mfext.dense_loss_grad(A, W, H, weight))
    _assert_bitwise_same(results, f"dense_loss_grad {shape}")
    expected = ref.dense_loss_grad(A.double(), W.double(), H.double(),
                                   None if weight is None else weight.double())
    for x, y in zip(results[0], expected):
        assert rel_err(x, y) < (1e-12 if dtype == torch.float64 else 2e-5)


def test_als_ops_are_bitwise_identical_for_every_thread_count(dtype, gen):
    R, n, d, nnz = 900, 400, 33, 40_000
    indptr = torch.sort(torch.randint(0, nnz + 1, (R + 1,), generator=gen)).values
    indptr[0], indptr[-1] = 0, nnz
    indices = torch.randint(0, n, (nnz,), generator=gen)
    vals = torch.randn(nnz, generator=gen, dtype=torch.float64).to(dtype)
    F = torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype)
    offset = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
    reg = torch.full((d,), 0.1, dtype=dtype)
    results = _over_thread_counts(lambda: (
        *cf_ops.als_normal_equations(indptr, indices, vals, F, offset, reg, 0.75),
        cf_ops.als_solve(indptr, indices, vals, F, offset, reg, 0.75)))
    _assert_bitwise_same(results, "als_normal_equations / als_solve")
    gram, rhs, x = results[0]
    x_ref = torch.linalg.solve(gram.double(), rhs.double())
    assert rel_err(x, x_ref) < (1e-9 if dtype == torch.float64 else 1e-3)


def test_sparse_dot_is_bitwise_identical_for_every_thread_count(dtype, gen):
    m, n, k, nnz = 500, 400, 64, 50_000
    rows = torch.randint(0, m, (nnz,), generator=gen)
    cols = torch.randint(0, n, (nnz,), generator=gen)
    W = torch.randn(m, k, generator=gen, dtype=torch.float64).to(dtype)
    Ht = torch.randn(n, k, generator=gen, dtype=torch.float64).to(dtype)
    results = _over_thread_counts(lambda: (cf_ops.sparse_dot(rows, cols, W, Ht),))
    _assert_bitwise_same(results, "_sparse_dot")
    expected = (W.double()[rows] * Ht.double()[cols]).sum(1)
    assert rel_err(results[0][0], expected) < (1e-12 if dtype == torch.float64 else 1e-5)


def test_sgd_epoch_blocked_is_bitwise_identical_for_every_thread_count(dtype, gen):
    """The README: blocked SGD is bitwise identical for 1 to 4 threads (loss included)."""
    m, n, k, nnz, P = 400, 300, 16, 30_000, 8
    rows = torch.randint(0, m, (nnz,), generator=gen)
    cols = torch.randint(0, n, (nnz,), generator=gen)
    vals = (torch.rand(nnz, generator=gen, dtype=torch.float64) * 4 + 1).to(dtype)
    W = (torch.randn(m, k, generator=gen, dtype=torch.float64) * 0.3).to(dtype)
    Ht = (torch.randn(n, k, generator=gen, dtype=torch.float64) * 0.3).to(dtype)
    bu = torch.zeros(m, dtype=dtype)
    bi = torch.zeros(n, dtype=dtype)
    # The estimator's P x P grid: stratum s holds the blocks (t, perm[(t + s) % P]),
    # which share no user group and no item group.
    user_group = torch.randperm(m, generator=gen) % P
    item_group = torch.randperm(n, generator=gen) % P
    block = user_group[rows] * P + item_group[cols]
    order = torch.sort(block, stable=True).indices
    block_ptr = torch.zeros(P * P + 1, dtype=torch.int64)
    block_ptr[1:] = torch.bincount(block, minlength=P * P).cumsum(0)
    t = torch.arange(P)
    perm = torch.randperm(P, generator=gen)
    schedule = torch.stack([t * P + perm[(t + s) % P] for s in range(P)])

    def epochs():
        state = [x.clone() for x in (W, Ht, bu, bi)]
        losses = [cf_ops.sgd_epoch_(*state, rows, cols, vals, order=order, block_ptr=block_ptr,
                                    schedule=schedule, lr=0.01, reg=0.05, bias_reg=0.01,
                                    global_mean=3.0) for _ in range(2)]
        return (*state, *losses)

    results = _over_thread_counts(epochs)
    _assert_bitwise_same(results, "sgd_epoch_ blocked")
    assert not torch.equal(results[0][0], W)  # the epochs did update W
    assert float(results[0][5]) < float(results[0][4])  # and the error fell


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_thread_count_gives_correct_and_repeatable_results(threads):
    """The same inputs (not seeded by the thread count) with 1 thread and with `threads`:
    bitwise equal, repeatable, and right against the float64 autograd reference."""
    gen = torch.Generator().manual_seed(1234)
    m, n, k, nnz = 700, 500, 8, 60_000  # large enough for several chunks
    rows = torch.randint(0, m, (nnz,), generator=gen)
    cols = torch.randint(0, n, (nnz,), generator=gen)
    vals = torch.rand(nnz, generator=gen, dtype=torch.float64)
    W = torch.rand(m, k, generator=gen, dtype=torch.float64)
    H = torch.rand(k, n, generator=gen, dtype=torch.float64)
    A = torch.rand(m, n, generator=gen, dtype=torch.float64)

    def run():
        return mfext.sparse_loss_grad(rows, cols, vals, W, H) + mfext.dense_loss_grad(A, W, H)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run()
        torch.set_num_threads(threads)
        multi = run()
        again = run()
    finally:
        torch.set_num_threads(before)
    for x, y in zip(multi, ref.sparse_loss_grad(rows, cols, vals, W, H) + ref.dense_loss_grad(A, W, H)):
        assert rel_err(x, y) < 1e-12
    assert all(torch.equal(x, y) for x, y in zip(multi, again))
    for j, (x, y) in enumerate(zip(single, multi)):
        assert torch.equal(x, y), f"output {j}: {threads} threads differ from 1 thread"


def test_ten_thousand_calls_keep_memory_flat():
    A, W, H, r, c, v = _small_inputs(0)
    for _ in range(200):  # warm up allocator caches
        mfext.dense_loss_grad(A, W, H)
        mfext.sparse_loss_grad(r, c, v, W, H)
    start = _rss_bytes()
    for _ in range(10_000):
        mfext.dense_loss_grad(A, W, H)
        mfext.sparse_loss_grad(r, c, v, W, H)
    growth = _rss_bytes() - start
    assert growth < 8 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB over 10,000 calls"


@pytest.mark.slow
def test_dense_index_products_beyond_32_bits():
    """m * n = 2^32 + 2^17 elements (a stride-0 view, no memory): 64-bit indexing must hold."""
    m, n = 65537, 65536
    A = torch.ones(1, 1, dtype=torch.float32).expand(m, n)
    W = torch.ones(m, 1)
    H = torch.full((1, n), 0.5)
    loss, gW, gH = mfext.dense_loss_grad(A, W, H)
    # residual 0.5 - 1 = -0.5 everywhere: loss = 0.25 m n, grad_W = 2 * (-0.5) * 0.5 * n per row
    assert loss.item() == pytest.approx(0.25 * m * n, rel=1e-6)
    assert torch.allclose(gW, torch.full_like(gW, -0.5 * n), rtol=1e-5)
    assert torch.allclose(gH, torch.full_like(gH, -1.0 * m), rtol=1e-5)
