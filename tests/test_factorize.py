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
from mfext._als import nnls_coordinate_descent, solve_normal_equations, weighted_gram
from conftest import rel_err

F64 = torch.float64
OPTIMIZERS = ["adam", "gd", "als"]


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
    # The loss the loop reports (from the normal equations) is the true one.
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
    assert fused.loss_history[0] == pytest.approx(auto.loss_history[0], rel=1e-12)


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
    assert fused.loss_history[-1] == pytest.approx(float(expected), rel=1e-9)


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


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_device_follows_the_cpu_run(optimizer, device, dtype, gen):
    A = torch.rand(23, 17, generator=gen, dtype=dtype)
    A[3, 4] = float("nan")
    kwargs = dict(optimizer=optimizer, seed=5, max_iter=30, tol=0, reg=0.01)
    if optimizer == "gd":
        kwargs["lr"] = 0.1
    on_device = mfext.factorize(A.to(device), 3, **kwargs)
    on_cpu = mfext.factorize(A, 3, **kwargs)
    assert on_device.W.device.type == device and on_device.W.dtype == dtype
    tol = 1e-9 if dtype == F64 else 1e-3
    assert rel_err(on_device.W, on_cpu.W) < tol and rel_err(on_device.H, on_cpu.H) < tol


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
    assert kept == pytest.approx(res.loss_history[-1], rel=1e-4)


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
    assert svd.loss_history[-1] == pytest.approx(best, rel=1e-6)


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


def test_float32_als_reaches_the_optimum(gen):
    A = low_rank_plus_noise(gen, 200, 150, 6, 0.01, dtype=torch.float32)
    best = eckart_young_mse(A, 6)
    result = mfext.factorize(A, 6, optimizer="als", seed=0)
    assert result.W.dtype == torch.float32 and result.converged
    assert (mse(result, A) - best) / best < 1e-4


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
