"""Collaborative-filtering recommenders: the shared base and the models on it.

:class:`RecommenderBase` owns what every model shares (input forms, id maps,
predict, recommend, similar items and users, fold-in and partial fits,
save/load, devices; see :mod:`mfext.recommenders.base`);
:class:`MatrixFactorization` (:mod:`mfext.recommenders.mf`) is the
explicit-ratings model on it. Each model's solvers live beside it
(:mod:`mfext.recommenders.solvers`, :mod:`mfext.recommenders.distributed_solvers`).
"""
from .base import RecommenderBase
from .mf import MatrixFactorization

__all__ = ["RecommenderBase", "MatrixFactorization"]
