"""mfext's command line.

  mfext demo                       the toy matrix with both backends, and a timing
  mfext bench [--quick|--smoke]    the fused ops against autograd and torch.compile
  mfext bench --movielens PATH     RMSE against time for each solver (and Surprise)
  mfext fit RATINGS --rank K --out MODEL
  mfext recommend MODEL --user ID -n 10

A failure prints one line, "mfext COMMAND: error: ...", on stderr and exits
with status 2 (1 for an internal error); MFEXT_DEBUG=1 shows the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, NoReturn, Optional

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


def _parser() -> argparse.ArgumentParser:
    from mfext.bench.cli import add_bench_arguments

    parser = _Parser(prog="mfext", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the toy example with both backends, and a timing")
    demo.add_argument("--size", type=int, default=2048, help="timing matrix size (default 2048)")
    demo.add_argument("--rank", type=int, default=32, help="timing rank (default 32)")
    demo.add_argument("--repeat", type=int, default=5, help="timed samples (default 5)")
    demo.add_argument("--iterations", type=int, default=5000, help="Adam steps on the toy matrix")

    bench = sub.add_parser("bench", help="benchmark against autograd (see --help)",
                           description="Benchmark the fused ops against the autograd "
                                       "reference and torch.compile; write results.json, "
                                       "results.md and PNG plots to --out.")
    add_bench_arguments(bench)

    fit = sub.add_parser("fit", help="train MatrixFactorization on a ratings file")
    fit.add_argument("ratings", help="a MovieLens ratings file (u.data, ratings.dat, ratings.csv)")
    fit.add_argument("--rank", type=int, required=True)
    fit.add_argument("--out", required=True, help="where to save the model")
    fit.add_argument("--solver", default="als", choices=("sgd", "als", "adam"))
    fit.add_argument("--max-iter", type=int, default=None)
    fit.add_argument("--reg", type=float, default=None)
    fit.add_argument("--lr", type=float, default=None)
    fit.add_argument("--test-size", type=float, default=0.0,
                     help="hold out this share, in [0, 1), and print its RMSE (default 0: "
                          "train on all)")
    fit.add_argument("--seed", type=int, default=0, help="in 0..2**64-1 (default 0)")
    fit.add_argument("--device", default=None, help="cpu or cuda[:N] (default: the CPU)")
    fit.add_argument("--verbose", action="store_true")

    rec = sub.add_parser("recommend", help="top-n items for a user of a saved model")
    rec.add_argument("model")
    rec.add_argument("--user", required=True, action="append",
                     help="the raw user id, as in the ratings file (repeatable); for a model "
                          "fit without raw ids (on index triples), the user index")
    rec.add_argument("-n", type=int, default=10)
    rec.add_argument("--include-seen", action="store_true",
                     help="also recommend items the user has rated")
    rec.add_argument("--device", default=None,
                     help="where to load the model (default: where it was saved; the CPU "
                          "when this machine has no CUDA device)")
    return parser


def _run(args: argparse.Namespace, argv: Optional[List[str]]) -> None:
    if args.command == "demo":
        from mfext.bench.demo import run_demo

        run_demo(args.size, args.rank, args.repeat, args.iterations)
    elif args.command == "bench":
        from mfext.bench.cli import run_bench

        run_bench(args, argv)
    elif args.command == "fit":
        from mfext.bench.cf import fit_command

        fit_command(args.ratings, args.rank, args.out, solver=args.solver,
                    max_iter=args.max_iter, reg=args.reg, lr=args.lr,
                    test_size=args.test_size, seed=args.seed, device=args.device,
                    verbose=args.verbose)
    elif args.command == "recommend":
        from mfext.bench.cf import recommend_command

        recommend_command(args.model, args.user, n=args.n, include_seen=args.include_seen,
                          device=args.device)


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
        _run(args, argv)
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


if __name__ == "__main__":
    sys.exit(main())
