"""Property-based tests (hypothesis) of MatrixFactorization's input conversion: random
triples (duplicates, explicit zeros, random id ranges) in every input form, each solver."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mfext import MatrixFactorization


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
