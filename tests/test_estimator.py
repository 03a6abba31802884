"""mfext.MatrixFactorization: API conventions, input forms, errors, top-k, fold-in,
persistence, and the quality bars (synthetic rank-8 data and MovieLens)."""
from __future__ import annotations

import copy
import math
import os
import re
import stat

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
    "negative id": (lambda: ([0, -1], [0, 1], [1.0, 2.0]),
                    ValueError, r"X rows must hold non-negative ids; X rows\[1\] = -1"),
    "non-integer id": (lambda: ([0, 1.5], [0, 1], [1.0, 2.0]),
                       ValueError, r"X rows\[1\] = 1.5 is not an integer"),
    "NaN rating": (lambda: ([0, 1], [0, 1], [1.0, float("nan")]), ValueError, r"rating 1 is nan"),
    "Inf rating": (lambda: ([0, 1], [0, 1], [float("inf"), 1.0]), ValueError, r"rating 0 is inf"),
    "Inf in dense": (lambda: np.array([[1.0, np.inf]]), ValueError, r"holds Inf"),
    "empty": (lambda: ([], [], []), ValueError, r"X holds no ratings"),
    "all-NaN dense": (lambda: np.full((2, 2), np.nan), ValueError, r"X holds no ratings"),
    "length mismatch": (lambda: ([0, 1], [0], [1.0, 2.0]),
                        ValueError, r"same length, got 2, 1 and 2"),
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


BAD_PARAM_TYPES = {"max_iter": TypeError, "biases": TypeError}


@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_bad_parameters(case, small):
    params, pattern = BAD_PARAMS[case]
    with pytest.raises(BAD_PARAM_TYPES.get(case, ValueError)) as info:
        MatrixFactorization(**params).fit(small[1])
    assert re.search("^" + pattern, str(info.value)), str(info.value)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("init_std", [0.0, -0.0, -1e-3, float("nan"), float("inf")],
                         ids=["zero", "negative-zero", "negative", "nan", "inf"])
def test_init_std_must_be_positive(small, solver, init_std):
    """init_std = 0 used to train a biases-only model (the factors never left 0), silently."""
    model = _model(solver, init_std=init_std)
    with pytest.raises(ValueError, match=r"^init_std must be finite and > 0"):
        model.fit(small[1])
    assert not hasattr(model, "user_factors_")


@pytest.mark.parametrize("solver", SOLVERS)
def test_small_init_std_trains_the_factors(small, solver):
    m = _model(solver, init_std=0.01).fit(small[1])
    # rank-3 data: the factors grow far beyond their initial scale (|N(0, 0.01)| < 0.05 here)
    assert float(m.user_factors_.abs().max()) > 0.1 and float(m.item_factors_.abs().max()) > 0.1


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


def _to_form(ids, form, raw_map):
    """Item indices as a candidate list in one input form (raw ids through raw_map)."""
    if form == "list":
        return list(ids)
    if form == "numpy":
        return np.array(ids, dtype=np.int32)
    if form == "tensor":
        return torch.tensor(ids)
    if form == "float-tensor":
        return torch.tensor(ids, dtype=torch.float64)
    return raw_map[np.array(ids)]  # raw ids


@pytest.mark.parametrize("form", ["list", "numpy", "tensor", "float-tensor", "raw"])
def test_recommend_repeated_candidates_count_once(small, form):
    _, train, _ = small
    # raw ids unlike the indices: item index j is raw id 1000 + 7 j
    raw_items = np.arange(40) * 7 + 1000
    data = ds.Ratings(train.rows, train.cols, train.vals, np.arange(60) * 3 + 500, raw_items,
                      60, 40)
    m = _model().fit(data)
    raw = form == "raw"
    full = _brute_scores(m).double()  # float64 reference scores, (users, items)
    for user in (4, 17):
        seen = sorted(set(train.cols[train.rows == user].tolist()))
        unseen = [i for i in range(40) if i not in set(seen)]
        cand = [seen[0], unseen[3], seen[0], unseen[1], unseen[3], seen[1], unseen[0], unseen[1],
                unseen[3]]
        distinct = set(cand)  # 5 items, 2 of them seen
        who = [user * 3 + 500] if raw else [user]
        for exclude_seen in (True, False):
            items, scores = m.recommend(who, n=9, exclude_seen=exclude_seen, raw_ids=raw,
                                        items=_to_form(cand, form, raw_items))
            got = items[0].tolist()
            if raw:
                got = [(i - 1000) // 7 if i != -1 else -1 for i in got]
            assert len(got) == len(distinct)  # n' = the number of distinct candidates
            kept = [i for i in got if i != -1]
            expected = distinct - set(seen) if exclude_seen else distinct
            assert len(kept) == len(set(kept)) and set(kept) == expected
            assert got.count(-1) == len(distinct) - len(expected)
            ref = sorted((full[user, i].item() for i in expected), reverse=True)
            torch.testing.assert_close(scores[0, :len(expected)].double(),
                                       torch.tensor(ref, dtype=torch.float64), rtol=0, atol=1e-5)
            assert torch.isneginf(scores[0, len(expected):]).all()


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


# --------------------------------------------------------------------------- failed refits


def _snapshot(model):
    """Each attribute: (the object itself, a deep copy of its value)."""
    out = {}
    for name, value in vars(model).items():
        if isinstance(value, torch.Tensor):
            copied = value.clone()
        elif isinstance(value, (np.ndarray, list, dict)):
            copied = copy.deepcopy(value)
        else:
            copied = value
        out[name] = (value, copied)
    return out


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.device == b.device
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def _assert_unchanged(model, snap):
    assert set(vars(model)) == set(snap)
    for name, (obj, value) in snap.items():
        now = vars(model)[name]
        assert now is obj, f"{name} was replaced"
        assert _same(now, value), f"{name} was modified in place"


def _failing_refits(other):
    """name: (call, exception, message): each refit raises before training."""
    r2, c2, v2 = other.rows, other.cols, other.vals
    return {
        "validation_nan": (lambda m: m.fit(other, validation=(r2[:3], c2[:3], v2[:3] * math.nan)),
                           ValueError, r"^validation: rating 0 is nan"),
        "validation_negative_id": (lambda m: m.fit(other, validation=(r2 - 1, c2, v2)),
                                   ValueError, r"^validation rows must hold non-negative ids"),
        "validation_unsupported": (lambda m: m.fit(other, validation="test.csv"),
                                   TypeError, r"^validation: unsupported input of type str"),
        "validation_ids_beyond_int64": (lambda m: m.fit(other, validation=(
            torch.tensor([2.0**63]), torch.tensor([0]), torch.tensor([3.0]))),
            ValueError, r"^validation rows\[0\] = .* does not fit in int64"),
        "early_stopping_without_validation": (lambda m: m.fit(other, early_stopping_rounds=2),
                                              ValueError, r"^early_stopping_rounds needs"),
        "early_stopping_zero": (lambda m: m.fit(other, validation=other, early_stopping_rounds=0),
                                ValueError, r"^early_stopping_rounds must be an integer >= 1"),
        "empty_data": (lambda m: m.fit((r2[:0], c2[:0], v2[:0])), ValueError,
                       r"^X holds no ratings"),
        "ratings_overflow": (lambda m: m.fit((r2, c2, v2.double() * 1e300)), ValueError,
                             r"^X: rating 0 = .* overflows float32"),
        "pairs_y_short": (lambda m: m.fit(torch.stack([r2, c2], 1), v2[:-1]), ValueError,
                          r"^y must have one rating per row of X"),
        "distributed_not_bool": (lambda m: m.fit(other, distributed="yes"), TypeError,
                                 r"^distributed must be None, True or False, got 'yes'"),
        "distributed_without_group": (lambda m: m.fit(other, distributed=True), ValueError,
                                      r"^distributed=True needs an initialized"),
    }


@pytest.mark.parametrize("solver", SOLVERS)
def test_failed_refit_leaves_the_model_exactly_as_it_was(small, solver, tmp_path, monkeypatch):
    r, train, test = small
    m = _model(solver).fit(train, validation=test)
    m.recommend([0], n=3)  # fills the lazy caches too
    m.predict([60], [0])
    snap = _snapshot(m)
    before_top = m.recommend(torch.arange(60), n=5)
    # other data of another shape, and other id maps
    other = ds.synthetic_ratings(25, 70, 600, rank=2, seed=9, biases=True)
    other = ds.Ratings(other.rows, other.cols, other.vals, np.arange(25) + 900,
                       np.arange(70) + 4000, 25, 70)
    for name, (call, exc, match) in _failing_refits(other).items():
        with pytest.raises(exc, match=match):
            call(m)
        _assert_unchanged(m, snap)
    # a bad parameter: set, refused by fit, set back
    m.set_params(rank=0)
    with pytest.raises(ValueError, match="^rank"):
        m.fit(other)
    m.set_params(rank=4)
    _assert_unchanged(m, snap)
    # an error, or an interrupt, in the middle of training
    epochs = {"n": 0}
    real = {"sgd": mfext._cf_solvers.SgdSolver, "als": mfext._cf_solvers.AlsSolver,
            "adam": mfext._cf_solvers.AdamSolver}[solver]
    real_epoch = real.epoch

    for exc in (RuntimeError("kernel failure"), KeyboardInterrupt()):
        epochs["n"] = 0

        def failing_epoch(self, t, exc=exc):
            epochs["n"] += 1
            if epochs["n"] == 2:
                raise exc
            return real_epoch(self, t)

        monkeypatch.setattr(real, "epoch", failing_epoch)
        with pytest.raises(type(exc)):
            m.fit(other, validation=other)
        monkeypatch.setattr(real, "epoch", real_epoch)
        assert epochs["n"] == 2
        _assert_unchanged(m, snap)
    # and the model still works: recommend, save, load
    after_top = m.recommend(torch.arange(60), n=5)
    assert torch.equal(after_top[0], before_top[0]) and torch.equal(after_top[1], before_top[1])
    m.save(tmp_path / "m.pt")
    back = MatrixFactorization.load(tmp_path / "m.pt")
    u, i = torch.arange(60).repeat(40), torch.arange(40).repeat_interleave(60)
    assert torch.equal(back.predict(u, i), m.predict(u, i))
    assert np.array_equal(back.user_ids_, r.user_ids) and back.n_users_ == 60


def test_failed_first_fit_leaves_no_attributes():
    m = _model()
    before = dict(vars(m))
    with pytest.raises(ValueError, match="^validation"):
        m.fit(([0, 1], [0, 1], [1.0, 2.0]), validation=([0], [0], [math.nan]))
    assert vars(m) == before


def test_refit_replaces_the_fit_and_keeps_other_attributes(small):
    _, train, test = small
    m = _model("als").fit(train, validation=test, early_stopping_rounds=2)
    m.note = "set by the caller"  # e.g. scikit-learn's callback context
    other = ds.synthetic_ratings(25, 70, 600, rank=2, seed=9)
    m.fit((other.rows, other.cols, other.vals))
    fresh = _model("als").fit((other.rows, other.cols, other.vals))
    assert m.note == "set by the caller"
    assert set(vars(m)) == set(vars(fresh)) | {"note"}
    for name, value in vars(fresh).items():
        if name in ("history_", "_comm"):
            continue  # timings; a communicator object per fit
        assert _same(getattr(m, name), value), name
    assert m.best_epoch_ is None and m.user_ids_ is None and len(m.history_) == 4


def test_refit_that_diverges_keeps_a_whole_model(small, tmp_path):
    """Divergence commits the new fit as of its last finite epoch, consistent and savable."""
    _, train, _ = small
    m = _model("adam").fit(train)
    other = ds.synthetic_ratings(25, 70, 600, rank=2, seed=9, biases=True)
    with pytest.raises(FloatingPointError, match=r"diverged in epoch (\d+)") as info:
        m.set_params(lr=1e12, reg=0.0).fit(other)
    epoch = int(re.search(r"diverged in epoch (\d+)", str(info.value)).group(1))
    assert epoch >= 2
    ref = _model("adam", lr=1e12, reg=0.0, max_iter=epoch - 1).fit(other)
    assert (m.n_users_, m.n_items_, m.n_iter_) == (25, 70, epoch - 1)
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_", "user_counts_",
                 "_seen_indptr", "_seen_items"):
        assert torch.equal(getattr(m, name), getattr(ref, name)), name
    assert m.global_mean_ == ref.global_mean_ and len(m.history_) == epoch - 1
    assert m.user_ids_ is other.user_ids
    m.save(tmp_path / "d.pt")
    back = MatrixFactorization.load(tmp_path / "d.pt")
    users = torch.arange(25)
    assert torch.equal(back.recommend(users, n=4)[0], m.recommend(users, n=4)[0])


# --------------------------------------------------------------------------- file modes


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027, 0o002], ids=oct)
def test_save_creates_files_with_the_umask_mode(small, tmp_path, umask):
    m = _model(max_iter=1).fit(small[1])
    old = os.umask(umask)
    try:
        m.save(tmp_path / "model.pt")
        with open(tmp_path / "reference", "w"):  # what any new file of this process gets
            pass
    finally:
        os.umask(old)
    assert _mode(tmp_path / "model.pt") == _mode(tmp_path / "reference") == 0o666 & ~umask
    assert sorted(os.listdir(tmp_path)) == ["model.pt", "reference"]  # no temporary file left


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mode", [0o644, 0o600, 0o664, 0o640, 0o444], ids=oct)
def test_save_keeps_the_mode_of_a_replaced_file(small, tmp_path, mode):
    m = _model(max_iter=1).fit(small[1])
    path = tmp_path / "model.pt"
    path.write_bytes(b"an older model")
    os.chmod(path, mode)
    old = os.umask(0o077)  # a strict umask must not narrow the replaced file's mode
    try:
        m.save(path)
    finally:
        os.umask(old)
    assert _mode(path) == mode
    assert torch.equal(MatrixFactorization.load(path).user_factors_, m.user_factors_)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_save_umask_without_proc(small, tmp_path, monkeypatch):
    """Where /proc/self/status is unreadable the umask is read with os.umask (and restored)."""
    m = _model(max_iter=1).fit(small[1])

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(mfext.estimator, "open", no_proc, raising=False)
    old = os.umask(0o037)
    try:
        m.save(tmp_path / "model.pt")
        assert os.umask(0o037) == 0o037  # the umask is back where it was
    finally:
        os.umask(old)
    assert _mode(tmp_path / "model.pt") == 0o640


# --------------------------------------------------------------------------- load elsewhere


def _saved_on(path, out, device: str):
    """A copy of the saved model at ``path`` that says it was saved on ``device``."""
    state = torch.load(path, weights_only=True)
    state["device"] = device
    state["params"]["device"] = device
    torch.save(state, out)
    return out


def test_load_a_model_saved_on_an_unavailable_gpu(small, tmp_path, monkeypatch):
    m = _model("als").fit(small[1])
    m.save(tmp_path / "cpu.pt")
    path = _saved_on(tmp_path / "cpu.pt", tmp_path / "gpu.pt", "cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # any machine: no CUDA
    with pytest.raises(ValueError, match=r"gpu\.pt was saved on cuda:0, which is unavailable here: "
                                         r"CUDA is not available.*map_location='cpu'"):
        MatrixFactorization.load(path)
    with pytest.raises(ValueError,
                       match=r"^map_location='cuda:0' cannot hold the model: CUDA is not"):
        MatrixFactorization.load(path, map_location="cuda:0")
    u, i = torch.arange(60).repeat(40), torch.arange(40).repeat_interleave(60)
    for location in ("cpu", torch.device("cpu")):
        back = MatrixFactorization.load(path, map_location=location)
        assert back.user_factors_.device.type == "cpu"
        assert back.device == "cuda:0"  # the parameter stays as saved; a refit would say so
        assert torch.equal(back.predict(u, i), m.predict(u, i))
        assert torch.equal(back.recommend([0, 7], n=5)[0], m.recommend([0, 7], n=5)[0])
        f1, b1 = back.fold_in(([0, 0], [1, 2], [4.0, 2.0]))
        f2, b2 = m.fold_in(([0, 0], [1, 2], [4.0, 2.0]))
        assert torch.equal(f1, f2) and torch.equal(b1, b2)


def test_load_a_model_saved_on_a_missing_gpu_index(small, tmp_path, monkeypatch):
    m = _model("als", max_iter=1).fit(small[1])
    m.save(tmp_path / "cpu.pt")
    path = _saved_on(tmp_path / "cpu.pt", tmp_path / "gpu7.pt", "cuda:7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"saved on cuda:7, which is unavailable here: this "
                                         r"machine has 2 CUDA device\(s\).*map_location='cpu'"):
        MatrixFactorization.load(path)
    back = MatrixFactorization.load(path, map_location="cpu")
    assert torch.equal(back.item_factors_, m.item_factors_)


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


@pytest.mark.parametrize("rank", [30_000, 100_000])
def test_als_says_before_it_starts_when_its_systems_cannot_fit_in_memory(rank, monkeypatch):
    # A (rows, rank+1, rank+1) batch of ALS systems beyond the machine's memory: a
    # ValueError naming the rank before any allocation, not an abort in the allocator.
    import mfext.estimator as est
    monkeypatch.setattr(est, "_device_memory", lambda device: 8 * 2**30)
    rows, cols = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 0])
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0])
    model = mfext.MatrixFactorization(rank=rank, solver="als", random_state=0)
    with pytest.raises(ValueError, match=rf"^rank: ALS at rank {rank} holds 4 systems"):
        model.fit((rows, cols, vals))
    assert not hasattr(model, "user_factors_")
    # The same rank trains no ALS systems with SGD: only the factors count.
    small = mfext.MatrixFactorization(rank=rank, solver="sgd", max_iter=1, random_state=0)
    small.fit((rows, cols, vals))
    assert small.user_factors_.shape == (4, rank)


def test_random_state_beyond_64_bits_is_named():
    rows, cols = torch.tensor([0, 1]), torch.tensor([0, 1])
    model = mfext.MatrixFactorization(random_state=2**64)
    with pytest.raises(ValueError, match=r"^random_state must be below 2\*\*64"):
        model.fit((rows, cols, torch.tensor([1.0, 2.0])))


def test_load_of_a_foreign_pickle_never_advises_weights_only_false(tmp_path):
    path = tmp_path / "foreign.pt"
    import pickle
    path.write_bytes(pickle.dumps(np.random.RandomState(0)))
    with pytest.raises(ValueError, match="is not a readable MatrixFactorization file") as info:
        mfext.MatrixFactorization.load(path)
    assert "weights_only" not in str(info.value)
