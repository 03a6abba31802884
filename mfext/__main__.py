"""mfext's command line.

  mfext demo                       the toy matrix with both backends, and a timing
  mfext bench [--quick|--smoke]    the fused ops against autograd and torch.compile
  mfext bench --movielens PATH     RMSE against time for each solver (and Surprise)
  mfext fit RATINGS --rank K --out MODEL
  mfext recommend MODEL --user ID -n 10
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _parser() -> argparse.ArgumentParser:
    from mfext.bench.cli import add_bench_arguments

    parser = argparse.ArgumentParser(prog="mfext", description=__doc__,
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
                     help="hold out this share and print its RMSE (default 0: train on all)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--device", default=None)
    fit.add_argument("--verbose", action="store_true")

    rec = sub.add_parser("recommend", help="top-n items for a user of a saved model")
    rec.add_argument("model")
    rec.add_argument("--user", required=True, action="append",
                     help="the raw user id, as in the ratings file (repeatable)")
    rec.add_argument("-n", type=int, default=10)
    rec.add_argument("--include-seen", action="store_true",
                     help="also recommend items the user has rated")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m mfext`` and the ``mfext`` console script."""
    args = _parser().parse_args(argv)
    from mfext.bench.estimator_api import MissingFeature

    try:
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

            recommend_command(args.model, args.user, n=args.n, include_seen=args.include_seen)
    except (MissingFeature, ValueError, OSError) as exc:  # OSError: missing file, directory, ...
        print(f"mfext {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
