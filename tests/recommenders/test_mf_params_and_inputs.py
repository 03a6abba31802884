"""MatrixFactorization: scikit-learn parameter conventions, the fitted attributes,
every input form (the same model from each), and the checks of data and parameters."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import mfext
from mfext import datasets as ds
from mfext import MatrixFactorization
from mf_helpers import FAST, SOLVERS, _model


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


def test_random_state_beyond_64_bits_is_named():
    rows, cols = torch.tensor([0, 1]), torch.tensor([0, 1])
    model = mfext.MatrixFactorization(random_state=2**64)
    with pytest.raises(ValueError, match=r"^random_state must be below 2\*\*64"):
        model.fit((rows, cols, torch.tensor([1.0, 2.0])))
