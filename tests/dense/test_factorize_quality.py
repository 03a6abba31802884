"""mfext.factorize: the quality bars (the toy matrix, Eckart-Young, matrix completion)
and parity of the fused backend with the autograd reference loop, on every device."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mfext
from mfext import reference as ref
from factorize_reference import (F64, OPTIMIZERS, eckart_young_mse, low_rank_plus_noise, mse,
                                 objective, objective64, reference_als)
from helpers import rel_err


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_toy_matrix_each_optimizer(optimizer):
    A = torch.tensor(ref.TOY_MATRIX, dtype=F64)
    result = mfext.factorize(A, 2, optimizer=optimizer, seed=0)
    assert mse(result, A) < 1e-8
    assert result.loss_history[-1] < 1e-8
    assert result.W.shape == (4, 2) and result.H.shape == (2, 2)
    assert result.seconds > 0 and result.n_iter > 0


def test_toy_matrix_fused_reaches_reference_quality():
    A = torch.tensor(ref.TOY_MATRIX, dtype=torch.float64)
    result = mfext.factorize(A, 2, lr=0.01, max_iter=5000, seed=0)
    final = torch.nn.functional.mse_loss(result.W @ result.H, A).item()
    assert final < 1e-8
    assert result.W.shape == (4, 2) and result.H.shape == (2, 2)


def test_toy_matrix_fused_follows_autograd():
    A = torch.tensor(ref.TOY_MATRIX, dtype=torch.float64)
    fused = mfext.factorize(A, 2, lr=0.01, max_iter=300, seed=3)
    auto = mfext.factorize(A, 2, lr=0.01, max_iter=300, seed=3, backend="autograd")
    assert torch.allclose(fused.W, auto.W, rtol=1e-9, atol=1e-12)
    assert torch.allclose(fused.H, auto.H, rtol=1e-9, atol=1e-12)


def test_eckart_young_als(gen):
    A = low_rank_plus_noise(gen, 300, 200, 10, 0.01)
    best = eckart_young_mse(A, 10)
    result = mfext.factorize(A, 10, optimizer="als", seed=0, max_iter=50)
    assert (mse(result, A) - best) / best < 1e-6
    assert result.n_iter <= 50 and result.converged and result.stop_reason == "tol"
    # The loss the loop reports is the true one.
    assert math.isclose(result.loss_history[-1], mse(result, A), rel_tol=1e-9)


@pytest.mark.slow
def test_eckart_young_adam(gen):
    A = low_rank_plus_noise(gen, 300, 200, 10, 0.01)
    best = eckart_young_mse(A, 10)
    result = mfext.factorize(A, 10, optimizer="adam", lr=0.03, max_iter=15000, seed=0)
    assert (mse(result, A) - best) / best < 1e-6


@pytest.mark.parametrize("optimizer", ["als", "gd"])
def test_matrix_completion_half_missing(optimizer, gen):
    m, n, k = 120, 100, 5
    A = torch.randn(m, k, generator=gen, dtype=F64) @ torch.randn(k, n, generator=gen, dtype=F64)
    hidden = torch.rand(m, n, generator=gen) < 0.5
    observed = A.masked_fill(hidden, float("nan"))
    result = mfext.factorize(observed, k, optimizer=optimizer, seed=0, max_iter=3000)
    pred = result.W @ result.H
    rel_rmse = float((pred - A)[hidden].norm() / A[hidden].norm())
    assert rel_rmse < 1e-3


def test_fused_follows_the_reference_loop_for_100_adam_steps(gen):
    A = torch.randn(37, 23, generator=gen, dtype=F64)
    fused = mfext.factorize(A, 5, max_iter=100, seed=7, tol=0)
    auto = mfext.factorize(A, 5, max_iter=100, seed=7, tol=0, backend="autograd")
    reference = ref.reference_factorize(A, 5, iterations=100, seed=7)
    for other in (auto, reference):
        assert (fused.W - other.W).abs().max() < 1e-6
        assert (fused.H - other.H).abs().max() < 1e-6
        assert rel_err(fused.W, other.W) < 1e-10 and rel_err(fused.H, other.H) < 1e-10
    assert math.isclose(fused.loss_history[-1], reference.loss_history[-1], rel_tol=1e-10)
    assert fused.loss_history[0] == pytest.approx(auto.loss_history[0], rel=1e-12, abs=0)


VARIANTS = {
    "plain": {},
    "missing": {"missing": 0.3},
    "weighted": {"weighted": True},
    "reg": {"reg": 0.5},
    "nonneg": {"nonnegative": True},
    "sum_reg_missing": {"reduction": "sum", "reg": 0.1, "missing": 0.2},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_backends_follow_the_same_trajectory(optimizer, variant, gen):
    opts = dict(VARIANTS[variant])
    A = torch.rand(17, 13, generator=gen, dtype=F64)
    missing = opts.pop("missing", 0.0)
    if missing:
        A[torch.rand(17, 13, generator=gen) < missing] = float("nan")
    if opts.pop("weighted", False):
        opts["weight"] = torch.rand(17, 13, generator=gen, dtype=F64)
    kwargs = dict(optimizer=optimizer, seed=3, max_iter=25, log_every=5, tol=0, **opts)
    if optimizer == "gd":
        kwargs["lr"] = 0.05 if opts.get("reduction") != "sum" else 0.05 / 200
    fused = mfext.factorize(A, 3, **kwargs)
    auto = mfext.factorize(A, 3, backend="autograd", **kwargs)
    assert rel_err(fused.W, auto.W) < 1e-9 and rel_err(fused.H, auto.H) < 1e-9
    assert len(fused.loss_history) == len(auto.loss_history)
    np.testing.assert_allclose(fused.loss_history, auto.loss_history, rtol=1e-9)
    # The history holds the documented objective at the returned factors.
    weight = opts.get("weight")
    if missing:
        observed = ~torch.isnan(A)
        weight = observed.to(F64) if weight is None else weight * observed
    A0 = torch.nan_to_num(A)
    expected = objective(A0, fused.W, fused.H, weight, opts.get("reg", 0.0),
                         opts.get("reduction", "mean"))
    assert fused.loss_history[-1] == pytest.approx(float(expected), rel=1e-9, abs=0)
    if optimizer == "als":
        # Both backends share the ALS update: check it against plain row-by-row ALS.
        # (Without reg and sign constraints mfext keeps W orthonormal, so compare
        # the products W @ H, which any basis shares.)
        start = mfext.factorize(A, 3, optimizer="als", seed=3, max_iter=0)
        W_ref, H_ref = reference_als(A, start.W, start.H, 25, opts.get("weight"),
                                     opts.get("reg", 0.0), opts.get("nonnegative", False))
        assert rel_err(fused.W @ fused.H, W_ref @ H_ref) < 1e-8


@pytest.mark.parametrize("optimizer", ["adam", "gd", "als"])
def test_line_search_gd_and_optimizers_with_reg_reach_a_stationary_point(optimizer, gen):
    A = low_rank_plus_noise(gen, 20, 15, 4, 0.1)
    kwargs = {"adam": dict(lr=0.01, max_iter=20000), "gd": dict(max_iter=20000),
              "als": dict(max_iter=300, tol=0)}[optimizer]
    result = mfext.factorize(A, 4, optimizer=optimizer, reg=0.3, seed=1, **kwargs)
    W = result.W.clone().requires_grad_(True)
    H = result.H.clone().requires_grad_(True)
    gW, gH = torch.autograd.grad(objective(A, W, H, reg=0.3), (W, H))
    grad_norm = float(torch.cat([gW.flatten(), gH.flatten()]).norm())
    assert grad_norm < (1e-5 if optimizer == "adam" else 1e-8)


@pytest.mark.parametrize("reg", [0.01, 0.0], ids=["reg", "noreg"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_device_follows_the_cpu_run(optimizer, reg, device, dtype, gen):
    """Off the CPU: the CPU run. Everywhere: an independent float64 reference."""
    A = torch.rand(23, 17, generator=gen, dtype=dtype)
    A[3, 4] = float("nan")
    kwargs = dict(optimizer=optimizer, seed=5, max_iter=30, tol=0, reg=reg)
    if optimizer == "gd":
        kwargs["lr"] = 0.1
    on_device = mfext.factorize(A.to(device), 3, **kwargs)
    assert on_device.W.device.type == device and on_device.W.dtype == dtype
    tol = 1e-9 if dtype == F64 else 1e-3
    if device != "cpu":
        on_cpu = mfext.factorize(A, 3, **kwargs)
        assert rel_err(on_device.W, on_cpu.W) < tol and rel_err(on_device.H, on_cpu.H) < tol
    # The independent reference, in float64 on the CPU from the same initial factors:
    # the autograd loss for Adam and GD, plain row-by-row ALS for ALS.
    start = mfext.factorize(A, 3, optimizer=optimizer, seed=5, max_iter=0)
    if optimizer == "als":
        W_ref, H_ref = reference_als(A, start.W, start.H, 30, reg=reg)
    else:
        reference = mfext.factorize(A.double(), 3, **dict(kwargs, init=(start.W.double(), start.H.double()),
                                                          backend="autograd"))
        W_ref, H_ref = reference.W, reference.H
        assert rel_err(on_device.W, W_ref) < tol and rel_err(on_device.H, H_ref) < tol
    assert rel_err(on_device.W.cpu() @ on_device.H.cpu(), W_ref @ H_ref) < tol
    true_loss = objective64(A, on_device.W.cpu(), on_device.H.cpu(), reg=reg)
    assert on_device.loss_history[-1] == pytest.approx(true_loss, rel=1e-9 if dtype == F64 else 1e-3, abs=0)
