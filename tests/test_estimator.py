"""mfext.MatrixFactorization: API conventions, input forms, errors, top-k, fold-in,
persistence, and the quality bars (synthetic rank-8 data and MovieLens)."""
from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import mfext
from mfext import datasets as ds
from mfext import MatrixFactorization
from conftest import movielens_path

SOLVERS = ["sgd", "als", "adam"]
FAST = {"sgd": dict(max_iter=15), "als": dict(max_iter=4), "adam": dict(max_iter=30)}


@pytest.fixture(scope="module")
def small():
    """60 users x 40 items, 900 distinct ratings from a rank-3 model, split 90/10."""
    r = ds.synthetic_ratings(60, 40, 900, rank=3, noise=0.1, seed=5, biases=True)
    return (r,) + ds.train_test_split(r, 0.1, seed=0)


def _model(solver="sgd", **kw):
    params = dict(rank=4, solver=solver, random_state=0, reg=0.02)
    params.update(FAST[solver])
    params.update(kw)
    return MatrixFactorization(**params)


# --------------------------------------------------------------------------- conventions


def test_params_follow_sklearn_conventions():
    m = MatrixFactorization(rank=8, solver="als", reg=0.1)
    params = m.get_params()
    assert params["rank"] == 8 and params["solver"] == "als" and params["reg"] == 0.1
    assert set(params) >= {"rank", "solver", "reg", "lr", "max_iter", "biases", "nonnegative",
                           "random_state", "device", "dtype", "n_threads", "verbose"}
    assert m.set_params(rank=4, lr=0.5) is m and m.rank == 4 and m.lr == 0.5
    assert MatrixFactorization(**m.get_params()).get_params() == m.get_params()  # clone
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        m.set_params(nope=1)
    assert "rank=4" in repr(m)
    assert not any(k.endswith("_") for k in vars(MatrixFactorization()))  # nothing fitted yet


@pytest.mark.parametrize("solver", SOLVERS)
def test_fit_returns_self_and_sets_fitted_attributes(small, solver):
    r, train, test = small
    m = _model(solver)
    assert m.fit(train, validation=test) is m
    assert m.user_factors_.shape == (60, 4) and m.item_factors_.shape == (40, 4)
    assert m.user_bias_.shape == (60,) and m.item_bias_.shape == (40,)
    assert m.n_users_ == 60 and m.n_items_ == 40 and m.n_iter_ == FAST[solver]["max_iter"]
    assert m.user_ids_ is r.user_ids and m.item_ids_ is r.item_ids
    assert abs(m.global_mean_ - float(train.vals.double().mean())) < 1e-9
    assert int(m.user_counts_.sum()) == train.nnz
    assert len(m.history_) == m.n_iter_
    for i, rec in enumerate(m.history_, 1):
        assert rec["epoch"] == i and rec["seconds"] > 0
        assert all(math.isfinite(rec[k]) for k in ("train_rmse", "val_rmse", "val_mae"))
    assert m.history_[-1]["val_rmse"] < m.history_[0]["val_rmse"]
    assert m.user_factors_.dtype == torch.float32


def test_unfitted_model_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        MatrixFactorization().predict([0], [0])


# --------------------------------------------------------------------------- input forms


def _forms(r: ds.Ratings):
    rows, cols, vals = r.rows.numpy(), r.cols.numpy(), r.vals.double().numpy()
    shape = (r.n_users, r.n_items)
    dense = np.full(shape, np.nan)
    dense[rows, cols] = vals
    coo = sp.coo_matrix((vals, (rows, cols)), shape=shape)
    perm = np.random.default_rng(0).permutation(rows.size)
    t_sparse = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])),
                                       torch.from_numpy(vals), shape)
    return {
        "ratings": r,
        "scipy-coo": coo,
        "scipy-csr": coo.tocsr(),
        "scipy-csc": coo.tocsc(),
        "scipy-csr-array": sp.csr_array(coo),
        "torch-coo": t_sparse,
        "torch-coo-coalesced": t_sparse.coalesce(),
        "torch-csr": t_sparse.to_sparse_csr(),
        "numpy-triple-shuffled": (rows[perm], cols[perm], vals[perm]),
        "tensor-triple": (r.rows, r.cols, r.vals),
        "list-triple": (rows.tolist(), cols.tolist(), vals.tolist()),
        "dense-numpy": dense,
        "dense-tensor": torch.from_numpy(dense),
    }


@pytest.mark.filterwarnings("ignore:Sparse")
@pytest.mark.parametrize("solver", ["sgd", "als"])
def test_every_input_form_gives_the_same_model(small, solver):
    _, train, _ = small
    # every user/item occurs in train, so forms without a stated shape agree on it
    assert int(train.rows.max()) == 59 and int(train.cols.max()) == 39
    ref = _model(solver).fit(train)
    users, items = torch.arange(60).repeat(40), torch.arange(40).repeat_interleave(60)
    expected = ref.predict(users, items)
    for name, X in _forms(train).items():
        got = _model(solver).fit(X).predict(users, items)
        assert torch.equal(got, expected), name


def test_explicit_zeros_are_ratings():
    rows = np.array([0, 0, 1, 1, 2, 2, 3])
    cols = np.array([0, 1, 0, 2, 1, 2, 0])
    vals = np.array([0.0, 5.0, 0.0, 4.0, 0.0, 3.0, 1.0])
    csr = sp.csr_matrix((vals, (rows, cols)), shape=(4, 3))
    assert csr.nnz == 7  # scipy keeps the stored zeros
    dense = np.full((4, 3), np.nan)
    dense[rows, cols] = vals
    t_sparse = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])),
                                       torch.from_numpy(vals), (4, 3)).coalesce()
    assert t_sparse._nnz() == 7
    for X in (csr, dense, (rows, cols, vals), t_sparse):
        m = MatrixFactorization(rank=2, random_state=0, max_iter=3).fit(X)
        assert int(m.user_counts_.sum()) == 7 and m.global_mean_ == pytest.approx(13 / 7)
    # A dense 0 is a rating, NaN is missing:
    dense0 = np.where(np.isnan(dense), 0.0, dense)
    m = MatrixFactorization(rank=2, random_state=0, max_iter=3).fit(dense0)
    assert int(m.user_counts_.sum()) == 12


BAD_INPUTS = {
    "negative id": (lambda: ([0, -1], [0, 1], [1.0, 2.0]), ValueError, r"X rows must hold non-negative ids; X rows\[1\] = -1"),
    "non-integer id": (lambda: ([0, 1.5], [0, 1], [1.0, 2.0]), ValueError, r"X rows\[1\] = 1.5 is not an integer"),
    "NaN rating": (lambda: ([0, 1], [0, 1], [1.0, float("nan")]), ValueError, r"rating 1 is nan"),
    "Inf rating": (lambda: ([0, 1], [0, 1], [float("inf"), 1.0]), ValueError, r"rating 0 is inf"),
    "Inf in dense": (lambda: np.array([[1.0, np.inf]]), ValueError, r"holds Inf"),
    "empty": (lambda: ([], [], []), ValueError, r"X holds no ratings"),
    "all-NaN dense": (lambda: np.full((2, 2), np.nan), ValueError, r"X holds no ratings"),
    "length mismatch": (lambda: ([0, 1], [0], [1.0, 2.0]), ValueError, r"same length, got 2, 1 and 2"),
    "two elements": (lambda: ([0, 1], [0, 1]), TypeError, r"must be \(rows, cols, vals\)"),
    "unsupported type": (lambda: "ratings.csv", TypeError, r"unsupported input of type str"),
    "3-D dense": (lambda: np.zeros((2, 2, 2)), ValueError, r"must be 2-D"),
    "string ids": (lambda: (["a", "b"], [0, 1], [1.0, 2.0]), TypeError, r"must hold numbers"),
    "bool ratings": (lambda: ([0, 1], [0, 1], [True, False]), TypeError, r"real numbers"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs(case):
    make, exc, pattern = BAD_INPUTS[case]
    with pytest.raises(exc) as info:
        MatrixFactorization(max_iter=1).fit(make())
    assert re.search(pattern, str(info.value)), str(info.value)


def test_ids_outside_the_stated_shape():
    r = ds.Ratings(torch.tensor([0, 3]), torch.tensor([0, 0]), torch.tensor([1.0, 2.0]),
                   np.arange(3), np.arange(1), 3, 1)
    with pytest.raises(ValueError, match=r"rows id 3 is out of range for shape \(3, 1\)"):
        MatrixFactorization(max_iter=1).fit(r)


BAD_PARAMS = {
    "solver": (dict(solver="svd"), r"solver must be one of"),
    "rank": (dict(rank=0), r"rank must be an integer >= 1"),
    "reg": (dict(reg=-1.0), r"reg must be finite and >= 0"),
    "lr": (dict(lr=0.0), r"lr must be finite and > 0"),
    "max_iter": (dict(max_iter=2.5), r"max_iter must be an integer"),
    "lr_decay": (dict(lr_decay=1.5), r"lr_decay must be finite"),
    "dtype": (dict(dtype=torch.float16), r"dtype must be torch.float32 or torch.float64"),
    "n_threads": (dict(n_threads=0), r"n_threads must be an integer >= 1"),
    "random_state": (dict(random_state=-1), r"random_state must be an integer"),
    "biases": (dict(biases="yes"), r"biases must be a bool"),
    "device": (dict(device="nodevice"), r"device"),
}


@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_bad_parameters(case, small):
    params, pattern = BAD_PARAMS[case]
    with pytest.raises((ValueError, TypeError)) as info:
        MatrixFactorization(**params).fit(small[1])
    assert re.search(pattern, str(info.value)), str(info.value)


def test_device_errors(small):
    _, train, test = small
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            MatrixFactorization(device="cuda", max_iter=1).fit(train)
    m = _model().fit(train)
    meta = torch.tensor([0, 1], device="meta")
    with pytest.raises(ValueError, match=r"users is on meta but the model is on cpu"):
        m.predict(meta, [0, 1])
    with pytest.raises(ValueError, match="early_stopping_rounds needs a validation set"):
        _model().fit(train, early_stopping_rounds=2)
    with pytest.raises(ValueError, match="early_stopping_rounds must be an integer"):
        _model().fit(train, validation=test, early_stopping_rounds=0)


# --------------------------------------------------------------------------- predictions


@pytest.mark.parametrize("biases", [True, False], ids=["biases", "nobias"])
def test_predict_formula_score_and_fallbacks(small, biases):
    _, train, test = small
    m = _model(biases=biases).fit(train)
    u, i = test.rows, test.cols
    W, H = m.user_factors_.double(), m.item_factors_.double()
    expected = (W[u] * H[i]).sum(1)
    if biases:
        expected += m.global_mean_ + m.user_bias_.double()[u] + m.item_bias_.double()[i]
    else:
        assert m.global_mean_ == 0.0 and not bool(m.user_bias_.any())
    pred = m.predict(u, i)
    assert pred.shape == (test.nnz,) and pred.dtype == torch.float32
    assert torch.allclose(pred.double(), expected, atol=1e-5)
    rmse = float((pred.double() - test.vals.double()).square().mean().sqrt())
    assert m.score(test) == pytest.approx(rmse, rel=1e-6)
    assert m.score((u.numpy(), i.numpy(), test.vals.numpy())) == pytest.approx(rmse, rel=1e-6)
    # unknown user / item / both
    p = m.predict([60, 0, 60], [0, 40, 40])
    mean = m.global_mean_ if biases else m.rating_mean_
    if biases:
        assert p[0].item() == pytest.approx(mean + m.item_bias_[0].item(), abs=1e-5)
        assert p[1].item() == pytest.approx(mean + m.user_bias_[0].item(), abs=1e-5)
    assert p[2].item() == pytest.approx(mean, abs=1e-5)
    with pytest.raises(ValueError, match=r"users\[0\] is unknown to the model"):
        m.predict([60], [0], unknown="raise")
    with pytest.raises(ValueError, match=r"non-negative"):
        m.predict([-1], [0])
    with pytest.raises(ValueError, match=r"same length"):
        m.predict([0, 1], [0])


def test_raw_ids(tmp_path):
    raw_users, raw_items = [100, 7, 100, 55, 7, 55], [9, 9, 3, 3, 1000, 1000]
    (tmp_path / "u.data").write_text("".join(
        f"{u}\t{i}\t{r}\t0\n" for u, i, r in zip(raw_users, raw_items, [5, 3, 4, 1, 2, 2])))
    r = ds.load_movielens(tmp_path / "u.data")
    m = MatrixFactorization(rank=2, random_state=0, max_iter=5).fit(r)
    assert list(m.user_index([7, 55, 100, 8])) == [0, 1, 2, 3]  # 8 unknown -> n_users_
    by_raw = m.predict([100, 55], [3, 9], raw_ids=True)
    by_index = m.predict([2, 1], [0, 1])
    assert torch.equal(by_raw, by_index)
    items, _ = m.recommend([7], n=3, exclude_seen=False, raw_ids=True)
    assert set(items[0].tolist()) == {3, 9, 1000}
    # A validation Ratings with other id maps is matched by raw id.
    other = ds.Ratings(torch.tensor([0]), torch.tensor([0]), torch.tensor([4.0]),
                       np.array([55]), np.array([9]), 1, 1)
    assert m.score(other) == pytest.approx(abs(m.predict([1], [1]).item() - 4.0), rel=1e-6)
    fresh = MatrixFactorization(rank=2, max_iter=2).fit(([0], [0], [1.0]))
    with pytest.raises(ValueError, match="raw user ids need a model fit on a Ratings"):
        fresh.predict([0], [0], raw_ids=True)


# --------------------------------------------------------------------------- top-k


def _brute_scores(m):
    return (m.user_factors_ @ m.item_factors_.t() + m.item_bias_[None, :]
            + (m.global_mean_ + m.user_bias_)[:, None])


def test_recommend_matches_brute_force(small):
    _, train, _ = small
    m = _model().fit(train)
    full = _brute_scores(m)
    users = torch.tensor([3, 0, 59, 3])
    items, scores = m.recommend(users, n=5, exclude_seen=False)
    assert items.shape == (4, 5) and scores.shape == (4, 5)
    top, _ = full[users].topk(5, dim=1)
    assert torch.allclose(scores, top, atol=1e-5)
    assert torch.allclose(full[users[:, None], items], scores, atol=1e-5)
    # exclude_seen leaves out each user's training items and nothing else
    items, scores = m.recommend(users, n=40, exclude_seen=True)
    for row, u in enumerate(users.tolist()):
        seen = set(train.cols[train.rows == u].tolist())
        got = [i for i in items[row].tolist() if i >= 0]
        assert set(got) == set(range(40)) - seen
        assert (items[row] == -1).sum() == len(seen)
        assert torch.isneginf(scores[row][items[row] == -1]).all()
    # a candidate list
    cand = torch.tensor([5, 1, 30])
    items, scores = m.recommend([0], n=10, exclude_seen=False, items=cand)
    assert items.shape == (1, 3) and set(items[0].tolist()) == {5, 1, 30}
    with pytest.raises(ValueError, match="n must be a positive integer"):
        m.recommend([0], n=0)


def test_recommend_chunks_users(small, monkeypatch):
    _, train, _ = small
    m = _model().fit(train)
    whole = m.recommend(torch.arange(60), n=7)
    monkeypatch.setattr(mfext.estimator, "_SCORE_BUDGET", 40 * 7)  # 7 users per chunk
    chunked = m.recommend(torch.arange(60), n=7)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


def test_similar_items_match_brute_force(small):
    _, train, _ = small
    m = _model().fit(train)
    H = m.item_factors_.double()
    unit = H / H.norm(dim=1, keepdim=True)
    sims = unit @ unit.t()
    sims.fill_diagonal_(-math.inf)
    items, got = m.similar_items([0, 17], n=4)
    top, _ = sims[[0, 17]].topk(4, dim=1)
    assert torch.allclose(got.double(), top, atol=1e-5)
    assert 0 not in items[0].tolist() and 17 not in items[1].tolist()
    assert bool((got <= 1 + 1e-6).all())


# --------------------------------------------------------------------------- fold-in


@pytest.mark.parametrize("solver", ["als", "sgd"])
def test_fold_in_is_the_closed_form_user_step(small, solver):
    _, train, _ = small
    m = _model(solver).fit(train)
    rows = torch.tensor([0, 0, 0, 1, 1])
    cols = torch.tensor([3, 9, 20, 3, 31])
    vals = torch.tensor([5.0, 3.0, 4.0, 1.0, 2.0])
    factors, bias = m.fold_in((rows, cols, vals))
    assert factors.shape == (2, 4) and bias.shape == (2,)
    # reference: ridge regression on [h_i, 1] with the solver's count scaling
    exponent = m.als_reg_exponent if solver == "als" else 1.0
    F = torch.cat([m.item_factors_.double(), torch.ones(40, 1, dtype=torch.float64)], 1)
    for u in range(2):
        sel = rows == u
        f = F[cols[sel]]
        t = vals[sel].double() - m.global_mean_ - m.item_bias_.double()[cols[sel]]
        n_u = int(sel.sum())
        ridge = torch.tensor([0.02] * 4 + [0.02 if solver == "als" else 0.01], dtype=torch.float64)
        x = torch.linalg.solve(f.t() @ f + torch.diag(ridge) * n_u ** exponent, f.t() @ t)
        assert torch.allclose(factors[u].double(), x[:4], atol=1e-4)
        assert bias[u].item() == pytest.approx(x[4].item(), abs=1e-4)


def test_fold_in_recovers_held_out_users():
    r = ds.synthetic_ratings(400, 150, 30000, rank=4, noise=0.1, seed=2, biases=True)
    new = r.rows >= 350
    train = r.subset(~new)
    m = MatrixFactorization(rank=4, solver="als", reg=0.01, random_state=0).fit(
        (train.rows, train.cols, train.vals))
    held = r.subset(new)
    first = torch.arange(held.nnz) % 2 == 0  # half of each new user's ratings to fold in
    fold = held.subset(first)
    factors, bias = m.fold_in((fold.rows - 350, fold.cols, fold.vals), append=True)
    assert m.n_users_ == 400 and factors.shape == (50, 4)
    rest = held.subset(~first)
    rmse = float((m.predict(rest.rows, rest.cols) - rest.vals).square().mean().sqrt())
    assert rmse < 0.2  # noise 0.1; an unknown-user fallback scores about 1.0
    items, _ = m.recommend([350], n=150)
    seen = set(fold.cols[fold.rows == 350].tolist())
    assert seen.isdisjoint(items[0].tolist())
    with pytest.raises(ValueError, match="unknown to the model"):
        m.fold_in(([0], [150], [3.0]))


# --------------------------------------------------------------------------- training behaviour


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


# --------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("solver", ["sgd", "als"])
def test_save_load_round_trip(small, solver, tmp_path):
    r, train, test = small
    m = _model(solver).fit(train, validation=test)
    path = tmp_path / "model.pt"
    m.save(path)
    assert os.listdir(tmp_path) == ["model.pt"]  # no temporary file left behind
    torch.load(path, weights_only=True)  # loadable without unpickling code
    m2 = MatrixFactorization.load(path)
    assert m2.get_params() == m.get_params()
    assert m2.history_ == m.history_ and m2.n_iter_ == m.n_iter_
    assert np.array_equal(m2.user_ids_, m.user_ids_) and np.array_equal(m2.item_ids_, m.item_ids_)
    u, i = torch.arange(60).repeat(40), torch.arange(40).repeat_interleave(60)
    assert torch.equal(m2.predict(u, i), m.predict(u, i))
    assert torch.equal(m2.recommend([0, 5], n=6)[0], m.recommend([0, 5], n=6)[0])
    f1, b1 = m.fold_in(([0, 0], [1, 2], [4.0, 2.0]))
    f2, b2 = m2.fold_in(([0, 0], [1, 2], [4.0, 2.0]))
    assert torch.equal(f1, f2) and torch.equal(b1, b2)
    m.save(path)  # overwrite in place
    assert torch.equal(MatrixFactorization.load(path).predict(u, i), m.predict(u, i))


def test_save_load_errors(small, tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        MatrixFactorization().save(tmp_path / "x.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a saved MatrixFactorization"):
        MatrixFactorization.load(tmp_path / "other.pt")
    m = _model().fit(small[1])
    with pytest.raises(OSError):
        m.save(tmp_path / "missing-dir" / "m.pt")


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
