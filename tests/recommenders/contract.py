"""The contract every recommender of mfext passes, in the manner of implicit's
``TestRecommenderBaseMixin``.

A test class inherits :class:`RecommenderContract` and defines ``make_model(**params)``:
a small, fast, seeded model (``params`` override its defaults). It may set
``dataset_kind``: ``"explicit"`` (ratings 1..5, the default) or ``"implicit"`` (every
stored value 1). The tests use the public API only: the input forms, predict/score,
recommend (n, exclude_seen, include lists, filter_items, raw ids, unknown users),
similar_items/similar_users, fold_in and partial_fit_users/partial_fit_items, the
save/load round trip, ``to(device)``, bad inputs (a clear error naming the argument, the
model untouched) and determinism. Import it with ``from contract import
RecommenderContract`` (pytest puts this folder on ``sys.path``); the helpers it shares
with other folders come from ``tests/helpers.py``. Its bad-input tables count toward
tests/test_bad_input_coverage.py.
"""
from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np
import pytest
import torch

from mfext import datasets as ds
from helpers import FORMS, HAS_CUDA, as_form

N_USERS, N_ITEMS = 24, 18


def make_ratings(kind: str, seed: int = 0) -> ds.Ratings:
    """N_USERS x N_ITEMS ratings where every user and every item has some; raw ids kept.

    User raw ids are strings (``"user00"`` ...), item raw ids integers (1000, 1010, ...).
    """
    g = np.random.default_rng(seed)
    mask = g.random((N_USERS, N_ITEMS)) < 0.35
    mask[np.arange(N_USERS), np.arange(N_USERS) % N_ITEMS] = True
    mask[np.arange(N_ITEMS) % N_USERS, np.arange(N_ITEMS)] = True
    rows, cols = np.nonzero(mask)
    if kind == "explicit":
        W, H = g.normal(size=(N_USERS, 2)), g.normal(size=(N_ITEMS, 2))
        signal = 3 + (W[rows] * H[cols]).sum(1) + 0.3 * g.normal(size=rows.size)
        vals = np.clip(np.round(signal), 1, 5)
    elif kind == "implicit":
        vals = np.ones(rows.size)
    else:
        raise ValueError(f"unknown dataset kind {kind!r}")
    return ds.Ratings(torch.from_numpy(rows.astype(np.int64)),
                      torch.from_numpy(cols.astype(np.int64)),
                      torch.tensor(vals, dtype=torch.float32),
                      np.array([f"user{u:02d}" for u in range(N_USERS)]),
                      np.arange(N_ITEMS) * 10 + 1000, N_USERS, N_ITEMS)


FITTED = ("user_factors_", "item_factors_", "user_bias_", "item_bias_", "user_counts_",
          "item_counts_", "global_mean_", "rating_mean_", "n_users_", "n_items_", "user_ids_",
          "item_ids_", "history_", "n_iter_", "best_epoch_")


def snapshot(model) -> Dict[str, Any]:
    """Copies of the public fitted state, and what recommend says (it reads the seen items)."""
    out = {}
    for name in FITTED:
        v = getattr(model, name)
        out[name] = v.clone() if isinstance(v, torch.Tensor) else (
            v.copy() if isinstance(v, (np.ndarray, list)) else v)
    out["recommend"] = model.recommend(torch.arange(model.n_users_), n=model.n_items_)
    return out


def assert_same(model, snap: Dict[str, Any]) -> None:
    now = snapshot(model)
    for name, before in snap.items():
        after = now[name]
        if isinstance(before, torch.Tensor):
            assert before.dtype == after.dtype and torch.equal(before, after), name
        elif isinstance(before, tuple):
            assert all(torch.equal(b, a) for b, a in zip(before, after)), name
        elif isinstance(before, np.ndarray):
            assert np.array_equal(before, after), name
        else:
            assert before == after, name


def seen_items(r: ds.Ratings, user: int) -> set:
    return set(r.cols[r.rows == user].tolist())


def assert_refused(model, call, exc, match: str) -> None:
    """``call(model)`` raises ``exc`` with a message matching ``match``; the model is as it was."""
    before = snapshot(model)
    with pytest.raises(exc, match=match):
        call(model)
    assert_same(model, before)


# Bad arguments of similar_users, partial_fit_users, partial_fit_items and to(): name ->
# (a call on a model fit on make_ratings(), the exception, a message that starts with
# the argument's name). The model must be left exactly as it was.
_X = (torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))  # two rows

SIMILAR_USERS_CASES = {
    "negative_user": (lambda m: m.similar_users([-1]), ValueError,
                      r"^users must hold non-negative ids; users\[0\] = -1"),
    "float_user": (lambda m: m.similar_users([0.5]), ValueError,
                   r"^users must hold integer ids; users\[0\] = 0.5"),
    "unknown_user": (lambda m: m.similar_users([N_USERS]), ValueError,
                     rf"^users holds an id unknown to the model \({N_USERS} users\)"),
    "unknown_raw_user": (lambda m: m.similar_users(["nobody"], raw_ids=True), ValueError,
                         r"^users holds an id unknown to the model"),
    "raw_ids_as_indices": (lambda m: m.similar_users(["user00"]), TypeError,
                           r"^users must hold numbers, got strings"),
    "users_2d": (lambda m: m.similar_users([[0, 1]]), ValueError,
                 r"^users must be 1-D, got shape \(1, 2\)"),
    "users_on_meta": (lambda m: m.similar_users(torch.tensor([0], device="meta")), ValueError,
                      r"^users is on meta"),
    "user_beyond_int64": (lambda m: m.similar_users(np.array([1e19])), ValueError,
                          r"^users\[0\] = 1e\+19 does not fit in int64"),
    "n_zero": (lambda m: m.similar_users([0], n=0), ValueError,
               r"^n must be a positive integer, got 0"),
    "n_negative": (lambda m: m.similar_users([0], n=-3), ValueError,
                   r"^n must be a positive integer, got -3"),
    "n_float": (lambda m: m.similar_users([0], n=2.5), ValueError,
                r"^n must be a positive integer, got 2.5"),
    "n_bool": (lambda m: m.similar_users([0], n=True), ValueError,
               r"^n must be a positive integer, got True"),
}

PARTIAL_FIT_USERS_CASES = {
    "duplicate_ids": (lambda m: m.partial_fit_users(["user01", "user01"], _X), ValueError,
                      r"^user_ids must be distinct"),
    "fewer_ids_than_rows": (lambda m: m.partial_fit_users(["user01"], _X), ValueError,
                            r"^X: row 1 has no entry in user_ids \(1 ids\)"),
    "ids_2d": (lambda m: m.partial_fit_users([["user01", "user02"]], _X), ValueError,
               r"^user_ids must be 1-D, got shape \(1, 2\)"),
    "new_index_on_a_model_with_raw_ids": (
        lambda m: m.partial_fit_users([N_USERS + 5, 1], _X, raw_ids=False), ValueError,
        r"^user_ids: a model with raw user ids needs raw ids for new users"),
    "negative_index": (lambda m: m.partial_fit_users([-1, 1], _X, raw_ids=False), ValueError,
                       r"^user_ids must hold non-negative ids; user_ids\[0\] = -1"),
    "float_index": (lambda m: m.partial_fit_users([0.5, 1], _X, raw_ids=False), ValueError,
                    r"^user_ids must hold integer ids; user_ids\[0\] = 0.5"),
    "raw_ids_not_bool": (lambda m: m.partial_fit_users(["user01", "user02"], _X, raw_ids=1),
                         TypeError, r"^raw_ids must be a bool, got 1"),
    "X_unsupported": (lambda m: m.partial_fit_users(["user01"], "ratings.csv"), TypeError,
                      r"^X: unsupported input of type str"),
    "X_pair": (lambda m: m.partial_fit_users(["user01", "user02"], _X[:2]), TypeError,
               r"^X: a tuple or list input must be \(rows, cols, vals\)"),
    "X_negative_row": (lambda m: m.partial_fit_users(["user01", "user02"],
                                                     (_X[0] - 1, _X[1], _X[2])),
                       ValueError, r"^X rows must hold non-negative ids"),
    "X_nan_rating": (lambda m: m.partial_fit_users(["user01", "user02"],
                                                   (_X[0], _X[1], torch.tensor([1.0, math.nan]))),
                     ValueError, r"^X: rating 1 is nan"),
    "X_unknown_item": (lambda m: m.partial_fit_users(["user01", "user02"],
                                                     (_X[0], torch.tensor([0, N_ITEMS]), _X[2])),
                       ValueError, r"^X: the item of rating 1 is unknown to the model"),
    "X_on_meta": (lambda m: m.partial_fit_users(["user01", "user02"],
                                                tuple(t.to("meta") for t in _X)),
                  ValueError, r"^X rows is a meta tensor"),
}

PARTIAL_FIT_ITEMS_CASES = {
    "duplicate_ids": (lambda m: m.partial_fit_items([1000, 1000], _X), ValueError,
                      r"^item_ids must be distinct"),
    "fewer_ids_than_rows": (lambda m: m.partial_fit_items([1000], _X), ValueError,
                            r"^X: row 1 has no entry in item_ids \(1 ids\)"),
    "ids_2d": (lambda m: m.partial_fit_items([[1000, 1010]], _X), ValueError,
               r"^item_ids must be 1-D, got shape \(1, 2\)"),
    "new_index_on_a_model_with_raw_ids": (
        lambda m: m.partial_fit_items([N_ITEMS + 5, 1], _X, raw_ids=False), ValueError,
        r"^item_ids: a model with raw item ids needs raw ids for new items"),
    "raw_ids_not_bool": (lambda m: m.partial_fit_items([1000, 1010], _X, raw_ids="yes"),
                         TypeError, r"^raw_ids must be a bool, got 'yes'"),
    "X_unsupported": (lambda m: m.partial_fit_items([1000, 1010], "x"), TypeError,
                      r"^X: unsupported input of type str"),
    "X_negative_col": (lambda m: m.partial_fit_items([1000, 1010], (_X[0], _X[1] - 1, _X[2])),
                       ValueError, r"^X cols must hold non-negative ids"),
    "X_inf_rating": (lambda m: m.partial_fit_items([1000, 1010],
                                                   (_X[0], _X[1], torch.tensor([1.0, math.inf]))),
                     ValueError, r"^X: rating 1 is inf"),
    "X_unknown_user": (lambda m: m.partial_fit_items([1000, 1010],
                                                     (_X[0], torch.tensor([0, N_USERS]), _X[2])),
                       ValueError, r"^X: the user of rating 1 is unknown to the model"),
}

_NOT_A_DEVICE = r"^device must be a device such as 'cpu' or 'cuda:0', got "
TO_CASES = {
    "meta": ("meta", r"^device='meta' cannot hold the model: meta tensors hold no data"),
    "garbage_string": ("no such device", _NOT_A_DEVICE + "'no such device'"),
    "unknown_device_type": ("gpu7", _NOT_A_DEVICE + "'gpu7'"),
    "float": (3.5, _NOT_A_DEVICE + "3.5"),
    "none": (None, _NOT_A_DEVICE + "None"),
    "list": (["cpu"], _NOT_A_DEVICE + r"\['cpu'\]"),
    "absent_gpu_index": ("cuda:99", r"^device='cuda:99' cannot hold the model: "),
}


class RecommenderContract:
    """The shared tests; a subclass defines ``make_model`` and may set ``dataset_kind``."""

    dataset_kind = "explicit"

    def make_model(self, **params):  # pragma: no cover - each subclass defines it
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def ratings(self) -> ds.Ratings:
        return make_ratings(self.dataset_kind)

    @pytest.fixture(scope="class")
    def fitted(self, ratings):
        """A model fit on ``ratings``, shared: tests that change a model fit their own."""
        return self.make_model().fit(ratings)

    @pytest.fixture
    def fresh(self, ratings):
        return self.make_model().fit(ratings)

    # ------------------------------------------------------------------ input forms

    @pytest.mark.parametrize("form", FORMS)
    def test_every_input_form_fits_the_same_model(self, ratings, form):
        reference = self.make_model().fit(as_form(ratings, "triple"))
        model = self.make_model().fit(as_form(ratings, form))
        assert (model.n_users_, model.n_items_) == (N_USERS, N_ITEMS)
        for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_"):
            assert torch.equal(getattr(model, name), getattr(reference, name)), name
        if form == "ratings":
            assert np.array_equal(model.user_ids_, ratings.user_ids)
        else:
            assert model.user_ids_ is None and model.item_ids_ is None

    def test_pairs_and_targets(self, ratings):
        users, items = ratings.rows.numpy() * 7 + 3, ratings.cols.numpy() * 5 + 2
        X, y = np.column_stack([users, items]), ratings.vals.numpy()
        model = self.make_model().fit(X, y)
        reference = self.make_model().fit(as_form(ratings, "triple"))
        assert np.array_equal(model.user_ids_, np.unique(users))
        assert torch.equal(model.user_factors_, reference.user_factors_)
        pred = model.predict(X)
        assert isinstance(pred, np.ndarray) and pred.shape == (ratings.nnz,)
        assert np.array_equal(pred, reference.predict(ratings.rows, ratings.cols).numpy())
        r2 = model.score(X, y)
        truth = y.astype(np.float64)
        assert math.isfinite(r2)
        if truth.var() > 0:  # implicit data (every value 1) has no R^2 to compare with
            expected = 1 - ((truth - pred) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()
            assert r2 == pytest.approx(expected, rel=1e-6, abs=1e-9)

    # ------------------------------------------------------------------ predict / score

    def test_predict_and_score(self, fitted, ratings):
        pred = fitted.predict(ratings.rows, ratings.cols)
        assert pred.shape == (ratings.nnz,) and pred.dtype == fitted.user_factors_.dtype
        raw = fitted.predict(ratings.user_ids[ratings.rows.numpy()],
                             ratings.item_ids[ratings.cols.numpy()], raw_ids=True)
        assert torch.equal(raw, pred)
        rmse = float((pred.double() - ratings.vals.double()).square().mean().sqrt())
        assert fitted.score(ratings) == pytest.approx(rmse, rel=1e-9)

    def test_unknown_users_fall_back_or_raise(self, fitted):
        pred = fitted.predict([N_USERS, 0], [0, N_ITEMS])
        assert pred.shape == (2,) and bool(torch.isfinite(pred).all())
        with pytest.raises(ValueError, match=r"^users\[0\] is unknown"):
            fitted.predict([N_USERS], [0], unknown="raise")
        with pytest.raises(ValueError, match=r"^items\[1\] is unknown"):
            fitted.predict([0, 0], [0, N_ITEMS], unknown="raise")

    # ------------------------------------------------------------------ recommend

    def test_recommend_ranks_unseen_items_by_prediction(self, fitted, ratings):
        users = torch.arange(N_USERS)
        items, scores = fitted.recommend(users, n=4)
        assert items.shape == scores.shape == (N_USERS, 4) and items.dtype == torch.int64
        assert bool((scores[:, :-1] >= scores[:, 1:]).all())
        for u in range(N_USERS):
            assert not (set(items[u].tolist()) & seen_items(ratings, u)), u
            pred = fitted.predict(torch.full((4,), u), items[u])
            assert torch.allclose(pred, scores[u], rtol=1e-5, atol=1e-5)
        top, _ = fitted.recommend(users, n=1, exclude_seen=False)
        every = fitted.predict(users.repeat_interleave(N_ITEMS),
                               torch.arange(N_ITEMS).repeat(N_USERS))
        assert torch.equal(top[:, 0], every.reshape(N_USERS, N_ITEMS).argmax(1))

    def test_recommend_include_list_and_filter(self, fitted, ratings):
        include, banned = list(range(10)) + [3, 3], [1, 3]
        allowed = set(include) - set(banned)
        items, scores = fitted.recommend(torch.arange(N_USERS), n=20, items=include,
                                         filter_items=banned)
        assert items.shape == (N_USERS, len(allowed))  # n' = the candidates left
        for u in range(N_USERS):
            got = [i for i in items[u].tolist() if i != -1]
            assert set(got) == allowed - seen_items(ratings, u), u
            assert bool(torch.isneginf(scores[u][items[u] == -1]).all())
        filtered, _ = fitted.recommend(torch.arange(N_USERS), n=N_ITEMS, exclude_seen=False,
                                       filter_items=banned)
        assert filtered.shape == (N_USERS, N_ITEMS - 2)
        assert not (set(filtered.flatten().tolist()) & set(banned))

    def test_recommend_raw_ids_and_unknown_users(self, fitted, ratings):
        by_index = fitted.recommend(torch.arange(3), n=4)
        by_raw = fitted.recommend(ratings.user_ids[:3], n=4, raw_ids=True)
        assert torch.equal(by_raw[0], torch.from_numpy(ratings.item_ids[by_index[0].numpy()]))
        assert torch.equal(by_raw[1], by_index[1])
        unknown, scores = fitted.recommend([N_USERS], n=3)
        stranger, _ = fitted.recommend(["nobody"], n=3, raw_ids=True)
        assert bool((unknown >= 0).all()) and bool(torch.isfinite(scores).all())
        assert torch.equal(stranger, torch.from_numpy(ratings.item_ids[unknown.numpy()]))

    # ------------------------------------------------------------------ similar

    @pytest.mark.parametrize("side", ["item", "user"])
    def test_similar_matches_brute_force_cosine(self, fitted, side):
        F = (fitted.item_factors_ if side == "item" else fitted.user_factors_).double()
        similar = fitted.similar_items if side == "item" else fitted.similar_users
        ids = torch.tensor([0, 5])
        got, sims = similar(ids, n=4)
        unit = F / F.norm(dim=1, keepdim=True)
        brute = unit[ids] @ unit.t()
        brute[torch.arange(2), ids] = -math.inf
        top, _ = brute.topk(4, dim=1)
        assert got.shape == (2, 4) and not bool((got == ids[:, None]).any())
        assert torch.allclose(sims.double(), top, atol=1e-5)
        assert bool((sims[:, :-1] >= sims[:, 1:]).all())
        everything, _ = similar([0], n=1000)
        assert everything.shape == (1, F.shape[0] - 1)

    # ------------------------------------------------------------------ fold-in, partial fits

    def test_fold_in_and_append(self, fresh, ratings):
        rows = torch.tensor([0, 0, 0, 1, 1])
        cols = torch.tensor([0, 4, 7, 2, 9])
        vals = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])
        factors, bias = fresh.fold_in((rows, cols, vals))
        assert factors.shape == (2, fresh.user_factors_.shape[1]) and bias.shape == (2,)
        again, _ = fresh.fold_in((rows, cols, vals), append=True, user_ids=["new0", "new1"])
        assert torch.equal(again, factors) and fresh.n_users_ == N_USERS + 2
        assert torch.equal(fresh.user_factors_[-2:], factors)
        got, _ = fresh.recommend(["new0"], n=N_ITEMS, raw_ids=True)
        assert int((got == -1).sum()) == 3  # its three rated items are left out
        assert not ({1000, 1040, 1070} & set(got.flatten().tolist()))

    def test_partial_fit_users_recomputes_and_appends(self, fresh, ratings):
        before = snapshot(fresh)
        u, new_items = 2, [i for i in range(N_ITEMS) if i not in seen_items(ratings, 2)][:3]
        X = (torch.zeros(3, dtype=torch.int64), torch.tensor(new_items),
             torch.tensor([5.0, 1.0, 3.0]))
        expected, expected_bias = fresh.fold_in(X)
        assert fresh.partial_fit_users([ratings.user_ids[u], "newbie"], X) is fresh
        assert torch.equal(fresh.user_factors_[u], expected[0])
        assert torch.equal(fresh.user_bias_[u], expected_bias[0])
        others = torch.arange(N_USERS) != u
        assert torch.equal(fresh.user_factors_[:N_USERS][others], before["user_factors_"][others])
        assert torch.equal(fresh.item_factors_, before["item_factors_"])
        # the user without ratings in X: appended, zero factors
        assert fresh.n_users_ == N_USERS + 1 and fresh.user_ids_[-1] == "newbie"
        assert not bool(fresh.user_factors_[-1].any())
        # the new ratings replace the old ones: only they are left out now
        assert int(fresh.user_counts_[u]) == 3
        got, _ = fresh.recommend([u], n=N_ITEMS)
        assert set(got[0].tolist()) == (set(range(N_ITEMS)) - set(new_items)) | {-1}

    def test_partial_fit_items_recomputes_and_appends(self, fresh, ratings):
        before = snapshot(fresh)
        i = 4
        raters = sorted({int(u) for u in ratings.rows[ratings.cols == i]})
        new_raters = [u for u in range(N_USERS) if u not in raters][:4]
        X = (torch.tensor([0, 0, 0, 0, 1]), torch.tensor(new_raters + [0]),
             torch.tensor([5.0, 4.0, 1.0, 2.0, 3.0]))
        fresh.partial_fit_items([ratings.item_ids[i], 99999], X)
        assert fresh.n_items_ == N_ITEMS + 1 and int(fresh.item_ids_[-1]) == 99999
        assert torch.equal(fresh.user_factors_, before["user_factors_"])
        others = torch.arange(N_ITEMS) != i
        assert torch.equal(fresh.item_factors_[:N_ITEMS][others], before["item_factors_"][others])
        assert not torch.equal(fresh.item_factors_[i], before["item_factors_"][i])
        assert int(fresh.item_counts_[i]) == 4 and int(fresh.item_counts_[-1]) == 1
        rec_new, _ = fresh.recommend([new_raters[0]], n=N_ITEMS + 1)
        assert i not in rec_new[0].tolist()
        rec_old, _ = fresh.recommend([raters[0]], n=N_ITEMS + 1)
        assert i in rec_old[0].tolist()  # its old rating is forgotten
        newest, _ = fresh.recommend(["user01"], n=1, items=[99999], raw_ids=True)
        assert newest.tolist() == [[99999]]

    def test_partial_fit_bad_inputs_change_nothing(self, fresh, ratings):
        before = snapshot(fresh)
        X = (torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))
        cases = [
            (lambda: fresh.partial_fit_users(["user01", "user01"], X), ValueError, "user_ids"),
            (lambda: fresh.partial_fit_users(["user01"], X), ValueError, "^X"),
            (lambda: fresh.partial_fit_users([N_USERS + 5, 1], X, raw_ids=False), ValueError,
             "user_ids"),
            (lambda: fresh.partial_fit_items([1000, 1010],
                                             (X[0], torch.tensor([0, N_USERS]), X[2])),
             ValueError, "^X: the user of rating 1 is unknown"),
            (lambda: fresh.partial_fit_items([1000, 1010], X, raw_ids="yes"), TypeError, "raw_ids"),
        ]
        for call, exc, match in cases:
            with pytest.raises(exc, match=match):
                call()
            assert_same(fresh, before)

    # ------------------------------------------------------------------ save / load, devices

    def test_save_load_round_trip_is_exact(self, fresh, ratings, tmp_path):
        late = (torch.tensor([0]), torch.tensor([3]), torch.tensor([4.0]))
        fresh.partial_fit_users(["late"], late)
        fresh.save(tmp_path / "model.pt")
        back = type(fresh).load(tmp_path / "model.pt")
        assert type(back) is type(fresh) and back.get_params() == fresh.get_params()
        assert_same(back, snapshot(fresh))
        u = torch.arange(fresh.n_users_ + 1).repeat_interleave(N_ITEMS)
        i = torch.arange(N_ITEMS).repeat(fresh.n_users_ + 1)
        assert torch.equal(back.predict(u, i), fresh.predict(u, i))

    def test_to_moves_the_model(self, fresh):
        pred = fresh.predict(torch.arange(N_USERS), torch.arange(N_USERS) % N_ITEMS)
        before = snapshot(fresh)
        assert fresh.to("cpu") is fresh
        assert_same(fresh, before)
        for bad in ("meta", "no such device"):
            with pytest.raises(ValueError, match="device"):
                fresh.to(bad)
            assert_same(fresh, before)
        with pytest.raises(RuntimeError, match="not fitted"):
            self.make_model().to("cpu")
        if HAS_CUDA:
            fresh.to("cuda")
            assert fresh.user_factors_.is_cuda
            on_gpu = fresh.predict(torch.arange(N_USERS, device="cuda"),
                                   torch.arange(N_USERS, device="cuda") % N_ITEMS)
            assert torch.allclose(on_gpu.cpu(), pred, rtol=1e-5, atol=1e-6)
            fresh.to("cpu")
        assert torch.equal(fresh.predict(torch.arange(N_USERS), torch.arange(N_USERS) % N_ITEMS),
                           pred)

    # ------------------------------------------------------------------ bad inputs

    def test_bad_fit_inputs_name_the_argument_and_change_nothing(self, fresh, ratings):
        before = snapshot(fresh)
        rows, cols, vals = ratings.rows, ratings.cols, ratings.vals
        bad_vals = vals.clone()
        bad_vals[3] = math.nan
        cases = [
            ("no ratings here", TypeError, r"^X: unsupported input"),
            ((rows, cols), TypeError, r"^X: a tuple or list input must be"),
            ((rows - 1, cols, vals), ValueError, r"^X rows must hold non-negative ids"),
            ((rows, cols, bad_vals), ValueError, r"^X: rating 3 is nan"),
            ((rows[:0], cols[:0], vals[:0]), ValueError, r"^X holds no ratings"),
            (torch.zeros(2, 2, 2), ValueError, r"^X: a dense rating matrix must be 2-D"),
        ]
        for X, exc, match in cases:
            with pytest.raises(exc, match=match):
                fresh.fit(X)
            assert_same(fresh, before)
        with pytest.raises(ValueError, match="^validation"):
            fresh.fit(ratings, validation=(rows, cols, vals[:-1]))
        assert_same(fresh, before)
        blank = self.make_model()
        with pytest.raises(TypeError):
            blank.fit("no ratings here")
        assert not hasattr(blank, "user_factors_")

    def test_bad_serving_inputs_name_the_argument(self, fitted):
        cases = [
            (lambda: fitted.recommend([0], n=0), r"^n must be a positive integer"),
            (lambda: fitted.recommend([0], items=[N_ITEMS]), r"^items holds an id unknown"),
            (lambda: fitted.recommend([0], filter_items=[N_ITEMS]),
             r"^filter_items holds an id unknown"),
            (lambda: fitted.similar_items([N_ITEMS]), r"^items holds an id unknown"),
            (lambda: fitted.similar_users([N_USERS]), r"^users holds an id unknown"),
            (lambda: fitted.similar_users([0], n=-1), r"^n must be a positive integer"),
            (lambda: fitted.predict([0, 1], [0]), r"^users and items must have the same length"),
            (lambda: fitted.fold_in((torch.tensor([0]), torch.tensor([N_ITEMS]),
                                     torch.tensor([1.0]))), r"^X: the item of rating 0 is unknown"),
        ]
        for call, match in cases:
            with pytest.raises(ValueError, match=match):
                call()

    @pytest.mark.parametrize("case", sorted(SIMILAR_USERS_CASES))
    def test_similar_users_bad_input(self, fresh, case):
        assert_refused(fresh, *SIMILAR_USERS_CASES[case])

    @pytest.mark.parametrize("case", sorted(PARTIAL_FIT_USERS_CASES))
    def test_partial_fit_users_bad_input(self, fresh, case):
        assert_refused(fresh, *PARTIAL_FIT_USERS_CASES[case])

    @pytest.mark.parametrize("case", sorted(PARTIAL_FIT_ITEMS_CASES))
    def test_partial_fit_items_bad_input(self, fresh, case):
        assert_refused(fresh, *PARTIAL_FIT_ITEMS_CASES[case])

    @pytest.mark.parametrize("case", sorted(TO_CASES))
    def test_to_bad_device(self, fresh, case):
        device, match = TO_CASES[case]
        where = fresh.user_factors_.device
        assert_refused(fresh, lambda m: m.to(device), ValueError, match)
        assert fresh.user_factors_.device == where and fresh.item_factors_.device == where

    # ------------------------------------------------------------------ params, determinism

    def test_params_round_trip(self, fitted):
        params = fitted.get_params()
        twin = type(fitted)(**params)
        assert twin.get_params() == params and repr(twin) == repr(fitted)
        assert repr(fitted).startswith(type(fitted).__name__ + "(")
        with pytest.raises(ValueError, match="Invalid parameter 'no_such_thing'"):
            twin.set_params(no_such_thing=1)
        assert twin.get_params() == params

    def test_same_random_state_gives_bit_identical_factors(self, ratings):
        a = self.make_model(random_state=7).fit(ratings)
        b = self.make_model(random_state=7).fit(ratings)
        c = self.make_model(random_state=8).fit(ratings)
        for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert not torch.equal(a.user_factors_, c.user_factors_)
        def untimed(h):
            return [{k: v for k, v in rec.items() if k != "seconds"} for rec in h]

        assert untimed(a.history_) == untimed(b.history_)
