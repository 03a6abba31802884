"""Rating data: MovieLens loaders, raw-id maps, splits, implicit conversion, synthetic ratings.

A :class:`Ratings` object holds observed ratings as COO triples with contiguous
indices (user index ``rows[e]`` in ``[0, n_users)``, item index ``cols[e]`` in
``[0, n_items)``) plus the raw ids those indices stand for, so that a model fit
on it can answer in the ids of the original files, and the time of each rating
where the file has one.

This module owns the :class:`Ratings` container, the loaders, :func:`to_implicit`
and the synthetic generator; the splits live in :mod:`mfext.splits` (re-exported
here as :func:`train_test_split`), the ranking metrics in :mod:`mfext.metrics`.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["Ratings", "load_movielens", "train_test_split", "synthetic_ratings", "to_implicit"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Ratings:
    """Observed ratings with contiguous indices and the raw ids behind them.

    Attributes
    ----------
    rows : Tensor, (nnz,), int64
        User index of each rating, in ``[0, n_users)``.
    cols : Tensor, (nnz,), int64
        Item index of each rating, in ``[0, n_items)``.
    vals : Tensor, (nnz,), float32
        The ratings.
    user_ids : np.ndarray, (n_users,)
        Raw user id of each user index (sorted ascending for loaded files).
    item_ids : np.ndarray, (n_items,)
        Raw item id of each item index.
    n_users, n_items : int
        Matrix shape; a split keeps the shape of the whole data set.
    timestamps : Tensor, (nnz,), int64 or float64, optional
        Time of each rating (seconds since the epoch in MovieLens files); None
        (the default) where the data has no times. Splits and
        :func:`to_implicit` carry it along; ``mode="time"`` splits need it.
    """

    rows: Tensor
    cols: Tensor
    vals: Tensor
    user_ids: np.ndarray
    item_ids: np.ndarray
    n_users: int
    n_items: int
    timestamps: Optional[Tensor] = None

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "vals"):
            t = getattr(self, name)
            if not isinstance(t, Tensor) or t.dim() != 1:
                raise TypeError(f"Ratings.{name} must be a 1-D tensor, got {type(t).__name__}"
                                + (f" of shape {tuple(t.shape)}" if isinstance(t, Tensor) else ""))
        if not (self.rows.numel() == self.cols.numel() == self.vals.numel()):
            raise ValueError(
                "Ratings: rows, cols and vals must have the same length, got "
                f"{self.rows.numel()}, {self.cols.numel()} and {self.vals.numel()}")
        if self.rows.dtype != torch.int64 or self.cols.dtype != torch.int64:
            raise TypeError(f"Ratings: rows and cols must be int64, got {self.rows.dtype} and "
                            f"{self.cols.dtype}")
        if not self.vals.is_floating_point():
            raise TypeError(f"Ratings: vals must be floating point, got {self.vals.dtype}")
        self.user_ids = np.asarray(self.user_ids)
        self.item_ids = np.asarray(self.item_ids)
        if self.user_ids.shape != (self.n_users,) or self.item_ids.shape != (self.n_items,):
            raise ValueError(
                f"Ratings: user_ids {self.user_ids.shape} and item_ids {self.item_ids.shape} must "
                f"have shapes ({self.n_users},) and ({self.n_items},)")
        if self.timestamps is not None:
            self._check_timestamps()

    def _check_timestamps(self) -> None:
        ts = self.timestamps
        if not isinstance(ts, Tensor) or ts.dim() != 1 or ts.numel() != self.rows.numel():
            got = (f"shape {tuple(ts.shape)}" if isinstance(ts, Tensor) else type(ts).__name__)
            raise ValueError(f"Ratings.timestamps must be None or a 1-D tensor with one time per "
                             f"rating ({self.rows.numel()}), got {got}")
        if ts.dtype != torch.int64 and not ts.is_floating_point():
            raise TypeError(f"Ratings.timestamps must be int64 or floating point, got {ts.dtype}")
        if ts.is_floating_point() and not bool(torch.isfinite(ts).all()):
            raise ValueError("Ratings.timestamps must be finite")

    @property
    def nnz(self) -> int:
        """Number of ratings."""
        return int(self.vals.numel())

    def __len__(self) -> int:
        return self.nnz

    @property
    def shape(self) -> Tuple[int, int]:
        """(n_users, n_items)."""
        return (self.n_users, self.n_items)

    def subset(self, index: Tensor) -> "Ratings":
        """The ratings at positions ``index`` ((s,) int64 or bool mask), same id maps and shape.

        ``timestamps`` (when present) are taken at the same positions.
        """
        ts = None if self.timestamps is None else self.timestamps[index]
        return Ratings(self.rows[index], self.cols[index], self.vals[index], self.user_ids,
                       self.item_ids, self.n_users, self.n_items, ts)

    def __repr__(self) -> str:
        times = "" if self.timestamps is None else ", timestamps"
        return (f"Ratings(nnz={self.nnz}, n_users={self.n_users}, n_items={self.n_items}, "
                f"vals dtype={self.vals.dtype}{times})")


# --------------------------------------------------------------------------- loading

_KNOWN_FILES = ("ratings.dat", "ratings_no_timestamp.dat", "u.data", "ratings.csv")


def _resolve(path: PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in _KNOWN_FILES:
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(
            f"load_movielens: no ratings file in directory {p} (looked for {', '.join(_KNOWN_FILES)})")
    if not p.is_file():
        raise FileNotFoundError(f"load_movielens: no such file: {p}")
    return p


_BLANK_LINE = re.compile(rb"(?m)^[ \t]*(?:\n|\Z)")


def _skip_blank_lines(raw: bytes) -> bytes:
    """``raw`` without its leading blank (empty or whitespace-only) lines."""
    while True:
        line, newline, rest = raw.partition(b"\n")
        if line.strip() or not newline:
            return raw
        raw = rest


def _parse(raw: bytes, sep: bytes, source: Path) -> np.ndarray:
    """Parse 3- or 4-field rating lines into a structured array (user, item, rating[, time]).

    A 4th field is the timestamp: int64, or float64 when some time is not an integer.
    """
    # Blank (empty or whitespace-only) lines are no ratings: drop them before the
    # separator becomes a tab, which would turn a blank line into empty fields.
    raw = _BLANK_LINE.sub(b"", raw.replace(b"\r", b""))
    if sep != b"\t":
        raw = raw.replace(sep, b"\t")
    first = raw.split(b"\n", 1)[0]
    n_fields = first.count(b"\t") + 1
    if n_fields not in (3, 4):
        raise ValueError(
            f"load_movielens: {source}: expected 3 or 4 fields per line (user, item, rating"
            f"[, timestamp]), got {n_fields} in the first line {first[:80]!r}")
    dtype = [("user", np.int64), ("item", np.int64), ("rating", np.float64)]
    # Times are integer seconds in every MovieLens release; float times are read
    # rather than refused, as files from elsewhere may carry fractions.
    time_types = [np.int64, np.float64] if n_fields == 4 else [None]
    for i, time_type in enumerate(time_types):
        fields = dtype + ([("timestamp", time_type)] if time_type is not None else [])
        try:
            return np.loadtxt(io.BytesIO(raw), delimiter="\t", dtype=fields,
                              usecols=tuple(range(len(fields))), ndmin=1, encoding="latin-1")
        except ValueError as exc:
            if i + 1 < len(time_types):
                continue
            raise ValueError(
                f"load_movielens: {source} is malformed: {exc}. User and item ids must be "
                "integers from 0 to 2**63 - 1 (int64), ratings and timestamps numbers.") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _contiguous(raw_ids: np.ndarray, what: str, source: object) -> Tuple[np.ndarray, np.ndarray]:
    """Map raw integer ids to 0..u-1 (ascending raw id); returns (unique ids, indices)."""
    if raw_ids.size and raw_ids.min() < 0:
        bad = int(np.argmax(raw_ids < 0))
        raise ValueError(f"{source}: negative {what} id {int(raw_ids[bad])} at rating {bad}")
    uniq, inverse = np.unique(raw_ids, return_inverse=True)
    return uniq, inverse.astype(np.int64).reshape(-1)


def load_movielens(path: PathLike, *, dtype: torch.dtype = torch.float32) -> Ratings:
    """Read MovieLens ratings and map raw ids to contiguous indices.

    Formats, chosen by file name:

    * ``u.data`` (and the ``*.base``/``*.test`` splits) of ML-100K: tab-separated
      ``user item rating timestamp``;
    * ``ratings.dat`` of ML-1M/10M: ``user::item::rating::timestamp``, and the
      3-field ``ratings_no_timestamp.dat`` (``user::item::rating``);
    * ``ratings.csv`` of the newer releases: a header line, then
      ``userId,movieId,rating,timestamp`` (LF or CRLF line endings).

    Parameters
    ----------
    path : str or PathLike
        A ratings file, or a directory holding one of the files above.
    dtype : torch.dtype
        Floating dtype of ``vals`` (default float32).

    Returns
    -------
    Ratings
        Users and items are numbered in ascending raw-id order; ``user_ids`` and
        ``item_ids`` give the raw id of each index. ``timestamps`` (nnz,) holds
        the 4th field where the file has one (int64 seconds; float64 if some
        time is not an integer), else None.

    Raises
    ------
    FileNotFoundError
        No such file, or no known ratings file in the directory.
    ValueError
        Malformed lines, non-integer or negative ids, non-finite ratings or an
        empty file.
    """
    source = _resolve(path)
    raw = source.read_bytes()
    name = source.name.lower()
    if name.endswith(".csv"):
        header, _, raw = _skip_blank_lines(raw).partition(b"\n")
        if not header.strip() or header[:1].isdigit():
            raise ValueError(f"load_movielens: {source}: a .csv ratings file must start with a "
                             f"header line (userId,movieId,rating,...), got {header[:80]!r}")
        sep = b","
    elif name.endswith(".dat"):
        sep = b"::"
    else:
        sep = b"\t"
    if not raw.strip():
        raise ValueError(f"load_movielens: {source} holds no ratings")
    table = _parse(raw, sep, source)
    if table.size == 0:
        raise ValueError(f"load_movielens: {source} holds no ratings")
    ratings = table["rating"]
    if not np.isfinite(ratings).all():
        bad = int(np.argmax(~np.isfinite(ratings)))
        raise ValueError(f"load_movielens: {source}: rating {bad} is not finite ({ratings[bad]})")
    user_ids, rows = _contiguous(table["user"], "user", f"load_movielens: {source}")
    item_ids, cols = _contiguous(table["item"], "item", f"load_movielens: {source}")
    times = None
    if "timestamp" in table.dtype.names:
        times = torch.from_numpy(np.ascontiguousarray(table["timestamp"]))
        if times.is_floating_point() and not bool(torch.isfinite(times).all()):
            bad = int((~torch.isfinite(times)).nonzero()[0, 0])
            raise ValueError(f"load_movielens: {source}: timestamp {bad} is not finite "
                             f"({times[bad].item()})")
    return Ratings(torch.from_numpy(rows), torch.from_numpy(cols),
                   torch.from_numpy(ratings).to(dtype), user_ids, item_ids,
                   int(user_ids.size), int(item_ids.size), times)


# --------------------------------------------------------------------------- implicit


def to_implicit(ratings: Ratings, threshold: Optional[float] = 4.0, *,
                binary: bool = True) -> Ratings:
    """Explicit ratings as implicit interactions: the ratings of at least ``threshold``.

    Parameters
    ----------
    ratings : Ratings
        nnz explicit ratings.
    threshold : float or None
        Keep the entries with ``vals >= threshold`` (finite); None keeps every entry.
    binary : bool
        True (the default): every kept entry becomes 1 (an interaction, as
        implicit-feedback models and :mod:`mfext.metrics` read it). False: the
        rating itself is kept as the value (a confidence weight); every kept
        rating must then be > 0.

    Returns
    -------
    Ratings
        The kept entries (s,) in their original order, ``vals`` of the input
        dtype; the same id maps, shape and timestamps (users or items left
        without an entry keep their index).

    Raises
    ------
    TypeError, ValueError
        A bad argument (the message names it), or ``binary=False`` keeping a rating <= 0.
    """
    if not isinstance(ratings, Ratings):
        raise TypeError(f"to_implicit: ratings must be a Ratings object, got "
                        f"{type(ratings).__name__}")
    if not isinstance(binary, (bool, np.bool_)):
        raise TypeError(f"to_implicit: binary must be True or False, got {binary!r}")
    keep = torch.arange(ratings.nnz)
    if threshold is not None:
        if isinstance(threshold, (bool, np.bool_)) or not isinstance(
                threshold, (int, float, np.integer, np.floating)):
            raise TypeError(f"to_implicit: threshold must be a number or None, got {threshold!r}")
        if not np.isfinite(threshold):
            raise ValueError(f"to_implicit: threshold must be finite, got {threshold}")
        keep = (ratings.vals >= float(threshold)).nonzero().reshape(-1)
    out = ratings.subset(keep)  # a copy: the caller's tensors are never written
    if binary:
        out.vals = torch.ones_like(out.vals)
    elif out.nnz and bool((out.vals <= 0).any()):
        bad = float(out.vals[out.vals <= 0][0])
        raise ValueError(f"to_implicit: with binary=False the kept ratings are confidence "
                         f"weights and must be > 0, got {bad} (raise threshold above it)")
    return out


# --------------------------------------------------------------------------- synthetic


def synthetic_ratings(n_users: int = 1000, n_items: int = 800, nnz: int = 100_000,
                      rank: int = 8, noise: float = 0.1, seed: Optional[int] = 0, *,
                      biases: bool = False, dtype: torch.dtype = torch.float32,
                      return_factors: bool = False):
    """Ratings drawn from a known low-rank model plus Gaussian noise.

    ``vals[e] = w_u . h_i (+ mu + b_u + b_i) + noise * N(0, 1)`` for ``nnz``
    distinct (user, item) pairs drawn uniformly, where W (n_users, rank) and
    H (n_items, rank) have i.i.d. N(0, rank**-0.5) entries, so the signal
    ``w_u . h_i`` has unit variance. With ``biases``, mu = 3 and b_u, b_i ~ N(0, 0.5).

    Parameters
    ----------
    n_users, n_items, nnz, rank : int
        ``nnz`` must not exceed ``n_users * n_items``.
    noise : float
        Standard deviation of the additive noise (the best achievable RMSE).
    seed : int or None
        Seed of the torch generator (None: 0).
    biases : bool
        Add a global mean and user/item biases.
    dtype : torch.dtype
        dtype of ``vals``.
    return_factors : bool
        Also return the true ``(W, H)`` in float64.

    Returns
    -------
    Ratings, or (Ratings, (W, H)) with ``return_factors``.
    """
    for name, v in (("n_users", n_users), ("n_items", n_items), ("nnz", nnz), ("rank", rank)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"synthetic_ratings: {name} must be a positive integer, got {v!r}")
    if nnz > n_users * n_items:
        raise ValueError(f"synthetic_ratings: nnz={nnz} exceeds n_users * n_items = {n_users * n_items}")
    if not (noise >= 0 and np.isfinite(noise)):
        raise ValueError(f"synthetic_ratings: noise must be finite and >= 0, got {noise}")
    gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
    total = n_users * n_items
    if total <= 50_000_000:
        linear = torch.randperm(total, generator=gen)[:nnz]
    else:  # rejection of duplicates in a few batched rounds
        linear = torch.empty(0, dtype=torch.int64)
        while linear.numel() < nnz:
            draw = torch.randint(0, total, (2 * (nnz - linear.numel()) + 16,), generator=gen)
            merged = torch.cat([linear, draw])
            uniq, first = _first_occurrence(merged)
            linear = merged[first.sort().values][:nnz]
    rows, cols = linear // n_items, linear % n_items
    scale = rank ** -0.25
    W = torch.randn(n_users, rank, generator=gen, dtype=torch.float64) * scale
    H = torch.randn(n_items, rank, generator=gen, dtype=torch.float64) * scale
    vals = (W[rows] * H[cols]).sum(1)
    if biases:
        bu = torch.randn(n_users, generator=gen, dtype=torch.float64) * 0.5
        bi = torch.randn(n_items, generator=gen, dtype=torch.float64) * 0.5
        vals = vals + 3.0 + bu[rows] + bi[cols]
    vals = vals + noise * torch.randn(nnz, generator=gen, dtype=torch.float64)
    out = Ratings(rows, cols, vals.to(dtype), np.arange(n_users), np.arange(n_items),
                  int(n_users), int(n_items))
    return (out, (W, H)) if return_factors else out


def _first_occurrence(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Unique values of x (s,) and the position of each one's first occurrence."""
    uniq, inverse = torch.unique(x, return_inverse=True)
    pos = torch.arange(x.numel(), dtype=torch.int64)
    first = torch.full((uniq.numel(),), x.numel(), dtype=torch.int64).scatter_reduce_(
        0, inverse, pos, reduce="amin")
    return uniq, first


# The splits need Ratings, defined above; importing them last keeps this one
# public home for them without an import cycle at load time.
from .splits import train_test_split  # noqa: E402
