"""mfext.datasets refuses bad input with an error naming the function: malformed
ratings files (load_movielens), and bad arguments of Ratings, train_test_split and
synthetic_ratings. The case tables count toward tests/test_bad_input_coverage.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mfext import datasets as _ds
from mfext.datasets import load_movielens
from helpers import _triples


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
