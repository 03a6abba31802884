"""Threads, long runs and 64-bit sizes for the fused ops."""
from __future__ import annotations

import threading

import pytest
import torch

import mfext
from mfext import reference as ref
from conftest import rel_err


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


def test_concurrent_python_threads_get_correct_results():
    inputs = [_small_inputs(seed) for seed in range(8)]
    expected = [
        (mfext.dense_loss_grad(A, W, H), mfext.sparse_loss_grad(r, c, v, W, H))
        for A, W, H, r, c, v in inputs
    ]
    failures = []

    def worker(i: int) -> None:
        A, W, H, r, c, v = inputs[i]
        for _ in range(50):
            dense = mfext.dense_loss_grad(A, W, H)
            sparse = mfext.sparse_loss_grad(r, c, v, W, H)
            for x, y in zip(dense + sparse, expected[i][0] + expected[i][1]):
                if not torch.equal(x, y):
                    failures.append(i)
                    return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_gives_correct_and_repeatable_results(threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(threads)
        m, n, k, nnz = 700, 500, 8, 60_000  # large enough for several chunks
        rows = torch.randint(0, m, (nnz,), generator=gen)
        cols = torch.randint(0, n, (nnz,), generator=gen)
        vals = torch.rand(nnz, generator=gen, dtype=torch.float64)
        W = torch.rand(m, k, generator=gen, dtype=torch.float64)
        H = torch.rand(k, n, generator=gen, dtype=torch.float64)
        A = torch.rand(m, n, generator=gen, dtype=torch.float64)
        sparse = mfext.sparse_loss_grad(rows, cols, vals, W, H)
        dense = mfext.dense_loss_grad(A, W, H)
        for x, y in zip(sparse, ref.sparse_loss_grad(rows, cols, vals, W, H)):
            assert rel_err(x, y) < 1e-12
        for x, y in zip(dense, ref.dense_loss_grad(A, W, H)):
            assert rel_err(x, y) < 1e-12
        again = mfext.sparse_loss_grad(rows, cols, vals, W, H) + mfext.dense_loss_grad(A, W, H)
        assert all(torch.equal(x, y) for x, y in zip(sparse + dense, again))
    finally:
        torch.set_num_threads(before)


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
