"""scikit-learn model selection: MatrixFactorization as a regressor on (user, item) pairs.

``fit(X, y)`` takes X (n, 2) of (user, item) ids and y the ratings, so sklearn's
splitters split by rating; ``predict(X)`` returns a numpy array; ``score(X, y)``
is the R² of every sklearn regressor. Each result is checked against a loop that
does the same by hand (sklearn's metrics on our predictions, or numpy), not
against the estimator's own score.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mfext import MatrixFactorization
from mfext import datasets as ds

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pairs():
    """X (1200, 2) user/item ids (raw ids: users 10, 13, ..., items 5000, 5002, ...), y (700,)."""
    r = ds.synthetic_ratings(50, 35, 1200, rank=3, noise=0.2, seed=3, biases=True)
    users = r.rows.numpy() * 3 + 10
    items = r.cols.numpy() * 2 + 5000
    return np.stack([users, items], 1), r.vals.double().numpy()


def _model(**kw):
    params = dict(rank=3, solver="als", max_iter=10, random_state=0, reg=0.05)
    params.update(kw)
    return MatrixFactorization(**params)


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


# --------------------------------------------------------------------------- conventions


def test_sklearn_sees_a_regressor():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.base import clone, is_regressor

    m = _model(rank=5)
    assert is_regressor(m)
    c = clone(m)
    assert c is not m and c.get_params() == m.get_params()
    if tuple(int(x) for x in sklearn.__version__.split(".")[:2]) >= (1, 6):
        from sklearn.utils import get_tags

        tags = get_tags(m)
        assert tags.estimator_type == "regressor" and tags.regressor_tags is not None
        assert tags.input_tags.string and not tags.target_tags.required  # y is optional
        assert get_tags(_model(random_state=None)).non_deterministic


def test_fit_pairs_is_the_triple_fit_when_ids_are_indices():
    r = ds.synthetic_ratings(30, 20, 300, rank=2, seed=1, biases=True)
    assert int(r.rows.max()) == 29 and int(r.cols.max()) == 19  # every id occurs: 0..n-1
    X = np.stack([r.rows.numpy(), r.cols.numpy()], 1)
    for solver in ("sgd", "als", "adam"):
        a = _model(solver=solver).fit(X, r.vals.numpy())
        b = _model(solver=solver).fit((r.rows, r.cols, r.vals))
        assert torch.equal(a.user_factors_, b.user_factors_), solver
        assert torch.equal(a.item_factors_, b.item_factors_), solver
        assert np.array_equal(a.user_ids_, np.arange(30)) and np.array_equal(a.item_ids_,
                                                                              np.arange(20))
        # predict(X): a numpy array, the model dtype, the same numbers as predict(users, items)
        pred = a.predict(X)
        assert isinstance(pred, np.ndarray) and pred.dtype == np.float32 and pred.shape == (300,)
        assert np.array_equal(pred, b.predict(r.rows, r.cols).numpy())


def test_pairs_are_raw_ids(pairs):
    X, y = pairs
    m = _model().fit(X, y)
    assert (m.n_users_, m.n_items_) == (50, 35)  # not max id + 1
    assert np.array_equal(m.user_ids_, np.unique(X[:, 0]))
    assert np.array_equal(m.item_ids_, np.unique(X[:, 1]))
    # predict(X) uses the raw ids, predict(users, items) the indices
    idx_u = np.searchsorted(m.user_ids_, X[:, 0])
    idx_i = np.searchsorted(m.item_ids_, X[:, 1])
    assert np.array_equal(m.predict(X), m.predict(idx_u, idx_i).numpy())
    assert np.array_equal(m.predict(X), m.predict(X[:, 0], X[:, 1], raw_ids=True).numpy())
    # ids unseen in fit fall back to the biases: mu + b_i, mu + b_u, mu
    new = np.array([[7, X[0, 1]], [X[0, 0], 1], [7, 1]])
    got = m.predict(new)
    mu = m.global_mean_
    b_i = m.item_bias_[idx_i[0]].item()
    b_u = m.user_bias_[idx_u[0]].item()
    np.testing.assert_allclose(got, [mu + b_i, mu + b_u, mu], rtol=1e-6)
    # recommend and similar_items answer in raw ids
    top, _ = m.recommend([X[0, 0]], n=3, raw_ids=True)
    assert set(top[0].tolist()) <= set(X[:, 1].tolist())


def test_string_ids_and_mixed_columns(pairs, tmp_path):
    X, y = pairs
    Xs = np.array([[f"u{u}", f"i{i}"] for u, i in X])
    mixed = np.empty((len(X), 2), dtype=object)  # what np.asarray(DataFrame) gives for int/str
    mixed[:, 0] = X[:, 0]
    mixed[:, 1] = [f"i{i}" for i in X[:, 1]]
    ref = _model().fit(X, y).predict(X)
    for data in (Xs, mixed):
        m = _model().fit(data, y)
        # ascending string order differs from the numeric one, so the init draws land on
        # other rows: compare predictions loosely, the fallback exactly
        assert m.n_users_ == 50 and m.n_items_ == 35
        assert _rmse(m.predict(data), y) == pytest.approx(_rmse(ref, y), abs=0.05)
        m.save(tmp_path / "s.pt")
        back = MatrixFactorization.load(tmp_path / "s.pt")
        assert np.array_equal(back.predict(data), m.predict(data))
    assert m.user_ids_.dtype.kind == "i" and m.item_ids_.dtype.kind == "U"


def test_existing_forms_keep_their_meaning(pairs):
    X, y = pairs
    r = ds.synthetic_ratings(50, 35, 1200, rank=3, noise=0.2, seed=3, biases=True)
    m = _model().fit(r)
    # score(ratings) is still the RMSE, predict(users, items) still a tensor
    pred = m.predict(r.rows, r.cols)
    assert isinstance(pred, torch.Tensor)
    assert m.score(r) == pytest.approx(_rmse(pred.numpy(), r.vals.numpy()), rel=1e-9)
    # a dense (n, 2) array without y is still a dense rating matrix
    dense = np.array([[1.0, np.nan], [np.nan, 4.0], [2.0, 3.0]])
    d = _model().fit(dense)
    assert (d.n_users_, d.n_items_) == (3, 2) and int(d.user_counts_.sum()) == 4


def test_score_with_y_is_r2(pairs):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    X, y = pairs
    m = _model().fit(X[:1000], y[:1000])
    got = m.score(X[1000:], y[1000:])
    assert got == pytest.approx(sklearn_metrics.r2_score(y[1000:], m.predict(X[1000:])),
                                rel=1e-12)
    assert 0.5 < got < 1.0
    # a constant y: 1.0 only for a perfect prediction, else 0.0 (as sklearn)
    const = np.full(5, 3.0)
    assert m.score(X[:5], const) == sklearn_metrics.r2_score(const, m.predict(X[:5])) == 0.0


# --------------------------------------------------------------------------- model selection


def test_cross_val_score_matches_a_manual_loop(pairs):
    pytest.importorskip("sklearn")
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_score

    X, y = pairs
    cv = KFold(4, shuffle=True, random_state=0)
    rmse = -cross_val_score(_model(), X, y, cv=cv, scoring="neg_root_mean_squared_error",
                            error_score="raise")
    r2 = cross_val_score(_model(), X, y, cv=cv, error_score="raise")  # the default: score = R²
    manual_rmse, manual_r2 = [], []
    for train, test in cv.split(X):
        m = _model().fit(X[train], y[train])
        pred = m.predict(X[test])
        manual_rmse.append(_rmse(pred, y[test]))
        manual_r2.append(r2_score(y[test], pred))
    np.testing.assert_allclose(rmse, manual_rmse, rtol=1e-6)
    np.testing.assert_allclose(r2, manual_r2, rtol=1e-6)
    assert (rmse < 0.5).all()  # noise 0.2; the ratings' own spread is 1.3


def test_grid_search_picks_the_best_parameters(pairs):
    pytest.importorskip("sklearn")
    from sklearn.model_selection import GridSearchCV, KFold

    X, y = pairs
    cv = KFold(3, shuffle=True, random_state=1)
    grid = {"rank": [1, 3], "reg": [0.05, 3.0]}
    search = GridSearchCV(_model(), grid, cv=cv, scoring="neg_root_mean_squared_error",
                          error_score="raise")
    search.fit(X, y)
    # every candidate scored as a manual loop scores it
    results = search.cv_results_
    for k, params in enumerate(results["params"]):
        manual = [-_rmse(_model(**params).fit(X[tr], y[tr]).predict(X[te]), y[te])
                  for tr, te in cv.split(X)]
        assert results["mean_test_score"][k] == pytest.approx(np.mean(manual), rel=1e-6)
    best = int(np.argmax(results["mean_test_score"]))
    assert search.best_params_ == results["params"][best] == {"rank": 3, "reg": 0.05}
    # refit on all the data with the best parameters
    assert isinstance(search.best_estimator_, MatrixFactorization)
    assert search.best_estimator_.rank == 3 and search.best_estimator_.n_users_ == 50
    np.testing.assert_array_equal(search.predict(X[:10]),
                                  _model(rank=3, reg=0.05).fit(X, y).predict(X[:10]))
    # the default scoring (R²) picks the same parameters
    by_r2 = GridSearchCV(_model(), grid, cv=cv, error_score="raise").fit(X, y)
    assert by_r2.best_params_ == search.best_params_


# --------------------------------------------------------------------------- no sklearn


def test_mfext_imports_and_fits_without_sklearn():
    code = (
        "import sys\n"
        "sys.modules['sklearn'] = None  # any import of sklearn now fails\n"
        "import numpy as np, mfext\n"
        "assert 'sklearn' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
        "X = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 1]])\n"
        "m = mfext.MatrixFactorization(rank=2, max_iter=2, random_state=0)\n"
        "m.fit(X, [1.0, 2.0, 3.0, 4.0, 5.0])\n"
        "print(m.predict(X).shape, round(m.score(X, [1.0, 2.0, 3.0, 4.0, 5.0]), 3) <= 1)\n"
        "try:\n"
        "    m.__sklearn_tags__()\n"
        "except ImportError:\n"
        "    print('tags need sklearn')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["(5,) True", "tags need sklearn"]
