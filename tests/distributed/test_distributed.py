"""Data-parallel training on torch.distributed: real 2-process gloo jobs on loopback."""
from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import mfext
from mfext.distributed import Communicator, row_block
import dist_workers

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")


def _spawn(fn, args, world: int, tmp_path, timeout: float = 120.0, check: bool = True):
    """Run fn on `world` processes; with check=False a rank's abnormal exit is tolerated."""
    init_file = str(tmp_path / "init")
    ctx = mp.start_processes(fn, args=(world, init_file, str(tmp_path)) + args, nprocs=world,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ctx.join(timeout=1.0):
                return
        except mp.ProcessExitedException:
            if check:
                raise
            if all(not p.is_alive() for p in ctx.processes):
                return
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {world}-process job did not finish in {timeout} s")


def test_row_block_partitions_rows():
    for total in (0, 1, 7, 100):
        for world in (1, 2, 3, 4):
            blocks = [row_block(total, world, r) for r in range(world)]
            assert blocks[0][0] == 0 and blocks[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
            assert max(b - a for a, b in blocks) - min(b - a for a, b in blocks) <= 1


def test_single_process_communicator_is_a_no_op():
    comm = Communicator(None)
    t = torch.ones(3)
    comm.all_reduce_sum_([t])
    assert torch.equal(t, torch.ones(3)) and comm.world_size == 1 and comm.rank == 0
    assert comm.gather_rows(t[:, None]).shape == (3, 1)


@pytest.mark.parametrize(
    "optimizer, kwargs",
    [
        ("adam", {"max_iter": 150, "log_every": 10}),
        ("gd", {"max_iter": 60, "log_every": 5}),
        ("als", {"max_iter": 15, "reg": 1e-3}),
        ("als", {"max_iter": 10, "missing": True}),
    ],
    ids=["adam", "gd", "als", "als-missing"],
)
def test_dense_two_ranks_match_one_process(optimizer, kwargs, tmp_path):
    gen = torch.Generator().manual_seed(7)
    A = torch.rand(37, 6, generator=gen, dtype=torch.float64) @ torch.rand(6, 23, generator=gen, dtype=torch.float64)
    A += 0.01 * torch.randn(A.shape, generator=gen, dtype=torch.float64)
    kwargs = dict(kwargs)
    if kwargs.pop("missing", False):
        A[torch.rand(A.shape, generator=gen) < 0.3] = float("nan")
    call = dict(rank=5, optimizer=optimizer, seed=3, tol=0.0, distributed=False, **kwargs)
    single = mfext.factorize(A, **call)
    call["distributed"] = True
    _spawn(dist_workers.dense_worker, (A, call), 2, tmp_path)
    parts = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    W = torch.cat([p["W"] for p in parts])
    for p in parts:
        assert torch.allclose(p["H"], single.H, rtol=1e-8, atol=1e-10)
        assert len(p["history"]) == len(single.loss_history)
        assert torch.allclose(torch.tensor(p["history"]), torch.tensor(single.loss_history), rtol=1e-9)
    assert torch.allclose(W, single.W, rtol=1e-8, atol=1e-10)


def test_mismatched_ranks_fail_at_start_up(tmp_path):
    _spawn(dist_workers.mismatch_worker, (), 2, tmp_path)
    for r in range(2):
        text = (tmp_path / f"rank{r}.txt").read_text()
        assert "ranks disagree at start-up: rank is 2 on rank 0 but 3 on rank 1" in text


def test_dead_peer_fails_fast_with_clear_error(tmp_path):
    _spawn(dist_workers.dying_worker, (), 2, tmp_path, timeout=90.0, check=False)
    seconds, message = (tmp_path / "rank0.txt").read_text().split("\n", 1)
    assert float(seconds) < 60.0
    assert "mfext.distributed: rank 0 of 2" in message and "failed" in message


@pytest.mark.parametrize("save_world, resume_world", [(2, 1), (1, 2)])
def test_checkpoint_resumes_on_another_world_size(save_world, resume_world, tmp_path):
    """ALS for 4 + 4 iterations across a checkpoint equals 8 uninterrupted ones."""
    gen = torch.Generator().manual_seed(11)
    A = torch.rand(21, 4, generator=gen, dtype=torch.float64) @ torch.rand(4, 13, generator=gen, dtype=torch.float64)
    kwargs = dict(rank=3, optimizer="als", tol=0.0, seed=5, reg=1e-3, distributed=True)
    _spawn(dist_workers.checkpoint_worker, (A, dict(kwargs, max_iter=4), "save"), save_world, tmp_path)
    _spawn(dist_workers.checkpoint_worker, (A, dict(kwargs, max_iter=4), "resume"), resume_world, tmp_path)
    W = torch.cat([torch.load(tmp_path / f"resumed{r}.pt", weights_only=True)["W"] for r in range(resume_world)])
    H = torch.load(tmp_path / "resumed0.pt", weights_only=True)["H"]
    straight = mfext.factorize(A, **dict(kwargs, max_iter=8, distributed=False))
    assert torch.allclose(W, straight.W, rtol=1e-8, atol=1e-10)
    assert torch.allclose(H, straight.H, rtol=1e-8, atol=1e-10)


def _synthetic(seed=0):
    from mfext.datasets import synthetic_ratings

    r = synthetic_ratings(n_users=120, n_items=90, nnz=4000, rank=4, noise=0.1, seed=seed, biases=True)
    return (r.rows, r.cols, r.vals), (120, 90)


@pytest.mark.parametrize("solver", ["adam", "als"])
def test_sparse_two_ranks_match_one_process(solver, tmp_path):
    import scipy.sparse as sp

    (rows, cols, vals), shape = _synthetic()
    params = dict(rank=4, solver=solver, max_iter=6 if solver == "als" else 40, random_state=1,
                  dtype=torch.float64, n_threads=1)
    X = sp.coo_matrix((vals.numpy(), (rows.numpy(), cols.numpy())), shape=shape)
    single = mfext.MatrixFactorization(**params).fit(X, distributed=False)
    _spawn(dist_workers.sparse_worker, ((rows, cols, vals), shape, params), 2, tmp_path)
    parts = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    W = torch.cat([p["W"] for p in parts])
    bu = torch.cat([p["bu"] for p in parts])
    for p in parts:
        assert torch.allclose(p["Ht"], single.item_factors_, rtol=1e-6, atol=1e-8)
        assert torch.allclose(p["bi"], single.item_bias_, rtol=1e-6, atol=1e-8)
        assert torch.allclose(torch.tensor(p["history"]),
                              torch.tensor([h["train_rmse"] for h in single.history_]), rtol=1e-8)
    assert torch.allclose(W, single.user_factors_, rtol=1e-6, atol=1e-8)
    assert torch.allclose(bu, single.user_bias_, rtol=1e-6, atol=1e-8)


def test_sparse_dsgd_two_ranks_reach_the_quality_bar(tmp_path):
    """DSGD on 2 ranks fits the synthetic rank-4 sigma=0.1 model as well as one process."""
    import scipy.sparse as sp

    (rows, cols, vals), shape = _synthetic(seed=3)
    params = dict(rank=4, solver="sgd", max_iter=60, random_state=0, dtype=torch.float64,
                  n_threads=1, reg=0.01, lr=0.02, lr_decay=0.98)
    X = sp.coo_matrix((vals.numpy(), (rows.numpy(), cols.numpy())), shape=shape)
    single = mfext.MatrixFactorization(**params).fit(X, distributed=False)
    _spawn(dist_workers.sparse_worker, ((rows, cols, vals), shape, params), 2, tmp_path)
    parts = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    final = parts[0]["history"][-1]
    assert final == parts[1]["history"][-1]
    assert final <= max(0.15, 1.1 * single.history_[-1]["train_rmse"])


def test_each_rank_loads_its_shard_from_a_file(tmp_path):
    gen = torch.Generator().manual_seed(4)
    lines = [f"{u}\t{i}\t{int(r)}\t0" for u in range(1, 31) for i in range(1, 21)
             if torch.rand(1, generator=gen).item() < 0.5
             for r in [torch.randint(1, 6, (1,), generator=gen).item()]]
    path = tmp_path / "u.data"
    path.write_text("\n".join(lines) + "\n")
    _spawn(dist_workers.shard_worker, (str(path),), 2, tmp_path)
    parts = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert parts[0]["row0"] == 0 and parts[1]["row0"] == parts[0]["users"]
    assert parts[0]["users"] + parts[1]["users"] == 30
    assert torch.equal(parts[0]["Ht"], parts[1]["Ht"])
    assert parts[0]["val"] == parts[1]["val"]
