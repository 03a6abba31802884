"""ImplicitALS: the shared recommender contract, exactness of the half-steps against the
full m x n objective in float64, and the model's own behaviour and bad inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from contract import RecommenderContract

import mfext
from mfext import ImplicitALS
from mfext.recommenders import implicit_solvers as isolvers


class _ImplicitContract(RecommenderContract):
    dataset_kind = "implicit"
    solver = "cg"

    def make_model(self, **params):
        defaults = dict(rank=3, solver=self.solver, max_iter=3, random_state=0)
        return ImplicitALS(**{**defaults, **params})


class TestImplicitCg(_ImplicitContract):
    solver = "cg"


class TestImplicitCholesky(_ImplicitContract):
    solver = "cholesky"


# --------------------------------------------------------------------------- references


def _data(m, n, nnz, seed, dup=True, zeros=True):
    """Canonical-order (rows, cols, vals) with duplicates and stored zeros."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, m, (nnz,), generator=g)
    cols = torch.randint(0, n, (nnz,), generator=g)
    vals = torch.randint(1, 6, (nnz,), generator=g).double()
    rows[rows == 0] = 1  # user 0 has no interaction
    if dup:
        rows, cols, vals = torch.cat([rows, rows[:4]]), torch.cat([cols, cols[:4]]), \
            torch.cat([vals, vals[:4]])
    if zeros:
        vals[5] = 0.0
    order = torch.argsort(rows * n + cols, stable=True)
    return rows[order], cols[order], vals[order]


def _dense_CP(rows, cols, vals, m, n, alpha):
    """Full confidence C (m, n) and preference P (m, n) in float64: duplicates summed."""
    R = torch.zeros(m, n, dtype=torch.float64)
    R.index_put_((rows, cols), vals.double(), accumulate=True)
    P = (R > 0).double()
    C = 1 + alpha * R * P
    return C, P


def _dense_objective(C, P, X, Y, reg):
    S = X.double() @ Y.double().t()
    return float((C * (P - S) ** 2).sum() + reg * (X.double().square().sum()
                                                   + Y.double().square().sum()))


def _exact_users(C, P, Y, reg):
    """argmin over X of the dense objective with Y fixed: (m, d)."""
    Yd = Y.double()
    d = Yd.shape[1]
    X = torch.zeros(C.shape[0], d, dtype=torch.float64)
    for u in range(C.shape[0]):
        A = Yd.t() @ (C[u][:, None] * Yd) + reg * torch.eye(d, dtype=torch.float64)
        X[u] = torch.linalg.solve(A, Yd.t() @ (C[u] * P[u]))
    return X


def _problem(m, n, d, alpha, seed):
    rows, cols, vals = _data(m, n, 60, seed)
    r, c, v = isolvers.interactions(rows, cols, vals, n)
    w = isolvers.confidence(v, alpha, "linear", 1.0)
    p = isolvers.ImplicitProblem(r, c, w.contiguous(), m, n)
    C, P = _dense_CP(rows, cols, vals, m, n, alpha)
    Y = torch.randn(n, d, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return p, C, P, Y


@pytest.mark.parametrize("d", [1, 4, 7])
def test_cholesky_half_step_is_the_exact_minimizer(d):
    m, n, reg, alpha = 11, 13, 0.1, 2.0
    p, C, P, Y = _problem(m, n, d, alpha, seed=d)
    X = torch.randn(m, d, dtype=torch.float64)
    isolvers.implicit_half_step(p.users, Y, X, reg, "cholesky", 1)
    ref = _exact_users(C, P, Y, reg)
    torch.testing.assert_close(X, ref, rtol=1e-9, atol=1e-9)
    # and it minimizes: any perturbation raises the dense objective
    base = _dense_objective(C, P, X, Y, reg)
    for s in range(3):
        dX = 1e-3 * torch.randn(m, d, generator=torch.Generator().manual_seed(s),
                                dtype=torch.float64)
        assert _dense_objective(C, P, X + dX, Y, reg) > base


def test_cholesky_item_half_step_is_exact_too():
    m, n, d, reg, alpha = 9, 8, 3, 0.2, 1.5
    p, C, P, Y = _problem(m, n, d, alpha, seed=21)
    X = torch.randn(m, d, dtype=torch.float64)
    H = torch.zeros(n, d, dtype=torch.float64)
    isolvers.implicit_half_step(p.items, X, H, reg, "cholesky", 1)
    torch.testing.assert_close(H, _exact_users(C.t(), P.t(), X, reg), rtol=1e-9, atol=1e-9)


def test_cg_converges_to_the_exact_solve():
    m, n, d, reg, alpha = 10, 12, 5, 0.1, 3.0
    p, C, P, Y = _problem(m, n, d, alpha, seed=4)
    X = torch.zeros(m, d, dtype=torch.float64)
    isolvers.implicit_half_step(p.users, Y, X, reg, "cg", 3 * d)
    torch.testing.assert_close(X, _exact_users(C, P, Y, reg), rtol=1e-8, atol=1e-8)
    few = torch.zeros(m, d, dtype=torch.float64)
    isolvers.implicit_half_step(p.users, Y, few, reg, "cg", 1)
    # one step is not yet the solution, but already lowers the objective
    zero = _dense_objective(C, P, torch.zeros(m, d, dtype=torch.float64), Y, reg)
    assert _dense_objective(C, P, few, Y, reg) < zero
    assert not torch.allclose(few, X, atol=1e-6)


def test_cg_half_step_in_the_eigenbasis_matches_the_full_gram_op():
    """The CPU half-step rotates into Y^T Y's eigenbasis; the plain op on the full
    gram gives the same factors (CG is invariant under the rotation)."""
    m, n, d, reg, alpha = 30, 25, 6, 0.2, 3.0
    p, C, P, Y = _problem(m, n, d, alpha, seed=9)
    X = torch.rand(m, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plain = X.clone()
    gram = Y.t() @ Y + reg * torch.eye(d, dtype=torch.float64)
    mfext.ops.implicit.implicit_als_cg_(plain, p.users.indptr, p.users.indices,
                                        p.users.weight, Y, gram, 3)
    isolvers.implicit_half_step(p.users, Y, X, reg, "cg", 3)
    torch.testing.assert_close(X, plain, rtol=1e-9, atol=1e-10)


def test_cg_half_step_passes_a_non_finite_y_on_to_x():
    """A diverged Y makes X non-finite (for the divergence guard), not an eigh error."""
    m, n, d, reg, alpha = 6, 7, 3, 0.1, 2.0
    p, _, _, Y = _problem(m, n, d, alpha, seed=2)
    Y[0, 0] = float("nan")
    X = torch.zeros(m, d, dtype=torch.float64)
    isolvers.implicit_half_step(p.users, Y, X, reg, "cg", 2)
    assert not bool(torch.isfinite(X).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_objective_matches_the_dense_one(dtype):
    m, n, d, reg, alpha = 8, 10, 4, 0.3, 2.0
    p, C, P, Y = _problem(m, n, d, alpha, seed=9)
    X = torch.randn(m, d, dtype=torch.float64)
    p32 = isolvers.ImplicitProblem(p.rows, p.cols, p.weight.to(dtype), m, n)
    got = isolvers.implicit_objective(p32, X.to(dtype), Y.to(dtype), reg)
    ref = _dense_objective(C, P, X.to(dtype).double(), Y.to(dtype).double(), reg)
    assert math.isclose(got, ref, rel_tol=1e-5 if dtype == torch.float32 else 1e-12)


def test_fit_history_loss_is_the_true_objective_and_cholesky_descends():
    rows, cols, vals = _data(15, 12, 70, seed=2)
    model = ImplicitALS(rank=4, solver="cholesky", max_iter=6, random_state=0, reg=0.1,
                        alpha=2.0, dtype=torch.float64, calculate_training_loss=True)
    model.fit((rows, cols, vals))
    losses = [h["train_loss"] for h in model.history_]
    assert len(losses) == 6
    assert all(b <= a * (1 + 1e-12) for a, b in zip(losses, losses[1:]))
    C, P = _dense_CP(rows, cols, vals, 15, 12, 2.0)
    ref = _dense_objective(C, P, model.user_factors_, model.item_factors_, 0.1)
    assert math.isclose(losses[-1], ref, rel_tol=1e-10)


def test_without_training_loss_the_history_has_none():
    rows, cols, vals = _data(15, 12, 70, seed=2)
    model = ImplicitALS(rank=4, max_iter=2, random_state=0).fit((rows, cols, vals))
    assert [sorted(h) for h in model.history_] == [["epoch", "seconds"]] * 2


def test_duplicates_add_up_and_zeros_are_no_interaction():
    rows, cols, vals = _data(15, 12, 70, seed=3, dup=False, zeros=False)
    shape = (15, 12)
    sp = pytest.importorskip("scipy.sparse")
    base = sp.coo_matrix((vals.numpy(), (rows.numpy(), cols.numpy())), shape=shape)
    half = vals / 2  # every entry split in two halves
    split = sp.coo_matrix((torch.cat([half, half]).numpy(),
                           (torch.cat([rows, rows]).numpy(), torch.cat([cols, cols]).numpy())),
                          shape=shape)
    extra = sp.coo_matrix((np.concatenate([vals.numpy(), [0.0, 0.0]]),
                           (np.concatenate([rows.numpy(), [0, 14]]),
                            np.concatenate([cols.numpy(), [3, 11]]))), shape=shape)
    fits = [ImplicitALS(rank=3, max_iter=3, random_state=1, dtype=torch.float64).fit(x)
            for x in (base, split, extra)]
    for f in fits[1:]:
        torch.testing.assert_close(f.user_factors_, fits[0].user_factors_, rtol=1e-12,
                                   atol=1e-12)
        torch.testing.assert_close(f.item_factors_, fits[0].item_factors_, rtol=1e-12,
                                   atol=1e-12)
    # the zero entries are not seen: recommend may return them
    assert fits[2].user_counts_[0] == 0


def test_log_confidence():
    rows, cols, vals = _data(10, 9, 40, seed=6)
    m1 = ImplicitALS(rank=3, max_iter=2, random_state=0, confidence="log", alpha=5.0,
                     epsilon=0.5, dtype=torch.float64, solver="cholesky").fit((rows, cols, vals))
    r, c, v = isolvers.interactions(rows, cols, vals, 9)
    w = isolvers.confidence(v, 5.0, "log", 0.5)
    torch.testing.assert_close(w, 5.0 * torch.log1p(v / 0.5))
    assert torch.isfinite(m1.user_factors_).all()


def test_fold_in_is_the_exact_user_solve():
    rows, cols, vals = _data(12, 10, 60, seed=8)
    model = ImplicitALS(rank=3, max_iter=4, random_state=0, dtype=torch.float64, reg=0.05,
                        alpha=3.0).fit((rows, cols, vals), )
    keep = rows == 3
    new = (torch.zeros(int(keep.sum()), dtype=torch.long), cols[keep], vals[keep])
    factors, bias = model.fold_in(new)
    C, P = _dense_CP(new[0], new[1], new[2], 1, 10, 3.0)
    ref = _exact_users(C, P, model.item_factors_, 0.05)
    torch.testing.assert_close(factors, ref, rtol=1e-9, atol=1e-9)
    assert torch.equal(bias, torch.zeros(1, dtype=torch.float64))


@pytest.mark.parametrize("params, match", [
    (dict(alpha=-1.0), "alpha"), (dict(cg_steps=0), "cg_steps"), (dict(reg=-0.1), "reg"),
    (dict(solver="lu"), "solver"), (dict(confidence="exp"), "confidence"),
    (dict(epsilon=0.0), "epsilon"), (dict(rank=0), "rank"), (dict(max_iter=0), "max_iter"),
])
def test_bad_parameters_name_themselves(params, match):
    rows, cols, vals = _data(6, 5, 20, seed=0)
    with pytest.raises((ValueError, TypeError), match=match):
        ImplicitALS(**params).fit((rows, cols, vals))


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_negative_or_nan_values_are_refused(bad):
    rows, cols, vals = _data(6, 5, 20, seed=0)
    vals[2] = bad
    model = ImplicitALS(rank=2, max_iter=1, random_state=0)
    with pytest.raises(ValueError, match="X"):
        model.fit((rows, cols, vals))
    assert not hasattr(model, "user_factors_")


def test_exported():
    assert mfext.ImplicitALS is ImplicitALS


def test_bad_validation():
    rows, cols, vals = _data(8, 6, 30, seed=1)
    model = ImplicitALS(rank=2, max_iter=2, random_state=0)
    with pytest.raises(ValueError, match="validation"):
        model.fit((rows, cols, vals), validation=(rows[:3], cols[:3], torch.zeros(3)))
    with pytest.raises(ValueError, match="validation"):
        model.fit((rows, cols, vals), validation=(rows[:3], cols[:3], -torch.ones(3)))
    with pytest.raises(ValueError, match="early_stopping_rounds"):
        model.fit((rows, cols, vals), early_stopping_rounds=2)
    assert not hasattr(model, "user_factors_")


def test_validation_records_ranking_metrics_and_early_stopping_restores_the_best():
    rows, cols, vals = _data(30, 20, 200, seed=4, dup=False, zeros=False)
    perm = torch.randperm(rows.numel(), generator=torch.Generator().manual_seed(0))
    test, train = perm[:40], perm[40:]
    t = (rows[train], cols[train], vals[train])
    v = (rows[test], cols[test], vals[test])
    model = ImplicitALS(rank=3, max_iter=8, random_state=0, dtype=torch.float64)
    model.fit(t, validation=v, early_stopping_rounds=2)
    ndcg = [h["val_ndcg@10"] for h in model.history_]
    assert all(0.0 <= x <= 1.0 for x in ndcg)
    assert model.best_epoch_ == 1 + int(np.argmax(ndcg))
    from mfext import metrics
    got = metrics.ranking_metrics(model, t, v, k=10)["ndcg"]
    assert math.isclose(got, max(ndcg), rel_tol=1e-9)


def test_interactions_do_not_merge_pairs_whose_int32_keys_would_collide():
    """The fit keeps ids in int32; the (row, col) key is int64, or rows 0 and 2**16 with
    2**16 columns would share a key and their interactions would be summed into one."""
    rows = torch.tensor([0, 65536], dtype=torch.int32)
    cols = torch.tensor([3, 3], dtype=torch.int32)
    vals = torch.tensor([1.0, 2.0])
    r, c, v = isolvers.interactions(rows, cols, vals, 65536)
    assert r.tolist() == [0, 65536] and c.tolist() == [3, 3] and v.tolist() == [1.0, 2.0]
    data = mfext.datasets.Ratings(torch.tensor([0, 65536]), torch.tensor([3, 3]),
                                  torch.tensor([1.0, 2.0]), np.arange(65537), np.arange(65536),
                                  65537, 65536)
    model = ImplicitALS(rank=2, max_iter=1, random_state=0).fit(data)
    assert model.user_counts_[[0, 65536]].tolist() == [1, 1]
