"""``mfext fit``: train a recommender on a ratings file and save it.

``--model mf`` (the default) is :class:`mfext.MatrixFactorization` on the
ratings; ``--model implicit-als`` is :class:`mfext.ImplicitALS` on the
interactions the ratings give (ratings >= ``--threshold``, value 1).

This module owns the command's arguments, the order of its work (every option
checked before the ratings are read, then fit, score and save) and what it
prints. The models, the file formats, the split and the metrics belong to
:mod:`mfext.recommenders`, :mod:`mfext.datasets` and :mod:`mfext.metrics`;
the option checks to :mod:`mfext.cli.options`.
"""
from __future__ import annotations

import argparse
import math
import time
from typing import List, Optional

from mfext import ImplicitALS, MatrixFactorization, datasets, metrics

from .options import (check_device, check_out_file, check_positive_int, check_share,
                      estimator_option_errors)

__all__ = ["fit_command", "MODELS", "SOLVERS"]

MODELS = ("mf", "implicit-als")
SOLVERS = {"mf": ("als", "sgd", "adam"), "implicit-als": ("cg", "cholesky")}  # default first


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``fit`` and its arguments to the subcommands ``sub``."""
    fit = sub.add_parser("fit", help="train a recommender on a ratings file")
    fit.add_argument("ratings", help="a MovieLens ratings file (u.data, ratings.dat, ratings.csv)")
    fit.add_argument("--rank", type=int, required=True)
    fit.add_argument("--out", required=True, help="where to save the model")
    fit.add_argument("--model", default="mf", choices=MODELS,
                     help="mf: MatrixFactorization on the ratings (default); implicit-als: "
                          "ImplicitALS on the ratings >= --threshold")
    fit.add_argument("--solver", default=None, choices=sorted({s for v in SOLVERS.values()
                                                               for s in v}),
                     help="mf: sgd, als (default) or adam; implicit-als: cg (default) or "
                          "cholesky")
    fit.add_argument("--alpha", type=float, default=None, help="implicit-als: the confidence "
                                                              "scale (default 1)")
    fit.add_argument("--threshold", type=float, default=4.0,
                     help="implicit-als: ratings at or above it are interactions (default 4)")
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
    fit_command(args.ratings, args.rank, args.out, model=args.model, solver=args.solver,
                max_iter=args.max_iter, reg=args.reg, lr=args.lr, alpha=args.alpha,
                threshold=args.threshold, test_size=args.test_size, seed=args.seed,
                device=args.device, verbose=args.verbose)


def fit_command(ratings_path: str, rank: int, out: str, *, model: str = "mf",
                solver: Optional[str] = None, max_iter: Optional[int] = None,
                reg: Optional[float] = None, lr: Optional[float] = None,
                alpha: Optional[float] = None, threshold: float = 4.0, test_size: float = 0.0,
                seed: int = 0, device: Optional[str] = None, verbose: bool = False) -> dict:
    """Train a recommender on a ratings file and save it to ``out``.

    ``model="mf"``: ``MatrixFactorization`` on the ratings; with ``test_size`` > 0
    that share is held out (seeded split) and its RMSE printed.
    ``model="implicit-als"``: ``ImplicitALS`` on the ratings >= ``threshold``
    (value 1); a held-out share is ranked (P@10, nDCG@10). Options left
    ``None`` keep the model's defaults. Every option, ``out`` included (an
    existing, writable directory; not a directory itself), is checked before
    the ratings are read.

    Returns
    -------
    dict: ``n_users``, ``n_items``, ``n_train``, ``seconds``, ``path``, and
    ``test_rmse`` (mf) or ``test_precision@10`` and ``test_ndcg@10``
    (implicit-als), None without a held-out share.

    Raises
    ------
    ValueError
        A bad option (the message names it), or a malformed ratings file.
    FileNotFoundError
        No ratings file at ``ratings_path``.
    """
    if model not in MODELS:
        raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    solver = SOLVERS[model][0] if solver is None else solver
    if solver not in SOLVERS[model]:
        raise ValueError(f"--solver {solver!r} is not a solver of --model {model} (choose among "
                         f"{', '.join(SOLVERS[model])})")
    implicit = model == "implicit-als"
    if not implicit and alpha is not None:
        raise ValueError("--alpha applies to --model implicit-als only")
    if implicit and lr is not None:
        raise ValueError("--lr applies to --model mf only (ImplicitALS has no learning rate)")
    if implicit and not (isinstance(threshold, (int, float)) and math.isfinite(threshold)):
        raise ValueError(f"--threshold must be a finite number, got {threshold!r}")
    test_size = check_share(test_size, "--test-size")
    # torch.Generator seeds are 64-bit: a larger one fails deep inside fit, unnamed
    check_positive_int(seed, "--seed", 0, 2 ** 64 - 1)
    check_device(device)
    check_out_file(out)
    options = {k: v for k, v in {"max_iter": max_iter, "reg": reg, "lr": lr,
                                 "alpha": alpha}.items() if v is not None}
    with estimator_option_errors():
        cls = ImplicitALS if implicit else MatrixFactorization
        estimator = cls(rank=rank, solver=solver, random_state=seed, device=device,
                        verbose=verbose, **options)
        estimator._resolved()  # the model's own checks, now rather than after reading the file
    ratings = datasets.load_movielens(ratings_path)
    if implicit:
        ratings = datasets.to_implicit(ratings, threshold=threshold)
    train, test = (datasets.train_test_split(ratings, test_size=test_size, seed=seed)
                   if test_size > 0 else (ratings, None))
    t0 = time.perf_counter()
    with estimator_option_errors():
        if test is not None:
            estimator.fit(train, validation=test)
        else:
            estimator.fit(train)
    seconds = time.perf_counter() - t0
    estimator.save(out)
    summary: dict = {"n_users": int(ratings.n_users), "n_items": int(ratings.n_items),
                     "n_train": int(train.vals.numel()), "seconds": seconds, "path": out}
    what = "interactions" if implicit else "ratings"
    print(f"fitted rank {rank} ({model}, {solver}) on {summary['n_train']:,} {what} of "
          f"{summary['n_users']:,} users x {summary['n_items']:,} items in {seconds:.2f} s")
    if implicit:
        res = metrics.ranking_metrics(estimator, train, test, k=10) if test is not None else None
        summary["test_precision@10"] = None if res is None else res["precision"]
        summary["test_ndcg@10"] = None if res is None else res["ndcg"]
        if res is not None:
            print(f"test P@10 {res['precision']:.4f}, nDCG@10 {res['ndcg']:.4f} "
                  f"({test_size:.0%} of the interactions held out, seed {seed})")
    else:
        summary["test_rmse"] = float(estimator.score(test)) if test is not None else None
        if summary["test_rmse"] is not None:
            print(f"test RMSE ({test_size:.0%} held out, seed {seed}): "
                  f"{summary['test_rmse']:.4f}")
    print(f"saved to {out}")
    return summary
