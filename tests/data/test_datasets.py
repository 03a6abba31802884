"""mfext.datasets: the MovieLens formats, id maps, splits, synthetic ratings, bad files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mfext import datasets as ds
from helpers import movielens_path

# (raw user, raw item, rating, timestamp): ids not contiguous, not sorted, repeated.
LINES = [(10, 500, 4.0, 881250949), (3, 7, 1.0, 891717742), (10, 7, 5.0, 878887116),
         (42, 500, 0.5, 880606923), (3, 99, 3.5, 886397596)]


def _write(tmp_path, name, text, newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def _expected():
    users = np.array([u for u, _, _, _ in LINES])
    items = np.array([i for _, i, _, _ in LINES])
    vals = np.array([r for _, _, r, _ in LINES])
    return users, items, vals


FORMATS = {
    "u.data": lambda: "".join(f"{u}\t{i}\t{r:g}\t{t}\n" for u, i, r, t in LINES),
    "ratings.dat": lambda: "".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in LINES),
    "ratings_no_timestamp.dat": lambda: "".join(f"{u}::{i}::{r:g}\n" for u, i, r, t in LINES),
    "ratings.csv": lambda: "userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},{r:g},{t}\n" for u, i, r, t in LINES),
}


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_formats_and_id_maps(tmp_path, name, newline):
    path = _write(tmp_path, name, FORMATS[name](), newline)
    r = ds.load_movielens(path)
    users, items, vals = _expected()
    assert r.nnz == len(LINES) and len(r) == len(LINES)
    assert r.rows.dtype == torch.int64 and r.cols.dtype == torch.int64
    assert r.vals.dtype == torch.float32
    assert list(r.user_ids) == sorted(set(users.tolist()))
    assert list(r.item_ids) == sorted(set(items.tolist()))
    assert (r.n_users, r.n_items) == (3, 3)
    # Indices map back to the raw ids, in file order.
    assert np.array_equal(r.user_ids[r.rows.numpy()], users)
    assert np.array_equal(r.item_ids[r.cols.numpy()], items)
    assert np.allclose(r.vals.numpy(), vals)


def test_directory_and_dtype(tmp_path):
    _write(tmp_path, "u.data", FORMATS["u.data"]())
    r = ds.load_movielens(tmp_path, dtype=torch.float64)
    assert r.vals.dtype == torch.float64 and r.nnz == len(LINES)


def test_no_trailing_newline(tmp_path):
    path = _write(tmp_path, "u.data", FORMATS["u.data"]().rstrip("\n"))
    assert ds.load_movielens(path).nnz == len(LINES)


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_blank_lines_are_no_ratings(tmp_path, name, newline):
    """Leading, inner and trailing blank lines: the same ratings as without them."""
    clean = FORMATS[name]()
    lines = clean.splitlines(keepends=True)
    head = 1 if name.endswith(".csv") else 0  # the header stays the first non-blank line
    padded = ("\n \n" + "".join(lines[:head + 2]) + "\n\t\n" + "".join(lines[head + 2:])
              + "\n\n")
    (tmp_path / "clean").mkdir()
    ref = ds.load_movielens(_write(tmp_path / "clean", name, clean, newline))
    got = ds.load_movielens(_write(tmp_path, name, padded, newline))
    for field in ("rows", "cols", "vals"):
        assert torch.equal(getattr(got, field), getattr(ref, field)), field
    assert np.array_equal(got.user_ids, ref.user_ids)
    assert np.array_equal(got.item_ids, ref.item_ids)


BAD_FILES = {
    "non-integer id": ("u.data", "1\t2.5\t3\t0\n", r"malformed.*integers"),
    "text id": ("u.data", "1\tabc\t3\t0\n", r"malformed"),
    "negative id": ("u.data", "1\t2\t3\t0\n-4\t2\t3\t0\n", r"negative user id -4 at rating 1"),
    "nan rating": ("ratings.dat", "1::2::nan::0\n", r"rating 0 is not finite"),
    "two fields": ("u.data", "1\t2\n", r"expected 3 or 4 fields"),
    "empty": ("u.data", "", r"holds no ratings"),
    "blank": ("ratings.csv", "userId,movieId,rating\n\n", r"holds no ratings"),
    "csv without header": ("ratings.csv", "1,2,3.0,0\n", r"must start with a header"),
    "ragged": ("u.data", "1\t2\t3\t0\n1\t2\n", r"malformed"),
    # ids of 2**63 or more do not fit in int64: the message says so instead of "integers"
    "id of 2**63": ("u.data", "1\t9223372036854775808\t3\t0\n", r"malformed.*2\*\*63 - 1"),
    "float id beyond int64": ("ratings.dat", "1e19::2::3::0\n", r"malformed.*2\*\*63 - 1"),
    "blank lines only": ("u.data", "\n \n\t\n", r"holds no ratings"),
    "blank first line, then two fields": ("u.data", "\n1\t2\n", r"got 2 in the first line b'1"),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_files(tmp_path, case):
    name, text, pattern = BAD_FILES[case]
    path = _write(tmp_path, name, text)
    with pytest.raises(ValueError, match=pattern):
        ds.load_movielens(path)


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        ds.load_movielens(tmp_path / "nope.data")
    with pytest.raises(FileNotFoundError, match="no ratings file in directory"):
        ds.load_movielens(tmp_path)


def test_ratings_validation():
    ids = np.arange(2)
    with pytest.raises(ValueError, match="same length"):
        ds.Ratings(torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([1.0, 2.0]), ids, ids, 2, 2)
    with pytest.raises(TypeError, match="int64"):
        ds.Ratings(torch.tensor([0], dtype=torch.int32), torch.tensor([0]), torch.tensor([1.0]),
                   ids, ids, 2, 2)
    with pytest.raises(ValueError, match="user_ids"):
        ds.Ratings(torch.tensor([0]), torch.tensor([0]), torch.tensor([1.0]), ids, ids, 3, 2)


def _keys(r: ds.Ratings) -> set:
    return set((r.rows * r.n_items + r.cols).tolist())


@pytest.mark.parametrize("test_size", [0.1, 0.5, 37])
def test_train_test_split_partitions(test_size):
    r = ds.synthetic_ratings(50, 40, 1000, rank=3, seed=1)
    train, test = ds.train_test_split(r, test_size=test_size, seed=0)
    n_test = test_size if isinstance(test_size, int) else round(test_size * 1000)
    assert test.nnz == n_test and train.nnz == 1000 - n_test
    assert _keys(train).isdisjoint(_keys(test))
    assert _keys(train) | _keys(test) == _keys(r)
    for part in (train, test):
        assert part.shape == r.shape
        assert part.user_ids is r.user_ids and part.item_ids is r.item_ids
    again, _ = ds.train_test_split(r, test_size=test_size, seed=0)
    other, _ = ds.train_test_split(r, test_size=test_size, seed=1)
    assert torch.equal(again.rows, train.rows) and torch.equal(again.vals, train.vals)
    assert not torch.equal(other.rows, train.rows)


# (test_size, exception, message); a list, since 0 == 0.0 and 1.0 == True as dict keys
SPLIT_SIZES = [
    (0.0, ValueError, r"fractional test_size must lie in \(0, 1\), got 0.0"),
    (1.0, ValueError, r"fractional test_size must lie in \(0, 1\), got 1.0"),
    (1.5, ValueError, r"fractional test_size must lie in \(0, 1\), got 1.5"),
    (-0.5, ValueError, r"fractional test_size must lie in \(0, 1\), got -0.5"),
    (0, ValueError, r"test_size=0 leaves 0 of 100 ratings"),
    (1000, ValueError, r"test_size=1000 leaves 1000 of 100 ratings"),
    (-3, ValueError, r"test_size=-3 leaves -3 of 100 ratings"),
    (0.001, ValueError, r"test_size=0.001 leaves 0 of 100 ratings"),
    ("0.1", TypeError, r"test_size must be a float or an int, got '0.1'"),
    (True, TypeError, r"test_size must be a float or an int, got True"),
]


@pytest.mark.parametrize("bad, exc, pattern", SPLIT_SIZES,
                         ids=[f"{type(b).__name__}-{b!r}" for b, _, _ in SPLIT_SIZES])
def test_train_test_split_bad_sizes(bad, exc, pattern):
    r = ds.synthetic_ratings(10, 10, 100, rank=2, seed=0)
    with pytest.raises(exc, match=pattern):
        ds.train_test_split(r, test_size=bad)
    with pytest.raises(TypeError, match="Ratings"):
        ds.train_test_split((r.rows, r.cols, r.vals))


def test_synthetic_ratings_model_and_noise():
    r, (W, H) = ds.synthetic_ratings(300, 200, 20000, rank=4, noise=0.2, seed=3,
                                     dtype=torch.float64, return_factors=True)
    assert r.nnz == 20000 and r.shape == (300, 200)
    assert len(_keys(r)) == 20000  # distinct pairs
    resid = r.vals - (W[r.rows] * H[r.cols]).sum(1)
    assert abs(float(resid.std()) - 0.2) < 0.01
    assert abs(float((W[r.rows] * H[r.cols]).sum(1).std()) - 1.0) < 0.1  # unit signal
    again = ds.synthetic_ratings(300, 200, 20000, rank=4, noise=0.2, seed=3, dtype=torch.float64)
    assert torch.equal(again.vals, r.vals)
    biased = ds.synthetic_ratings(300, 200, 20000, rank=4, noise=0.0, seed=3, biases=True)
    assert abs(float(biased.vals.mean()) - 3.0) < 0.2


def test_synthetic_ratings_large_space_and_errors():
    r = ds.synthetic_ratings(100_000, 1000, 5000, rank=2, seed=0)  # rejection path
    assert r.nnz == 5000 and len(_keys(r)) == 5000
    with pytest.raises(ValueError, match="exceeds"):
        ds.synthetic_ratings(3, 3, 10)
    with pytest.raises(ValueError, match="rank"):
        ds.synthetic_ratings(3, 3, 5, rank=0)
    with pytest.raises(ValueError, match="noise"):
        ds.synthetic_ratings(3, 3, 5, noise=float("nan"))


# --------------------------------------------------------------------------- real data

REAL = [
    ("ml-100k/u.data", 100_000, 943, 1682, 3.52986),
    ("ml-1m/ratings_no_timestamp.dat", 1_000_209, 6040, 3706, 3.58156),
    ("ml-latest-small/ratings.csv", 100_836, 610, 9724, 3.50156),
]


@pytest.mark.data
@pytest.mark.parametrize("rel, nnz, users, items, mean", REAL, ids=[r[0].split("/")[0] for r in REAL])
def test_movielens_counts(rel, nnz, users, items, mean):
    r = ds.load_movielens(movielens_path(rel))
    assert (r.nnz, r.n_users, r.n_items) == (nnz, users, items)
    assert abs(float(r.vals.double().mean()) - mean) < 1e-4
    assert int(r.rows.max()) == users - 1 and int(r.cols.max()) == items - 1
