"""Lazy access to the collaborative-filtering API (issue 5), with a clear error when absent.

The CLI's ``fit``, ``recommend`` and ``bench --movielens`` need
``mfext.MatrixFactorization`` and ``mfext.datasets``. They are imported only
when those commands run, so the rest of the command line works without them.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Tuple


class MissingFeature(RuntimeError):
    """A command needs a part of mfext that this build does not have."""


def require_estimator(command: str) -> Tuple[type, ModuleType]:
    """``(mfext.MatrixFactorization, mfext.datasets)`` or :class:`MissingFeature`."""
    import mfext

    if not hasattr(mfext, "MatrixFactorization"):
        raise MissingFeature(
            f"`mfext {command}` requires mfext.MatrixFactorization (issue 5), which this "
            f"build of mfext {mfext.__version__} does not provide")
    try:
        datasets = importlib.import_module("mfext.datasets")
    except ImportError as exc:
        raise MissingFeature(
            f"`mfext {command}` requires mfext.datasets (issue 5): {exc}") from exc
    return mfext.MatrixFactorization, datasets
