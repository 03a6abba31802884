"""mfext.factorize: non-negative mode (against scikit-learn's NMF, NNDSVD init) and
missing entries (zero weight, NaN, all-missing rows and columns)."""
from __future__ import annotations

import math

import pytest
import torch

import mfext
from factorize_reference import F64, OPTIMIZERS
from helpers import _small


def _nmf_matrix(gen):
    """Sparse non-negative factors (an identifiable NMF) plus non-negative noise."""
    m, n, k = 80, 60, 4
    W = (torch.rand(m, k, generator=gen, dtype=F64) - 0.3).clamp_min(0)
    H = (torch.rand(k, n, generator=gen, dtype=F64) - 0.3).clamp_min(0)
    return W @ H + 0.05 * torch.rand(m, n, generator=gen, dtype=F64), k


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_nonnegative_factors_stay_nonnegative(optimizer, gen):
    A = torch.randn(30, 20, generator=gen, dtype=F64)  # signed data pushes factors below 0
    result = mfext.factorize(A, 3, optimizer=optimizer, nonnegative=True, seed=0, max_iter=300)
    assert bool((result.W >= 0).all()) and bool((result.H >= 0).all())
    unconstrained = mfext.factorize(A, 3, optimizer=optimizer, seed=0, max_iter=300)
    assert bool((unconstrained.W < 0).any())  # the constraint was active


@pytest.mark.parametrize(
    "optimizer,kwargs",
    [("als", {}), ("adam", {"init": "svd", "lr": 0.003, "max_iter": 10000}),
     pytest.param("gd", {"init": "svd", "max_iter": 20000}, marks=pytest.mark.slow)],
    ids=["als", "adam", "gd"],
)
def test_nonnegative_matches_sklearn_nmf(optimizer, kwargs, gen):
    pytest.importorskip("sklearn")
    import warnings

    from sklearn.decomposition import NMF

    A, k = _nmf_matrix(gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nmf = NMF(n_components=k, solver="cd", init="random", random_state=0,
                  max_iter=3000, tol=1e-10)
        W_sk = nmf.fit_transform(A.numpy())
    sk_loss = float(((A.numpy() - W_sk @ nmf.components_) ** 2).sum())
    result = mfext.factorize(A, k, optimizer=optimizer, nonnegative=True, seed=0,
                             reduction="sum", **kwargs)
    assert bool((result.W >= 0).all()) and bool((result.H >= 0).all())
    loss = float(((A - result.W @ result.H) ** 2).sum())
    assert loss <= 1.01 * sk_loss, (loss, sk_loss)


def test_nonnegative_svd_init_is_nndsvd(gen):
    A, k = _nmf_matrix(gen)
    result = mfext.factorize(A, k, optimizer="als", nonnegative=True, init="svd", seed=0,
                             max_iter=0)
    assert bool((result.W >= 0).all()) and bool((result.H >= 0).all())
    # NNDSVD already explains most of A.
    assert result.loss_history[-1] < 0.2 * float(A.square().mean())


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_all_missing_row_and_column_get_zero_factors(optimizer, gen):
    A = torch.rand(12, 9, generator=gen, dtype=F64)
    A[4] = float("nan")
    A[:, 2] = float("nan")
    result = mfext.factorize(A, 2, optimizer=optimizer, seed=0, max_iter=200, reg=0.01)
    assert bool((result.W[4] == 0).all()) and bool((result.H[:, 2] == 0).all())
    assert bool(torch.isfinite(result.W).all()) and bool(torch.isfinite(result.H).all())
    assert bool((result.W.abs().sum(1) > 0).sum() == 11)


def test_nan_is_the_same_as_zero_weight(gen):
    A = torch.rand(15, 11, generator=gen, dtype=F64)
    hidden = torch.rand(15, 11, generator=gen) < 0.3
    weight = (~hidden).to(F64)
    with_nan = mfext.factorize(A.masked_fill(hidden, float("nan")), 3, optimizer="als",
                               seed=2, max_iter=20, tol=0)
    with_weight = mfext.factorize(A.masked_fill(hidden, 123.0), 3, optimizer="als", seed=2,
                                  max_iter=20, tol=0, weight=weight)
    assert torch.equal(with_nan.W, with_weight.W) and torch.equal(with_nan.H, with_weight.H)


@pytest.mark.parametrize("optimizer", ["adam", "als"])
def test_factorize_nan_data_is_missing(optimizer):
    data = _small(8, 6, seed=4)
    missing = torch.zeros(8, 6, dtype=torch.bool)
    missing[0, 0] = missing[3, 5] = missing[7, 2] = True
    with_nan = data.masked_fill(missing, math.nan)
    res = mfext.factorize(with_nan, 2, max_iter=5, seed=0, optimizer=optimizer)
    # the same fit as weight 0 at those entries, whatever value they hold there
    weight = (~missing).double()
    for filler in (0.0, 123.0):
        ref = mfext.factorize(data.masked_fill(missing, filler), 2, max_iter=5, seed=0,
                              optimizer=optimizer, weight=weight)
        torch.testing.assert_close(res.W, ref.W, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(res.H, ref.H, rtol=1e-12, atol=1e-12)
        assert res.loss_history == pytest.approx(ref.loss_history, rel=1e-12)
    # and not the fit that observes a 0 there
    zero = mfext.factorize(data.masked_fill(missing, 0.0), 2, max_iter=5, seed=0,
                           optimizer=optimizer)
    assert (res.W - zero.W).abs().max() > 1e-6
