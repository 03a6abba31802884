# TEMP SHIM: remove when tests import the new path
"""Moved to :mod:`mfext.cli.demo`; this old name is that very module (so patches reach it)."""
import sys

from mfext.cli import demo as _demo

sys.modules[__name__] = _demo
