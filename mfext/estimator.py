"""``mfext.estimator``: the historical import path of :class:`MatrixFactorization`.

The model now lives in :mod:`mfext.recommenders` (the recommender base in
:mod:`mfext.recommenders.base`, the model in :mod:`mfext.recommenders.mf`).
``from mfext.estimator import MatrixFactorization`` keeps working and gives the
same class as ``mfext.MatrixFactorization``; new code should import it from
``mfext`` or ``mfext.recommenders``. This module owns nothing else.
"""
from __future__ import annotations

import sys
import types
from typing import Any, Dict, Tuple

from .recommenders import MatrixFactorization

__all__ = ["MatrixFactorization"]

# TEMP SHIM: remove when tests import the new path. Old private names of this
# module, and setting them (as tests monkeypatch them) reaches their new home.
# The old private modules stay importable as attributes of mfext, as before.
from . import _cf_distributed, _cf_input, _cf_solvers  # noqa: E402,F401
from .recommenders import limits as _limits  # noqa: E402
from .recommenders import persistence as _persistence  # noqa: E402
from .recommenders import serving as _serving  # noqa: E402

_num_threads = _limits.num_threads
_device_memory = _limits.device_memory
_SCORE_BUDGET = _serving.SCORE_BUDGET

_FORWARDED: Dict[str, Tuple[types.ModuleType, str]] = {
    "_device_memory": (_limits, "device_memory"),
    "_SCORE_BUDGET": (_serving, "SCORE_BUDGET"),
    "_num_threads": (_limits, "num_threads"),
    "open": (_persistence, "open"),  # the umask reader's open
}


class _ForwardingModule(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FORWARDED:
            module, target = _FORWARDED[name]
            setattr(module, target, value)
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if name in _FORWARDED:
            module, target = _FORWARDED[name]
            if target in vars(module):
                delattr(module, target)
        super().__delattr__(name)


sys.modules[__name__].__class__ = _ForwardingModule
