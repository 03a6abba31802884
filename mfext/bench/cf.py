# TEMP SHIM: remove when tests import the new path
"""Moved: ``fit_command`` to :mod:`mfext.cli.fit`, ``recommend_command`` (and the reading of
``--user``) to :mod:`mfext.cli.recommend`.

Re-exports both modules' contents. Setting an attribute here (a test's
monkeypatch) also sets it on the module that owns the name, which is where
the command line looks it up.
"""
import sys
import types

from mfext.cli import fit as _fit
from mfext.cli import recommend as _recommend
from mfext.cli.fit import fit_command  # noqa: F401
from mfext.cli.recommend import _INTEGER, _matches, _user_index, recommend_command  # noqa: F401

__all__ = ["fit_command", "recommend_command"]


class _Forward(types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        for owner in (_fit, _recommend):
            if name in vars(owner):
                setattr(owner, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Forward
