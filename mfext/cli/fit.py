"""``mfext fit``: train ``MatrixFactorization`` on a ratings file and save it.

This module owns the command's arguments, the order of its work (every option
checked before the ratings are read, then fit, score and save) and what it
prints. The model, the file formats and the split belong to
:class:`mfext.MatrixFactorization` and :mod:`mfext.datasets`; the option
checks to :mod:`mfext.cli.options`.
"""
from __future__ import annotations

import argparse
import time
from typing import List, Optional

from mfext import MatrixFactorization, datasets

from .options import (check_device, check_out_file, check_positive_int, check_share,
                      estimator_option_errors)

__all__ = ["fit_command"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``fit`` and its arguments to the subcommands ``sub``."""
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


def run(args: argparse.Namespace, argv: Optional[List[str]] = None) -> None:
    """Run ``mfext fit`` with the parsed ``args``."""
    fit_command(args.ratings, args.rank, args.out, solver=args.solver,
                max_iter=args.max_iter, reg=args.reg, lr=args.lr,
                test_size=args.test_size, seed=args.seed, device=args.device,
                verbose=args.verbose)


def fit_command(ratings_path: str, rank: int, out: str, *, solver: str = "als",
                max_iter: Optional[int] = None, reg: Optional[float] = None,
                lr: Optional[float] = None, test_size: float = 0.0, seed: int = 0,
                device: Optional[str] = None, verbose: bool = False) -> dict:
    """Train ``MatrixFactorization`` on a ratings file and save it to ``out``.

    Options left ``None`` keep the estimator's defaults. With ``test_size`` > 0,
    that share of the ratings is held out (seeded split) and its RMSE printed.
    Every option, ``out`` included (an existing, writable directory; not a
    directory itself), is checked before the ratings are read.

    Returns
    -------
    dict: ``n_users``, ``n_items``, ``n_train``, ``seconds``, ``test_rmse`` (or None), ``path``.

    Raises
    ------
    ValueError
        A bad option (the message names it), or a malformed ratings file.
    FileNotFoundError
        No ratings file at ``ratings_path``.
    """
    test_size = check_share(test_size, "--test-size")
    # torch.Generator seeds are 64-bit: a larger one fails deep inside fit, unnamed
    check_positive_int(seed, "--seed", 0, 2 ** 64 - 1)
    check_device(device)
    check_out_file(out)
    options = {k: v for k, v in {"max_iter": max_iter, "reg": reg, "lr": lr}.items()
               if v is not None}
    with estimator_option_errors():
        model = MatrixFactorization(rank=rank, solver=solver, random_state=seed, device=device,
                                    verbose=verbose, **options)
        model._resolved()  # the estimator's own checks, now rather than after reading the file
    ratings = datasets.load_movielens(ratings_path)
    train, test = (datasets.train_test_split(ratings, test_size=test_size, seed=seed)
                   if test_size > 0 else (ratings, None))
    t0 = time.perf_counter()
    with estimator_option_errors():
        if test is not None:
            model.fit(train, validation=test)
        else:
            model.fit(train)
    seconds = time.perf_counter() - t0
    model.save(out)
    summary = {"n_users": int(ratings.n_users), "n_items": int(ratings.n_items),
               "n_train": int(train.vals.numel()), "seconds": seconds,
               "test_rmse": float(model.score(test)) if test is not None else None, "path": out}
    print(f"fitted rank {rank} ({solver}) on {summary['n_train']:,} ratings of "
          f"{summary['n_users']:,} users x {summary['n_items']:,} items in {seconds:.2f} s")
    if summary["test_rmse"] is not None:
        print(f"test RMSE ({test_size:.0%} held out, seed {seed}): {summary['test_rmse']:.4f}")
    print(f"saved to {out}")
    return summary
