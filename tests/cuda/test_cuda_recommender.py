"""MatrixFactorization on a GPU (skipped without one and a CUDA build of mfext).

Every solver reaches the synthetic quality bar on CUDA; ALS (deterministic on
both devices) agrees with the CPU fit; SGD under
``torch.use_deterministic_algorithms`` repeats bit for bit; predict, recommend,
fold_in and save/load work on the GPU model; MovieLens bars hold on the GPU.
"""
from __future__ import annotations

import pytest
import torch

from mfext import MatrixFactorization
from mfext import datasets as ds
from helpers import HAS_CUDA, deterministic_algorithms, movielens_path, rel_err

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device or CUDA build"),
]


@pytest.fixture(scope="module")
def rank8():
    r = ds.synthetic_ratings(1000, 800, 100_000, rank=8, noise=0.1, seed=0)
    return ds.train_test_split(r, 0.1, seed=0)


@pytest.mark.parametrize("solver, kw", [
    ("sgd", dict(reg=0.005, max_iter=100, lr_decay=0.96)),
    ("als", dict(reg=0.01)),
    ("adam", dict(reg=0.001, lr=0.01, max_iter=500)),
], ids=["sgd", "als", "adam"])
def test_synthetic_rank8_bar_on_cuda(rank8, solver, kw):
    train, test = rank8
    m = MatrixFactorization(rank=8, solver=solver, random_state=0, device="cuda",
                            **kw).fit(train)
    assert m.user_factors_.device.type == "cuda"
    assert m.score(test) <= 0.12


def test_als_fit_matches_the_cpu_fit(rank8):
    train, test = rank8
    kw = dict(rank=8, solver="als", reg=0.05, max_iter=3, random_state=1, dtype=torch.float64)
    cpu = MatrixFactorization(**kw).fit(train)
    gpu = MatrixFactorization(device="cuda", **kw).fit(train)
    assert rel_err(gpu.user_factors_, cpu.user_factors_) < 1e-8
    assert rel_err(gpu.item_factors_, cpu.item_factors_) < 1e-8
    assert abs(gpu.score(test) - cpu.score(test)) < 1e-8


def test_deterministic_sgd_repeats_bit_for_bit(rank8):
    train, _ = rank8
    kw = dict(rank=8, solver="sgd", max_iter=3, random_state=3, device="cuda")
    with deterministic_algorithms():
        a = MatrixFactorization(**kw).fit(train)
        b = MatrixFactorization(**kw).fit(train)
    assert torch.equal(a.user_factors_, b.user_factors_)
    assert torch.equal(a.item_factors_, b.item_factors_)
    assert torch.equal(a.user_bias_, b.user_bias_) and torch.equal(a.item_bias_, b.item_bias_)


def test_hogwild_sgd_learns(rank8):
    train, test = rank8
    # 20 epochs: the blocked CPU fit reaches test RMSE 0.115 (training 1.01 -> 0.098).
    m = MatrixFactorization(rank=8, solver="sgd", reg=0.005, lr_decay=0.96, max_iter=20,
                            random_state=0, device="cuda").fit(train)
    rmse = [h["train_rmse"] for h in m.history_]
    assert rmse[-1] < 0.2 * rmse[0]
    assert m.score(test) < 0.15


def test_gpu_model_predicts_recommends_and_round_trips(rank8, tmp_path):
    train, test = rank8
    m = MatrixFactorization(rank=8, solver="als", max_iter=4, random_state=0,
                            device="cuda").fit(train)
    pred = m.predict(test.rows[:50], test.cols[:50])
    assert pred.device.type == "cuda" and torch.isfinite(pred).all()
    items, scores = m.recommend([0, 1, 2], n=5)
    assert items.shape == (3, 5) and scores.shape == (3, 5)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    W_new, b_new = m.fold_in((torch.tensor([0, 0, 1]), torch.tensor([3, 4, 5]),
                              torch.tensor([4.0, 3.0, 5.0])))
    assert W_new.device.type == "cuda" and W_new.shape == (2, 8)
    path = tmp_path / "gpu_model.pt"
    m.save(path)
    back = MatrixFactorization.load(path)
    assert torch.equal(back.predict(test.rows[:50], test.cols[:50]).cpu(), pred.cpu())


@pytest.fixture(scope="module")
def ml1m():
    r = ds.load_movielens(movielens_path("ml-1m/ratings_no_timestamp.dat"))
    return ds.train_test_split(r, 0.1, seed=0)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("solver", ["sgd", "als"])
def test_movielens_1m_bar_on_cuda(ml1m, solver):
    train, test = ml1m
    m = MatrixFactorization(solver=solver, random_state=0, device="cuda").fit(train)
    assert m.score(test) <= 0.850
