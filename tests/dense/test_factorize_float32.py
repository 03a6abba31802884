"""mfext.factorize in float32: exact fits converge at the data's resolution, ALS
reaches the float64 optimum, and the reported losses are the true ones."""
from __future__ import annotations

import math

import pytest
import torch

import mfext
from factorize_reference import (F64, _DEFAULT_TOL, eckart_young_mse, low_rank_plus_noise, mse,
                                 objective64)


@pytest.mark.parametrize("dtype_", [F64, torch.float32], ids=["f64", "f32"])
def test_an_exact_fit_converges_at_the_data_resolution(dtype_, gen):
    """An exactly completable matrix: the true loss falls to rounding level and the loop stops there."""
    A = (torch.randn(70, 4, generator=gen, dtype=F64) @ torch.randn(4, 50, generator=gen, dtype=F64))
    A = A.masked_fill(torch.rand(70, 50, generator=gen) < 0.3, float("nan")).to(dtype_)
    result = mfext.factorize(A, 4, optimizer="als", seed=0, max_iter=500)
    assert result.converged and result.stop_reason == "tol" and result.n_iter < 500
    data = float(torch.nan_to_num(A).double().square().sum() / (~torch.isnan(A)).sum())
    eps = torch.finfo(dtype_).eps
    assert result.loss == pytest.approx(objective64(A, result.W, result.H), rel=1e-3, abs=0)
    assert result.loss < 1e4 * eps * eps * data
    a, b = result.loss_history[-2:]
    assert abs(a - b) <= _DEFAULT_TOL[dtype_] * max(a, b) + eps * eps * data


def test_float32_als_reaches_the_optimum(gen):
    A = low_rank_plus_noise(gen, 200, 150, 6, 0.01, dtype=torch.float32)
    best = eckart_young_mse(A, 6)
    result = mfext.factorize(A, 6, optimizer="als", seed=0)
    assert result.W.dtype == torch.float32 and result.converged
    assert (mse(result, A) - best) / best < 1e-4
    # The reported loss is the float64 mean squared error of the float32 factors.
    assert result.loss_history[-1] == pytest.approx(mse(result, A), rel=1e-3, abs=0)


# Float32 data on which a loss taken from the normal equations' expansion cancels,
# or on which float32 solves in the factors' own basis blow up. Shapes and values
# differ from one case to the next on purpose.
def _exact_low_rank(gen, m, n, r, offset=0.0):
    U = torch.randn(m, r, generator=gen, dtype=F64)
    V = torch.randn(r, n, generator=gen, dtype=F64)
    return (offset + U @ V).to(torch.float32)


FLOAT32_CASES = {
    # exact rank 3 data, rank 6 requested: the factors are rank-deficient
    "rank_deficient": lambda g: (_exact_low_rank(g, 170, 140, 3), 6, {}),
    # a large offset with small noise: the loss is a tiny fraction of |A|^2
    "offset": lambda g: ((40.0 + 0.05 * torch.randn(160, 120, generator=g, dtype=F64)).float(), 4, {}),
    "weighted_offset": lambda g: ((-25.0 + 0.2 * torch.randn(130, 90, generator=g, dtype=F64)).float(), 3,
                                  {"weight": 0.1 + torch.rand(130, 90, generator=g)}),
    "missing_rank_deficient": lambda g: (
        _exact_low_rank(g, 90, 110, 2, offset=7.0).masked_fill(torch.rand(90, 110, generator=g) < 0.3,
                                                               float("nan")), 5, {}),
    "nonnegative": lambda g: ((torch.rand(150, 3, generator=g, dtype=F64)
                               @ torch.rand(3, 110, generator=g, dtype=F64)).float(), 5,
                              {"nonnegative": True, "max_iter": 150}),
    "reg_rank_deficient": lambda g: (_exact_low_rank(g, 120, 80, 2), 4, {"reg": 1e-4}),
    "sum_reduction": lambda g: (_exact_low_rank(g, 60, 75, 3, offset=-3.0), 5, {"reduction": "sum"}),
}


@pytest.mark.parametrize("case", list(FLOAT32_CASES))
def test_float32_als_reports_the_true_loss(case, gen):
    A, k, kwargs = FLOAT32_CASES[case](gen)
    seen = []
    result = mfext.factorize(A, k, optimizer="als", seed=1,
                             callback=lambda it, loss, W, H: seen.append((loss, W, H)), **kwargs)
    assert result.W.dtype == torch.float32
    weight, reg = kwargs.get("weight"), kwargs.get("reg", 0.0)
    reduction = kwargs.get("reduction", "mean")
    # Every logged loss (history, tol test, divergence guard) against a float64
    # evaluation of the objective at the factors it was logged with.
    assert [loss for loss, _, _ in seen] == result.loss_history
    for loss, W, H in seen:
        assert loss == pytest.approx(objective64(A, W, H, weight, reg, reduction), rel=1e-2, abs=0)
    true_final = objective64(A, result.W, result.H, weight, reg, reduction)
    assert result.loss == pytest.approx(true_final, rel=1e-3, abs=0)
    if result.stop_reason == "tol":  # converged on true losses: within tol, or the data's resolution
        a, b = result.loss_history[-2:]
        resolution = torch.finfo(torch.float32).eps ** 2 * objective64(A, torch.zeros(A.shape[0], 1),
                                                                       torch.zeros(1, A.shape[1]), weight,
                                                                       0.0, reduction)
        assert abs(a - b) <= 1e-6 * max(a, b) + resolution
    # No huge factors: they are bounded by the data.
    scale = float(torch.nan_to_num(A).double().norm())
    assert float(result.W.double().norm() * result.H.double().norm()) < 10 * math.sqrt(k) * scale


@pytest.mark.parametrize("case", ["rank_deficient", "missing_rank_deficient", "offset"])
def test_float32_als_is_as_accurate_as_float64(case, gen):
    """Singular or ill-conditioned float32 systems: the error float64 reaches, to float32's precision."""
    A, k, kwargs = FLOAT32_CASES[case](gen)
    result = mfext.factorize(A, k, optimizer="als", seed=2, **kwargs)
    reference = mfext.factorize(A.double(), k, optimizer="als", seed=2, **kwargs)
    error = objective64(A, result.W, result.H)
    error64 = objective64(A, reference.W, reference.H)
    data = float(torch.nan_to_num(A).double().square().mean())
    # float32 rounds the data and the factors to ~6e-8 relative: an exact low-rank
    # fit leaves a mean squared error of order 1e-14 * mean(A^2), not 0.
    assert error <= 1.001 * error64 + 1e-11 * data, (error, error64, data)


@pytest.mark.parametrize("optimizer", ["adam", "gd"])
@pytest.mark.parametrize("backend", ["fused", "autograd"])
def test_float32_gradient_optimizers_report_the_true_loss(optimizer, backend, gen):
    A, k, _ = FLOAT32_CASES["offset"](gen)
    seen = []
    result = mfext.factorize(A, k, optimizer=optimizer, backend=backend, seed=0, max_iter=120,
                             log_every=30, reg=0.01,
                             callback=lambda it, loss, W, H: seen.append((loss, W, H)))
    assert len(seen) == 4
    for loss, W, H in seen:
        assert loss == pytest.approx(objective64(A, W, H, reg=0.01), rel=1e-3, abs=0)
    assert result.loss == pytest.approx(objective64(A, result.W, result.H, reg=0.01), rel=1e-3, abs=0)


def test_float32_loss_near_an_exact_fit_is_recomputed_in_float64(gen):
    """At an exact fit the fused op's float32 residual is rounding: the reported loss is not."""
    W0 = torch.randn(80, 3, generator=gen, dtype=F64)
    H0 = torch.randn(3, 70, generator=gen, dtype=F64)
    A = (W0 @ H0).float()
    W, H = W0.float(), H0.float()
    result = mfext.factorize(A, 3, init=(W, H), max_iter=0)
    exact = objective64(A, W, H)
    assert exact > 0  # the float32 roundings of A, W and H do not cancel exactly
    assert result.loss == pytest.approx(exact, rel=1e-3, abs=0)
    fused = float(mfext.dense_loss_grad(A, W, H)[0]) / A.numel()
    assert abs(fused - exact) > 1e-3 * exact  # the op's float32 residual alone is off
