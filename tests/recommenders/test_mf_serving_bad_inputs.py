"""MatrixFactorization serving refuses bad input with a clear error naming the argument:
predict, recommend, similar_items, user_index/item_index, fold_in and score (unknown ids
fall back where documented). The case tables count toward
tests/test_bad_input_coverage.py; similar_users, partial_fit_* and to() are covered by
the recommender contract (contract.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mfext import MatrixFactorization
from mf_helpers import PAIRS
from helpers import _fitted, _triples


PREDICT_CASES = {
    "negative_user": (dict(users=[-1], items=[0]), ValueError, r"^users must hold non-negative"),
    "float_user": (dict(users=[0.5], items=[0]), ValueError, r"^users must hold integer ids"),
    "nan_item": (dict(users=[0], items=[math.nan]), ValueError, r"^items must hold integer ids"),
    "bool_users": (dict(users=torch.tensor([True]), items=[0]),
                   TypeError, r"^users must hold integer ids"),
    "mismatched_lengths": (dict(users=[0, 1], items=[0]),
                           ValueError, r"^users and items must have the same length"),
    "2d_users": (dict(users=[[0, 1]], items=[0, 1]), ValueError, r"^users must be 1-D"),
    "unknown_user_raise": (dict(users=[100], items=[0], unknown="raise"),
                           ValueError, r"^users\[0\] is unknown to the model"),
    "unknown_item_raise": (dict(users=[0], items=[100], unknown="raise"),
                           ValueError, r"^items\[0\] is unknown to the model"),
    "unknown_mode": (dict(users=[0], items=[0], unknown="zero"),
                     ValueError, r"^unknown must be 'fallback' or 'raise'"),
    "meta_device": (dict(users=torch.tensor([0], device="meta"), items=[0]),
                    ValueError, r"^users is on meta"),
    "raw_ids_without_map": (dict(users=[0], items=[0], raw_ids=True),
                            ValueError, r"^raw user ids need a model fit on a Ratings object"),
    "string_users": (dict(users=["a"], items=[0]),
                     TypeError, r"^users must hold numbers, got strings"),
    "float_user_2_63": (dict(users=np.array([2.0**63]), items=[0]), ValueError,
                        r"^users\[0\] = 9.22\d*e\+18 does not fit in int64"),
    "raw_ids_not_bool": (dict(users=[0], items=[0], raw_ids="yes"), TypeError,
                         r"^raw_ids must be a bool"),
}


@pytest.mark.parametrize("case", sorted(PREDICT_CASES))
def test_predict_bad_input(case):
    kwargs, exc, match = PREDICT_CASES[case]
    with pytest.raises(exc, match=match):
        _fitted().predict(**kwargs)


@pytest.mark.parametrize("biases", [True, False], ids=["biases", "nobias"])
def test_predict_unknown_fallback_is_finite(biases):
    """Unknown ids fall back to the biases: mu + b_i, mu + b_u, mu (the mean without biases)."""
    model = _fitted(biases=biases, dtype=torch.float64)  # float64: the sums below are exact
    out = model.predict([4, 100, 2, 100], [3, 7, 100, 100])
    _, _, v = _triples()
    assert model.rating_mean_ == pytest.approx(float(v.mean()), rel=1e-12)
    mu, bu, bi = model.global_mean_, model.user_bias_.tolist(), model.item_bias_.tolist()
    W, H = model.user_factors_, model.item_factors_
    if biases:
        assert mu == model.rating_mean_ and any(bu) and any(bi)
        expected = [mu + bu[4] + bi[3] + float(W[4] @ H[3]), mu + bi[7], mu + bu[2], mu]
    else:
        mean = model.rating_mean_
        expected = [float(W[4] @ H[3]), mean, mean, mean]
    assert out[0].item() == pytest.approx(expected[0], rel=1e-12)
    assert out[1:].tolist() == expected[1:]


PREDICT_PAIRS_CASES = {  # predict(X) and score(X, y) on a model fit on pairs
    "predict_X_1d": (lambda m: m.predict(np.array([0, 1])), ValueError,
                     r"^X must have shape \(n, 2\)"),
    "predict_X_unknown_raise": (lambda m: m.predict(np.array([[0, 1], [99, 1]]), unknown="raise"),
                                ValueError, r"^X\[1, 0\] is unknown to the model"),
    "score_y_short": (lambda m: m.score(PAIRS, [1.0]), ValueError,
                      r"^y must have one rating per row of X"),
    "score_y_nan": (lambda m: m.score(PAIRS, [math.nan] * 4), ValueError, r"^y: rating 0 is nan"),
}


@pytest.mark.parametrize("case", sorted(PREDICT_PAIRS_CASES))
def test_predict_and_score_pairs_bad_input(case):
    call, exc, match = PREDICT_PAIRS_CASES[case]
    model = MatrixFactorization(rank=2, max_iter=1, random_state=0).fit(PAIRS, [1., 2., 3., 4.])
    with pytest.raises(exc, match=match):
        call(model)


RECOMMEND_CASES = {
    "n_zero": (dict(users=[0], n=0), ValueError, r"^n must be a positive integer, got 0"),
    "n_float": (dict(users=[0], n=2.0), ValueError, r"^n must be a positive integer, got 2.0"),
    "negative_user": (dict(users=[-3]), ValueError, r"^users must hold non-negative ids"),
    "unknown_candidate": (dict(users=[0], items=[100]), ValueError, r"^items holds an id unknown"),
    "negative_candidate": (dict(users=[0], items=[-1]),
                           ValueError, r"^items must hold non-negative ids"),
    "meta_users": (dict(users=torch.tensor([0], device="meta")), ValueError, r"^users is on meta"),
    "float_user_1e19": (dict(users=torch.tensor([1e19], dtype=torch.float64)), ValueError,
                        r"^users\[0\] = 1e\+19 does not fit in int64"),
    "float_candidate_2_64": (dict(users=[0], items=np.array([3.0, 2.0**64])), ValueError,
                             r"^items\[1\] = 1.8\d*e\+19 does not fit in int64"),
}


@pytest.mark.parametrize("case", sorted(RECOMMEND_CASES))
def test_recommend_bad_input(case):
    kwargs, exc, match = RECOMMEND_CASES[case]
    with pytest.raises(exc, match=match):
        _fitted().recommend(**kwargs)


def test_recommend_unknown_user_and_not_fitted():
    items, scores = _fitted().recommend([1000], n=3)
    assert (items >= 0).all() and torch.isfinite(scores).all()
    with pytest.raises(RuntimeError, match="not fitted"):
        MatrixFactorization().recommend([0])


SIMILAR_CASES = {
    "n_zero": (dict(items=[0], n=0), ValueError, r"^n must be a positive integer, got 0"),
    "negative_item": (dict(items=[-1]), ValueError, r"^items must hold non-negative ids"),
    "float_item": (dict(items=[0.5]), ValueError, r"^items must hold integer ids"),
    "unknown_item": (dict(items=[100]), ValueError, r"^items holds an id unknown to the model"),
    "raw_ids_without_map": (dict(items=[0], raw_ids=True), ValueError,
                            r"^raw item ids need a model fit on a Ratings object"),
}


@pytest.mark.parametrize("case", sorted(SIMILAR_CASES))
def test_similar_items_bad_input(case):
    kwargs, exc, match = SIMILAR_CASES[case]
    with pytest.raises(exc, match=match):
        _fitted().similar_items(**kwargs)


def _fitted_on_ratings() -> MatrixFactorization:
    from mfext.datasets import Ratings
    rows, cols, vals = _triples()
    ratings = Ratings(rows, cols, vals.float(), np.arange(100, 112), np.arange(7, 16), 12, 9)
    return MatrixFactorization(rank=2, solver="als", max_iter=1, random_state=0).fit(ratings)


INDEX_CASES = {  # user_index / item_index
    "user_index_no_maps": (lambda: _fitted().user_index([0]), ValueError,
                           r"^raw user ids need a model fit on a Ratings object"),
    "item_index_no_maps": (lambda: _fitted().item_index([0]), ValueError,
                           r"^raw item ids need a model fit on a Ratings object"),
    "user_index_2d": (lambda: _fitted_on_ratings().user_index([[100, 101]]), ValueError,
                      r"^raw_ids must be 1-D, got shape \(1, 2\)"),
    "item_index_not_comparable": (lambda: _fitted_on_ratings().item_index([None]), TypeError,
                                  r"^item ids of type object cannot be compared"),
    "not_fitted": (lambda: MatrixFactorization().user_index([0]), RuntimeError,
                   r"^this MatrixFactorization is not fitted yet"),
}


@pytest.mark.parametrize("case", sorted(INDEX_CASES))
def test_user_item_index_bad_input(case):
    call, exc, match = INDEX_CASES[case]
    with pytest.raises(exc, match=match):
        call()


FOLD_IN_CASES = {
    "unknown_item": ((torch.tensor([0]), torch.tensor([100]), torch.tensor([3.0])), ValueError,
                     r"^X: the item of rating 0 is unknown to the model"),
    "negative_user": ((torch.tensor([-1]), torch.tensor([0]), torch.tensor([3.0])), ValueError,
                      r"^X rows must hold non-negative ids"),
    "nan_rating": ((torch.tensor([0]), torch.tensor([0]), torch.tensor([math.nan])), ValueError,
                   r"^X: rating 0 is nan"),
    "empty": ((torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64),
               torch.tensor([])), ValueError, r"^X holds no ratings"),
    "mismatched_lengths": ((torch.tensor([0, 0]), torch.tensor([0]), torch.tensor([3.0])),
                           ValueError, r"^X: rows, cols and vals must have the same length"),
    "meta": ((torch.tensor([0], device="meta"), torch.tensor([0], device="meta"),
              torch.tensor([3.0], device="meta")), ValueError, r"^X rows is a meta tensor"),
    "huge_user_id": ((torch.tensor([2**40]), torch.tensor([0]), torch.tensor([3.0])), ValueError,
                     r"^X: 1,099,511,627,777 users .* GiB"),
    "float_user_id_2_64": ((np.array([2.0**64]), np.array([0]), np.array([3.0])), ValueError,
                           r"^X rows\[0\] = 1.8\d*e\+19 does not fit in int64"),
    "rating_overflows_float32": ((np.array([0]), np.array([0]), np.array([1e300])), ValueError,
                                 r"^X: rating 0 = 1e\+300 overflows float32"),
}


@pytest.mark.parametrize("case", sorted(FOLD_IN_CASES))
def test_fold_in_bad_input(case):
    X, exc, match = FOLD_IN_CASES[case]
    with pytest.raises(exc, match=match):
        _fitted().fold_in(X)


def test_fold_in_ratings_overflowing_the_dtype():
    model = _fitted()
    with pytest.raises(ValueError, match=r"^X: rating 1 = 1e\+39 overflows float32"):
        model.fold_in(([0, 0], [1, 2], [3.0, 1e39]))
    model64 = _fitted(dtype=torch.float64)
    factors, _ = model64.fold_in(([0, 0], [1, 2], [3.0, 1e39]))  # fine in float64
    assert torch.isfinite(factors).all()


SCORE_CASES = {
    "nan_rating": ((torch.tensor([0]), torch.tensor([0]), torch.tensor([math.nan])), ValueError,
                   r"^X: rating 0 is nan"),
    "empty": ((torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64),
               torch.tensor([])), ValueError, r"^X holds no ratings"),
    "negative_item": ((torch.tensor([0]), torch.tensor([-1]), torch.tensor([3.0])), ValueError,
                      r"^X cols must hold non-negative ids"),
    "not_fitted": (None, RuntimeError, r"^this MatrixFactorization is not fitted yet"),
    "meta": ((torch.tensor([0], device="meta"), torch.tensor([0], device="meta"),
              torch.tensor([3.0], device="meta")), ValueError, r"^X rows is a meta tensor"),
    "float_item_id_1e19": ((np.array([0]), np.array([1e19]), np.array([3.0])), ValueError,
                           r"^X cols\[0\] = 1e\+19 does not fit in int64"),
}


@pytest.mark.parametrize("case", sorted(SCORE_CASES))
def test_score_bad_input(case):
    X, exc, match = SCORE_CASES[case]
    model = MatrixFactorization() if X is None else _fitted()
    with pytest.raises(exc, match=match):
        model.score(X if X is not None else _triples())


def test_score_unknown_ids_fall_back():
    model = _fitted(dtype=torch.float64)
    mu, bu, bi = model.global_mean_, model.user_bias_.tolist(), model.item_bias_.tolist()
    got = model.score((torch.tensor([100, 1, 100]), torch.tensor([5, 100, 100]),
                       torch.tensor([3.0, 2.0, 4.5])))
    expected = math.sqrt(((mu + bi[5] - 3.0) ** 2 + (mu + bu[1] - 2.0) ** 2 + (mu - 4.5) ** 2) / 3)
    assert got == pytest.approx(expected, rel=1e-12)
