"""mfext.factorize's training loop as users see it: divergence, callbacks, logging,
tol, the progress bar, reduction, seeds, max_iter=0 and the accepted input forms.

The loop itself (mfext.training.train) is unit-tested in test_training_loop.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mfext
from mfext import reference as ref
from factorize_reference import F64, OPTIMIZERS, eckart_young_mse, low_rank_plus_noise
from helpers import _small


@pytest.mark.parametrize("optimizer", ["adam", "gd"])
def test_divergence_names_iteration_and_lr_and_keeps_finite_factors(optimizer):
    A = torch.tensor(ref.TOY_MATRIX, dtype=torch.float32)
    lr = 1e30 if optimizer == "adam" else 1e3
    with pytest.raises(mfext.DivergenceError) as info:
        mfext.factorize(A, 2, optimizer=optimizer, lr=lr, seed=0, log_every=1, max_iter=500)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert f"iteration {err.iteration}" in str(err) and f"lr={lr:g}" in str(err)
    assert err.iteration > 0 and err.lr == lr
    res = err.result
    assert res.stop_reason == "diverged" and not res.converged
    assert bool(torch.isfinite(res.W).all()) and bool(torch.isfinite(res.H).all())
    assert res.loss_history and all(math.isfinite(x) for x in res.loss_history)
    # The kept factors are the ones of the last finite loss.
    kept = float(torch.nn.functional.mse_loss(res.W.double() @ res.H.double(), A.double()))
    assert kept == pytest.approx(res.loss_history[-1], rel=1e-4, abs=0)


def test_divergence_between_log_points_keeps_the_last_logged_factors():
    # float64: the loss turns Inf, then NaN, quietly; the loop sees it at a logged iteration.
    A = torch.tensor(ref.TOY_MATRIX, dtype=F64)
    with pytest.raises(mfext.DivergenceError) as info:
        mfext.factorize(A, 2, optimizer="gd", lr=1e3, seed=0, log_every=10, max_iter=500)
    err = info.value
    assert err.iteration % 10 == 0 and err.iteration > 0
    assert len(err.result.loss_history) == err.iteration // 10
    assert f"the last finite loss was at iteration {err.iteration - 10}" in str(err)


def test_callback_can_stop_and_sees_logged_iterations():
    A = torch.tensor(ref.TOY_MATRIX, dtype=F64)
    seen = []

    def callback(iteration, loss, W, H):
        seen.append((iteration, loss, tuple(W.shape), tuple(H.shape)))
        W.zero_()  # a copy: must not disturb the loop
        return iteration >= 20

    result = mfext.factorize(A, 2, seed=0, log_every=5, callback=callback)
    assert [s[0] for s in seen] == [0, 5, 10, 15, 20]
    assert all(isinstance(s[1], float) for s in seen) and seen[0][2:] == ((4, 2), (2, 2))
    assert result.n_iter == 21 and result.stop_reason == "callback" and not result.converged
    assert [s[1] for s in seen] == result.loss_history[:5]
    plain = mfext.factorize(A, 2, seed=0, max_iter=21)
    assert torch.equal(result.W, plain.W)


def test_log_every_sets_the_history():
    A = torch.tensor(ref.TOY_MATRIX, dtype=F64)
    result = mfext.factorize(A, 2, seed=0, max_iter=250, log_every=100, tol=0)
    assert len(result.loss_history) == 4  # iterations 0, 100, 200 and the end
    reference = ref.reference_factorize(A, 2, iterations=250, seed=0, log_every=100)
    np.testing.assert_allclose(result.loss_history, reference.loss_history, rtol=1e-10)


def test_tol_stops_als_and_zero_tol_runs_max_iter(gen):
    A = low_rank_plus_noise(gen, 40, 30, 3, 0.01)
    converged = mfext.factorize(A, 3, optimizer="als", seed=0)
    assert converged.converged and converged.stop_reason == "tol" and converged.n_iter < 200
    full = mfext.factorize(A, 3, optimizer="als", seed=0, max_iter=30, tol=0)
    assert full.n_iter == 30 and full.stop_reason == "max_iter" and not full.converged
    assert len(full.loss_history) == 30


def test_progress_bar_runs(capsys):
    pytest.importorskip("tqdm")
    A = torch.tensor(ref.TOY_MATRIX, dtype=F64)
    result = mfext.factorize(A, 2, seed=0, max_iter=50, log_every=10, progress=True)
    assert result.n_iter == 50
    assert "mfext adam" in capsys.readouterr().err


def test_reduction_rescales_the_loss_but_not_the_minimizer(gen):
    A = torch.rand(20, 14, generator=gen, dtype=F64)
    A[0, 0] = float("nan")
    mean = mfext.factorize(A, 3, optimizer="als", reg=0.2, seed=0, max_iter=10, tol=0)
    total = mfext.factorize(A, 3, optimizer="als", reg=0.2, seed=0, max_iter=10, tol=0,
                            reduction="sum")
    assert torch.allclose(mean.W, total.W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.array(total.loss_history) / (20 * 14 - 1), mean.loss_history,
                               rtol=1e-12)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_same_seed_same_factors(optimizer, gen):
    A = torch.rand(25, 18, generator=gen, dtype=torch.float32)
    a = mfext.factorize(A, 4, optimizer=optimizer, seed=11, max_iter=40)
    b = mfext.factorize(A, 4, optimizer=optimizer, seed=11, max_iter=40)
    c = mfext.factorize(A, 4, optimizer=optimizer, seed=12, max_iter=40)
    assert torch.equal(a.W, b.W) and torch.equal(a.H, b.H) and a.loss_history == b.loss_history
    assert not torch.equal(a.W, c.W)
    drawn = mfext.factorize(A, 4, optimizer=optimizer, max_iter=40)
    again = mfext.factorize(A, 4, optimizer=optimizer, max_iter=40, seed=drawn.seed)
    assert drawn.seed is not None and torch.equal(drawn.W, again.W)


def test_inputs_numpy_dtype_device_and_init(gen):
    A = torch.rand(10, 8, generator=gen, dtype=F64)
    A[1, 1] = float("nan")
    res = mfext.factorize(A.numpy(), 2, optimizer="als", seed=0, dtype=torch.float32,
                          device="cpu", max_iter=5)
    assert res.W.dtype == torch.float32 and res.H.dtype == torch.float32
    assert res.W.device.type == "cpu" and res.H.shape == (2, 8) and res.H.is_contiguous()
    ints = mfext.factorize(np.arange(12).reshape(4, 3), 2, seed=0, max_iter=3)
    assert ints.W.dtype == torch.float32
    W0 = torch.rand(10, 2, generator=gen, dtype=F64)
    H0 = torch.rand(2, 8, generator=gen, dtype=F64)
    same = mfext.factorize(A, 2, init=(W0, H0), max_iter=0)
    assert torch.equal(same.W, W0) and torch.equal(same.H, H0) and same.n_iter == 0
    svd = mfext.factorize(torch.nan_to_num(A), 2, init="svd", seed=0, max_iter=0)
    best = eckart_young_mse(torch.nan_to_num(A), 2)
    assert svd.loss_history[-1] == pytest.approx(best, rel=1e-6, abs=0)


def test_factorize_max_iter_zero_returns_the_initial_factors():
    A_ = _small(7, 4, seed=3)
    # an explicit init comes back as given, and its loss is the objective at the init
    g = torch.Generator().manual_seed(11)
    W0 = torch.rand(7, 2, generator=g, dtype=torch.float64)
    H0 = torch.rand(2, 4, generator=g, dtype=torch.float64)
    res = mfext.factorize(A_, 2, max_iter=0, init=(W0, H0), reg=0.1)
    assert res.n_iter == 0 and len(res.loss_history) == 1
    assert torch.equal(res.W, W0) and torch.equal(res.H, H0)
    objective = ((A_ - W0 @ H0).square().sum() + 0.1 * (W0.square().sum() + H0.square().sum()))
    assert res.loss_history[0] == pytest.approx(float(objective) / A_.numel(), rel=1e-12)
    # init="random" is torch.rand for W, then H, from a CPU generator seeded with seed
    res = mfext.factorize(A_, 2, max_iter=0, seed=5)
    g = torch.Generator().manual_seed(5)
    assert torch.equal(res.W, torch.rand(7, 2, generator=g, dtype=torch.float64))
    assert torch.equal(res.H, torch.rand(2, 4, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("optimizer", ["adam", "gd"])
def test_factorize_divergence_keeps_last_finite(optimizer):
    # Adam moves each entry by about lr per step: float32 overflows within a few steps
    kw = dict(lr=1e12) if optimizer == "adam" else dict(lr=1e6, line_search=False)
    with pytest.raises(mfext.DivergenceError, match="diverged") as info:
        mfext.factorize(_small() * 1e3, 2, optimizer=optimizer, max_iter=200, seed=0,
                        dtype=torch.float32, **kw)
    res = info.value.result
    assert torch.isfinite(res.W).all() and torch.isfinite(res.H).all()
    assert all(math.isfinite(x) for x in res.loss_history)
