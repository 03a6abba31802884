# TEMP SHIM: remove when tests import the new path
"""Old home of the data-parallel solvers, now :mod:`mfext.recommenders.distributed_solvers`."""
from .recommenders.distributed_solvers import (  # noqa: F401
    DistributedAdamSolver, DistributedAlsSolver, DsgdSolver, global_item_counts)
