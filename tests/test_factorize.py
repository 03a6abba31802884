"""mfext.factorize: the quality bars of the training loop, parity between backends,
the batched ALS solves, and the documented behaviour (missing entries, reg,
non-negativity, divergence, callbacks, seeds, validation)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mfext
from mfext import reference as ref
from mfext._als import (nnls_coordinate_descent, orthonormal_basis, solve_normal_equations,
                        weighted_gram)
from conftest import rel_err

F64 = torch.float64
OPTIMIZERS = ["adam", "gd", "als"]
_DEFAULT_TOL = {F64: 1e-10, torch.float32: 1e-6}  # the documented defaults


# --------------------------------------------------------------------------- helpers


def low_rank_plus_noise(gen, m, n, k, noise, dtype=F64):
    """U diag(10..1) V^T + noise * N(0, 1): rank k with a clear gap."""
    U = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=F64)).Q
    V = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=F64)).Q
    s = torch.linspace(10.0, 1.0, k, dtype=F64)
    A = (U * s) @ V.t() + noise * torch.randn(m, n, generator=gen, dtype=F64)
    return A.to(dtype)


def eckart_young_mse(A, k):
    """The optimal mean squared error of a rank-k approximation."""
    S = torch.linalg.svdvals(A.double())
    return float(S[k:].square().sum()) / A.numel()


def mse(result, A):
    return float(torch.nn.functional.mse_loss(result.W.double() @ result.H.double(), A.double()))


def objective(A, W, H, weight=None, reg=0.0, reduction="mean"):
    """The documented objective, by plain torch."""
    loss = ref.dense_loss(A, W, H, weight) + reg * (W.square().sum() + H.square().sum())
    if reduction == "sum":
        return loss
    return loss / (A.numel() if weight is None else weight.sum())


def objective64(A, W, H, weight=None, reg=0.0, reduction="mean"):
    """The documented objective in float64 (from float32 factors too); NaN in A is missing."""
    A = A.double()
    observed = ~torch.isnan(A)
    w = observed.double() if weight is None else weight.double() * observed
    value = objective(torch.where(observed, A, 0.0), W.double(), H.double(),
                      None if weight is None and bool(observed.all()) else w, reg, reduction)
    return float(value)


def reference_als(A, W, H, iterations, weight=None, reg=0.0, nonnegative=False, sweeps=3):
    """Plain ALS in float64, one row (column) at a time, from the dense matrix.

    Each row's normal equations ``(sum_j w_ij h_j h_j^T + reg I) x = sum_j w_ij a_ij h_j``
    are built from the dense data and solved by ``torch.linalg.solve``; in
    non-negative mode by ``sweeps`` sweeps of coordinate descent from the current
    row. Shares no code with mfext.
    """
    A = A.double()
    observed = ~torch.isnan(A)
    w = observed.double() if weight is None else weight.double() * observed
    A = torch.where(w > 0, A, 0.0)
    W, H = W.double().clone(), H.double().clone()
    k = W.shape[1]

    def solve_rows(data, wt, F, X):
        out = torch.zeros(data.shape[0], k, dtype=F64)
        for i in range(data.shape[0]):
            if float(wt[i].sum()) == 0.0:
                continue  # an unobserved row stays 0
            G = (F.t() * wt[i]) @ F + reg * torch.eye(k, dtype=F64)
            b = F.t() @ (wt[i] * data[i])
            if not nonnegative:
                out[i] = torch.linalg.solve(G, b)
                continue
            x = X[i].clamp_min(0).clone()
            for _ in range(sweeps):
                for r in range(k):
                    if float(G[r, r]) > 0:
                        x[r] = max(0.0, float(x[r] + (b[r] - G[r] @ x) / G[r, r]))
                    else:
                        x[r] = 0.0
            out[i] = x
        return out

    for _ in range(iterations):
        W = solve_rows(A, w, H.t(), W)
        H = solve_rows(A.t(), w.t(), W, H.t()).t()
    return W, H


# --------------------------------------------------------------------------- quality bars


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_toy_matrix_each_optimizer(optimizer):
    A = torch.tensor(ref.TOY_MATRIX, dtype=F64)
    result = mfext.factorize(A, 2, optimizer=optimizer, seed=0)
    assert mse(result, A) < 1e-8
    assert result.loss_history[-1] < 1e-8
    assert result.W.shape == (4, 2) and result.H.shape == (2, 2)
    assert result.seconds > 0 and result.n_iter > 0


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


# --------------------------------------------------------------------------- non-negative mode


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


# --------------------------------------------------------------------------- missing entries


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


# --------------------------------------------------------------------------- loop behaviour


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


def test_rank_above_min_needs_reg(gen):
    A = torch.rand(6, 4, generator=gen, dtype=F64)
    with pytest.raises(ValueError, match="rank must be in 1..min"):
        mfext.factorize(A, 5)
    for optimizer in OPTIMIZERS:
        for init in ("random", "svd"):
            res = mfext.factorize(A, 5, optimizer=optimizer, reg=0.1, seed=0, max_iter=50,
                                  init=init)
            assert res.W.shape == (6, 5) and math.isfinite(res.loss_history[-1])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(rank=0), ValueError, "rank must be in 1..min"),
        (dict(rank=2.0), TypeError, "rank must be an int"),
        (dict(A=torch.rand(5)), ValueError, r"A must be a 2-D matrix .* shape \(5,\)"),
        (dict(A=torch.rand(0, 3)), ValueError, "at least one row"),
        (dict(A=torch.rand(4, 3, dtype=torch.complex64)), TypeError, "A must be real"),
        (dict(A=torch.full((4, 3), float("nan"))), ValueError, "no observed entry"),
        (dict(A=torch.tensor([[1.0, float("inf")], [1.0, 2.0]])), ValueError, "infinite"),
        (dict(weight=torch.rand(3, 4)), ValueError, r"weight must have the shape of A \(4, 3\)"),
        (dict(weight=-torch.ones(4, 3)), ValueError, "weight must be finite and non-negative"),
        (dict(optimizer="sgd"), ValueError, "optimizer must be one of"),
        (dict(backend="cuda"), ValueError, "backend must be one of"),
        (dict(reduction="max"), ValueError, "reduction must be"),
        (dict(init="pca"), ValueError, "init must be"),
        (dict(init=(torch.rand(4, 3), torch.rand(3, 3))), ValueError, r"init \(W0, H0\)"),
        (dict(lr=0.0), ValueError, "lr must be > 0"),
        (dict(lr=float("nan")), ValueError, "lr must be finite"),
        (dict(reg=-1.0), ValueError, "reg must be >= 0"),
        (dict(max_iter=-1), ValueError, "max_iter must be >= 0"),
        (dict(log_every=0), ValueError, "log_every must be > 0"),
        (dict(dtype=torch.float16), TypeError, "dtype must be torch.float32 or torch.float64"),
        (dict(callback=3), TypeError, "callback must be callable"),
        (dict(optimizer="gd", line_search=False), ValueError, "needs a learning rate"),
    ],
)
def test_bad_input_is_refused_clearly(kwargs, error, match):
    args = dict(A=torch.rand(4, 3, dtype=F64), rank=2)
    args.update(kwargs)
    A, rank = args.pop("A"), args.pop("rank")
    with pytest.raises(error, match=match):
        mfext.factorize(A, rank, **args)


INTEGER_ARGUMENTS = {
    "rank": np.int64(3),
    "max_iter": np.int32(7),
    "log_every": np.uint8(2),
    "nnls_sweeps": np.int16(2),
    "seed": np.uint64(12345),
}


@pytest.mark.parametrize("name", list(INTEGER_ARGUMENTS))
def test_numpy_integers_are_accepted_for_integer_arguments(name, gen):
    A = torch.rand(9, 7, generator=gen, dtype=F64)
    plain = dict(rank=3, max_iter=7, log_every=2, nnls_sweeps=2, seed=12345)
    kwargs = dict(plain, **{name: INTEGER_ARGUMENTS[name]})
    numpy_run = mfext.factorize(A, kwargs.pop("rank"), optimizer="als", nonnegative=True, tol=0,
                                **kwargs)
    python_run = mfext.factorize(A, plain.pop("rank"), optimizer="als", nonnegative=True, tol=0,
                                 **plain)
    assert torch.equal(numpy_run.W, python_run.W) and torch.equal(numpy_run.H, python_run.H)
    assert numpy_run.loss_history == python_run.loss_history
    assert numpy_run.n_iter == 7 and type(numpy_run.seed) is int and numpy_run.seed == 12345


@pytest.mark.parametrize("name", list(INTEGER_ARGUMENTS))
@pytest.mark.parametrize("bad", [np.bool_(True), True, np.float64(3.0)], ids=["np.bool_", "bool", "np.float64"])
def test_bools_and_floats_are_refused_for_integer_arguments(name, bad):
    kwargs = dict({"rank": 2}, **{name: bad})
    with pytest.raises(TypeError, match=f"{name} must be an int"):
        mfext.factorize(torch.rand(5, 4, dtype=F64), kwargs.pop("rank"), **kwargs)


def test_numpy_floats_are_accepted_for_real_arguments(gen):
    A = torch.rand(9, 7, generator=gen, dtype=F64)
    a = mfext.factorize(A, 2, optimizer="gd", lr=np.float32(0.25), reg=np.float32(0.5),
                        tol=np.float64(0.0), max_iter=5, seed=0)
    b = mfext.factorize(A, 2, optimizer="gd", lr=float(np.float32(0.25)), reg=float(np.float32(0.5)),
                        tol=0.0, max_iter=5, seed=0)
    assert torch.equal(a.W, b.W) and a.loss_history == b.loss_history
    with pytest.raises(TypeError, match="reg must be a number"):
        mfext.factorize(A, 2, reg=np.bool_(False))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("dtype_", [F64, torch.float32], ids=["f64", "f32"])
def test_factorize_leaves_its_inputs_unchanged(optimizer, dtype_, gen):
    """The data, the weights and the initial factors are read, never written."""
    W0 = torch.randn(40, 3, generator=gen, dtype=F64)
    H0 = torch.randn(3, 30, generator=gen, dtype=F64)
    # Near an exact fit, so that the float32 loss is recomputed in float64 too.
    A = (W0 @ H0).to(dtype_)
    A_missing = A.clone()
    A_missing[2, 3] = float("nan")
    weight = (0.5 + torch.rand(40, 30, generator=gen)).to(dtype_)
    init = (W0.to(dtype_), H0.to(dtype_))
    inputs = (A, A_missing, weight, *init)
    copies = [t.clone() for t in inputs]
    for data in (A, A_missing):
        for kwargs in ({}, {"weight": weight}, {"init": init}, {"reg": 0.1}):
            mfext.factorize(data, 3, optimizer=optimizer, seed=0, max_iter=4, log_every=1,
                            lr=1e-3 if optimizer != "als" else None, **kwargs)
            for before, after in zip(copies, inputs):
                torch.testing.assert_close(after, before, rtol=0, atol=0, equal_nan=True)


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


# --------------------------------------------------------------------------- the ALS pieces


def _spd(gen, *batch, k):
    X = torch.randn(*batch, k, 2 * k, generator=gen, dtype=F64)
    return X @ X.transpose(-1, -2)


def test_solve_normal_equations_shared_and_batched(gen):
    k, b = 6, 40
    rhs = torch.randn(b, k, generator=gen, dtype=F64)
    shared = _spd(gen, k=k)
    x = solve_normal_equations(shared, rhs, 0.3)
    expected = torch.linalg.solve(shared + 0.3 * torch.eye(k, dtype=F64), rhs.t()).t()
    assert rel_err(x, expected) < 1e-12
    grams = _spd(gen, b, k=k)
    x = solve_normal_equations(grams, rhs, 0.0)
    expected = torch.linalg.solve(grams, rhs.unsqueeze(-1)).squeeze(-1)
    assert rel_err(x, expected) < 1e-10


def test_solve_normal_equations_singular_gram_is_finite(gen):
    k = 5
    F = torch.randn(3, k, generator=gen, dtype=F64)  # rank 3 < k
    gram = F.t() @ F
    rhs = torch.randn(7, 3, generator=gen, dtype=F64) @ F  # consistent systems
    x = solve_normal_equations(gram, rhs)
    assert bool(torch.isfinite(x).all())
    assert rel_err(x @ gram, rhs) < 1e-6


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "batched"])
def test_solve_normal_equations_ill_conditioned_for_float32(shared, gen):
    """Factors of rank 3 plus 1e-6 noise, and right-hand sides with float32-sized errors:
    with float32's eps the minimum-norm solution, not the solution of the noise."""
    k, r = 6, 3
    F = (torch.randn(50, r, generator=gen, dtype=F64) @ torch.randn(r, k, generator=gen, dtype=F64)
         + 1e-6 * torch.randn(50, k, generator=gen, dtype=F64))
    gram = F.t() @ F  # eigenvalues: three O(100), three O(1e-10)
    rhs = torch.randn(8, 50, generator=gen, dtype=F64) @ F
    rhs = rhs * (1 + 1e-7 * torch.randn(8, k, generator=gen, dtype=F64))  # float32-sized errors
    eps32 = torch.finfo(torch.float32).eps
    batch_gram = gram if shared else gram.expand(8, k, k).clone()
    x = solve_normal_equations(batch_gram, rhs, eps=eps32)
    # The reference: the pseudo-inverse with float32's cutoff.
    expected = rhs @ torch.linalg.pinv(gram, rtol=k * eps32, hermitian=True)
    assert rel_err(x, expected) < 1e-8
    # float64's cutoff solves along the noise directions: far larger entries.
    blown = solve_normal_equations(batch_gram, rhs)
    assert rel_err(blown, torch.linalg.solve(gram, rhs.t()).t()) < 1e-3
    assert float(blown.norm()) > 100 * float(x.norm())


def test_solve_normal_equations_nan_gram_gives_nan_rows(gen):
    grams = _spd(gen, 4, k=3)
    grams[1, 0, 0] = float("nan")
    x = solve_normal_equations(grams, torch.randn(4, 3, generator=gen, dtype=F64))
    assert bool(torch.isnan(x[1]).all()) and bool(torch.isfinite(x[[0, 2, 3]]).all())
    with pytest.raises(ValueError, match="reg must be >= 0"):
        solve_normal_equations(grams, torch.randn(4, 3, dtype=F64), float("nan"))


@pytest.mark.parametrize("dtype_", [F64, torch.float32], ids=["f64", "f32"])
def test_orthonormal_basis_spans_the_factor(dtype_, gen):
    F = (torch.randn(40, 5, generator=gen, dtype=F64) * torch.tensor([1e3, 1.0, 1e-2, 5.0, 1e-3])).to(dtype_)
    Q = orthonormal_basis(F)
    assert Q.dtype == dtype_ and Q.shape == F.shape
    eye = torch.eye(5, dtype=F64)
    tol = 1e-10 if dtype_ == F64 else 1e-5
    assert rel_err(Q.double().t() @ Q.double(), eye) < tol
    # Same column space: projecting F on Q reproduces it.
    Qd, Fd = Q.double(), F.double()
    assert rel_err(Qd @ (Qd.t() @ Fd), Fd) < tol
    # A rank-deficient F (exactly): a zero column for each missing direction.
    G = torch.cat([F[:, :3].double(), F[:, :2].double() @ torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=F64)], 1)
    Qg = orthonormal_basis(G)
    nonzero = Qg.norm(dim=0) > 0.5
    assert int(nonzero.sum()) == 3 and float(Qg[:, ~nonzero].abs().max()) < 1e-6
    assert rel_err(Qg @ (Qg.t() @ G), G) < 1e-10


def test_solve_normal_equations_checks_shapes(gen):
    with pytest.raises(ValueError, match="gram must be"):
        solve_normal_equations(torch.rand(3, 4), torch.rand(2, 3))
    with pytest.raises(ValueError, match="rhs must be"):
        solve_normal_equations(torch.rand(3, 3), torch.rand(2, 4))
    with pytest.raises(ValueError, match="disagree on b"):
        solve_normal_equations(torch.rand(5, 3, 3), torch.rand(2, 3))


def test_nnls_matches_scipy(gen):
    scipy_opt = pytest.importorskip("scipy.optimize")
    k, b, rows = 5, 12, 20
    M = torch.randn(b, rows, k, generator=gen, dtype=F64)
    y = torch.randn(b, rows, generator=gen, dtype=F64)
    gram = M.transpose(1, 2) @ M
    rhs = (M.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)
    x = nnls_coordinate_descent(gram, rhs, torch.zeros(b, k, dtype=F64), sweeps=500)
    for i in range(b):
        expected, _ = scipy_opt.nnls(M[i].numpy(), y[i].numpy())
        np.testing.assert_allclose(x[i].numpy(), expected, atol=1e-8)
    shared = solve_normal_equations(gram[0], rhs, 0.1, nonnegative=True, sweeps=300)
    assert bool((shared >= 0).all())


def test_weighted_gram_matches_einsum(gen):
    weight = torch.rand(9, 13, generator=gen, dtype=F64)
    F = torch.randn(13, 4, generator=gen, dtype=F64)
    expected = torch.einsum("ij,ja,jb->iab", weight, F, F)
    assert rel_err(weighted_gram(weight, F), expected) < 1e-12
