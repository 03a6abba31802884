"""``mfext.dense``: factorization of a dense matrix, ``A (m, n) ≈ W (m, k) @ H (k, n)``.

The package owns :func:`factorize` and everything only it uses:

- :mod:`.factorization`: the entry point, its argument checks and :class:`FactorizeResult`;
- :mod:`.problem`: the data (NaN as missing, weights, the loss reduction);
- :mod:`.init`: the initial factors (random as the reference loop, SVD, NNDSVD);
- :mod:`.objective`: the loss, its gradients and its certified float32 report;
- :mod:`.rules`: the update rules (Adam, GD, line-search GD, ALS) as solvers;
- :mod:`.als`: the batched k×k least-squares solves.

It leaves the loop (logging, ``tol``, callbacks, progress, the divergence guard)
to :mod:`mfext.training`, the fused ops to :mod:`mfext.ops` and the collectives
to :mod:`mfext.distributed`. It knows no recommender.
"""
from .factorization import FactorizeResult, factorize

__all__ = ["factorize", "FactorizeResult"]
