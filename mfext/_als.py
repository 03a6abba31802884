# TEMP SHIM: remove when tests import the new path
"""Old home of the batched least-squares solves: now :mod:`mfext.dense.als`."""
from .dense.als import (  # noqa: F401
    dense_als_half_step as als_half_step,
    nnls_coordinate_descent,
    orthonormal_basis,
    solve_normal_equations,
    weighted_gram,
)
