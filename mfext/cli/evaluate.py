"""``mfext evaluate``: ranking metrics (and RMSE) of a saved model on a held-out ratings file.

This module owns the command's arguments and what it prints. The test file's
raw user and item ids are matched to the model's; entries the model cannot
know (a user or item it never saw) are left out and counted. Each user's
training items (the model's seen-items index) are left out of their ranking;
the test interactions are the ratings >= ``--threshold``. For a
:class:`mfext.MatrixFactorization` the RMSE and MAE of every known test rating
are printed too. Loading is :func:`mfext.recommenders.load_model`'s, the
metrics :mod:`mfext.metrics`', the file format :mod:`mfext.datasets`'.
"""
from __future__ import annotations

import argparse
import math
from typing import List, Optional

import torch

from mfext import MatrixFactorization, datasets, metrics
from mfext.recommenders import load_model

from .options import check_device, check_positive_int

__all__ = ["evaluate_command"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` and its arguments to the subcommands ``sub``."""
    ev = sub.add_parser("evaluate", help="ranking metrics of a saved model on held-out ratings")
    ev.add_argument("model", help="a file written by a model's save (mfext fit --out)")
    ev.add_argument("test", help="a MovieLens ratings file of held-out ratings")
    ev.add_argument("-k", type=int, default=10, help="the cut-off of the ranking (default 10)")
    ev.add_argument("--threshold", type=float, default=4.0,
                    help="test ratings at or above it are the relevant items (default 4)")
    ev.add_argument("--device", default=None, help="where to load the model (default: the CPU "
                                                   "when this machine has no CUDA device)")


def run(args: argparse.Namespace, argv: Optional[List[str]] = None) -> None:
    """Run ``mfext evaluate`` with the parsed ``args``."""
    evaluate_command(args.model, args.test, k=args.k, threshold=args.threshold,
                     device=args.device)


def evaluate_command(model_path: str, test_path: str, *, k: int = 10, threshold: float = 4.0,
                     device: Optional[str] = None) -> dict:
    """Print and return the metrics of the model at ``model_path`` on ``test_path``.

    Returns
    -------
    dict: ``precision``, ``recall``, ``ndcg``, ``map``, ``auc``, ``hit_rate`` at
    ``k``, ``n_test`` (known test ratings), ``n_unknown`` (left out), and for a
    MatrixFactorization ``rmse`` and ``mae``.

    Raises
    ------
    ValueError
        A bad option, an unreadable model or ratings file, or no known test
        rating at or above the threshold.
    """
    check_positive_int(k, "-k")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not math.isfinite(threshold):
        raise ValueError(f"--threshold must be a finite number, got {threshold!r}")
    target = check_device(device)
    if target is None and not torch.cuda.is_available():
        target = torch.device("cpu")
    model = load_model(model_path, map_location=target)
    ratings = datasets.load_movielens(test_path)
    m, n = int(model.n_users_), int(model.n_items_)
    if model.user_ids_ is not None:
        rows = model.user_index(ratings.user_ids)[ratings.rows]
        cols = model.item_index(ratings.item_ids)[ratings.cols]
    else:  # a model fit on index triples: the file's ids are indices
        rows = torch.as_tensor(ratings.user_ids[ratings.rows.numpy()], dtype=torch.int64)
        cols = torch.as_tensor(ratings.item_ids[ratings.cols.numpy()], dtype=torch.int64)
    known = (rows >= 0) & (rows < m) & (cols >= 0) & (cols < n)
    rows, cols, vals = rows[known], cols[known], ratings.vals[known]
    out: dict = {"n_test": int(known.sum()), "n_unknown": int((~known).sum())}
    if out["n_test"] == 0:
        raise ValueError(f"{test_path}: no rating has a user and an item the model knows")
    relevant = vals >= threshold
    if not bool(relevant.any()):
        raise ValueError(f"{test_path}: no known test rating is >= --threshold {threshold}")
    train = model._seen_interactions()
    test = (rows[relevant], cols[relevant], torch.ones(int(relevant.sum())))
    res = metrics.ranking_metrics(model, tuple(x.cpu() for x in train), test, k=k)
    out.update(res)
    print(f"{model_path} ({type(model).__name__}) on {test_path}: {out['n_test']:,} known test "
          f"ratings ({out['n_unknown']:,} left out: user or item unknown to the model)")
    print("  " + "  ".join(f"{name}@{k} {res[name]:.4f}" for name in
                           ("precision", "recall", "ndcg", "map"))
          + f"  auc {res['auc']:.4f}  hit_rate {res['hit_rate']:.4f}"
          + f"  (relevant: ratings >= {threshold:g})")
    if isinstance(model, MatrixFactorization):
        pred = model.predict(rows, cols).double().cpu()
        err = pred - vals.double()
        out["rmse"] = float(err.square().mean().sqrt())
        out["mae"] = float(err.abs().mean())
        print(f"  rmse {out['rmse']:.4f}  mae {out['mae']:.4f}")
    return out

