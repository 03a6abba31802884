"""Peer libraries on mfext's own train/test split (optional imports).

This module owns the adapters (today Surprise's ``SVD``): each trains on the
split it is given and returns a row in the shape of :mod:`.movielens`'s; the
split and the records belong to :mod:`.movielens`. A missing library gives None.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Optional

import numpy as np


def surprise_available() -> bool:
    try:
        import surprise  # noqa: F401
    except ImportError:
        return False
    return True


def _surprise_trainset(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                       n_users: int, n_items: int):
    """A ``surprise.Trainset`` whose inner ids are mfext's indices (so the split is shared).

    Surprise keeps ratings as Python dicts of lists, so this adapter loops over
    the entries in Python, as Surprise's own loaders do.
    """
    from surprise import Trainset

    ur, ir = defaultdict(list), defaultdict(list)
    for u, i, r in zip(rows.tolist(), cols.tolist(), vals.tolist()):
        ur[u].append((i, r))
        ir[i].append((u, r))
    scale = (float(vals.min()), float(vals.max()))
    return Trainset(ur, ir, n_users, n_items, len(vals), scale,
                    {u: u for u in range(n_users)}, {i: i for i in range(n_items)})


def surprise_svd(train, test, *, rank: int = 100, n_epochs: int = 20, seed: int = 0,
                 **svd_options) -> Optional[dict]:
    """Surprise's biased ``SVD`` (SGD) on mfext ``Ratings``; None when Surprise is absent.

    Predictions use Surprise's formula ``mu + b_u + b_i + p_u . q_i`` clipped to
    the rating scale, vectorized over the test entries.

    Returns
    -------
    dict: ``library``, ``model``, ``rank``, ``epochs``, ``fit_seconds``, ``test_rmse``,
    ``test_mae``.
    """
    if not surprise_available():
        return None
    from surprise import SVD

    rows, cols, vals = (np.asarray(t.cpu()) for t in (train.rows, train.cols, train.vals))
    trainset = _surprise_trainset(rows, cols, vals.astype(np.float64),
                                  int(train.n_users), int(train.n_items))
    algo = SVD(n_factors=rank, n_epochs=n_epochs, random_state=seed, **svd_options)
    t0 = time.perf_counter()
    algo.fit(trainset)
    seconds = time.perf_counter() - t0
    u, i = np.asarray(test.rows.cpu()), np.asarray(test.cols.cpu())
    truth = np.asarray(test.vals.cpu(), dtype=np.float64)
    pred = (trainset.global_mean + algo.bu[u] + algo.bi[i]
            + np.einsum("ij,ij->i", algo.pu[u], algo.qi[i]))
    pred = np.clip(pred, *trainset.rating_scale)
    err = pred - truth
    return {"library": "surprise", "model": "SVD", "rank": rank, "epochs": n_epochs,
            "fit_seconds": seconds, "test_rmse": float(np.sqrt(np.mean(err ** 2))),
            "test_mae": float(np.mean(np.abs(err)))}
