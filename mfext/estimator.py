"""``mfext.estimator``: the historical import path of :class:`MatrixFactorization`.

The model now lives in :mod:`mfext.recommenders` (the recommender base in
:mod:`mfext.recommenders.base`, the model in :mod:`mfext.recommenders.mf`).
``from mfext.estimator import MatrixFactorization`` keeps working and gives the
same class as ``mfext.MatrixFactorization``; new code should import it from
``mfext`` or ``mfext.recommenders``. This module owns nothing else.
"""
from __future__ import annotations

from .recommenders import MatrixFactorization

__all__ = ["MatrixFactorization"]
