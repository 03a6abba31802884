"""scikit-learn style constructor parameters, shared by every recommender.

This module owns :class:`ParamsMixin` (``get_params``/``set_params`` and a
``repr`` of the parameters that differ from the defaults, all read from the
signature of the model's ``__init__``) and the checks models use to validate
their parameters at fit time (:func:`check_number`, :func:`check_integer`),
which name the parameter in every error. What the parameters mean, and their
defaults, is each model's.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Dict, List

import numpy as np

__all__ = ["ParamsMixin", "check_number", "check_integer"]


def check_number(name: str, value: Any, lo: float, lo_open: bool, hi: float = math.inf) -> float:
    """``value`` as a finite float in ``(lo, hi]`` (``lo_open``) or ``[lo, hi]``, else an error."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi):
        raise ValueError(f"{name} must be finite and {'>' if lo_open else '>='} {lo}"
                         + (f" and <= {hi}" if hi < math.inf else "") + f", got {value!r}")
    return v


def check_integer(name: str, value: Any, lo: int) -> int:
    """``value`` as an int ``>= lo`` (bools refused), else a TypeError or ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {lo}, got {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


class ParamsMixin:
    """Constructor parameters as in scikit-learn: every ``__init__`` argument is an attribute."""

    @classmethod
    def _param_names(cls) -> List[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        """The constructor parameters, as in scikit-learn."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Any:
        """Set constructor parameters; returns self. An unknown name sets nothing."""
        valid = self._param_names()
        for key in params:  # all names first: a bad one sets nothing
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for {type(self).__name__}; valid "
                                 f"parameters are: {', '.join(valid)}")
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = type(self)().get_params()
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults[k]]
        return f"{type(self).__name__}({', '.join(changed)})"
