"""mfext.datasets splits (random, per user, leave-k-out, by time), timestamps and to_implicit."""
from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mfext import datasets as ds

DATA = Path(os.environ.get("MFEXT_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def _uneven(seed: int = 0, with_times: bool = True) -> ds.Ratings:
    """Ratings where users have 1 to 30 ratings (some duplicated pairs), with tied times."""
    g = np.random.default_rng(seed)
    counts = np.concatenate([[1, 1, 2, 3], g.integers(1, 31, size=36)])
    rows = np.repeat(np.arange(counts.size), counts)
    g.shuffle(rows)                                     # entries not grouped by user
    cols = g.integers(0, 25, size=rows.size)
    vals = g.integers(1, 11, size=rows.size) / 2.0      # 0.5 .. 5.0
    times = g.integers(0, 50, size=rows.size) if with_times else None
    return ds.Ratings(torch.from_numpy(rows), torch.from_numpy(cols),
                      torch.tensor(vals, dtype=torch.float32), np.arange(counts.size) + 7,
                      np.arange(25) * 2, int(counts.size), 25,
                      None if times is None else torch.from_numpy(times))


def _entries(r: ds.Ratings) -> Counter:
    ts = r.timestamps.tolist() if r.timestamps is not None else [None] * r.nnz
    return Counter(zip(r.rows.tolist(), r.cols.tolist(), r.vals.tolist(), ts))


def _check_partition(r: ds.Ratings, train: ds.Ratings, test: ds.Ratings) -> None:
    """train and test split the entries of r (as a multiset), keep its maps, shape and order."""
    assert train.nnz + test.nnz == r.nnz
    assert _entries(train) + _entries(test) == _entries(r)
    for part in (train, test):
        assert part.shape == r.shape
        assert part.user_ids is r.user_ids and part.item_ids is r.item_ids
        assert (part.timestamps is None) == (r.timestamps is None)


def _per_user(part: ds.Ratings) -> np.ndarray:
    return np.bincount(part.rows.numpy(), minlength=part.n_users)


# --------------------------------------------------------------------------- random (historical)


@pytest.mark.parametrize("test_size, seed", [(0.1, 0), (0.25, 3), (17, 1), (0.1, None)])
def test_random_mode_is_the_historical_split(test_size, seed):
    r = _uneven()
    train, test = ds.train_test_split(r, test_size=test_size, seed=seed)
    # The algorithm as it was: one seeded permutation, the first n_test to test.
    n_test = test_size if isinstance(test_size, int) else int(round(test_size * r.nnz))
    perm = torch.randperm(r.nnz, generator=torch.Generator().manual_seed(seed or 0))
    assert torch.equal(test.rows, r.rows[perm[:n_test].sort().values])
    assert torch.equal(train.vals, r.vals[perm[n_test:].sort().values])
    assert torch.equal(test.timestamps, r.timestamps[perm[:n_test].sort().values])
    explicit = ds.train_test_split(r, test_size=test_size, seed=seed, mode="random")
    assert torch.equal(explicit[1].cols, test.cols)


def test_default_call_is_unchanged():
    r = ds.synthetic_ratings(50, 40, 1000, rank=3, seed=1)
    train, test = ds.train_test_split(r)
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(test.rows, r.rows[perm[:100].sort().values])
    assert train.timestamps is None and test.timestamps is None


# --------------------------------------------------------------------------- per user


@pytest.mark.parametrize("frac", [0.2, 0.5, 0.9])
def test_per_user_fraction(frac):
    r = _uneven()
    train, test = ds.train_test_split(r, test_size=frac, seed=4, mode="per_user")
    _check_partition(r, train, test)
    n_u = _per_user(r)
    expect = np.minimum(np.floor(frac * n_u + 0.5), np.maximum(n_u - 1, 0)).astype(int)
    assert np.array_equal(_per_user(test), expect)
    assert (_per_user(train)[n_u > 0] >= 1).all()        # every user keeps a training rating


def _tagged(r: ds.Ratings) -> ds.Ratings:
    """r with each entry's position as its value."""
    return ds.Ratings(r.rows, r.cols, torch.arange(r.nnz, dtype=torch.float64), r.user_ids,
                      r.item_ids, r.n_users, r.n_items, r.timestamps)


@pytest.mark.parametrize("mode, kw", [("random", {}), ("per_user", dict(test_size=0.4)),
                                      ("leave_k_out", dict(k=2)), ("time", dict(k=2))])
def test_parts_keep_the_original_order(mode, kw):
    for part in ds.train_test_split(_tagged(_uneven()), mode=mode, **kw):
        assert (part.vals.diff() > 0).all()


@pytest.mark.parametrize("mode, kw", [("per_user", dict(test_size=0.3)),
                                      ("leave_k_out", dict(k=2))])
def test_seeded_and_deterministic(mode, kw):
    r = _uneven()
    a = ds.train_test_split(r, seed=5, mode=mode, **kw)
    b = ds.train_test_split(r, seed=5, mode=mode, **kw)
    c = ds.train_test_split(r, seed=6, mode=mode, **kw)
    for x, y in zip(a, b):
        assert torch.equal(x.rows, y.rows) and torch.equal(x.cols, y.cols)
    assert not torch.equal(a[1].cols, c[1].cols)
    assert np.array_equal(_per_user(a[1]), _per_user(c[1]))  # other ratings, same counts


# --------------------------------------------------------------------------- leave k out


@pytest.mark.parametrize("k", [1, 3, 10])
def test_leave_k_out(k):
    r = _uneven(1)
    train, test = ds.train_test_split(r, mode="leave_k_out", k=k, seed=0)
    _check_partition(r, train, test)
    n_u = _per_user(r)
    # Users with k or fewer ratings (fewer than k included) stay in training whole.
    assert np.array_equal(_per_user(test), np.where(n_u > k, k, 0))
    assert np.array_equal(_per_user(train), np.where(n_u > k, n_u - k, n_u))


def test_leave_one_out_is_the_default_k():
    r = _uneven(2)
    a = ds.train_test_split(r, mode="leave_k_out", seed=3)
    b = ds.train_test_split(r, mode="leave_k_out", k=1, seed=3)
    assert torch.equal(a[1].rows, b[1].rows) and torch.equal(a[1].cols, b[1].cols)


# --------------------------------------------------------------------------- by time


def _latest_per_user(r: ds.Ratings, train: ds.Ratings, test: ds.Ratings) -> None:
    """Each user's test ratings are at least as late as all their training ratings."""
    for u in range(r.n_users):
        tr = train.timestamps[train.rows == u]
        te = test.timestamps[test.rows == u]
        if tr.numel() and te.numel():
            assert int(te.min()) >= int(tr.max()), u


@pytest.mark.parametrize("kw", [dict(k=2), dict(test_size=0.3), dict()])
def test_time_split_takes_each_users_latest(kw):
    r = _uneven(3)
    train, test = ds.train_test_split(r, mode="time", **kw)
    _check_partition(r, train, test)
    _latest_per_user(r, train, test)
    n_u = _per_user(r)
    if "k" in kw:
        expect = np.where(n_u > 2, 2, 0)
    else:
        frac = kw.get("test_size", 0.1)
        expect = np.minimum(np.floor(frac * n_u + 0.5), np.maximum(n_u - 1, 0)).astype(int)
    assert np.array_equal(_per_user(test), expect)
    again = ds.train_test_split(r, mode="time", seed=99, **kw)  # nothing is drawn
    assert torch.equal(again[1].rows, test.rows) and torch.equal(again[1].cols, test.cols)


def test_time_ties_go_by_position():
    """Of equal times, the later entry of the data counts as the later rating."""
    rows = torch.tensor([0, 0, 0, 0, 1, 1])
    cols = torch.tensor([0, 1, 2, 3, 0, 1])
    times = torch.tensor([5, 9, 9, 1, 3, 3])
    r = ds.Ratings(rows, cols, torch.ones(6), np.arange(2), np.arange(4), 2, 4, times)
    _, test = ds.train_test_split(r, mode="time", k=1)
    assert test.rows.tolist() == [0, 1] and test.cols.tolist() == [2, 1]
    _, test = ds.train_test_split(r, mode="time", k=2)
    assert test.cols.tolist() == [1, 2]  # user 1 has only 2 ratings: it stays in training


def test_float_timestamps():
    r = _uneven(4)
    r.timestamps = r.timestamps.double() + 0.5
    train, test = ds.train_test_split(r, mode="time", k=1)
    _latest_per_user(r, train, test)
    assert test.timestamps.dtype == torch.float64


def test_time_split_needs_timestamps():
    r = _uneven(with_times=False)
    with pytest.raises(ValueError, match=r"^train_test_split: mode='time' needs Ratings.times"):
        ds.train_test_split(r, mode="time", k=1)


# --------------------------------------------------------------------------- bad arguments

BAD = [
    (dict(mode="by_user"), ValueError, r"^train_test_split: mode must be one of"),
    (dict(mode=1), TypeError, r"^train_test_split: mode must be a string"),
    (dict(mode="leave_k_out", k=0), ValueError,
     r"^train_test_split: k must be an integer >= 1, got 0"),
    (dict(mode="leave_k_out", k=-1), ValueError, r"^train_test_split: k must be an integer >= 1"),
    (dict(mode="leave_k_out", k=1.5), TypeError,
     r"^train_test_split: k must be an integer >= 1, got 1.5"),
    (dict(mode="time", k=True), TypeError, r"^train_test_split: k must be an integer"),
    (dict(mode="leave_k_out", k=100), ValueError,
     r"^train_test_split: mode='leave_k_out' with k=100 leaves no test ratings"),
    (dict(mode="leave_k_out", test_size=0.2), ValueError,
     r"^train_test_split: test_size does not apply to mode='leave_k_out'"),
    (dict(mode="time", k=2, test_size=0.2), ValueError,
     r"^train_test_split: test_size does not apply"),
    (dict(k=2), ValueError, r"^train_test_split: k applies to mode='leave_k_out' or 'time'"),
    (dict(mode="per_user", k=2), ValueError,
     r"^train_test_split: k does not apply to mode='per_user'"),
    (dict(mode="per_user", test_size=3), TypeError,
     r"^train_test_split: test_size must be a fraction in \(0, 1\) for a per-user split, got 3"),
    (dict(mode="per_user", test_size=1.0), ValueError,
     r"^train_test_split: a fractional test_size must lie in \(0, 1\), got 1.0"),
    (dict(mode="time", test_size=0.0), ValueError, r"^train_test_split: a fractional test_size"),
    (dict(mode="per_user", test_size=0.01), ValueError,
     r"^train_test_split: mode='per_user' with test_size=0.01 leaves no test ratings"),
    (dict(mode="per_user", test_size="0.2"), TypeError, r"^train_test_split: test_size must be"),
    (dict(test_size=None, mode="random", seed=0), None, None),  # None: the default 0.1
]


@pytest.mark.parametrize("kw, exc, pattern", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_split_arguments_name_the_argument(kw, exc, pattern):
    r = _uneven()
    if exc is None:
        ds.train_test_split(r, **kw)
        return
    with pytest.raises(exc, match=pattern):
        ds.train_test_split(r, **kw)


# --------------------------------------------------------------------------- Ratings.timestamps


def test_ratings_timestamps_field():
    ids = np.arange(2)
    # The positional form without times still works; times are optional.
    r = ds.Ratings(torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([1.0, 2.0]), ids, ids,
                   2, 2)
    assert r.timestamps is None and "timestamps" not in repr(r)
    r = ds.Ratings(torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([1.0, 2.0]), ids, ids,
                   2, 2, timestamps=torch.tensor([10, 20]))
    assert r.subset(torch.tensor([1])).timestamps.tolist() == [20]
    assert "timestamps" in repr(r)
    base = (torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([1.0, 2.0]), ids, ids, 2, 2)
    with pytest.raises(ValueError, match=r"^Ratings.timestamps must be None or a 1-D tensor"):
        ds.Ratings(*base, torch.tensor([1]))
    with pytest.raises(ValueError, match=r"^Ratings.timestamps must be None or a 1-D tensor"):
        ds.Ratings(*base, [1, 2])
    with pytest.raises(TypeError, match=r"^Ratings.timestamps must be int64 or floating"):
        ds.Ratings(*base, torch.tensor([1, 2], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"^Ratings.timestamps must be finite"):
        ds.Ratings(*base, torch.tensor([1.0, math.nan]))


LINES = [(10, 500, 4.0, 881250949), (3, 7, 1.0, 891717742), (10, 7, 5.0, 878887116)]
FILES = {
    "u.data": "".join(f"{u}\t{i}\t{r:g}\t{t}\n" for u, i, r, t in LINES),
    "ratings.dat": "".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in LINES),
    "ratings.csv": "userId,movieId,rating,timestamp\r\n" + "".join(
        f"{u},{i},{r:g},{t}\r\n" for u, i, r, t in LINES),
}


@pytest.mark.parametrize("name", list(FILES))
def test_load_movielens_fills_timestamps(tmp_path, name):
    (tmp_path / name).write_bytes(FILES[name].encode())
    r = ds.load_movielens(tmp_path / name)
    assert r.timestamps.dtype == torch.int64
    assert r.timestamps.tolist() == [t for *_, t in LINES]


def test_load_movielens_timestamps_absent_float_or_bad(tmp_path):
    (tmp_path / "ratings_no_timestamp.dat").write_text("1::2::3\n4::5::1\n")
    assert ds.load_movielens(tmp_path / "ratings_no_timestamp.dat").timestamps is None
    (tmp_path / "u.data").write_text("1\t2\t3\t10.5\n4\t5\t1\t7\n")
    r = ds.load_movielens(tmp_path / "u.data")
    assert r.timestamps.dtype == torch.float64 and r.timestamps.tolist() == [10.5, 7.0]
    bad = tmp_path / "bad" / "u.data"
    bad.parent.mkdir()
    bad.write_text("1\t2\t3\tyesterday\n")
    with pytest.raises(ValueError, match=r"malformed.*timestamps numbers"):
        ds.load_movielens(bad)


# --------------------------------------------------------------------------- to_implicit


def test_to_implicit():
    r = _uneven(5)
    likes = ds.to_implicit(r)                             # threshold 4.0, binary
    keep = r.vals >= 4.0
    assert torch.equal(likes.rows, r.rows[keep]) and torch.equal(likes.cols, r.cols[keep])
    assert torch.equal(likes.timestamps, r.timestamps[keep])
    assert (likes.vals == 1).all() and likes.vals.dtype == r.vals.dtype
    assert likes.shape == r.shape and likes.user_ids is r.user_ids
    weights = ds.to_implicit(r, threshold=3.5, binary=False)
    assert torch.equal(weights.vals, r.vals[r.vals >= 3.5])
    every = ds.to_implicit(r, threshold=None)
    assert every.nnz == r.nnz and (every.vals == 1).all()
    assert r.vals.min() < 1.0                              # the input is left as it was
    none = ds.to_implicit(r, threshold=100.0)
    assert none.nnz == 0 and none.shape == r.shape


def test_to_implicit_bad_arguments():
    r = _uneven(6)
    neg = ds.Ratings(r.rows, r.cols, r.vals - 3.0, r.user_ids, r.item_ids, r.n_users, r.n_items)
    cases = [
        (lambda: ds.to_implicit((r.rows, r.cols, r.vals)), TypeError,
         r"^to_implicit: ratings must be a Ratings object, got tuple"),
        (lambda: ds.to_implicit(r, threshold="4"), TypeError,
         r"^to_implicit: threshold must be a number or None"),
        (lambda: ds.to_implicit(r, threshold=True), TypeError, r"^to_implicit: threshold must be"),
        (lambda: ds.to_implicit(r, threshold=math.nan), ValueError,
         r"^to_implicit: threshold must be finite"),
        (lambda: ds.to_implicit(r, binary=1), TypeError, r"^to_implicit: binary must be True or"),
        (lambda: ds.to_implicit(neg, threshold=-1.0, binary=False), ValueError,
         r"^to_implicit: with binary=False the kept ratings .* must be > 0"),
    ]
    for call, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            call()


# --------------------------------------------------------------------------- real data


def _real(rel: str) -> ds.Ratings:
    path = DATA / rel
    if not path.is_file():
        pytest.skip(f"MovieLens file not found: {path}")
    return ds.load_movielens(path)


@pytest.mark.data
def test_movielens_100k_times_and_splits():
    r = _real("ml-100k/u.data")
    assert (int(r.timestamps.min()), int(r.timestamps.max())) == (874724710, 893286638)
    train, test = ds.train_test_split(r, mode="time", k=10)
    assert test.nnz == 9430 and (_per_user(test) == 10).all()  # every user has >= 20 ratings
    _check_partition(r, train, test)
    users = test.rows
    first_test = torch.zeros(r.n_users, dtype=torch.int64).scatter_reduce(
        0, users, test.timestamps, "amin", include_self=False)
    last_train = torch.zeros(r.n_users, dtype=torch.int64).scatter_reduce(
        0, train.rows, train.timestamps, "amax", include_self=False)
    assert (first_test >= last_train).all()
    assert ds.to_implicit(r, threshold=4.0).nnz == 34_174 + 21_201


@pytest.mark.data
def test_movielens_latest_small_and_1m():
    small = _real("ml-latest-small/ratings.csv")
    assert (int(small.timestamps.min()), int(small.timestamps.max())) == (828124615, 1537799250)
    train, test = ds.train_test_split(small, mode="per_user", test_size=0.2, seed=0)
    assert train.nnz + test.nnz == small.nnz and test.nnz > 0.19 * small.nnz
    one_m = _real("ml-1m/ratings_no_timestamp.dat")
    assert one_m.timestamps is None
    with pytest.raises(ValueError, match="needs Ratings.timestamps"):
        ds.train_test_split(one_m, mode="time", k=1)
