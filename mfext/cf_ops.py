"""The collaborative-filtering kernels under their public name ``mfext.cf_ops``.

``sgd_epoch_`` runs one epoch of stochastic gradient descent over observed
ratings in place; ``als_normal_equations`` builds the per-row k x k systems of
alternating least squares and ``als_solve`` solves them without storing them;
``sparse_dot`` and ``bucket_sort`` are the internal ops the input forms and
solvers use. None of them is differentiable: they are solver steps, not losses.

This module only re-exports them: their wrappers and fake kernels live in
:mod:`mfext.ops` (:mod:`mfext.ops.sgd`, :mod:`mfext.ops.als`,
:mod:`mfext.ops.sparse`, :mod:`mfext.ops.sort`). Both names stay valid.
"""
from __future__ import annotations

from .ops.als import als_normal_equations, als_solve
from .ops.sgd import sgd_epoch_
from .ops.sort import bucket_sort
from .ops.sparse import sparse_dot

__all__ = ["sgd_epoch_", "als_normal_equations", "als_solve", "sparse_dot", "bucket_sort"]
