# TEMP SHIM: remove when tests import the new path
"""Moved to :mod:`mfext.cli.bench`; this old name is that very module (so patches reach it)."""
import sys

from mfext.cli import bench as _bench

sys.modules[__name__] = _bench
