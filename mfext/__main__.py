"""``python -m mfext``: runs the command line, :func:`mfext.cli.main.main`.

The commands, the parser and the exit codes live in :mod:`mfext.cli`; this
file is only the entry point (``main`` is also the ``mfext`` console script's).
"""
import sys

from mfext.cli.main import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
