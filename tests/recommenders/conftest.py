"""Fixtures of the MatrixFactorization tests in this folder (the shared ones are in
tests/conftest.py; the helpers in mf_helpers.py and tests/helpers.py)."""
from __future__ import annotations

import pytest

from mfext import datasets as ds


@pytest.fixture(scope="module")
def small():
    """60 users x 40 items, 900 distinct ratings from a rank-3 model, split 90/10."""
    r = ds.synthetic_ratings(60, 40, 900, rank=3, noise=0.1, seed=5, biases=True)
    return (r,) + ds.train_test_split(r, 0.1, seed=0)
