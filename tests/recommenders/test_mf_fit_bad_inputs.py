"""MatrixFactorization.fit and its parameters refuse bad input with a clear
ValueError/TypeError that names the argument, and fit nothing.

The hyperparameters, the data in each form, the pairs form fit(X, y), validation and
early stopping, ratings that overflow the model dtype, and set_params. The case tables
count toward tests/test_bad_input_coverage.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mfext import MatrixFactorization
from mf_helpers import PAIRS
from helpers import _triples


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
