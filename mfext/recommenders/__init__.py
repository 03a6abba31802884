"""Collaborative-filtering recommenders: the shared base and the models on it.

:class:`RecommenderBase` owns what every model shares (input forms, id maps,
predict, recommend, similar items and users, fold-in and partial fits,
save/load, devices; see :mod:`mfext.recommenders.base`);
:class:`MatrixFactorization` (:mod:`mfext.recommenders.mf`) is the
explicit-ratings model on it, :class:`ImplicitALS`
(:mod:`mfext.recommenders.implicit_als`) the implicit-feedback one. Each
model's solvers live beside it (:mod:`mfext.recommenders.solvers`,
:mod:`mfext.recommenders.distributed_solvers`,
:mod:`mfext.recommenders.implicit_solvers`).
"""
import os
from typing import Any, Optional

from .base import RecommenderBase
from .implicit_als import ImplicitALS
from .mf import MatrixFactorization
from .persistence import saved_format

__all__ = ["RecommenderBase", "MatrixFactorization", "ImplicitALS", "MODELS", "load_model"]

#: The models, by the ``format`` field of their saved files.
MODELS = {cls._FORMAT: cls for cls in (MatrixFactorization, ImplicitALS)}


def load_model(path: "os.PathLike[str] | str", map_location: Optional[Any] = None) -> Any:
    """Load a model saved by any recommender's ``save``, as its own class.

    Reads the file's ``format`` and calls that class's ``load`` (a file that
    names no known model goes to ``MatrixFactorization.load``, whose error
    explains what is wrong with it).
    """
    cls = MODELS.get(saved_format(path), MatrixFactorization)
    return cls.load(path, map_location=map_location)
