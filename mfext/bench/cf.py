"""``mfext fit`` and ``mfext recommend``: the estimator for people who do not write Python."""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from .estimator_api import MissingFeature, require_estimator


def fit_command(ratings_path: str, rank: int, out: str, *, solver: str = "als",
                max_iter: Optional[int] = None, reg: Optional[float] = None,
                lr: Optional[float] = None, test_size: float = 0.0, seed: int = 0,
                device: Optional[str] = None, verbose: bool = False) -> dict:
    """Train ``MatrixFactorization`` on a ratings file and save it to ``out``.

    Options left ``None`` keep the estimator's defaults. With ``test_size`` > 0,
    that share of the ratings is held out (seeded split) and its RMSE printed.

    Returns
    -------
    dict: ``n_users``, ``n_items``, ``n_train``, ``seconds``, ``test_rmse`` (or None), ``path``.
    """
    MatrixFactorization, datasets = require_estimator("fit")
    ratings = datasets.load_movielens(ratings_path)
    train, test = (datasets.train_test_split(ratings, test_size=test_size, seed=seed)
                   if test_size > 0 else (ratings, None))
    options = {k: v for k, v in {"max_iter": max_iter, "reg": reg, "lr": lr}.items()
               if v is not None}
    model = MatrixFactorization(rank=rank, solver=solver, random_state=seed, device=device,
                                verbose=verbose, **options)
    t0 = time.perf_counter()
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


def _find_index(ids: np.ndarray, raw: str, what: str) -> int:
    """The index of raw id ``raw`` (given as text) in the id map ``ids``."""
    ids = np.asarray(ids)
    try:
        value = ids.dtype.type(raw) if ids.dtype.kind in "iuf" else raw
    except (TypeError, ValueError):
        value = None
    hits = np.flatnonzero(ids == value) if value is not None else np.array([], dtype=np.int64)
    if hits.size == 0 and ids.dtype.kind not in "iuf":
        hits = np.flatnonzero(ids.astype(str) == raw)
    if hits.size == 0:
        sample = ", ".join(map(str, ids[:5].tolist()))
        raise ValueError(f"--{what} {raw!r} is not in the model ({ids.size:,} {what}s, "
                         f"e.g. {sample})")
    return int(hits[0])


def recommend_command(model_path: str, users: Sequence[str], n: int = 10,
                      include_seen: bool = False) -> dict:
    """Top-``n`` items for each raw user id, printed as a table.

    Returns
    -------
    dict: raw user id -> list of (raw item id, score).
    """
    MatrixFactorization, _ = require_estimator("recommend")
    import torch

    if n < 1:
        raise ValueError(f"-n must be >= 1, got {n}")
    model = MatrixFactorization.load(model_path)
    index = torch.tensor([_find_index(model.user_ids_, u, "user") for u in users])
    items, scores = model.recommend(index, n=n, exclude_seen=not include_seen)
    items = np.asarray(items.cpu() if hasattr(items, "cpu") else items)
    scores = np.asarray(scores.cpu() if hasattr(scores, "cpu") else scores)
    item_ids = np.asarray(model.item_ids_)
    out = {}
    for b, user in enumerate(users):
        out[user] = [(item_ids[i].item(), float(s)) for i, s in zip(items[b], scores[b])
                     if i >= 0]
        print(f"user {user}: top {len(out[user])}")
        print(f"  {'rank':>4}  {'item':>10}  {'score':>8}")
        for rank, (item, score) in enumerate(out[user], 1):
            print(f"  {rank:>4}  {str(item):>10}  {score:8.4f}")
    return out


__all__ = ["fit_command", "recommend_command", "MissingFeature"]
