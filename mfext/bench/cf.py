"""``mfext fit`` and ``mfext recommend``: the estimator for people who do not write Python."""
from __future__ import annotations

import re
import time
from typing import Optional, Sequence

import numpy as np
import torch

from mfext import datasets
from mfext.estimator import MatrixFactorization

from .options import (check_device, check_out_file, check_positive_int, check_share,
                      estimator_option_errors)


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


def _user_index(model: MatrixFactorization, raw: str) -> int:
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
        A file written by ``MatrixFactorization.save``.
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
    model = MatrixFactorization.load(model_path, map_location=target)
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


__all__ = ["fit_command", "recommend_command"]
