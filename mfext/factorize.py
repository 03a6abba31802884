"""``mfext.factorize``: an alias module, kept so that existing imports keep working.

``from mfext.factorize import factorize, FactorizeResult, DivergenceError``
still works. The dense factorizer lives in :mod:`mfext.dense` (entry point
:func:`mfext.dense.factorize`), the shared training loop and
:class:`~mfext.training.DivergenceError` in :mod:`mfext.training`. This
module defines nothing. After ``import mfext``, ``mfext.factorize`` is the
function, not this module (``mfext/__init__.py`` loads this module first).
"""
from .dense import FactorizeResult, factorize
from .training import DivergenceError

__all__ = ["factorize", "FactorizeResult", "DivergenceError"]
