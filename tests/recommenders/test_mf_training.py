"""MatrixFactorization training: reproducibility across thread counts, early stopping,
divergence (the last finite epoch kept), non-negativity, float64, the memory check of
ALS, and the quality bars (synthetic rank 8, MovieLens)."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import mfext
from mfext import datasets as ds
from mfext import MatrixFactorization
from mfext.recommenders import limits
from mf_helpers import SOLVERS, _model
from helpers import _triples, movielens_path


def test_sgd_is_reproducible_and_thread_count_independent(small):
    _, train, _ = small
    a = _model(n_threads=1).fit(train)
    b = _model(n_threads=2).fit(train)
    c = _model(n_threads=2, random_state=1).fit(train)
    assert torch.equal(a.user_factors_, b.user_factors_)
    assert torch.equal(a.item_bias_, b.item_bias_)
    assert not torch.equal(a.user_factors_, c.user_factors_)


def test_early_stopping_restores_the_best_epoch():
    r = ds.synthetic_ratings(100, 80, 1500, rank=2, noise=0.5, seed=0)
    train, val = ds.train_test_split(r, 0.2, seed=0)
    m = MatrixFactorization(rank=32, solver="als", reg=0.0005, max_iter=50, random_state=0)
    m.fit(train, validation=val, early_stopping_rounds=2)
    val_rmse = [h["val_rmse"] for h in m.history_]
    assert m.n_iter_ < 50 and m.n_iter_ == len(val_rmse)
    best = int(np.argmin(val_rmse))
    assert m.best_epoch_ == best + 1 and m.n_iter_ == m.best_epoch_ + 2
    assert m.score(val) == pytest.approx(val_rmse[best], rel=1e-5)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_divergence_is_an_error_and_keeps_finite_factors(small, solver):
    _, train, _ = small
    m = _model(solver, lr=1e4 if solver == "sgd" else 1e20, max_iter=20, init_std=1.0)
    with pytest.raises(FloatingPointError, match=r"diverged in epoch \d+.*keeps the factors"):
        m.fit(train)
    for t in (m.user_factors_, m.item_factors_, m.user_bias_, m.item_bias_):
        assert bool(torch.isfinite(t).all())


FITTED = ("user_factors_", "item_factors_", "user_bias_", "item_bias_", "user_counts_",
          "item_counts_")


@pytest.mark.parametrize("solver,kw", [("sgd", dict(lr=0.5, lr_decay=1.0)),
                                       ("adam", dict(lr=1e12))],
                         ids=["sgd_huge_lr", "adam_huge_lr"])
def test_estimator_divergence_keeps_last_finite(solver, kw, tmp_path):
    # these learning rates overflow float32 after a few epochs (not in the first one)
    X = _triples()
    params = dict(rank=3, solver=solver, random_state=0, reg=0.0, **kw)
    model = MatrixFactorization(max_iter=50, **params)
    with pytest.raises(FloatingPointError, match=r"diverged in epoch \d+") as info:
        model.fit(X)
    epoch = int(re.search(r"diverged in epoch (\d+)", str(info.value)).group(1))
    assert epoch >= 2, "pick a case that diverges after a finite epoch"
    assert f"keeps the factors of epoch {epoch - 1}" in str(info.value)
    assert model.n_iter_ == epoch - 1 and len(model.history_) == epoch - 1
    # the model is exactly the fit that stops before the failing epoch
    ref = MatrixFactorization(max_iter=epoch - 1, **params).fit(X)
    for name in FITTED:
        assert torch.equal(getattr(model, name), getattr(ref, name)), name
    assert [h["train_rmse"] for h in model.history_] == [h["train_rmse"] for h in ref.history_]
    # and it is whole: it predicts, recommends, saves and loads
    path = tmp_path / "diverged.pt"
    model.save(path)
    back = MatrixFactorization.load(path)
    users, items = torch.arange(12).repeat(9), torch.arange(9).repeat_interleave(12)
    assert torch.equal(back.predict(users, items), model.predict(users, items))
    assert torch.equal(back.recommend([0, 3], n=4)[0], model.recommend([0, 3], n=4)[0])


def test_estimator_als_reg0_tiny_matrix_is_finite():
    X = (torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), torch.tensor([1.0, 2.0, 3.0]))
    model = MatrixFactorization(rank=4, solver="als", reg=0.0, bias_reg=0.0, max_iter=5,
                                random_state=0).fit(X)
    for t in (model.user_factors_, model.item_factors_, model.user_bias_, model.item_bias_):
        assert torch.isfinite(t).all()
    assert torch.isfinite(model.predict([0, 1], [0, 1])).all()


def test_estimator_n_threads_respected_and_restored():
    before = torch.get_num_threads()
    fits = [MatrixFactorization(rank=4, solver="sgd", max_iter=3, random_state=1,
                                n_threads=nt).fit(_triples(2, 40, 30, 600))
            for nt in (1, 1, 2)]
    assert torch.get_num_threads() == before
    for other in fits[1:]:
        # the blocked schedule (P = max(8, 2 * threads) = 8 for 1..4 threads) makes
        # SGD bitwise identical across these thread counts
        assert torch.equal(fits[0].user_factors_, other.user_factors_)
        assert torch.equal(fits[0].item_factors_, other.item_factors_)


@pytest.mark.parametrize("solver", ["als", "adam"])
def test_ratings_below_the_overflow_limit_train(solver):
    """The limit is the dtype's, not a guess: large ratings that fit still train."""
    rows, cols, vals = _triples(3, 10, 8, 40)
    big = vals * 1e15  # squares near 1e31 each, far below float32's 3.4e38
    model = MatrixFactorization(rank=2, solver=solver, max_iter=3, random_state=0).fit(
        (rows, cols, big))
    assert model.rating_mean_ == pytest.approx(float(big.float().double().mean()), rel=1e-12)
    assert all(math.isfinite(h["train_rmse"]) for h in model.history_)


@pytest.mark.parametrize("solver", SOLVERS)
def test_nonnegative_factors(small, solver):
    _, train, _ = small
    m = _model(solver, nonnegative=True).fit(train)
    assert bool((m.user_factors_ >= 0).all()) and bool((m.item_factors_ >= 0).all())
    assert math.isfinite(m.score(small[2]))


def test_float64_and_verbose(small, capsys):
    _, train, test = small
    m = _model("als", dtype=torch.float64, verbose=True).fit(train, validation=test)
    assert m.user_factors_.dtype == torch.float64 and m.predict([0], [0]).dtype == torch.float64
    out = capsys.readouterr().out
    assert out.count("val_rmse") == m.n_iter_


@pytest.mark.parametrize("rank", [30_000, 100_000])
def test_als_says_before_it_starts_when_its_systems_cannot_fit_in_memory(rank, monkeypatch):
    # ALS systems of size rank + 1 (one a CPU thread) beyond the machine's memory: a
    # ValueError naming the rank before any allocation, not an abort in the allocator.
    monkeypatch.setattr(limits, "device_memory", lambda device: 8 * 2**30)
    rows, cols = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 0])
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0])
    model = mfext.MatrixFactorization(rank=rank, solver="als", random_state=0, n_threads=3)
    with pytest.raises(ValueError, match=rf"^rank: ALS at rank {rank} holds 3 systems"):
        model.fit((rows, cols, vals))
    assert not hasattr(model, "user_factors_")
    # The same rank trains no ALS systems with SGD: only the factors count.
    small = mfext.MatrixFactorization(rank=rank, solver="sgd", max_iter=1, random_state=0)
    small.fit((rows, cols, vals))
    assert small.user_factors_.shape == (4, rank)


def test_a_fit_beyond_the_available_memory_says_so_before_it_starts(monkeypatch):
    """The working-memory estimate against the memory available now: a MemoryError
    naming the sizes, raised before the canonical order, the solver or the factors."""
    import mfext.recommenders.base as base

    monkeypatch.setattr(limits, "available_memory", lambda device: 5 * 2**20)

    def untouched(*args, **kwargs):
        raise AssertionError("the fit went on past the memory check")

    monkeypatch.setattr(base, "canonical_order", untouched)
    rows = torch.arange(300_000) % 5000
    cols = torch.arange(300_000) % 700
    vals = torch.ones(300_000)
    for solver in ("sgd", "als", "adam"):
        model = mfext.MatrixFactorization(rank=64, solver=solver, random_state=0)
        with pytest.raises(MemoryError, match=r"^X: fitting 300,000 ratings \(5,000 users x 700 "
                                              rf"items, rank 64, solver '{solver}'\) needs about "
                                              r"[\d.]+ GiB .* more than the 0\.0 GiB available"):
            model.fit((rows, cols, vals))
        assert not hasattr(model, "user_factors_")
    with pytest.raises(MemoryError, match=r"fitting .* ImplicitALS"):
        mfext.ImplicitALS(rank=64).fit((rows, cols, vals))


# --------------------------------------------------------------------------- quality bars


@pytest.mark.parametrize("solver, kw", [
    ("sgd", dict(reg=0.005, max_iter=100, lr_decay=0.96)),
    ("als", dict(reg=0.01)),
    ("adam", dict(reg=0.001, lr=0.01, max_iter=500)),
], ids=["sgd", "als", "adam"])
def test_synthetic_rank8_recovers_the_noise_floor(solver, kw):
    r = ds.synthetic_ratings(1000, 800, 100_000, rank=8, noise=0.1, seed=0)
    train, test = ds.train_test_split(r, 0.1, seed=0)
    m = MatrixFactorization(rank=8, solver=solver, random_state=0, **kw).fit(train)
    assert m.score(test) <= 0.12


@pytest.fixture(scope="module")
def ml100k():
    r = ds.load_movielens(movielens_path("ml-100k/u.data"))
    return ds.train_test_split(r, 0.1, seed=0)


@pytest.fixture(scope="module")
def ml1m():
    r = ds.load_movielens(movielens_path("ml-1m/ratings_no_timestamp.dat"))
    return ds.train_test_split(r, 0.1, seed=0)


@pytest.mark.data
@pytest.mark.parametrize("solver", ["sgd", "als"])
def test_movielens_100k_bar(ml100k, solver):
    train, test = ml100k
    m = MatrixFactorization(solver=solver, random_state=0).fit(train)  # documented defaults
    assert m.score(test) <= 0.905


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("solver", ["sgd", "als"])
def test_movielens_1m_bar(ml1m, solver):
    train, test = ml1m
    m = MatrixFactorization(solver=solver, random_state=0).fit(train)  # documented defaults
    assert m.score(test) <= 0.850


@pytest.mark.parametrize("biases", [True, False])
def test_als_cg_with_enough_steps_is_the_exact_als(biases):
    """als_solver='cg' solves the same normal equations: with many steps, float64, one
    epoch from the same start gives the Cholesky path's factors."""
    data = mfext.datasets.synthetic_ratings(40, 30, 500, rank=3, seed=4)
    kw = dict(rank=4, solver="als", max_iter=1, random_state=0, dtype=torch.float64,
              biases=biases)
    exact = mfext.MatrixFactorization(**kw).fit(data)
    cg = mfext.MatrixFactorization(als_solver="cg", als_cg_steps=60, **kw).fit(data)
    torch.testing.assert_close(cg.user_factors_, exact.user_factors_, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(cg.item_factors_, exact.item_factors_, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(cg.item_bias_, exact.item_bias_, rtol=1e-6, atol=1e-7)


def test_als_cg_bad_parameters():
    data = mfext.datasets.synthetic_ratings(10, 8, 40, rank=2, seed=1)
    with pytest.raises(ValueError, match="als_solver must be 'cholesky' or 'cg'"):
        mfext.MatrixFactorization(solver="als", als_solver="lu").fit(data)
    with pytest.raises(ValueError, match="als_cg_steps"):
        mfext.MatrixFactorization(solver="als", als_solver="cg", als_cg_steps=0).fit(data)
