"""Hardening: bad input at every public entry point beyond the ops.

The op-level checks live in test_bad_inputs.py / test_fuzz_ops.py; here the
entry points are ``mfext.factorize``, ``MatrixFactorization`` (fit, predict,
recommend, fold_in, score, save/load), ``mfext.datasets.load_movielens`` and
the CLI. Each bad input must give a clear ``ValueError``/``TypeError`` (or a
documented error type) naming the argument, never a crash, hang, deep
traceback or garbage. ``COVERED`` counts the bad inputs per entry point.
"""
from __future__ import annotations

import math
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mfext
from mfext import MatrixFactorization, cf_ops
from mfext.datasets import load_movielens

ROOT = Path(__file__).resolve().parents[1]


def _small(m: int = 6, n: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, n, generator=g, dtype=torch.float64)


def _triples(seed: int = 0, m: int = 12, n: int = 9, nnz: int = 60):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, m, (nnz,), generator=g)
    cols = torch.randint(0, n, (nnz,), generator=g)
    rows[:m], cols[:n] = torch.arange(m), torch.arange(n)  # every user and item rated
    vals = 1 + 4 * torch.rand(nnz, generator=g, dtype=torch.float64)
    return rows, cols, vals


def _fitted(**kw) -> MatrixFactorization:
    params = dict(rank=3, solver="als", max_iter=2, random_state=0)
    params.update(kw)
    return MatrixFactorization(**params).fit(_triples())


# ---------------------------------------------------------------- factorize

A = _small()
FACTORIZE_CASES = {
    "A_1d": (dict(A=torch.rand(5), rank=1), ValueError, "2-D"),
    "A_3d": (dict(A=torch.rand(2, 3, 4), rank=1), ValueError, "2-D"),
    "A_empty_rows": (dict(A=torch.rand(0, 4), rank=1), ValueError, "at least one row"),
    "A_empty_cols": (dict(A=torch.rand(4, 0), rank=1), ValueError, "at least one row"),
    "A_complex": (dict(A=torch.rand(3, 3, dtype=torch.complex64), rank=1), TypeError, "real"),
    "A_object": (dict(A=np.array([[object()]]), rank=1), TypeError, "object"),
    "A_string": (dict(A="abc", rank=1), TypeError, "A must be a numeric array"),
    "A_bytes_array": (dict(A=np.array([[b"1"]]), rank=1), TypeError, "A must be a numeric"),
    "A_inf": (dict(A=torch.tensor([[1.0, math.inf], [2.0, 3.0]]), rank=1), ValueError, "infinite"),
    "A_all_nan": (dict(A=torch.full((3, 3), math.nan), rank=1), ValueError, "no observed"),
    "rank_0": (dict(A=A, rank=0), ValueError, "rank"),
    "rank_negative": (dict(A=A, rank=-2), ValueError, "rank"),
    "rank_too_big_no_reg": (dict(A=A, rank=6), ValueError, "reg > 0"),
    "rank_float": (dict(A=A, rank=2.0), TypeError, "rank"),
    "rank_bool": (dict(A=A, rank=True), TypeError, "rank"),
    "weight_negative": (dict(A=A, rank=1, weight=-torch.ones(6, 5)), ValueError, "weight"),
    "weight_nan": (dict(A=A, rank=1, weight=torch.full((6, 5), math.nan)), ValueError, "weight"),
    "weight_inf": (dict(A=A, rank=1, weight=torch.full((6, 5), math.inf)), ValueError, "weight"),
    "weight_shape": (dict(A=A, rank=1, weight=torch.ones(5, 6)), ValueError, "weight"),
    "weight_all_zero": (dict(A=A, rank=1, weight=torch.zeros(6, 5)), ValueError, "no observed"),
    "weight_complex": (dict(A=A, rank=1, weight=torch.ones(6, 5, dtype=torch.complex64)),
                       TypeError, "weight"),
    "optimizer_unknown": (dict(A=A, rank=1, optimizer="lbfgs"), ValueError, "optimizer"),
    "backend_unknown": (dict(A=A, rank=1, backend="triton"), ValueError, "backend"),
    "lr_zero": (dict(A=A, rank=1, lr=0.0), ValueError, "lr"),
    "lr_negative": (dict(A=A, rank=1, lr=-1.0), ValueError, "lr"),
    "lr_nan": (dict(A=A, rank=1, lr=math.nan), ValueError, "lr"),
    "lr_string": (dict(A=A, rank=1, lr="0.1"), TypeError, "lr"),
    "max_iter_negative": (dict(A=A, rank=1, max_iter=-3), ValueError, "max_iter"),
    "max_iter_float": (dict(A=A, rank=1, max_iter=2.5), TypeError, "max_iter"),
    "reg_negative": (dict(A=A, rank=1, reg=-1.0), ValueError, "reg"),
    "reg_inf": (dict(A=A, rank=1, reg=math.inf), ValueError, "reg"),
    "tol_negative": (dict(A=A, rank=1, tol=-1.0), ValueError, "tol"),
    "dtype_int": (dict(A=A, rank=1, dtype=torch.int32), TypeError, "dtype"),
    "reduction_unknown": (dict(A=A, rank=1, reduction="max"), ValueError, "reduction"),
    "init_unknown": (dict(A=A, rank=1, init="magic"), ValueError, "init"),
    "init_bad_shapes": (dict(A=A, rank=2, init=(torch.rand(6, 3), torch.rand(2, 5))),
                        ValueError, "init"),
    "callback_not_callable": (dict(A=A, rank=1, callback=3), TypeError, "callback"),
    "device_meta": (dict(A=A, rank=1, device="meta"), ValueError, "meta"),
    "A_meta": (dict(A=torch.rand(3, 3, device="meta"), rank=1), ValueError, "meta"),
}


@pytest.mark.parametrize("case", sorted(FACTORIZE_CASES))
def test_factorize_bad_input(case):
    kwargs, exc, match = FACTORIZE_CASES[case]
    kwargs = dict(kwargs)
    A_ = kwargs.pop("A")
    with pytest.raises(exc, match=match):
        mfext.factorize(A_, kwargs.pop("rank"), max_iter=kwargs.pop("max_iter", 3), **kwargs)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.float16])
def test_factorize_integer_bool_half_data_runs_in_float(dtype):
    data = (torch.rand(6, 5) * 4).to(dtype)
    res = mfext.factorize(data, 2, max_iter=5, seed=0)
    assert res.W.dtype == torch.float32 and torch.isfinite(res.W).all()


def test_factorize_max_iter_zero_returns_the_initial_factors():
    A_ = _small(7, 4, seed=3)
    # an explicit init comes back as given, and its loss is the objective at the init
    g = torch.Generator().manual_seed(11)
    W0 = torch.rand(7, 2, generator=g, dtype=torch.float64)
    H0 = torch.rand(2, 4, generator=g, dtype=torch.float64)
    res = mfext.factorize(A_, 2, max_iter=0, init=(W0, H0), reg=0.1)
    assert res.n_iter == 0 and len(res.loss_history) == 1
    assert torch.equal(res.W, W0) and torch.equal(res.H, H0)
    objective = ((A_ - W0 @ H0).square().sum() + 0.1 * (W0.square().sum() + H0.square().sum()))
    assert res.loss_history[0] == pytest.approx(float(objective) / A_.numel(), rel=1e-12)
    # init="random" is torch.rand for W, then H, from a CPU generator seeded with seed
    res = mfext.factorize(A_, 2, max_iter=0, seed=5)
    g = torch.Generator().manual_seed(5)
    assert torch.equal(res.W, torch.rand(7, 2, generator=g, dtype=torch.float64))
    assert torch.equal(res.H, torch.rand(2, 4, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("optimizer", ["adam", "als"])
def test_factorize_nan_data_is_missing(optimizer):
    data = _small(8, 6, seed=4)
    missing = torch.zeros(8, 6, dtype=torch.bool)
    missing[0, 0] = missing[3, 5] = missing[7, 2] = True
    with_nan = data.masked_fill(missing, math.nan)
    res = mfext.factorize(with_nan, 2, max_iter=5, seed=0, optimizer=optimizer)
    # the same fit as weight 0 at those entries, whatever value they hold there
    weight = (~missing).double()
    for filler in (0.0, 123.0):
        ref = mfext.factorize(data.masked_fill(missing, filler), 2, max_iter=5, seed=0,
                              optimizer=optimizer, weight=weight)
        torch.testing.assert_close(res.W, ref.W, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(res.H, ref.H, rtol=1e-12, atol=1e-12)
        assert res.loss_history == pytest.approx(ref.loss_history, rel=1e-12)
    # and not the fit that observes a 0 there
    zero = mfext.factorize(data.masked_fill(missing, 0.0), 2, max_iter=5, seed=0,
                           optimizer=optimizer)
    assert (res.W - zero.W).abs().max() > 1e-6


# ---------------------------------------------------------------- estimator

# name: (constructor arguments, the one exception type, a message fragment that names
# the argument; anchored at the start where the message starts with the name)
HYPER_CASES = {
    "rank_0": (dict(rank=0), ValueError, r"^rank must be an integer >= 1"),
    "rank_float": (dict(rank=2.5), TypeError, r"^rank must be an integer"),
    "solver_unknown": (dict(solver="sdg"), ValueError, r"^solver must be one of"),
    "reg_negative": (dict(reg=-0.1), ValueError, r"^reg must be finite and >= 0"),
    "reg_nan": (dict(reg=math.nan), ValueError, r"^reg must be finite"),
    "lr_zero": (dict(lr=0.0), ValueError, r"^lr must be finite and > 0"),
    "lr_inf": (dict(lr=math.inf), ValueError, r"^lr must be finite"),
    "lr_string": (dict(lr="1"), TypeError, r"^lr must be a number"),
    "max_iter_0": (dict(max_iter=0), ValueError, r"^max_iter must be an integer >= 1"),
    "max_iter_float": (dict(max_iter=3.0), TypeError, r"^max_iter must be an integer"),
    "lr_decay_above_1": (dict(lr_decay=1.5), ValueError, r"^lr_decay must be .* <= 1"),
    "lr_decay_zero": (dict(lr_decay=0.0), ValueError, r"^lr_decay must be finite and > 0"),
    "init_std_negative": (dict(init_std=-1.0), ValueError, r"^init_std must be finite and > 0"),
    "init_std_zero": (dict(init_std=0.0), ValueError, r"^init_std must be finite and > 0"),
    "init_std_nan": (dict(init_std=math.nan), ValueError, r"^init_std must be finite"),
    "init_std_inf": (dict(init_std=math.inf), ValueError, r"^init_std must be finite"),
    "init_std_string": (dict(init_std="0.1"), TypeError, r"^init_std must be a number"),
    "als_reg_exponent_nan": (dict(als_reg_exponent=math.nan), ValueError,
                             r"^als_reg_exponent must be finite"),
    "dtype_int": (dict(dtype=torch.int32), ValueError, r"^dtype must be torch.float32"),
    "n_threads_0": (dict(n_threads=0), ValueError, r"^n_threads must be an integer >= 1"),
    "n_threads_float": (dict(n_threads=1.0), TypeError, r"^n_threads must be an integer"),
    "random_state_negative": (dict(random_state=-1), ValueError,
                              r"^random_state must be an integer >= 0"),
    "random_state_string": (dict(random_state="0"), TypeError, r"^random_state must be an integer"),
    "biases_string": (dict(biases="yes"), TypeError, r"^biases must be a bool"),
    "nonnegative_int": (dict(nonnegative=1), TypeError, r"^nonnegative must be a bool"),
    "verbose_string": (dict(verbose="no"), TypeError, r"^verbose must be a bool"),
    "bias_reg_negative": (dict(bias_reg=-1.0), ValueError, r"^bias_reg must be finite and >= 0"),
    "device_garbage": (dict(device="gpu7"), ValueError, r"^device must be a device .*'gpu7'"),
    "device_meta_sgd": (dict(device="meta"), NotImplementedError,
                        r"^device='meta' is not supported by solver='sgd'"),
}


@pytest.mark.parametrize("case", sorted(HYPER_CASES))
def test_estimator_bad_hyperparameters(case):
    kwargs, exc, match = HYPER_CASES[case]
    model = MatrixFactorization(**{"rank": 2, "max_iter": 1, **kwargs})
    with pytest.raises(exc, match=match):
        model.fit(_triples())
    assert not [k for k in vars(model) if k.endswith("_")]  # nothing fitted


r, c, v = _triples()
FIT_CASES = {
    "negative_row": ((r - 1, c, v), ValueError, r"^X rows must hold non-negative ids"),
    "negative_col": ((r, c - 1, v), ValueError, r"^X cols must hold non-negative ids"),
    "float_ids": ((r + 0.5, c, v), ValueError, r"^X rows must hold integer ids"),
    "nan_id": ((torch.full_like(v, math.nan), c, v), ValueError, r"^X rows must hold integer ids"),
    "bool_ids": ((r > 3, c, v), TypeError, r"^X rows must hold integer ids"),
    "complex_vals": ((r, c, v.to(torch.complex128)), TypeError, r"^X: ratings must be real"),
    "bool_vals": ((r, c, v > 2), TypeError, r"^X: ratings must be real"),
    "nan_rating": ((r, c, torch.where(r == 0, math.nan, v)), ValueError, r"^X: rating 0 is nan"),
    "inf_rating": ((r, c, torch.where(r == 0, math.inf, v)), ValueError, r"^X: rating 0 is inf"),
    "dense_inf": (torch.tensor([[1.0, math.inf]]),
                  ValueError, r"^X: the dense rating matrix holds Inf"),
    "dense_all_nan": (torch.full((3, 3), math.nan), ValueError, r"^X holds no ratings"),
    "dense_1d": (torch.rand(4), ValueError, r"^X: a dense rating matrix must be 2-D"),
    "empty_triple": ((r[:0], c[:0], v[:0]), ValueError, r"^X holds no ratings"),
    "mismatched_lengths": ((r, c[:-1], v),
                           ValueError, r"^X: rows, cols and vals must have the same length"),
    "two_element_tuple": ((r, c),
                          TypeError, r"^X: a tuple or list input must be \(rows, cols, vals\)"),
    "string_input": ("ratings.csv", TypeError, r"^X: unsupported input of type str"),
    "string_ids": ((np.array(["a"] * 60), c, v),
                   TypeError, r"^X\[0\] must hold numbers, got strings"),
    "object_ids": ((np.array([object()] * 60), c, v),
                   TypeError, r"^X\[0\] must hold numbers, got an object"),
    "2d_ids": ((r.reshape(6, 10), c, v), ValueError, r"^X rows must be 1-D"),
    "sparse_out_of_shape": (torch.sparse_coo_tensor(torch.tensor([[0, 5], [0, 1]]),
                                                    torch.tensor([1.0, 2.0]), (2, 2)),
                            ValueError, r"^X: rows id 5 is out of range"),
    "dense_meta": (torch.rand(3, 3, device="meta"), ValueError, r"^X is a meta tensor"),
    "triple_meta": ((r.to("meta"), c.to("meta"), v.to("meta")),
                    ValueError, r"^X rows is a meta tensor"),
    "huge_id_no_shape": ((torch.tensor([0, 2**40]), torch.tensor([0, 1]), torch.tensor([1., 2.])),
                         ValueError, r"^X: 1,099,511,627,777 users .* GiB"),
    "uint64_id_beyond_int64": ((torch.tensor([0, 2**63 + 1], dtype=torch.uint64),
                                torch.tensor([0, 1]), torch.tensor([1., 2.])), ValueError,
                               r"^X rows\[1\] = 9223372036854775809 does not fit in int64"),
    # float ids of 2**63 or more used to wrap to negative int64 ids
    "float64_id_2_63": ((torch.tensor([0.0, 2.0**63], dtype=torch.float64), torch.tensor([0, 1]),
                         torch.tensor([1., 2.])), ValueError,
                        r"^X rows\[1\] = 9.22\d*e\+18 does not fit in int64"),
    "float32_col_1e19": ((torch.tensor([0, 1]), torch.tensor([1e19, 0.0]), torch.tensor([1., 2.])),
                         ValueError, r"^X cols\[0\] = 9.99\d*e\+18 does not fit in int64"),
    "numpy_float_id_1e30": ((np.array([1e30, 0.0]), np.array([0, 1]), np.array([1., 2.])),
                            ValueError, r"^X rows\[0\] = 1e\+30 does not fit in int64"),
    "float_id_below_int64": ((np.array([0.0, -1e19]), np.array([0, 1]), np.array([1., 2.])),
                             ValueError, r"^X rows must hold non-negative ids; X rows\[1\] = -1e\+19"),
}


@pytest.mark.parametrize("case", sorted(FIT_CASES))
def test_fit_bad_data(case):
    X, exc, match = FIT_CASES[case]
    with pytest.raises(exc, match=match):
        MatrixFactorization(rank=2, max_iter=1, random_state=0).fit(X)


def test_fit_bad_validation_and_early_stopping():
    model = MatrixFactorization(rank=2, max_iter=2, random_state=0)
    with pytest.raises(ValueError, match=r"^early_stopping_rounds needs a validation set"):
        model.fit(_triples(), early_stopping_rounds=2)
    with pytest.raises(ValueError, match=r"^early_stopping_rounds must be an integer >= 1, got 0"):
        model.fit(_triples(), validation=_triples(1), early_stopping_rounds=0)
    with pytest.raises(TypeError, match=r"^early_stopping_rounds must be an integer >= 1, got 2.0"):
        model.fit(_triples(), validation=_triples(1), early_stopping_rounds=2.0)
    with pytest.raises(ValueError, match=r"^validation: rating 0 is nan"):
        model.fit(_triples(), validation=(r, c, v * math.nan))
    with pytest.raises(ValueError, match=r"^validation rows must hold non-negative ids"):
        model.fit(_triples(), validation=(r - 1, c, v))
    with pytest.raises(TypeError, match=r"^validation: unsupported input of type str"):
        model.fit(_triples(), validation="test.csv")
    assert not [k for k in vars(model) if k.endswith("_")]  # nothing fitted by the failures


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64, np.int32])
def test_fit_unsigned_numpy_ids(dtype):
    # numpy unsigned ids become torch uint16/32/64, which lack comparison kernels
    X = (r.numpy().astype(dtype), c.numpy().astype(dtype), v.numpy())
    a = MatrixFactorization(rank=2, max_iter=2, random_state=0).fit(X)
    b = MatrixFactorization(rank=2, max_iter=2, random_state=0).fit((r, c, v))
    assert torch.equal(a.user_factors_, b.user_factors_)


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


# ---------------------------------------------------------------- persistence


class _Evil:
    def __reduce__(self):  # would run code if unpickled
        return (os.system, ("echo pwned > /dev/null",))


def _write_corrupt(path: Path, kind: str, good: Path) -> None:
    if kind == "text":
        path.write_text("not a model\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "flipped":
        data = bytearray(good.read_bytes())
        for i in range(0, len(data), 97):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "foreign_dict":
        torch.save({"weights": torch.ones(3)}, path)
    elif kind == "foreign_tensor":
        torch.save(torch.ones(3), path)
    elif kind == "pickled_class":
        with open(path, "wb") as fh:
            pickle.dump(_Evil(), fh)
    elif kind == "torch_saved_class":
        torch.save({"format": "mfext.MatrixFactorization", "x": _Evil()}, path)
    elif kind == "wrong_version":
        state = torch.load(good, weights_only=True)
        state["version"] = 99
        torch.save(state, path)
    elif kind == "missing_keys":
        torch.save({"format": "mfext.MatrixFactorization", "version": 1}, path)
    elif kind == "bad_params":
        state = torch.load(good, weights_only=True)
        state["params"]["dtype"] = "os"
        torch.save(state, path)
    elif kind == "bad_tensors":
        state = torch.load(good, weights_only=True)
        state["tensors"]["user_factors"] = "abc"
        torch.save(state, path)
    elif kind == "shape_mismatch":
        state = torch.load(good, weights_only=True)
        state["tensors"]["user_factors"] = torch.ones(2, 2)
        torch.save(state, path)
    else:  # pragma: no cover
        raise AssertionError(kind)


LOAD_CASES = ["text", "empty", "truncated", "flipped", "foreign_dict", "foreign_tensor",
              "pickled_class", "torch_saved_class", "wrong_version", "missing_keys", "bad_params",
              "bad_tensors", "shape_mismatch"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "good.pt"
    _fitted().save(path)
    return path


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", LOAD_CASES)
def test_load_corrupt_model_is_value_error(tmp_path, saved_model, kind):
    path = tmp_path / "bad.pt"
    _write_corrupt(path, kind, saved_model)
    with pytest.raises(ValueError, match="bad.pt"):
        MatrixFactorization.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        MatrixFactorization.load(tmp_path / "nope.pt")


def test_save_bad_destination(tmp_path):
    model = _fitted()
    with pytest.raises(FileNotFoundError, match="no such directory"):
        model.save(tmp_path / "missing" / "model.pt")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        model.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_directory(tmp_path):
    with pytest.raises(IsADirectoryError):
        MatrixFactorization.load(tmp_path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_save_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    model = _fitted()
    model.save(path)
    before = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        f.write(b"partial garbage")  # a half-written file, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _fitted(rank=2).save(path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left behind
    loaded = MatrixFactorization.load(path)
    torch.testing.assert_close(loaded.user_factors_, model.user_factors_)


# ---------------------------------------------------------------- datasets

DATASET_CASES = {
    "garbage.csv": (b"\x00\x01\x02 binary junk\xff\n\x00", ValueError),
    "no_header.csv": (b"1,2,3.0,0\n", ValueError),
    "empty.data": (b"", ValueError),
    "blank.data": (b"\n\n  \n", ValueError),
    "two_fields.data": (b"1\t2\n3\t4\n", ValueError),
    "five_fields.dat": (b"1::2::3::4::5\n", ValueError),
    "non_numeric_ids.data": (b"alice\t2\t3.0\t0\n", ValueError),
    "non_numeric_rating.data": (b"1\t2\tgood\t0\n", ValueError),
    "float_ids.csv": (b"userId,movieId,rating,timestamp\n1.5,2,3.0,0\n", ValueError),
    "negative_ids.dat": (b"-1::2::3.0::0\n", ValueError),
    "nan_rating.csv": (b"userId,movieId,rating,timestamp\n1,2,nan,0\n", ValueError),
    "inf_rating.data": (b"1\t2\tinf\t0\n", ValueError),
    "ragged.data": (b"1\t2\t3\t0\n1\t2\n", ValueError),
    "header_only.csv": (b"userId,movieId,rating,timestamp\n", ValueError),
}


@pytest.mark.parametrize("name", sorted(DATASET_CASES))
def test_load_movielens_bad_file(tmp_path, name):
    content, exc = DATASET_CASES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(exc, match="load_movielens"):
        load_movielens(path)


def test_load_movielens_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_movielens(tmp_path / "u.data")
    with pytest.raises(FileNotFoundError):
        load_movielens(tmp_path)  # a directory without a ratings file


# ---------------------------------------------------------------- CLI


def _cli(*args: str, cwd: Path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "mfext", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    ratings = folder / "u.data"
    rng = np.random.default_rng(0)
    lines = [f"{u}\t{i}\t{rng.integers(1, 6)}\t0" for u in range(1, 11) for i in range(1, 9)
             if rng.random() < 0.6]
    ratings.write_text("\n".join(lines) + "\n")
    model = folder / "model.pt"
    proc = _cli("fit", str(ratings), "--rank", "2", "--max-iter", "2", "--out", str(model),
                cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return model


def _corrupt_file(folder: Path, saved: Path, kind: str) -> Path:
    path = folder / f"{kind}.pt"
    _write_corrupt(path, kind, saved)
    return path


CLI_CASES = {
    "fit_missing_file": lambda d, m: ["fit", str(d / "nope.data"), "--rank", "2", "--out",
                                      str(d / "o.pt")],
    "fit_garbage_file": lambda d, m: ["fit", str(_garbage(d)), "--rank", "2", "--out",
                                      str(d / "o.pt")],
    "fit_rank_zero": lambda d, m: ["fit", str(m.parent / "u.data"), "--rank", "0", "--out",
                                   str(d / "o.pt")],
    "recommend_missing_model": lambda d, m: ["recommend", str(d / "nope.pt"), "--user", "1"],
    "recommend_text_model": lambda d, m: ["recommend", str(_corrupt_file(d, m, "text")),
                                          "--user", "1"],
    "recommend_truncated_model": lambda d, m: ["recommend", str(_corrupt_file(d, m, "truncated")),
                                               "--user", "1"],
    "recommend_foreign_model": lambda d, m: ["recommend",
                                             str(_corrupt_file(d, m, "foreign_dict")),
                                             "--user", "1"],
    "recommend_unknown_user": lambda d, m: ["recommend", str(m), "--user", "999999"],
    "recommend_n_zero": lambda d, m: ["recommend", str(m), "--user", "1", "-n", "0"],
    "recommend_directory_as_model": lambda d, m: ["recommend", str(d), "--user", "1"],
    "fit_out_in_missing_directory": lambda d, m: ["fit", str(m.parent / "u.data"), "--rank", "2",
                                                  "--out", str(d / "no" / "such" / "o.pt")],
}


def _garbage(folder: Path) -> Path:
    path = folder / "garbage.data"
    path.write_bytes(b"\x00\xff this is not\ta ratings file\n")
    return path


# What the one line on stderr must name: the option or the file at fault. (argparse's own
# usage error, two lines naming neither, fails this.)
CLI_MESSAGES = {
    "fit_missing_file": r"nope\.data",
    "fit_garbage_file": r"garbage\.data",
    "fit_rank_zero": r"--rank\b.*\b0\b",
    "recommend_missing_model": r"nope\.pt",
    "recommend_text_model": r"text\.pt is not a readable MatrixFactorization file",
    "recommend_truncated_model": r"truncated\.pt is not a readable MatrixFactorization file",
    "recommend_foreign_model": r"foreign_dict\.pt is not a saved MatrixFactorization",
    "recommend_unknown_user": r"--user\b.*999999",
    "recommend_n_zero": r"(^|\s)-n\b.*\b0\b",
    "recommend_directory_as_model": r"(?i)is a directory",
    "fit_out_in_missing_directory": r"--out\b.*no[/\\]such",
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_input_exits_cleanly(tmp_path, cli_model, case):
    proc = _cli(*CLI_CASES[case](tmp_path, cli_model), cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], proc.stderr
    assert re.search(CLI_MESSAGES[case], lines[0]), lines[0]


def test_cli_recommend_ok(tmp_path, cli_model):
    proc = _cli("recommend", str(cli_model), "--user", "1", "-n", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "user 1" in proc.stdout


# ---------------------------------------------------------------- in-place ops


def _sgd_args(m=5, n=4, k=3):
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, m, (20,), generator=g)
    cols = torch.randint(0, n, (20,), generator=g)
    vals = torch.rand(20, generator=g)
    return rows, cols, vals


ALIAS_CASES = ["W_Ht_same_storage", "W_is_Ht", "biases_same_storage", "bias_views_of_W"]


@pytest.mark.parametrize("case", ALIAS_CASES)
def test_sgd_epoch_rejects_overlapping_outputs(case):
    rows, cols, vals = _sgd_args()
    k = 3
    buf = torch.rand(9 * k)
    W, Ht = torch.rand(5, k), torch.rand(4, k)
    bu, bi = torch.zeros(5), torch.zeros(4)
    if case == "W_Ht_same_storage":
        W, Ht = buf[: 5 * k].view(5, k), buf[5 * k:].view(4, k)  # disjoint views of one buffer
    elif case == "W_is_Ht":
        W = Ht = torch.rand(5, k)
        rows, cols = rows.clamp(max=4), cols.clamp(max=4)
        bi = torch.zeros(5)
    elif case == "biases_same_storage":
        both = torch.zeros(9)
        bu, bi = both[:5], both[5:]
    else:
        bu, bi = W.view(-1)[:5], W.view(-1)[5:9]
    before = [t.clone() for t in (W, Ht, bu, bi)]
    with pytest.raises(RuntimeError, match="share memory"):
        cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, lr=0.01, reg=0.0)
    for t, b in zip((W, Ht, bu, bi), before):
        assert torch.equal(t, b)  # rejected before any write


INPUT_ALIAS_CASES = ["vals_view_of_W", "vals_view_of_H_t", "vals_is_user_bias",
                     "rows_view_of_order_target"]


@pytest.mark.parametrize("case", INPUT_ALIAS_CASES)
def test_sgd_epoch_rejects_inputs_overlapping_outputs(case):
    rows, cols, vals = _sgd_args()
    W, Ht = torch.rand(5, 4), torch.rand(4, 4)
    bu, bi = torch.zeros(5), torch.zeros(4)
    order = None
    if case == "vals_view_of_W":
        vals = W.view(-1)[:20]
    elif case == "vals_view_of_H_t":
        Ht, bi = torch.rand(6, 4), torch.zeros(6)
        vals = Ht.view(-1)[-20:]
    elif case == "vals_is_user_bias":
        bu = torch.zeros(20)
        W = torch.rand(20, 4)
        vals = bu
    else:  # int64 ids sharing memory with a float64 W (a reinterpreting view)
        W, Ht = torch.rand(5, 4, dtype=torch.float64), torch.rand(4, 4, dtype=torch.float64)
        bu, bi = torch.zeros(5, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
        vals = vals.double()
        order = W.view(-1).view(torch.int64)[:0]  # empty: allowed
        rows = W.view(-1).view(torch.int64)[:20]
    before = [t.clone() for t in (W, Ht, bu, bi)]
    with pytest.raises(RuntimeError, match="overlaps"):
        cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, order=order, lr=0.01, reg=0.0)
    for t, b in zip((W, Ht, bu, bi), before):
        assert torch.equal(t, b)


def test_sgd_epoch_distinct_storages_run():
    rows, cols, vals = _sgd_args()
    W, Ht = torch.rand(5, 3), torch.rand(4, 3)
    sse = cf_ops.sgd_epoch_(W, Ht, torch.zeros(5), torch.zeros(4), rows, cols, vals,
                            lr=0.01, reg=0.0)
    assert math.isfinite(float(sse))


# ---------------------------------------------------------------- divergence


FITTED = ("user_factors_", "item_factors_", "user_bias_", "item_bias_", "user_counts_",
          "item_counts_")


@pytest.mark.parametrize("solver,kw", [("sgd", dict(lr=0.5, lr_decay=1.0)),
                                       ("adam", dict(lr=1e12))],
                         ids=["sgd_huge_lr", "adam_huge_lr"])
def test_estimator_divergence_keeps_last_finite(solver, kw, tmp_path):
    # these learning rates overflow float32 after a few epochs (not in the first one)
    X = _triples()
    params = dict(rank=3, solver=solver, random_state=0, reg=0.0, **kw)
    model = MatrixFactorization(max_iter=50, **params)
    with pytest.raises(FloatingPointError, match=r"diverged in epoch \d+") as info:
        model.fit(X)
    epoch = int(re.search(r"diverged in epoch (\d+)", str(info.value)).group(1))
    assert epoch >= 2, "pick a case that diverges after a finite epoch"
    assert f"keeps the factors of epoch {epoch - 1}" in str(info.value)
    assert model.n_iter_ == epoch - 1 and len(model.history_) == epoch - 1
    # the model is exactly the fit that stops before the failing epoch
    ref = MatrixFactorization(max_iter=epoch - 1, **params).fit(X)
    for name in FITTED:
        assert torch.equal(getattr(model, name), getattr(ref, name)), name
    assert [h["train_rmse"] for h in model.history_] == [h["train_rmse"] for h in ref.history_]
    # and it is whole: it predicts, recommends, saves and loads
    path = tmp_path / "diverged.pt"
    model.save(path)
    back = MatrixFactorization.load(path)
    users, items = torch.arange(12).repeat(9), torch.arange(9).repeat_interleave(12)
    assert torch.equal(back.predict(users, items), model.predict(users, items))
    assert torch.equal(back.recommend([0, 3], n=4)[0], model.recommend([0, 3], n=4)[0])


def test_estimator_als_reg0_tiny_matrix_is_finite():
    X = (torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), torch.tensor([1.0, 2.0, 3.0]))
    model = MatrixFactorization(rank=4, solver="als", reg=0.0, bias_reg=0.0, max_iter=5,
                                random_state=0).fit(X)
    for t in (model.user_factors_, model.item_factors_, model.user_bias_, model.item_bias_):
        assert torch.isfinite(t).all()
    assert torch.isfinite(model.predict([0, 1], [0, 1])).all()


@pytest.mark.parametrize("optimizer", ["adam", "gd"])
def test_factorize_divergence_keeps_last_finite(optimizer):
    # Adam moves each entry by about lr per step: float32 overflows within a few steps
    kw = dict(lr=1e12) if optimizer == "adam" else dict(lr=1e6, line_search=False)
    with pytest.raises(mfext.DivergenceError, match="diverged") as info:
        mfext.factorize(_small() * 1e3, 2, optimizer=optimizer, max_iter=200, seed=0,
                        dtype=torch.float32, **kw)
    res = info.value.result
    assert torch.isfinite(res.W).all() and torch.isfinite(res.H).all()
    assert all(math.isfinite(x) for x in res.loss_history)


# ---------------------------------------------------------------- threads


def test_estimator_n_threads_respected_and_restored():
    before = torch.get_num_threads()
    fits = [MatrixFactorization(rank=4, solver="sgd", max_iter=3, random_state=1,
                                n_threads=nt).fit(_triples(2, 40, 30, 600))
            for nt in (1, 1, 2)]
    assert torch.get_num_threads() == before
    for other in fits[1:]:
        # the blocked schedule (P = max(8, 2 * threads) = 8 for 1..4 threads) makes
        # SGD bitwise identical across these thread counts
        assert torch.equal(fits[0].user_factors_, other.user_factors_)
        assert torch.equal(fits[0].item_factors_, other.item_factors_)


# ---------------------------------------------------------------- fuzzing

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is in the test extras
    st = None

FUZZ_EXAMPLES = 30

if st is not None:
    @st.composite
    def _rating_triples(draw):
        nnz = draw(st.integers(1, 40))
        max_id = draw(st.integers(0, 50))
        ids = st.integers(0, max_id)
        rows = draw(st.lists(ids, min_size=nnz, max_size=nnz))
        cols = draw(st.lists(ids, min_size=nnz, max_size=nnz))
        vals = draw(st.lists(st.one_of(st.just(0.0), st.floats(-10, 10, allow_nan=False)),
                             min_size=nnz, max_size=nnz))
        return rows, cols, vals

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=_rating_triples(), solver=st.sampled_from(["sgd", "als", "adam"]),
           form=st.sampled_from(["list", "numpy", "torch", "scipy"]))
    def test_fuzz_estimator_input_conversion(data, solver, form):
        """Random triples (duplicates, explicit zeros, random id ranges) in every input form."""
        rows, cols, vals = data
        if form == "numpy":
            X = (np.array(rows), np.array(cols, dtype=np.int32), np.array(vals))
        elif form == "torch":
            X = (torch.tensor(rows), torch.tensor(cols), torch.tensor(vals, dtype=torch.float32))
        elif form == "scipy":
            sp = pytest.importorskip("scipy.sparse")
            X = sp.coo_matrix((vals, (rows, cols)), shape=(max(rows) + 1, max(cols) + 1))
        else:
            X = (rows, cols, vals)
        model = MatrixFactorization(rank=2, solver=solver, max_iter=2, random_state=0).fit(X)
        assert model.n_users_ == max(rows) + 1 and model.n_items_ == max(cols) + 1
        pred = model.predict(torch.tensor(rows), torch.tensor(cols))
        assert pred.shape == (len(rows),) and torch.isfinite(pred).all()
        assert math.isfinite(model.score((rows, cols, vals)))
        top, scores = model.recommend([0, max(rows) + 5], n=3, exclude_seen=False)
        assert (top >= 0).all() and torch.isfinite(scores).all()
else:  # pragma: no cover
    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_fuzz_estimator_input_conversion():
        pass


# ---------------------------------------------------------------- more entry points

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


SET_PARAMS_CASES = {
    "unknown_name": (dict(nope=1), r"^Invalid parameter 'nope' for MatrixFactorization"),
    "fitted_attribute": (dict(user_factors_=None), r"^Invalid parameter 'user_factors_'"),
}


@pytest.mark.parametrize("case", sorted(SET_PARAMS_CASES))
def test_set_params_bad_input(case):
    kwargs, match = SET_PARAMS_CASES[case]
    model = MatrixFactorization(rank=5)
    with pytest.raises(ValueError, match=match):
        model.set_params(rank=7, **kwargs)
    assert model.rank == 5  # nothing set when one name is bad


PAIRS = np.array([[0, 1], [1, 0], [2, 2], [0, 2]])
PAIRS_CASES = {  # fit(X, y), the scikit-learn form
    "X_1d": ((np.array([0, 1, 2]), [1.0, 2.0, 3.0]), ValueError,
             r"^X must have shape \(n, 2\) \(user, item pairs\), got shape \(3,\)"),
    "X_3_columns": ((np.zeros((2, 3), dtype=int), [1.0, 2.0]), ValueError,
                    r"^X must have shape \(n, 2\)"),
    "X_empty": ((np.zeros((0, 2), dtype=int), []), ValueError, r"^X holds no pairs"),
    "X_float_id": ((np.array([[0.5, 1.0]]), [1.0]), ValueError,
                   r"^X\[:, 0\] must hold integer ids; X\[:, 0\]\[0\] = 0.5"),
    "X_nan_id": ((np.array([[0.0, math.nan]]), [1.0]), ValueError,
                 r"^X\[:, 1\] must hold integer ids"),
    "X_float_id_2_63": ((np.array([[0.0, 1.0], [2.0**63, 0.0]]), [1.0, 2.0]), ValueError,
                        r"^X\[:, 0\]\[1\] = 9.22\d*e\+18 does not fit in int64"),
    "X_bool": ((np.array([[True, False]]), [1.0]), TypeError,
               r"^X\[:, 0\] must hold integer or string ids, got dtype bool"),
    "X_object": ((np.array([[object(), 1]], dtype=object), [1.0]), TypeError,
                 r"^X\[:, 0\] must hold integer or string ids"),
    "X_ratings_form": ((_triples(), [1.0]), ValueError, r"^X must have shape \(n, 2\)"),
    "X_sparse": ((torch.eye(2).to_sparse(), [1.0, 2.0]), TypeError,
                 r"^X: with y, X must be an \(n, 2\) array"),
    "X_meta": ((torch.zeros(2, 2, dtype=torch.int64, device="meta"), [1.0, 2.0]), ValueError,
               r"^X is a meta tensor"),
    "y_short": ((PAIRS, [1.0, 2.0, 3.0]), ValueError,
                r"^y must have one rating per row of X: got 3 ratings for 4 pairs"),
    "y_nan": ((PAIRS, [1.0, math.nan, 3.0, 4.0]), ValueError, r"^y: rating 1 is nan"),
    "y_2d": ((PAIRS, np.ones((4, 2))), ValueError, r"^y: ratings must be 1-D"),
    "y_strings": ((PAIRS, ["a", "b", "c", "d"]), TypeError, r"^y must hold numbers, got strings"),
    "y_bool": ((PAIRS, [True, False, True, True]), TypeError, r"^y: ratings must be real"),
    "y_overflows_float32": ((PAIRS, [1.0, 1e300, 3.0, 4.0]), ValueError,
                            r"^y: rating 1 = 1e\+300 overflows float32"),
}


@pytest.mark.parametrize("case", sorted(PAIRS_CASES))
def test_fit_pairs_bad_input(case):
    (X, y), exc, match = PAIRS_CASES[case]
    model = MatrixFactorization(rank=2, max_iter=1, random_state=0)
    with pytest.raises(exc, match=match):
        model.fit(X, y)
    assert not [k for k in vars(model) if k.endswith("_")]


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


LOAD_ARG_CASES = {  # map_location
    "garbage": ("gpu7", r"^map_location must be a device such as 'cpu' or 'cuda:0', got 'gpu7'"),
    "meta": ("meta", r"^map_location='meta' cannot hold the model: meta tensors hold no data"),
    "wrong_type": (3.5, r"^map_location must be a device"),
}


@pytest.mark.parametrize("case", sorted(LOAD_ARG_CASES))
def test_load_bad_map_location(saved_model, case):
    location, match = LOAD_ARG_CASES[case]
    with pytest.raises(ValueError, match=match):
        MatrixFactorization.load(saved_model, map_location=location)


# Ratings that overflow the model dtype, or whose squared errors do: the error names the
# argument and the dtype (it used to be a message about the global mean or divergence).
OVERFLOW_CASES = {
    "value_float32": (torch.float32, 1e300, r"rating 7 = 1e\+300 overflows float32"),
    "value_float32_just_above": (torch.float32, 3.5e38, r"rating 7 = 3.5e\+38 overflows float32"),
    "squares_float32": (torch.float32, 1e20,
                        r"the ratings are too large for a float32 model: their sum of squares "
                        r"\(1e\+40\) overflows float32"),
    "squares_float64": (torch.float64, 1e160,
                        r"the ratings are too large for a float64 model: their sum of squares "
                        r"\(inf\) overflows float64"),
}


@pytest.mark.parametrize("solver", ["sgd", "als", "adam"])
@pytest.mark.parametrize("case", sorted(OVERFLOW_CASES))
def test_ratings_overflowing_the_dtype(solver, case):
    dtype, big, pattern = OVERFLOW_CASES[case]
    rows, cols, vals = _triples(3, 10, 8, 40)
    vals = vals.clone()
    vals[7] = big
    model = MatrixFactorization(rank=2, solver=solver, max_iter=2, random_state=0, dtype=dtype)
    with pytest.raises(ValueError, match="^X: " + pattern):
        model.fit((rows, cols, vals))
    dense = torch.full((10, 8), math.nan, dtype=torch.float64)
    dense[rows, cols] = vals  # duplicates: the last value stays; entry 7 is kept below
    dense[rows[7], cols[7]] = big
    with pytest.raises(ValueError, match=r"^X: .*overflows " + str(dtype)[6:]):
        model.fit(dense)
    with pytest.raises(ValueError, match=r"^y: .*overflows " + str(dtype)[6:]):
        model.fit(torch.stack([rows, cols], 1), vals)


@pytest.mark.parametrize("solver", ["als", "adam"])
def test_ratings_below_the_overflow_limit_train(solver):
    """The limit is the dtype's, not a guess: large ratings that fit still train."""
    rows, cols, vals = _triples(3, 10, 8, 40)
    big = vals * 1e15  # squares near 1e31 each, far below float32's 3.4e38
    model = MatrixFactorization(rank=2, solver=solver, max_iter=3, random_state=0).fit(
        (rows, cols, big))
    assert model.rating_mean_ == pytest.approx(float(big.float().double().mean()), rel=1e-12)
    assert all(math.isfinite(h["train_rmse"]) for h in model.history_)


def test_fold_in_ratings_overflowing_the_dtype():
    model = _fitted()
    with pytest.raises(ValueError, match=r"^X: rating 1 = 1e\+39 overflows float32"):
        model.fold_in(([0, 0], [1, 2], [3.0, 1e39]))
    model64 = _fitted(dtype=torch.float64)
    factors, _ = model64.fold_in(([0, 0], [1, 2], [3.0, 1e39]))  # fine in float64
    assert torch.isfinite(factors).all()


# Other public callables of the package, each with its bad inputs.
from mfext import datasets as _ds  # noqa: E402

_ids2 = np.arange(2)
DATASETS_CASES = {
    "Ratings": {
        "rows_2d": (lambda: _ds.Ratings(torch.zeros(1, 1, dtype=torch.int64), torch.tensor([0]),
                                        torch.tensor([1.0]), _ids2, _ids2, 2, 2),
                    TypeError, r"^Ratings.rows must be a 1-D tensor"),
        "rows_list": (lambda: _ds.Ratings([0], torch.tensor([0]), torch.tensor([1.0]), _ids2,
                                          _ids2, 2, 2), TypeError, r"^Ratings.rows must be a 1-D"),
        "lengths": (lambda: _ds.Ratings(torch.tensor([0, 1]), torch.tensor([0]),
                                        torch.tensor([1.0, 2.0]), _ids2, _ids2, 2, 2),
                    ValueError, r"^Ratings: rows, cols and vals must have the same length"),
        "int32_rows": (lambda: _ds.Ratings(torch.tensor([0], dtype=torch.int32), torch.tensor([0]),
                                           torch.tensor([1.0]), _ids2, _ids2, 2, 2),
                       TypeError, r"^Ratings: rows and cols must be int64"),
        "int_vals": (lambda: _ds.Ratings(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]),
                                         _ids2, _ids2, 2, 2),
                     TypeError, r"^Ratings: vals must be floating point"),
        "user_ids_shape": (lambda: _ds.Ratings(torch.tensor([0]), torch.tensor([0]),
                                               torch.tensor([1.0]), _ids2, _ids2, 3, 2),
                           ValueError, r"^Ratings: user_ids \(2,\) and item_ids"),
    },
    "train_test_split": {
        "not_ratings": (lambda: _ds.train_test_split(_triples()), TypeError,
                        r"^train_test_split: expected a Ratings object, got tuple"),
        "fraction_1": (lambda: _ds.train_test_split(_ds.synthetic_ratings(5, 5, 20), 1.0),
                       ValueError, r"^train_test_split: a fractional test_size must lie in"),
        "negative": (lambda: _ds.train_test_split(_ds.synthetic_ratings(5, 5, 20), -0.5),
                     ValueError, r"^train_test_split: a fractional test_size must lie in"),
        "too_many": (lambda: _ds.train_test_split(_ds.synthetic_ratings(5, 5, 20), 20),
                     ValueError, r"^train_test_split: test_size=20 leaves 20 of 20"),
        "string": (lambda: _ds.train_test_split(_ds.synthetic_ratings(5, 5, 20), "0.5"),
                   TypeError, r"^train_test_split: test_size must be a float or an int"),
    },
    "synthetic_ratings": {
        "n_users_0": (lambda: _ds.synthetic_ratings(0, 5, 3), ValueError,
                      r"^synthetic_ratings: n_users must be a positive integer"),
        "rank_float": (lambda: _ds.synthetic_ratings(5, 5, 3, rank=1.5), ValueError,
                       r"^synthetic_ratings: rank must be a positive integer"),
        "nnz_too_big": (lambda: _ds.synthetic_ratings(2, 2, 5), ValueError,
                        r"^synthetic_ratings: nnz=5 exceeds n_users \* n_items = 4"),
        "noise_nan": (lambda: _ds.synthetic_ratings(5, 5, 3, noise=math.nan), ValueError,
                      r"^synthetic_ratings: noise must be finite and >= 0"),
        "noise_negative": (lambda: _ds.synthetic_ratings(5, 5, 3, noise=-1.0), ValueError,
                           r"^synthetic_ratings: noise must be finite and >= 0"),
    },
}
DATASETS_PARAMS = [(entry, case) for entry, cases in DATASETS_CASES.items() for case in cases]


@pytest.mark.parametrize("entry, case", DATASETS_PARAMS,
                         ids=[f"{e}-{c}" for e, c in DATASETS_PARAMS])
def test_datasets_bad_input(entry, case):
    call, exc, match = DATASETS_CASES[entry][case]
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------- counts

# Entry point -> the case tables and the test functions of this module that feed it bad
# input. The counts are computed from the tables; test_coverage_counts checks that every
# public entry point is here (a new public method without bad-input tests fails it) and
# that every named test exists.
COVERED = {
    "factorize": [FACTORIZE_CASES],
    "MatrixFactorization(hyperparameters)": [HYPER_CASES],
    "MatrixFactorization.fit": [FIT_CASES, PAIRS_CASES,
                                "test_fit_bad_validation_and_early_stopping",
                                "test_ratings_overflowing_the_dtype"],
    "MatrixFactorization.predict": [PREDICT_CASES, PREDICT_PAIRS_CASES,
                                    "test_predict_unknown_fallback_is_finite"],
    "MatrixFactorization.recommend": [RECOMMEND_CASES,
                                      "test_recommend_unknown_user_and_not_fitted"],
    "MatrixFactorization.similar_items": [SIMILAR_CASES],
    "MatrixFactorization.user_index": [INDEX_CASES],
    "MatrixFactorization.item_index": [INDEX_CASES],
    "MatrixFactorization.fold_in": [FOLD_IN_CASES, "test_fold_in_ratings_overflowing_the_dtype"],
    "MatrixFactorization.score": [SCORE_CASES, PREDICT_PAIRS_CASES,
                                  "test_score_unknown_ids_fall_back"],
    "MatrixFactorization.set_params": [SET_PARAMS_CASES],
    "MatrixFactorization.load": [LOAD_CASES, LOAD_ARG_CASES, "test_load_missing_file",
                                 "test_load_directory"],
    "MatrixFactorization.save": ["test_save_failure_keeps_previous_file",
                                "test_save_bad_destination"],
    "datasets.load_movielens": [DATASET_CASES, "test_load_movielens_missing"],
    "datasets.Ratings": [DATASETS_CASES["Ratings"]],
    "datasets.train_test_split": [DATASETS_CASES["train_test_split"]],
    "datasets.synthetic_ratings": [DATASETS_CASES["synthetic_ratings"]],
    "cli": [CLI_CASES],
    "sgd_epoch_ (aliasing)": [ALIAS_CASES, INPUT_ALIAS_CASES],
}
# Public callables without arguments to get wrong (the ops are covered in test_bad_inputs.py
# and test_fuzz_ops.py).
NOT_COVERED_HERE = {"MatrixFactorization.get_params": "takes only deep, which it ignores"}


def _public_entry_points() -> set:
    methods = {f"MatrixFactorization.{name}" for name in dir(MatrixFactorization)
               if not name.startswith("_") and callable(getattr(MatrixFactorization, name))}
    return (methods | {f"datasets.{name}" for name in mfext.datasets.__all__}
            | {"factorize", "MatrixFactorization(hyperparameters)", "cli"})


def test_coverage_counts():
    public = _public_entry_points()
    assert "MatrixFactorization.fit" in public and "datasets.load_movielens" in public
    missing = sorted(public - set(COVERED) - set(NOT_COVERED_HERE))
    assert not missing, f"public entry points without bad-input tests here: {missing}"
    counts = {}
    for entry, sources in COVERED.items():
        count = 0
        for source in sources:
            if isinstance(source, str):
                test = globals().get(source)
                assert source.startswith("test_") and callable(test), f"{entry}: no test {source}"
                count += 1
            else:
                count += len(source)
        assert count > 0, entry
        counts[entry] = count
    print(counts)
