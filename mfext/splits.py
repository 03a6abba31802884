"""Train/test splits of a :class:`~mfext.datasets.Ratings` object: random, per user, by time.

This module owns :func:`train_test_split` and its modes (``mode=``):

* ``"random"`` (the default): a uniform sample of all ratings, ``test_size``
  a fraction or a count;
* ``"per_user"``: a seeded random fraction ``test_size`` of each user's ratings;
* ``"leave_k_out"``: ``k`` seeded random ratings of each user;
* ``"time"``: each user's latest ratings (the last ``k``, or the latest
  fraction ``test_size``), from ``Ratings.timestamps``.

The per-user modes leave every user at least one training rating: a user
with too few ratings stays in the training set whole. It leaves the container,
the loaders and the implicit conversion to :mod:`mfext.datasets` (which
re-exports this function) and evaluation to :mod:`mfext.metrics`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from . import datasets as _datasets

if TYPE_CHECKING:  # pragma: no cover
    from .datasets import Ratings

__all__ = ["train_test_split", "MODES"]

MODES = ("random", "per_user", "leave_k_out", "time")
_DEFAULT_TEST_SIZE = 0.1


def train_test_split(ratings: "Ratings", test_size: Union[float, int, None] = None,
                     seed: Optional[int] = 0, *, mode: str = "random",
                     k: Optional[int] = None) -> Tuple["Ratings", "Ratings"]:
    """Split the ratings into a training and a test set.

    Parameters
    ----------
    ratings : Ratings
        nnz ratings (timestamps needed for ``mode="time"``).
    test_size : float in (0, 1), int, or None
        ``"random"``: the fraction (rounded to the nearest count) or number of
        test ratings. ``"per_user"`` and ``"time"`` without ``k``: the fraction
        of each user's ratings, ``floor(test_size * n_u + 0.5)`` of a user with
        n_u ratings, at most ``n_u - 1``. Not used by ``"leave_k_out"``.
        None: 0.1 where a fraction applies.
    seed : int or None
        Seed of the ``torch.Generator`` that draws the test ratings (None: 0).
        ``"time"`` draws nothing and ignores it.
    mode : {"random", "per_user", "leave_k_out", "time"}
        See the module docstring.
    k : int, optional
        ``"leave_k_out"``: test ratings per user (default 1). ``"time"``: each
        user's last ``k`` ratings (instead of a fraction). A user with ``k`` or
        fewer ratings stays in the training set whole.

    Returns
    -------
    (train, test) : Ratings
        A partition of the entries of ``ratings`` (duplicates included): both
        keep the id maps and the shape of ``ratings``, its timestamps where
        present, and their entries in the original order.

    Raises
    ------
    TypeError
        ``ratings`` is not a Ratings object; ``test_size``, ``k`` or ``mode`` of
        the wrong type.
    ValueError
        An unknown ``mode``; ``test_size`` or ``k`` out of range or given to a
        mode that does not use it; ``mode="time"`` without timestamps; a split
        that leaves the test (or, for ``"random"``, the training) set empty.

    Notes
    -----
    ``"random"`` is the historical split and stays bit-identical for a seed.
    ``"time"`` orders each user's ratings by timestamp; of equal times, the
    later entry of ``ratings`` counts as the later rating. It is a per-user
    cut, not a global one: every user with enough ratings is tested on their
    own latest ones, so no user is left out of evaluation by the calendar.
    """
    if not isinstance(ratings, _datasets.Ratings):
        raise TypeError(
            f"train_test_split: expected a Ratings object, got {type(ratings).__name__}")
    if not isinstance(mode, str):
        raise TypeError(f"train_test_split: mode must be a string, one of {MODES}, got {mode!r}")
    if mode not in MODES:
        raise ValueError(f"train_test_split: mode must be one of {MODES}, got {mode!r}")
    if mode == "random":
        if k is not None:
            raise ValueError("train_test_split: k applies to mode='leave_k_out' or 'time', "
                             "not to mode='random'; pass test_size")
        return _random(ratings, _DEFAULT_TEST_SIZE if test_size is None else test_size, seed)
    if k is not None and mode == "per_user":
        raise ValueError("train_test_split: k does not apply to mode='per_user' (a fraction "
                         "per user); use mode='leave_k_out' for k ratings per user")
    if test_size is not None and (mode == "leave_k_out" or k is not None):
        hint = (" with k; pass one of test_size and k" if mode == "time"
                else "; it takes k ratings per user")
        raise ValueError(f"train_test_split: test_size does not apply to mode={mode!r}{hint}")
    if mode == "time" and ratings.timestamps is None:
        raise ValueError("train_test_split: mode='time' needs Ratings.timestamps, and these "
                         "ratings have none (ML-1M's ratings_no_timestamp.dat, for one, has no "
                         "times); use mode='per_user' or 'leave_k_out'")
    rows = ratings.rows.cpu()
    counts = torch.bincount(rows, minlength=ratings.n_users)  # (n_users,)
    if mode == "leave_k_out" or k is not None:
        kk = 1 if k is None else _check_k(k)
        what = f"k={kk}"
        # Users with k ratings or fewer would have nothing left to train on.
        n_test = torch.where(counts > kk, kk, 0)
    else:
        frac = _check_fraction(_DEFAULT_TEST_SIZE if test_size is None else test_size)
        what = f"test_size={frac}"
        n_test = torch.floor(frac * counts.double() + 0.5).long()
        n_test = torch.minimum(n_test, (counts - 1).clamp_min(0))
    if mode == "time":
        order = _by_user_latest_first(rows, ratings.timestamps.cpu())
    else:
        gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
        order = _by_user_random(rows, gen)
    in_test = _first_per_user(rows, order, counts, n_test)
    if not bool(in_test.any()):
        most = int(counts.max()) if counts.numel() else 0
        raise ValueError(f"train_test_split: mode={mode!r} with {what} leaves no test ratings "
                         f"(the most ratings of one user is {most}, and each user keeps at least "
                         "one training rating)")
    in_test = in_test.to(ratings.rows.device)
    return ratings.subset(~in_test), ratings.subset(in_test)


def _random(ratings: "Ratings", test_size: Union[float, int],
            seed: Optional[int]) -> Tuple["Ratings", "Ratings"]:
    """The historical split: a uniform sample of ``test_size`` ratings (kept bit-identical)."""
    nnz = ratings.nnz
    if isinstance(test_size, (bool, np.bool_)) or not isinstance(
            test_size, (int, float, np.integer, np.floating)):
        raise TypeError(f"train_test_split: test_size must be a float or an int, got {test_size!r}")
    if isinstance(test_size, (float, np.floating)):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"train_test_split: a fractional test_size must lie in (0, 1), got "
                             f"{test_size}")
        n_test = int(round(float(test_size) * nnz))
    else:
        n_test = int(test_size)
    if not 0 < n_test < nnz:
        raise ValueError(f"train_test_split: test_size={test_size} leaves {n_test} of {nnz} "
                         "ratings for testing; both parts must be non-empty")
    gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
    perm = torch.randperm(nnz, generator=gen)
    test_idx = perm[:n_test].sort().values
    train_idx = perm[n_test:].sort().values
    return ratings.subset(train_idx), ratings.subset(test_idx)


def _check_k(k: object) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"train_test_split: k must be an integer >= 1, got {k!r}")
    if k < 1:
        raise ValueError(f"train_test_split: k must be an integer >= 1, got {k!r}")
    return int(k)


def _check_fraction(test_size: object) -> float:
    if isinstance(test_size, (bool, np.bool_)) or not isinstance(test_size, (float, np.floating)):
        raise TypeError(f"train_test_split: test_size must be a fraction in (0, 1) for a per-user "
                        f"split, got {test_size!r} (for k ratings per user pass k)")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"train_test_split: a fractional test_size must lie in (0, 1), got "
                         f"{test_size}")
    return float(test_size)


def _by_user_random(rows: Tensor, gen: torch.Generator) -> Tensor:
    """Entry positions (nnz,) grouped by user (ascending), in seeded random order within a user."""
    perm = torch.randperm(rows.numel(), generator=gen)
    return perm[torch.sort(rows[perm], stable=True).indices]


def _by_user_latest_first(rows: Tensor, times: Tensor) -> Tensor:
    """Entry positions (nnz,) grouped by user (ascending), latest first within a user.

    Of equal times the later position comes first: three stable sorts, least
    significant key first (position descending, time descending, user).
    """
    order = torch.arange(rows.numel() - 1, -1, -1)
    order = order[torch.sort(times[order], descending=True, stable=True).indices]
    return order[torch.sort(rows[order], stable=True).indices]


def _first_per_user(rows: Tensor, order: Tensor, counts: Tensor, n_test: Tensor) -> Tensor:
    """Mask (nnz,) of the first ``n_test[u]`` entries of each user u in ``order``.

    order (nnz,) lists the entries grouped by user in ascending user order;
    counts and n_test are (n_users,) int64.
    """
    starts = torch.cumsum(counts, 0) - counts          # (n_users,) first slot of each user
    user = rows[order]                                 # (nnz,) ascending
    rank = torch.arange(order.numel()) - starts[user]  # (nnz,) place within the user
    mask = torch.zeros(order.numel(), dtype=torch.bool)
    mask[order[rank < n_test[user]]] = True
    return mask
