"""``mfext recommend``: the top-n items for users of a saved model, as a table.

This module owns the command's arguments, the reading of ``--user`` (a raw id
in the model's own id type, or a user index for a model fit without raw ids)
and the printed table. Loading, scoring and the exclusion of seen items
belong to the model (:mod:`mfext.recommenders`); the option checks to
:mod:`mfext.cli.options`.
"""
from __future__ import annotations

import argparse
import re
from typing import List, Optional, Sequence

import numpy as np
import torch

from mfext.recommenders import RecommenderBase, load_model

from .options import check_device

__all__ = ["recommend_command"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``recommend`` and its arguments to the subcommands ``sub``."""
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


def run(args: argparse.Namespace, argv: Optional[List[str]] = None) -> None:
    """Run ``mfext recommend`` with the parsed ``args``."""
    recommend_command(args.model, args.user, n=args.n, include_seen=args.include_seen,
                      device=args.device)


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _matches(ids: np.ndarray, text: str) -> np.ndarray:
    """Boolean mask (len(ids),): the raw ids equal to ``text`` read in the ids' own type.

    Text that the type cannot hold (not a number, or an integer outside the
    dtype's range) matches nothing: it is not an id of the model.
    """
    none = np.zeros(ids.shape, dtype=bool)
    if ids.dtype.kind in "iu":
        if not _INTEGER.fullmatch(text):
            return none
        value = int(text)  # Python int: no overflow, range checked against the dtype below
        info = np.iinfo(ids.dtype)
        return ids == value if info.min <= value <= info.max else none
    if ids.dtype.kind == "f":
        try:
            return ids == float(text)
        except ValueError:
            return none
    return ids.astype(str) == text


def _user_index(model: RecommenderBase, raw: str) -> int:
    """The model's index of the user given on the command line as ``raw``.

    A model fit on a Ratings object keeps the raw ids: ``raw`` is one of them.
    A model fit on index triples (rows, cols, vals) has none: ``raw`` is then
    the index itself, in 0..n_users-1.
    """
    text = raw.strip()
    n_users = int(model.n_users_)
    ids = model.user_ids_
    if ids is None:
        if not _INTEGER.fullmatch(text):
            raise ValueError(f"--user {raw!r}: this model was fit without raw ids (on index "
                             f"triples), so --user takes a user index in 0..{n_users - 1}")
        index = int(text)
        if not 0 <= index < n_users:
            raise ValueError(f"--user {raw!r} is not in the model: it was fit without raw ids "
                             f"(on index triples) and its user indices are 0..{n_users - 1}")
        return index
    ids = np.asarray(ids).reshape(-1)
    hits = np.flatnonzero(_matches(ids, text))
    if hits.size == 0:
        sample = ", ".join(map(str, ids[:5].tolist()))
        raise ValueError(f"--user {raw!r} is not in the model ({ids.size:,} users, "
                         f"e.g. {sample})")
    return int(hits[0])


def recommend_command(model_path: str, users: Sequence[str], n: int = 10,
                      include_seen: bool = False, device: Optional[str] = None) -> dict:
    """Top-``n`` items for each user, printed as a table.

    Parameters
    ----------
    model_path : str
        A file written by a recommender's ``save`` (any model).
    users : sequence of str, (B,)
        Raw user ids as in the ratings file (user indices for a model fit
        without raw ids).
    n : int
        Items per user, >= 1.
    include_seen : bool
        Also recommend the items each user rated.
    device : str, optional
        Where to load the model. Default: where it was saved, or the CPU when
        this machine has no CUDA device (a model saved on a GPU still loads).

    Returns
    -------
    dict: user as given -> list of (item: raw id, or index without raw ids; score).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"-n must be an integer >= 1, got {n!r}")
    target = check_device(device)
    if target is None and not torch.cuda.is_available():
        target = torch.device("cpu")
    model = load_model(model_path, map_location=target)
    index = [_user_index(model, u) for u in users]
    items, scores = model.recommend(index, n=n, exclude_seen=not include_seen)
    items = items.cpu().numpy()
    scores = scores.cpu().numpy()
    item_ids = None if model.item_ids_ is None else np.asarray(model.item_ids_)
    out = {}
    for b, user in enumerate(users):
        out[user] = [((item_ids[i].item() if item_ids is not None else int(i)), float(s))
                     for i, s in zip(items[b], scores[b]) if i >= 0]
        print(f"user {user}: top {len(out[user])}")
        print(f"  {'rank':>4}  {'item':>10}  {'score':>8}")
        for rank, (item, score) in enumerate(out[user], 1):
            print(f"  {rank:>4}  {str(item):>10}  {score:8.4f}")
    return out
