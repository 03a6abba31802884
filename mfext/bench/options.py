# TEMP SHIM: remove when tests import the new path
"""Moved to :mod:`mfext.cli.options`; this old name is that very module (so patches reach it)."""
import sys

from mfext.cli import options as _options

sys.modules[__name__] = _options
