# TEMP SHIM: remove when tests import the new path
"""Old home of the explicit-ratings solvers, now :mod:`mfext.recommenders.solvers`."""
from .recommenders.solvers import (  # noqa: F401
    GPU_DETERMINISTIC_GROUPS, AdamSolver, AlsSolver, Factors, RatingsProblem, SgdSolver,
    entry_dots, fold_in_users, init_factors, predict_entries, ratings_half_step, reg_diagonal)

Problem = RatingsProblem
als_half_step = ratings_half_step
