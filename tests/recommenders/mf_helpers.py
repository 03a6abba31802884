"""Helpers of the MatrixFactorization tests in this folder: the solvers, a fast model
per solver, and a few (user, item) pairs. Import with ``from mf_helpers import ...``."""
from __future__ import annotations

import numpy as np

from mfext import MatrixFactorization

SOLVERS = ["sgd", "als", "adam"]
FAST = {"sgd": dict(max_iter=15), "als": dict(max_iter=4), "adam": dict(max_iter=30)}


def _model(solver="sgd", **kw):
    params = dict(rank=4, solver=solver, random_state=0, reg=0.02)
    params.update(FAST[solver])
    params.update(kw)
    return MatrixFactorization(**params)


# (user, item) pairs for fit(X, y), predict(X) and score(X, y)
PAIRS = np.array([[0, 1], [1, 0], [2, 2], [0, 2]])
