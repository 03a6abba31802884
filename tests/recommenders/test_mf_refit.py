"""MatrixFactorization refits: a refit that fails (bad data, a bad parameter, an error or
Ctrl-C mid-training) leaves the model exactly as it was; one that succeeds replaces the
fit; one that diverges keeps a whole model."""
from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch

from mfext import datasets as ds
from mfext import MatrixFactorization
from mfext.recommenders import solvers
from mf_helpers import SOLVERS, _model


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
    real = {"sgd": solvers.SgdSolver, "als": solvers.AlsSolver,
            "adam": solvers.AdamSolver}[solver]
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
        if name in ("history_", "setup_seconds_", "_comm"):
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
