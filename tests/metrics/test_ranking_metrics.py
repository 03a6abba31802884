"""mfext.metrics: ranking metrics at k against a plain float64 reference and against implicit.

The reference below loops over users and sorts every candidate item; it states
implicit 0.7.3's definitions (``implicit.evaluation.ranking_metrics_at_k``) in
Python, plus recall and the hit rate, with ties broken by the lower item index.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import mfext
from mfext import datasets as ds
from mfext import metrics
from mfext.recommenders import serving
from helpers import FORMS, as_form

KEYS = ("precision", "recall", "ndcg", "map", "auc", "hit_rate")
DATA = Path(os.environ.get("MFEXT_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


# --------------------------------------------------------------------------- reference


def reference_metrics(scores: np.ndarray, train: list, test: list, k: int) -> dict:
    """Metrics at k from dense float64 scores (m, n) and (user, item) pair lists."""
    m, n = scores.shape
    train_sets = [set() for _ in range(m)]
    test_sets = [set() for _ in range(m)]
    for u, i in train:
        train_sets[u].add(i)
    for u, i in test:
        test_sets[u].add(i)
    relevant = pr_div = 0.0
    total = recall = ndcg = mean_ap = hits_any = auc_sum = auc_users = 0.0
    for u in range(m):
        likes = test_sets[u]
        if not likes:
            continue
        cand = np.array([i for i in range(n) if i not in train_sets[u]], dtype=np.int64)
        order = cand[np.lexsort((cand, -scores[u, cand]))] if cand.size else cand
        top = order[:k]
        hit = miss = 0
        ap = dcg = auc_num = 0.0
        for i, item in enumerate(top):
            if item in likes:
                hit += 1
                ap += hit / (i + 1)
                dcg += 1.0 / math.log2(i + 2)
            else:
                miss += 1
                auc_num += hit
        npos, nneg = len(likes), n - len(likes)
        idcg = sum(1.0 / math.log2(i + 2) for i in range(min(k, npos)))
        relevant += hit
        pr_div += min(k, npos)
        recall += hit / npos
        ndcg += dcg / idcg
        mean_ap += ap / min(k, npos)
        hits_any += hit > 0
        if nneg > 0:
            auc_sum += (auc_num + (hit + npos) / 2.0 * (nneg - miss)) / (npos * nneg)
            auc_users += 1
        total += 1
    return {"precision": relevant / pr_div, "recall": recall / total, "ndcg": ndcg / total,
            "map": mean_ap / total, "auc": auc_sum / auc_users if auc_users else math.nan,
            "hit_rate": hits_any / total}


def assert_close(got: dict, ref: dict, tol: float = 1e-12) -> None:
    assert set(got) == set(KEYS)
    for key in KEYS:
        if math.isnan(ref[key]):
            assert math.isnan(got[key]), key
        else:
            assert abs(got[key] - ref[key]) <= tol, (key, got[key], ref[key])


def pairs(mask: np.ndarray) -> list:
    return [tuple(p) for p in np.argwhere(mask).tolist()]


def triple(mask: np.ndarray, value: float = 1.0):
    r, c = np.nonzero(mask)
    return (torch.from_numpy(r), torch.from_numpy(c), torch.full((r.size,), value))


def awkward(seed: int, m: int = 40, n: int = 25):
    """Random train/test masks (m, n) with the awkward users the module docstring names."""
    g = np.random.default_rng(seed)
    train = g.random((m, n)) < 0.3
    test = (g.random((m, n)) < 0.15) & ~train
    test[0:4] = False                                  # no test item: skipped
    train[4], test[4] = True, False                    # training covers all but two items
    train[4, [2, 7]], test[4, [2, 7]] = False, True
    train[5], test[5, [0, 3]] = True, True             # nothing left to rank; tests in train
    train[6], test[6] = False, True                    # every item a test item: no AUC
    train[7, 4] = test[7, 4] = True                    # a test item the user also trained on
    train[8], test[8] = False, False                   # no training at all
    test[8, 1] = True
    return train, test


# --------------------------------------------------------------------------- the reference


@pytest.mark.parametrize("k", [1, 3, 10, 25, 40])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_on_awkward_data(seed, k):
    train, test = awkward(seed)
    g = np.random.default_rng(100 + seed)
    W, H = g.normal(size=(40, 4)), g.normal(size=(25, 4))
    got = metrics.ranking_metrics((torch.from_numpy(W), torch.from_numpy(H)), triple(train),
                                  triple(test), k=k)
    assert_close(got, reference_metrics(W @ H.T, pairs(train), pairs(test), k))


def test_ties_go_to_the_lower_item_index():
    train, test = awkward(3)
    g = np.random.default_rng(7)
    # Factors in {-1, 0, 1}, rank 2, and some all-zero users: scores tie everywhere.
    W = g.integers(-1, 2, size=(40, 2)).astype(np.float64)
    H = g.integers(-1, 2, size=(25, 2)).astype(np.float64)
    W[10:15] = 0.0
    for k in (1, 4, 10):
        got = metrics.ranking_metrics((torch.from_numpy(W), torch.from_numpy(H)), triple(train),
                                      triple(test), k=k)
        assert_close(got, reference_metrics(W @ H.T, pairs(train), pairs(test), k))


def test_users_without_test_items_are_skipped():
    train, test = awkward(4)
    g = np.random.default_rng(2)
    W, H = torch.from_numpy(g.normal(size=(40, 3))), torch.from_numpy(g.normal(size=(25, 3)))
    full = metrics.ranking_metrics((W, H), triple(train), triple(test), k=5)
    # Dropping the skipped users (rows 0..3) from everything changes nothing.
    kept = np.arange(4, 40)
    sub = metrics.ranking_metrics((W[kept], H), triple(train[kept]), triple(test[kept]), k=5)
    assert_close(full, sub)


def test_duplicates_and_explicit_zeros():
    """A repeated test entry counts once; a stored 0 is an interaction, in train and test."""
    train, test = awkward(5)
    g = np.random.default_rng(5)
    W, H = g.normal(size=(40, 3)), g.normal(size=(25, 3))
    tr, te = triple(train, 0.0), triple(test, 0.0)
    te_dup = tuple(torch.cat([t, t[:30]]) for t in te)
    got = metrics.ranking_metrics((torch.from_numpy(W), torch.from_numpy(H)), tr, te_dup, k=5)
    assert_close(got, reference_metrics(W @ H.T, pairs(train), pairs(test), 5))


def test_empty_train_ranks_every_item():
    _, test = awkward(6)
    g = np.random.default_rng(6)
    W, H = g.normal(size=(40, 3)), g.normal(size=(25, 3))
    empty = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0))
    got = metrics.ranking_metrics((torch.from_numpy(W), torch.from_numpy(H)), empty,
                                  triple(test), k=5)
    assert_close(got, reference_metrics(W @ H.T, [], pairs(test), 5))


def test_auc_without_negatives_is_nan():
    """A user whose test set is every item has no AUC; with no other user, auc is NaN."""
    W, H = torch.ones(2, 1, dtype=torch.float64), torch.arange(4.0, dtype=torch.float64)[:, None]
    test = (torch.tensor([1, 1, 1, 1]), torch.tensor([0, 1, 2, 3]), torch.ones(4))
    empty = (torch.zeros(0, dtype=torch.int64),) * 2 + (torch.zeros(0),)
    got = metrics.ranking_metrics((W, H), empty, test, k=2)
    assert math.isnan(got["auc"])
    assert got["precision"] == 1.0 and got["ndcg"] == 1.0 and got["recall"] == 0.5


def test_blocks_do_not_change_the_result(monkeypatch):
    train, test = awkward(7)
    g = np.random.default_rng(8)
    fac = (torch.from_numpy(g.normal(size=(40, 3))), torch.from_numpy(g.normal(size=(25, 3))))
    whole = metrics.ranking_metrics(fac, triple(train), triple(test), k=6)
    monkeypatch.setattr(serving, "SCORE_BUDGET", 3 * 25)  # 3 users per block
    assert_close(metrics.ranking_metrics(fac, triple(train), triple(test), k=6), whole)


def test_single_metric_functions():
    train, test = awkward(9)
    g = np.random.default_rng(9)
    fac = (torch.from_numpy(g.normal(size=(40, 3))), torch.from_numpy(g.normal(size=(25, 3))))
    args = (fac, triple(train), triple(test))
    every = metrics.ranking_metrics(*args, k=4)
    singles = {"precision": metrics.precision_at_k, "recall": metrics.recall_at_k,
               "ndcg": metrics.ndcg_at_k, "map": metrics.map_at_k, "auc": metrics.auc,
               "hit_rate": metrics.hit_rate}
    assert set(singles) == set(metrics.METRICS)
    for key, fn in singles.items():
        assert fn(*args, k=4) == every[key], key


# --------------------------------------------------------------------------- models and forms


@pytest.fixture(scope="module")
def fitted():
    """A MatrixFactorization with biases on synthetic ratings, its train and test splits."""
    r = ds.synthetic_ratings(80, 50, 1600, rank=3, seed=2, biases=True, dtype=torch.float64)
    train, test = ds.train_test_split(r, mode="leave_k_out", k=3, seed=0)
    model = mfext.MatrixFactorization(rank=4, max_iter=5, dtype=torch.float64, random_state=0)
    model.fit(train)
    # A few synthetic ratings are negative, which ranking metrics refuse: every
    # rating is an interaction here (the same entries, as 1).
    return model, ds.to_implicit(train, threshold=None), ds.to_implicit(test, threshold=None)


def test_model_ranks_as_recommend_does(fitted):
    model, train, test = fitted
    got = metrics.ranking_metrics(model, train, test, k=7)
    # recommend's own top 7 (it leaves out the fit data, which is `train`) as the ranking.
    users = torch.arange(model.n_users_)
    items, _ = model.recommend(users, n=7)
    test_sets = [set() for _ in range(model.n_users_)]
    for u, i in zip(test.rows.tolist(), test.cols.tolist()):
        test_sets[u].add(i)
    hits = [sum(int(i) in test_sets[u] for i in items[u]) for u in range(model.n_users_)]
    evaluated = [u for u in range(model.n_users_) if test_sets[u]]
    assert got["precision"] == pytest.approx(
        sum(hits[u] for u in evaluated) / sum(min(7, len(test_sets[u])) for u in evaluated),
        abs=1e-12)
    assert got["hit_rate"] == pytest.approx(
        sum(hits[u] > 0 for u in evaluated) / len(evaluated), abs=1e-12)
    # And against the reference on the model's own scores (mu + b_u + b_i + w_u . h_i).
    W, H = model.user_factors_.numpy(), model.item_factors_.numpy()
    scores = (model.global_mean_ + model.user_bias_.numpy()[:, None]
              + model.item_bias_.numpy()[None, :] + W @ H.T)
    tr = list(zip(train.rows.tolist(), train.cols.tolist()))
    te = list(zip(test.rows.tolist(), test.cols.tolist()))
    assert_close(got, reference_metrics(scores, tr, te, 7))




@pytest.mark.parametrize("form", FORMS)
def test_every_input_form_gives_the_same_result(fitted, form):
    model, train, test = fitted
    ref = metrics.ranking_metrics(model, train, test, k=5)
    got = metrics.ranking_metrics(model, as_form(train, form), as_form(test, form), k=5)
    assert_close(got, ref, tol=0.0)


def test_ratings_with_other_id_maps_are_matched_by_raw_id():
    r = ds.synthetic_ratings(30, 20, 300, rank=2, seed=4, dtype=torch.float64)
    r = ds.Ratings(r.rows, r.cols, r.vals.abs(), np.array([f"u{i:02d}" for i in range(30)]),
                   np.arange(20) * 3 + 100, 30, 20)
    train, test = ds.train_test_split(r, mode="leave_k_out", k=2, seed=1)
    model = mfext.MatrixFactorization(rank=3, max_iter=3, dtype=torch.float64,
                                      random_state=0).fit(train)
    ref = metrics.ranking_metrics(model, train, test, k=5)
    # The test users and items renumbered among themselves, with their own raw ids.
    users, rows = np.unique(test.rows.numpy(), return_inverse=True)
    items, cols = np.unique(test.cols.numpy(), return_inverse=True)
    own = ds.Ratings(torch.from_numpy(rows.astype(np.int64)),
                     torch.from_numpy(cols.astype(np.int64)), test.vals, r.user_ids[users],
                     r.item_ids[items], users.size, items.size)
    assert_close(metrics.ranking_metrics(model, train, own, k=5), ref, tol=0.0)
    stranger = ds.Ratings(torch.tensor([0]), torch.tensor([0]), torch.tensor([1.0]),
                          np.array(["nobody"]), np.array([100]), 1, 1)
    with pytest.raises(ValueError, match=r"^test: 1 entries have a user or item raw id unknown"):
        metrics.ranking_metrics(model, train, stranger, k=5)


# --------------------------------------------------------------------------- implicit


def _implicit_model(W: np.ndarray, H: np.ndarray):
    als = pytest.importorskip("implicit.cpu.als")
    with warnings.catch_warnings():  # implicit's note on OpenBLAS threads
        warnings.simplefilter("ignore")
        model = als.AlternatingLeastSquares(factors=W.shape[1], dtype=np.float64, random_state=0)
    model.user_factors = np.ascontiguousarray(W, dtype=np.float64)
    model.item_factors = np.ascontiguousarray(H, dtype=np.float64)
    return model


@pytest.mark.parametrize("K", [10, 1, 5])
def test_equals_implicit_on_the_same_factors(K):
    evaluation = pytest.importorskip("implicit.evaluation")
    sp = pytest.importorskip("scipy.sparse")
    m, n, r = 300, 120, 8
    g = np.random.default_rng(11)
    W, H = g.normal(size=(m, r)), g.normal(size=(n, r))
    train = g.random((m, n)) < 0.25
    test = (g.random((m, n)) < 0.06) & ~train
    train[3, 7] = test[3, 7] = True                   # a test item also in training
    test[:10] = False                                 # users without test items
    # Explicit zeros are stored entries: interactions to both libraries.
    tv = np.where(g.random(int(train.sum())) < 0.2, 0.0, 1.0)
    ev = np.where(g.random(int(test.sum())) < 0.2, 0.0, 1.0)
    tr = sp.csr_matrix((tv, np.nonzero(train)), shape=(m, n))
    te = sp.csr_matrix((ev, np.nonzero(test)), shape=(m, n))
    assert tr.nnz == train.sum() and te.nnz == test.sum() and (te.data == 0).any()
    ref = evaluation.ranking_metrics_at_k(_implicit_model(W, H), tr, te, K=K,
                                          show_progress=False)
    got = metrics.ranking_metrics((torch.from_numpy(W), torch.from_numpy(H)), tr, te, k=K)
    for key in ("precision", "map", "ndcg", "auc"):
        assert abs(got[key] - ref[key]) <= 1e-6, (key, got[key], ref[key])


def test_equals_implicit_for_a_model_with_biases(fitted):
    """A biased model ranks as implicit does on factors [w_u, 1], [h_i, b_i]."""
    evaluation = pytest.importorskip("implicit.evaluation")
    sp = pytest.importorskip("scipy.sparse")
    model, train, test = fitted
    W = torch.cat([model.user_factors_, torch.ones(model.n_users_, 1, dtype=torch.float64)], 1)
    H = torch.cat([model.item_factors_, model.item_bias_[:, None]], 1)

    def csr(r):
        return sp.csr_matrix((np.ones(r.nnz), (r.rows.numpy(), r.cols.numpy())), shape=r.shape)

    ref = evaluation.ranking_metrics_at_k(_implicit_model(W.numpy(), H.numpy()), csr(train),
                                          csr(test), K=10, show_progress=False)
    got = metrics.ranking_metrics(model, train, test, k=10)
    for key in ("precision", "map", "ndcg", "auc"):
        assert abs(got[key] - ref[key]) <= 1e-6, (key, got[key], ref[key])


@pytest.mark.data
def test_equals_implicit_on_movielens_100k():
    evaluation = pytest.importorskip("implicit.evaluation")
    sp = pytest.importorskip("scipy.sparse")
    path = DATA / "ml-100k" / "u.data"
    if not path.is_file():
        pytest.skip(f"MovieLens 100K not found at {path}")
    likes = ds.to_implicit(ds.load_movielens(path, dtype=torch.float64), threshold=4.0)
    train, test = ds.train_test_split(likes, mode="per_user", test_size=0.2, seed=0)
    model = mfext.MatrixFactorization(rank=16, max_iter=10, biases=False, dtype=torch.float64,
                                      random_state=0).fit(train)

    def csr(r):
        return sp.csr_matrix((r.vals.numpy(), (r.rows.numpy(), r.cols.numpy())), shape=r.shape)

    ref = evaluation.ranking_metrics_at_k(
        _implicit_model(model.user_factors_.numpy(), model.item_factors_.numpy()), csr(train),
        csr(test), K=10, show_progress=False)
    got = metrics.ranking_metrics(model, train, test, k=10)
    for key in ("precision", "map", "ndcg", "auc"):
        assert abs(got[key] - ref[key]) <= 1e-6, (key, got[key], ref[key])


# --------------------------------------------------------------------------- bad input


def _bad_cases(fitted):
    model, train, test = fitted
    fac = (model.user_factors_, model.item_factors_)
    sp = pytest.importorskip("scipy.sparse")
    wrong_shape = sp.csr_matrix((np.ones(1), ([0], [0])), shape=(model.n_users_, 3))
    neg = (test.rows, test.cols, -test.vals)
    far = (torch.tensor([0]), torch.tensor([model.n_items_]), torch.tensor([1.0]))
    nothing = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
               torch.zeros(0))
    return [
        (lambda: metrics.ranking_metrics(model, train, test, k=0), ValueError,
         r"^k must be an integer >= 1, got 0"),
        (lambda: metrics.ranking_metrics(model, train, test, k=-2), ValueError, r"^k must be"),
        (lambda: metrics.ranking_metrics(model, train, test, k=2.0), TypeError,
         r"^k must be an integer >= 1, got 2.0"),
        (lambda: metrics.ranking_metrics(model, train, test, k=True), TypeError, r"^k must be"),
        (lambda: metrics.ranking_metrics(model, train, test, k="10"), TypeError, r"^k must be"),
        (lambda: metrics.precision_at_k(model, wrong_shape, test), ValueError,
         r"^train has shape \(80, 3\) but the model has 80 users and 50 items"),
        (lambda: metrics.ranking_metrics(model, train, wrong_shape), ValueError,
         r"^test has shape"),
        (lambda: metrics.ranking_metrics(model, train, neg), ValueError,
         r"^test: entry 0 has value -.*interactions must be >= 0"),
        (lambda: metrics.ranking_metrics(fac, neg, test), ValueError, r"^train: entry 0"),
        (lambda: metrics.ranking_metrics(fac, train, far), ValueError,
         r"^test: ids up to \(0, 50\) are out of range"),
        (lambda: metrics.ranking_metrics(model, train, nothing), ValueError,
         r"^test holds no interactions"),
        (lambda: metrics.ranking_metrics(model, "train", test), TypeError,
         r"^train: unsupported input of type str"),
        (lambda: metrics.ranking_metrics(model, train, (test.rows, test.cols)), TypeError,
         r"^test: a tuple or list input must be \(rows, cols, vals\)"),
        (lambda: metrics.ranking_metrics(object(), train, test), TypeError,
         r"^model must be a fitted mfext recommender"),
        (lambda: metrics.ranking_metrics(fac[:1] * 3, train, test), TypeError,
         r"^model must be .* got a sequence of 3"),
        (lambda: metrics.ranking_metrics((fac[0], fac[1][:, :2]), train, test), ValueError,
         r"must have the same rank"),
        (lambda: metrics.ranking_metrics((fac[0].long(), fac[1]), train, test), TypeError,
         r"^user_factors must be floating point"),
        (lambda: metrics.ranking_metrics((fac[0][0], fac[1]), train, test), ValueError,
         r"^user_factors must be 2-D"),
        (lambda: metrics.ranking_metrics((fac[0], fac[1] * math.nan), train, test), ValueError,
         r"^item_factors holds NaN or Inf"),
        (lambda: metrics.ranking_metrics(mfext.MatrixFactorization(), train, test), RuntimeError,
         r"not fitted yet"),
    ]


def test_bad_input_names_the_argument(fitted):
    cases = _bad_cases(fitted)
    for call, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            call()
