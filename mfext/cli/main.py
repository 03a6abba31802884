"""The dispatcher of ``python -m mfext``: the parser, the commands, the exit codes.

This module owns the top-level parser (one subcommand per module of
:mod:`mfext.cli`, each adding its own arguments), the dispatch to the
command's ``run``, and the error policy: a failure prints one line,
``mfext COMMAND: error: ...``, on stderr and exits with status 2 (1 for an
internal error, 130 on Ctrl-C); ``MFEXT_DEBUG=1`` shows the traceback. The
commands' work and their option checks live in their own modules.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, NoReturn, Optional

__all__ = ["main", "DEBUG_ENV"]

# The description of ``mfext --help``.
USAGE = """mfext's command line.

  mfext demo                       the toy matrix with both backends, and a timing
  mfext bench [--quick|--smoke]    the fused ops against autograd and torch.compile
  mfext bench --movielens PATH     RMSE against time for each solver (and Surprise)
  mfext bench --movielens PATH --implicit    ImplicitALS beside implicit's ALS
  mfext fit RATINGS --rank K --out MODEL [--model implicit-als]
  mfext recommend MODEL --user ID -n 10
  mfext evaluate MODEL TEST_FILE   ranking metrics (and RMSE) on held-out ratings

A failure prints one line, "mfext COMMAND: error: ...", on stderr and exits
with status 2 (1 for an internal error); MFEXT_DEBUG=1 shows the traceback.
"""

# Errors that bad input, a missing or unreadable file, or a machine without a
# needed device raise: reported as "error", without the type name for the first two
# (their messages read as sentences), with it for the rest.
_PLAIN = (ValueError, OSError)
_EXPECTED = _PLAIN + (TypeError, IndexError, KeyError, OverflowError, RuntimeError,
                      NotImplementedError, MemoryError)
DEBUG_ENV = "MFEXT_DEBUG"


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too, like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _message(exc: BaseException) -> str:
    """One line for ``exc``: its message, prefixed with its type unless a ValueError/OSError."""
    # str(KeyError('x')) is "'x'": the key alone says nothing
    text = _one_line(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"  # not "[Errno 21] Is a directory: 'x'"
    if isinstance(exc, _PLAIN) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def _commands() -> dict:
    """Command name -> its module (each has ``add_parser(sub)`` and ``run(args, argv)``),
    in the order ``mfext --help`` lists them."""
    from . import bench, demo, evaluate, fit, recommend

    return {"demo": demo, "bench": bench, "fit": fit, "recommend": recommend,
            "evaluate": evaluate}


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mfext", description=USAGE,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in _commands().values():
        command.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m mfext`` and the ``mfext`` console script.

    Returns
    -------
    int: 0 on success; 2 for an error of the input or the machine (bad option,
    missing or malformed file, absent device); 1 for an internal error; 130 on
    Ctrl-C. Each failure prints one line on stderr; with ``MFEXT_DEBUG=1`` the
    exception propagates with its traceback instead.
    """
    args = _parser().parse_args(argv)
    prefix = f"mfext {args.command}"
    try:
        _commands()[args.command].run(args, argv)
    except KeyboardInterrupt:
        if _debug():
            raise
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except _EXPECTED as exc:
        if _debug():
            raise
        print(f"{prefix}: error: {_message(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line, and the way to see the traceback
        if _debug():
            raise
        print(f"{prefix}: internal error: {_message(exc)} (rerun with {DEBUG_ENV}=1 for the "
              "traceback)", file=sys.stderr)
        return 1
    return 0
