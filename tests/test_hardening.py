"""Hardening: bad input at every public entry point beyond the ops (issue 8).

The op-level checks live in test_bad_inputs.py / test_fuzz_ops.py; here the
entry points are ``mfext.factorize``, ``MatrixFactorization`` (fit, predict,
recommend, fold_in, score, save/load), ``mfext.datasets.load_movielens`` and
the CLI. Each bad input must give a clear ``ValueError``/``TypeError`` (or a
documented error type) naming the argument, never a crash, hang, deep
traceback or garbage. ``COVERED`` counts the bad inputs per entry point.
"""
from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mfext
from mfext import MatrixFactorization, cf_ops
from mfext.datasets import load_movielens

ROOT = Path(__file__).resolve().parents[1]


def _small(m: int = 6, n: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, n, generator=g, dtype=torch.float64)


def _triples(seed: int = 0, m: int = 12, n: int = 9, nnz: int = 60):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, m, (nnz,), generator=g)
    cols = torch.randint(0, n, (nnz,), generator=g)
    rows[:m], cols[:n] = torch.arange(m), torch.arange(n)  # every user and item rated
    vals = 1 + 4 * torch.rand(nnz, generator=g, dtype=torch.float64)
    return rows, cols, vals


def _fitted(**kw) -> MatrixFactorization:
    params = dict(rank=3, solver="als", max_iter=2, random_state=0)
    params.update(kw)
    return MatrixFactorization(**params).fit(_triples())


# ---------------------------------------------------------------- factorize

A = _small()
FACTORIZE_CASES = {
    "A_1d": (dict(A=torch.rand(5), rank=1), ValueError, "2-D"),
    "A_3d": (dict(A=torch.rand(2, 3, 4), rank=1), ValueError, "2-D"),
    "A_empty_rows": (dict(A=torch.rand(0, 4), rank=1), ValueError, "at least one row"),
    "A_empty_cols": (dict(A=torch.rand(4, 0), rank=1), ValueError, "at least one row"),
    "A_complex": (dict(A=torch.rand(3, 3, dtype=torch.complex64), rank=1), TypeError, "real"),
    "A_object": (dict(A=np.array([[object()]]), rank=1), TypeError, "object"),
    "A_string": (dict(A="abc", rank=1), TypeError, "A must be a numeric array"),
    "A_bytes_array": (dict(A=np.array([[b"1"]]), rank=1), TypeError, "A must be a numeric"),
    "A_inf": (dict(A=torch.tensor([[1.0, math.inf], [2.0, 3.0]]), rank=1), ValueError, "infinite"),
    "A_all_nan": (dict(A=torch.full((3, 3), math.nan), rank=1), ValueError, "no observed"),
    "rank_0": (dict(A=A, rank=0), ValueError, "rank"),
    "rank_negative": (dict(A=A, rank=-2), ValueError, "rank"),
    "rank_too_big_no_reg": (dict(A=A, rank=6), ValueError, "reg > 0"),
    "rank_float": (dict(A=A, rank=2.0), TypeError, "rank"),
    "rank_bool": (dict(A=A, rank=True), TypeError, "rank"),
    "weight_negative": (dict(A=A, rank=1, weight=-torch.ones(6, 5)), ValueError, "weight"),
    "weight_nan": (dict(A=A, rank=1, weight=torch.full((6, 5), math.nan)), ValueError, "weight"),
    "weight_inf": (dict(A=A, rank=1, weight=torch.full((6, 5), math.inf)), ValueError, "weight"),
    "weight_shape": (dict(A=A, rank=1, weight=torch.ones(5, 6)), ValueError, "weight"),
    "weight_all_zero": (dict(A=A, rank=1, weight=torch.zeros(6, 5)), ValueError, "no observed"),
    "weight_complex": (dict(A=A, rank=1, weight=torch.ones(6, 5, dtype=torch.complex64)),
                       TypeError, "weight"),
    "optimizer_unknown": (dict(A=A, rank=1, optimizer="lbfgs"), ValueError, "optimizer"),
    "backend_unknown": (dict(A=A, rank=1, backend="triton"), ValueError, "backend"),
    "lr_zero": (dict(A=A, rank=1, lr=0.0), ValueError, "lr"),
    "lr_negative": (dict(A=A, rank=1, lr=-1.0), ValueError, "lr"),
    "lr_nan": (dict(A=A, rank=1, lr=math.nan), ValueError, "lr"),
    "lr_string": (dict(A=A, rank=1, lr="0.1"), TypeError, "lr"),
    "max_iter_negative": (dict(A=A, rank=1, max_iter=-3), ValueError, "max_iter"),
    "max_iter_float": (dict(A=A, rank=1, max_iter=2.5), TypeError, "max_iter"),
    "reg_negative": (dict(A=A, rank=1, reg=-1.0), ValueError, "reg"),
    "reg_inf": (dict(A=A, rank=1, reg=math.inf), ValueError, "reg"),
    "tol_negative": (dict(A=A, rank=1, tol=-1.0), ValueError, "tol"),
    "dtype_int": (dict(A=A, rank=1, dtype=torch.int32), TypeError, "dtype"),
    "reduction_unknown": (dict(A=A, rank=1, reduction="max"), ValueError, "reduction"),
    "init_unknown": (dict(A=A, rank=1, init="magic"), ValueError, "init"),
    "init_bad_shapes": (dict(A=A, rank=2, init=(torch.rand(6, 3), torch.rand(2, 5))),
                        ValueError, "init"),
    "callback_not_callable": (dict(A=A, rank=1, callback=3), TypeError, "callback"),
    "device_meta": (dict(A=A, rank=1, device="meta"), ValueError, "meta"),
    "A_meta": (dict(A=torch.rand(3, 3, device="meta"), rank=1), ValueError, "meta"),
}


@pytest.mark.parametrize("case", sorted(FACTORIZE_CASES))
def test_factorize_bad_input(case):
    kwargs, exc, match = FACTORIZE_CASES[case]
    kwargs = dict(kwargs)
    A_ = kwargs.pop("A")
    with pytest.raises(exc, match=match):
        mfext.factorize(A_, kwargs.pop("rank"), max_iter=kwargs.pop("max_iter", 3), **kwargs)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.float16])
def test_factorize_integer_bool_half_data_runs_in_float(dtype):
    data = (torch.rand(6, 5) * 4).to(dtype)
    res = mfext.factorize(data, 2, max_iter=5, seed=0)
    assert res.W.dtype == torch.float32 and torch.isfinite(res.W).all()


def test_factorize_max_iter_zero_returns_the_initial_factors():
    res = mfext.factorize(_small(), 2, max_iter=0, seed=0)
    assert res.n_iter == 0 and len(res.loss_history) == 1
    assert torch.isfinite(res.W).all()


def test_factorize_nan_data_is_missing():
    data = _small()
    data[0, 0] = math.nan
    res = mfext.factorize(data, 2, max_iter=5, seed=0)
    assert torch.isfinite(res.W).all() and torch.isfinite(res.H).all()


# ---------------------------------------------------------------- estimator

HYPER_CASES = {
    "rank_0": dict(rank=0), "rank_float": dict(rank=2.5), "solver_unknown": dict(solver="sdg"),
    "reg_negative": dict(reg=-0.1), "reg_nan": dict(reg=math.nan), "lr_zero": dict(lr=0.0),
    "lr_inf": dict(lr=math.inf), "lr_string": dict(lr="1"), "max_iter_0": dict(max_iter=0),
    "lr_decay_above_1": dict(lr_decay=1.5), "init_std_negative": dict(init_std=-1.0),
    "dtype_int": dict(dtype=torch.int32), "n_threads_0": dict(n_threads=0),
    "random_state_negative": dict(random_state=-1), "biases_string": dict(biases="yes"),
    "bias_reg_negative": dict(bias_reg=-1.0), "device_garbage": dict(device="gpu7"),
    "device_meta_sgd": dict(device="meta"),
}


@pytest.mark.parametrize("case", sorted(HYPER_CASES))
def test_estimator_bad_hyperparameters(case):
    model = MatrixFactorization(**{"rank": 2, "max_iter": 1, **HYPER_CASES[case]})
    with pytest.raises((ValueError, TypeError, NotImplementedError)):
        model.fit(_triples())


r, c, v = _triples()
FIT_CASES = {
    "negative_row": ((r - 1, c, v), ValueError, "non-negative"),
    "negative_col": ((r, c - 1, v), ValueError, "non-negative"),
    "float_ids": ((r + 0.5, c, v), ValueError, "integer"),
    "nan_id": ((torch.full_like(v, math.nan), c, v), ValueError, "integer"),
    "bool_ids": ((r > 3, c, v), TypeError, "integer"),
    "complex_vals": ((r, c, v.to(torch.complex128)), TypeError, "real"),
    "bool_vals": ((r, c, v > 2), TypeError, "real"),
    "nan_rating": ((r, c, torch.where(r == 0, math.nan, v)), ValueError, "finite"),
    "inf_rating": ((r, c, torch.where(r == 0, math.inf, v)), ValueError, "finite"),
    "dense_inf": (torch.tensor([[1.0, math.inf]]), ValueError, "Inf"),
    "dense_all_nan": (torch.full((3, 3), math.nan), ValueError, "no ratings"),
    "dense_1d": (torch.rand(4), ValueError, "2-D"),
    "empty_triple": ((r[:0], c[:0], v[:0]), ValueError, "no ratings"),
    "mismatched_lengths": ((r, c[:-1], v), ValueError, "same length"),
    "two_element_tuple": ((r, c), TypeError, "rows, cols, vals"),
    "string_input": ("ratings.csv", TypeError, "unsupported"),
    "string_ids": ((np.array(["a"] * 60), c, v), TypeError, "strings"),
    "object_ids": ((np.array([object()] * 60), c, v), TypeError, "object"),
    "2d_ids": ((r.reshape(6, 10), c, v), ValueError, "1-D"),
    "sparse_out_of_shape": (torch.sparse_coo_tensor(torch.tensor([[0, 5], [0, 1]]),
                                                    torch.tensor([1.0, 2.0]), (2, 2)),
                            ValueError, "out of range"),
    "dense_meta": (torch.rand(3, 3, device="meta"), ValueError, "meta"),
    "triple_meta": ((r.to("meta"), c.to("meta"), v.to("meta")), ValueError, "meta"),
    "huge_id_no_shape": ((torch.tensor([0, 2**40]), torch.tensor([0, 1]), torch.tensor([1., 2.])),
                         ValueError, "GiB"),
    "uint64_id_beyond_int64": ((torch.tensor([0, 2**63 + 1], dtype=torch.uint64),
                                torch.tensor([0, 1]), torch.tensor([1., 2.])), ValueError,
                               "int64"),
}


@pytest.mark.parametrize("case", sorted(FIT_CASES))
def test_fit_bad_data(case):
    X, exc, match = FIT_CASES[case]
    with pytest.raises(exc, match=match):
        MatrixFactorization(rank=2, max_iter=1, random_state=0).fit(X)


def test_fit_bad_validation_and_early_stopping():
    model = MatrixFactorization(rank=2, max_iter=2, random_state=0)
    with pytest.raises(ValueError, match="validation"):
        model.fit(_triples(), early_stopping_rounds=2)
    with pytest.raises(ValueError, match="early_stopping_rounds"):
        model.fit(_triples(), validation=_triples(1), early_stopping_rounds=0)
    with pytest.raises(ValueError, match="finite"):
        model.fit(_triples(), validation=(r, c, v * math.nan))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64, np.int32])
def test_fit_unsigned_numpy_ids(dtype):
    # numpy unsigned ids become torch uint16/32/64, which lack comparison kernels
    X = (r.numpy().astype(dtype), c.numpy().astype(dtype), v.numpy())
    a = MatrixFactorization(rank=2, max_iter=2, random_state=0).fit(X)
    b = MatrixFactorization(rank=2, max_iter=2, random_state=0).fit((r, c, v))
    assert torch.equal(a.user_factors_, b.user_factors_)


PREDICT_CASES = {
    "negative_user": (dict(users=[-1], items=[0]), ValueError, "non-negative"),
    "float_user": (dict(users=[0.5], items=[0]), ValueError, "integer"),
    "nan_item": (dict(users=[0], items=[math.nan]), ValueError, "integer"),
    "bool_users": (dict(users=torch.tensor([True]), items=[0]), TypeError, "integer"),
    "mismatched_lengths": (dict(users=[0, 1], items=[0]), ValueError, "same length"),
    "2d_users": (dict(users=[[0, 1]], items=[0, 1]), ValueError, "1-D"),
    "unknown_user_raise": (dict(users=[100], items=[0], unknown="raise"), ValueError, "unknown"),
    "unknown_item_raise": (dict(users=[0], items=[100], unknown="raise"), ValueError, "unknown"),
    "unknown_mode": (dict(users=[0], items=[0], unknown="zero"), ValueError, "unknown"),
    "meta_device": (dict(users=torch.tensor([0], device="meta"), items=[0]), ValueError, "meta"),
    "raw_ids_without_map": (dict(users=[0], items=[0], raw_ids=True), ValueError, "raw"),
    "string_users": (dict(users=["a"], items=[0]), TypeError, "strings"),
}


@pytest.mark.parametrize("case", sorted(PREDICT_CASES))
def test_predict_bad_input(case):
    kwargs, exc, match = PREDICT_CASES[case]
    with pytest.raises(exc, match=match):
        _fitted().predict(**kwargs)


def test_predict_unknown_fallback_is_finite():
    model = _fitted()
    out = model.predict([0, 100, 0, 100], [0, 0, 100, 100])
    assert torch.isfinite(out).all()
    assert out[3].item() == pytest.approx(model.global_mean_)


RECOMMEND_CASES = {
    "n_zero": (dict(users=[0], n=0), ValueError, "n must"),
    "n_float": (dict(users=[0], n=2.0), ValueError, "n must"),
    "negative_user": (dict(users=[-3]), ValueError, "non-negative"),
    "unknown_candidate": (dict(users=[0], items=[100]), ValueError, "unknown"),
    "negative_candidate": (dict(users=[0], items=[-1]), ValueError, "non-negative"),
    "meta_users": (dict(users=torch.tensor([0], device="meta")), ValueError, "meta"),
}


@pytest.mark.parametrize("case", sorted(RECOMMEND_CASES))
def test_recommend_bad_input(case):
    kwargs, exc, match = RECOMMEND_CASES[case]
    with pytest.raises(exc, match=match):
        _fitted().recommend(**kwargs)


def test_recommend_unknown_user_and_not_fitted():
    items, scores = _fitted().recommend([1000], n=3)
    assert (items >= 0).all() and torch.isfinite(scores).all()
    with pytest.raises(RuntimeError, match="not fitted"):
        MatrixFactorization().recommend([0])


FOLD_IN_CASES = {
    "unknown_item": ((torch.tensor([0]), torch.tensor([100]), torch.tensor([3.0])), ValueError,
                     "unknown"),
    "negative_user": ((torch.tensor([-1]), torch.tensor([0]), torch.tensor([3.0])), ValueError,
                      "non-negative"),
    "nan_rating": ((torch.tensor([0]), torch.tensor([0]), torch.tensor([math.nan])), ValueError,
                   "finite"),
    "empty": ((torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64),
               torch.tensor([])), ValueError, "no ratings"),
    "mismatched_lengths": ((torch.tensor([0, 0]), torch.tensor([0]), torch.tensor([3.0])),
                           ValueError, "same length"),
    "meta": ((torch.tensor([0], device="meta"), torch.tensor([0], device="meta"),
              torch.tensor([3.0], device="meta")), ValueError, "meta"),
    "huge_user_id": ((torch.tensor([2**40]), torch.tensor([0]), torch.tensor([3.0])), ValueError,
                     "GiB"),
}


@pytest.mark.parametrize("case", sorted(FOLD_IN_CASES))
def test_fold_in_bad_input(case):
    X, exc, match = FOLD_IN_CASES[case]
    with pytest.raises(exc, match=match):
        _fitted().fold_in(X)


SCORE_CASES = {
    "nan_rating": ((torch.tensor([0]), torch.tensor([0]), torch.tensor([math.nan])), ValueError,
                   "finite"),
    "empty": ((torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64),
               torch.tensor([])), ValueError, "no ratings"),
    "negative_item": ((torch.tensor([0]), torch.tensor([-1]), torch.tensor([3.0])), ValueError,
                      "non-negative"),
    "not_fitted": (None, RuntimeError, "not fitted"),
    "meta": ((torch.tensor([0], device="meta"), torch.tensor([0], device="meta"),
              torch.tensor([3.0], device="meta")), ValueError, "meta"),
}


@pytest.mark.parametrize("case", sorted(SCORE_CASES))
def test_score_bad_input(case):
    X, exc, match = SCORE_CASES[case]
    model = MatrixFactorization() if X is None else _fitted()
    with pytest.raises(exc, match=match):
        model.score(X if X is not None else _triples())


def test_score_unknown_ids_fall_back():
    model = _fitted()
    assert math.isfinite(model.score((torch.tensor([100]), torch.tensor([0]),
                                      torch.tensor([3.0]))))


# ---------------------------------------------------------------- persistence


class _Evil:
    def __reduce__(self):  # would run code if unpickled
        return (os.system, ("echo pwned > /dev/null",))


def _write_corrupt(path: Path, kind: str, good: Path) -> None:
    if kind == "text":
        path.write_text("not a model\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "flipped":
        data = bytearray(good.read_bytes())
        for i in range(0, len(data), 97):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "foreign_dict":
        torch.save({"weights": torch.ones(3)}, path)
    elif kind == "foreign_tensor":
        torch.save(torch.ones(3), path)
    elif kind == "pickled_class":
        with open(path, "wb") as fh:
            pickle.dump(_Evil(), fh)
    elif kind == "torch_saved_class":
        torch.save({"format": "mfext.MatrixFactorization", "x": _Evil()}, path)
    elif kind == "wrong_version":
        state = torch.load(good, weights_only=True)
        state["version"] = 99
        torch.save(state, path)
    elif kind == "missing_keys":
        torch.save({"format": "mfext.MatrixFactorization", "version": 1}, path)
    elif kind == "bad_params":
        state = torch.load(good, weights_only=True)
        state["params"]["dtype"] = "os"
        torch.save(state, path)
    elif kind == "bad_tensors":
        state = torch.load(good, weights_only=True)
        state["tensors"]["user_factors"] = "abc"
        torch.save(state, path)
    elif kind == "shape_mismatch":
        state = torch.load(good, weights_only=True)
        state["tensors"]["user_factors"] = torch.ones(2, 2)
        torch.save(state, path)
    else:  # pragma: no cover
        raise AssertionError(kind)


LOAD_CASES = ["text", "empty", "truncated", "flipped", "foreign_dict", "foreign_tensor",
              "pickled_class", "torch_saved_class", "wrong_version", "missing_keys", "bad_params",
              "bad_tensors", "shape_mismatch"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "good.pt"
    _fitted().save(path)
    return path


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", LOAD_CASES)
def test_load_corrupt_model_is_value_error(tmp_path, saved_model, kind):
    path = tmp_path / "bad.pt"
    _write_corrupt(path, kind, saved_model)
    with pytest.raises(ValueError, match="bad.pt"):
        MatrixFactorization.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        MatrixFactorization.load(tmp_path / "nope.pt")


def test_save_bad_destination(tmp_path):
    model = _fitted()
    with pytest.raises(FileNotFoundError, match="no such directory"):
        model.save(tmp_path / "missing" / "model.pt")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        model.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_directory(tmp_path):
    with pytest.raises(IsADirectoryError):
        MatrixFactorization.load(tmp_path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_save_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    model = _fitted()
    model.save(path)
    before = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        f.write(b"partial garbage")  # a half-written file, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _fitted(rank=2).save(path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left behind
    loaded = MatrixFactorization.load(path)
    torch.testing.assert_close(loaded.user_factors_, model.user_factors_)


# ---------------------------------------------------------------- datasets

DATASET_CASES = {
    "garbage.csv": (b"\x00\x01\x02 binary junk\xff\n\x00", ValueError),
    "no_header.csv": (b"1,2,3.0,0\n", ValueError),
    "empty.data": (b"", ValueError),
    "blank.data": (b"\n\n  \n", ValueError),
    "two_fields.data": (b"1\t2\n3\t4\n", ValueError),
    "five_fields.dat": (b"1::2::3::4::5\n", ValueError),
    "non_numeric_ids.data": (b"alice\t2\t3.0\t0\n", ValueError),
    "non_numeric_rating.data": (b"1\t2\tgood\t0\n", ValueError),
    "float_ids.csv": (b"userId,movieId,rating,timestamp\n1.5,2,3.0,0\n", ValueError),
    "negative_ids.dat": (b"-1::2::3.0::0\n", ValueError),
    "nan_rating.csv": (b"userId,movieId,rating,timestamp\n1,2,nan,0\n", ValueError),
    "inf_rating.data": (b"1\t2\tinf\t0\n", ValueError),
    "ragged.data": (b"1\t2\t3\t0\n1\t2\n", ValueError),
    "header_only.csv": (b"userId,movieId,rating,timestamp\n", ValueError),
}


@pytest.mark.parametrize("name", sorted(DATASET_CASES))
def test_load_movielens_bad_file(tmp_path, name):
    content, exc = DATASET_CASES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(exc, match="load_movielens"):
        load_movielens(path)


def test_load_movielens_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_movielens(tmp_path / "u.data")
    with pytest.raises(FileNotFoundError):
        load_movielens(tmp_path)  # a directory without a ratings file


# ---------------------------------------------------------------- CLI


def _cli(*args: str, cwd: Path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "mfext", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    ratings = folder / "u.data"
    rng = np.random.default_rng(0)
    lines = [f"{u}\t{i}\t{rng.integers(1, 6)}\t0" for u in range(1, 11) for i in range(1, 9)
             if rng.random() < 0.6]
    ratings.write_text("\n".join(lines) + "\n")
    model = folder / "model.pt"
    proc = _cli("fit", str(ratings), "--rank", "2", "--max-iter", "2", "--out", str(model),
                cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return model


def _corrupt_file(folder: Path, saved: Path, kind: str) -> Path:
    path = folder / f"{kind}.pt"
    _write_corrupt(path, kind, saved)
    return path


CLI_CASES = {
    "fit_missing_file": lambda d, m: ["fit", str(d / "nope.data"), "--rank", "2", "--out",
                                      str(d / "o.pt")],
    "fit_garbage_file": lambda d, m: ["fit", str(_garbage(d)), "--rank", "2", "--out",
                                      str(d / "o.pt")],
    "fit_rank_zero": lambda d, m: ["fit", str(m.parent / "u.data"), "--rank", "0", "--out",
                                   str(d / "o.pt")],
    "recommend_missing_model": lambda d, m: ["recommend", str(d / "nope.pt"), "--user", "1"],
    "recommend_text_model": lambda d, m: ["recommend", str(_corrupt_file(d, m, "text")),
                                          "--user", "1"],
    "recommend_truncated_model": lambda d, m: ["recommend", str(_corrupt_file(d, m, "truncated")),
                                               "--user", "1"],
    "recommend_foreign_model": lambda d, m: ["recommend",
                                             str(_corrupt_file(d, m, "foreign_dict")),
                                             "--user", "1"],
    "recommend_unknown_user": lambda d, m: ["recommend", str(m), "--user", "999999"],
    "recommend_n_zero": lambda d, m: ["recommend", str(m), "--user", "1", "-n", "0"],
    "recommend_directory_as_model": lambda d, m: ["recommend", str(d), "--user", "1"],
    "fit_out_in_missing_directory": lambda d, m: ["fit", str(m.parent / "u.data"), "--rank", "2",
                                                  "--out", str(d / "no" / "such" / "o.pt")],
}


def _garbage(folder: Path) -> Path:
    path = folder / "garbage.data"
    path.write_bytes(b"\x00\xff this is not\ta ratings file\n")
    return path


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_input_exits_cleanly(tmp_path, cli_model, case):
    proc = _cli(*CLI_CASES[case](tmp_path, cli_model), cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "error" in proc.stderr


def test_cli_recommend_ok(tmp_path, cli_model):
    proc = _cli("recommend", str(cli_model), "--user", "1", "-n", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "user 1" in proc.stdout


# ---------------------------------------------------------------- in-place ops


def _sgd_args(m=5, n=4, k=3):
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, m, (20,), generator=g)
    cols = torch.randint(0, n, (20,), generator=g)
    vals = torch.rand(20, generator=g)
    return rows, cols, vals


ALIAS_CASES = ["W_Ht_same_storage", "W_is_Ht", "biases_same_storage", "bias_views_of_W"]


@pytest.mark.parametrize("case", ALIAS_CASES)
def test_sgd_epoch_rejects_overlapping_outputs(case):
    rows, cols, vals = _sgd_args()
    k = 3
    buf = torch.rand(9 * k)
    W, Ht = torch.rand(5, k), torch.rand(4, k)
    bu, bi = torch.zeros(5), torch.zeros(4)
    if case == "W_Ht_same_storage":
        W, Ht = buf[: 5 * k].view(5, k), buf[5 * k:].view(4, k)  # disjoint views of one buffer
    elif case == "W_is_Ht":
        W = Ht = torch.rand(5, k)
        rows, cols = rows.clamp(max=4), cols.clamp(max=4)
        bi = torch.zeros(5)
    elif case == "biases_same_storage":
        both = torch.zeros(9)
        bu, bi = both[:5], both[5:]
    else:
        bu, bi = W.view(-1)[:5], W.view(-1)[5:9]
    before = [t.clone() for t in (W, Ht, bu, bi)]
    with pytest.raises(RuntimeError, match="share memory"):
        cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, lr=0.01, reg=0.0)
    for t, b in zip((W, Ht, bu, bi), before):
        assert torch.equal(t, b)  # rejected before any write


INPUT_ALIAS_CASES = ["vals_view_of_W", "vals_view_of_H_t", "vals_is_user_bias",
                     "rows_view_of_order_target"]


@pytest.mark.parametrize("case", INPUT_ALIAS_CASES)
def test_sgd_epoch_rejects_inputs_overlapping_outputs(case):
    rows, cols, vals = _sgd_args()
    W, Ht = torch.rand(5, 4), torch.rand(4, 4)
    bu, bi = torch.zeros(5), torch.zeros(4)
    order = None
    if case == "vals_view_of_W":
        vals = W.view(-1)[:20]
    elif case == "vals_view_of_H_t":
        Ht, bi = torch.rand(6, 4), torch.zeros(6)
        vals = Ht.view(-1)[-20:]
    elif case == "vals_is_user_bias":
        bu = torch.zeros(20)
        W = torch.rand(20, 4)
        vals = bu
    else:  # int64 ids sharing memory with a float64 W (a reinterpreting view)
        W, Ht = torch.rand(5, 4, dtype=torch.float64), torch.rand(4, 4, dtype=torch.float64)
        bu, bi = torch.zeros(5, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
        vals = vals.double()
        order = W.view(-1).view(torch.int64)[:0]  # empty: allowed
        rows = W.view(-1).view(torch.int64)[:20]
    before = [t.clone() for t in (W, Ht, bu, bi)]
    with pytest.raises(RuntimeError, match="overlaps"):
        cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, order=order, lr=0.01, reg=0.0)
    for t, b in zip((W, Ht, bu, bi), before):
        assert torch.equal(t, b)


def test_sgd_epoch_distinct_storages_run():
    rows, cols, vals = _sgd_args()
    W, Ht = torch.rand(5, 3), torch.rand(4, 3)
    sse = cf_ops.sgd_epoch_(W, Ht, torch.zeros(5), torch.zeros(4), rows, cols, vals,
                            lr=0.01, reg=0.0)
    assert math.isfinite(float(sse))


# ---------------------------------------------------------------- divergence


@pytest.mark.parametrize("solver,kw", [("sgd", dict(lr=1e6, lr_decay=1.0)),
                                       ("adam", dict(lr=1e12))],
                         ids=["sgd_huge_lr", "adam_huge_lr"])
def test_estimator_divergence_keeps_last_finite(solver, kw):
    # ratings in the hundreds of thousands with a huge lr overflow float32 fast
    rows, cols, vals = _triples()
    model = MatrixFactorization(rank=3, solver=solver, max_iter=50, random_state=0, reg=0.0,
                                **kw)
    with pytest.raises(FloatingPointError, match="diverged in epoch"):
        model.fit((rows, cols, vals * 1e30))
    for t in (model.user_factors_, model.item_factors_, model.user_bias_, model.item_bias_):
        assert torch.isfinite(t).all()
    assert model.n_iter_ >= 0


def test_estimator_als_reg0_tiny_matrix_is_finite():
    X = (torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), torch.tensor([1.0, 2.0, 3.0]))
    model = MatrixFactorization(rank=4, solver="als", reg=0.0, bias_reg=0.0, max_iter=5,
                                random_state=0).fit(X)
    for t in (model.user_factors_, model.item_factors_, model.user_bias_, model.item_bias_):
        assert torch.isfinite(t).all()
    assert torch.isfinite(model.predict([0, 1], [0, 1])).all()


@pytest.mark.parametrize("optimizer", ["adam", "gd"])
def test_factorize_divergence_keeps_last_finite(optimizer):
    # Adam moves each entry by about lr per step: float32 overflows within a few steps
    kw = dict(lr=1e12) if optimizer == "adam" else dict(lr=1e6, line_search=False)
    with pytest.raises(mfext.DivergenceError, match="diverged") as info:
        mfext.factorize(_small() * 1e3, 2, optimizer=optimizer, max_iter=200, seed=0,
                        dtype=torch.float32, **kw)
    res = info.value.result
    assert torch.isfinite(res.W).all() and torch.isfinite(res.H).all()
    assert all(math.isfinite(x) for x in res.loss_history)


# ---------------------------------------------------------------- threads


def test_estimator_n_threads_respected_and_restored():
    before = torch.get_num_threads()
    fits = [MatrixFactorization(rank=4, solver="sgd", max_iter=3, random_state=1,
                                n_threads=nt).fit(_triples(2, 40, 30, 600))
            for nt in (1, 1, 2)]
    assert torch.get_num_threads() == before
    for other in fits[1:]:
        # the blocked schedule (P = max(8, 2 * threads) = 8 for 1..4 threads) makes
        # SGD bitwise identical across these thread counts
        assert torch.equal(fits[0].user_factors_, other.user_factors_)
        assert torch.equal(fits[0].item_factors_, other.item_factors_)


# ---------------------------------------------------------------- fuzzing

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is in the test extras
    st = None

FUZZ_EXAMPLES = 30

if st is not None:
    @st.composite
    def _rating_triples(draw):
        nnz = draw(st.integers(1, 40))
        max_id = draw(st.integers(0, 50))
        ids = st.integers(0, max_id)
        rows = draw(st.lists(ids, min_size=nnz, max_size=nnz))
        cols = draw(st.lists(ids, min_size=nnz, max_size=nnz))
        vals = draw(st.lists(st.one_of(st.just(0.0), st.floats(-10, 10, allow_nan=False)),
                             min_size=nnz, max_size=nnz))
        return rows, cols, vals

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=_rating_triples(), solver=st.sampled_from(["sgd", "als", "adam"]),
           form=st.sampled_from(["list", "numpy", "torch", "scipy"]))
    def test_fuzz_estimator_input_conversion(data, solver, form):
        """Random triples (duplicates, explicit zeros, random id ranges) in every input form."""
        rows, cols, vals = data
        if form == "numpy":
            X = (np.array(rows), np.array(cols, dtype=np.int32), np.array(vals))
        elif form == "torch":
            X = (torch.tensor(rows), torch.tensor(cols), torch.tensor(vals, dtype=torch.float32))
        elif form == "scipy":
            sp = pytest.importorskip("scipy.sparse")
            X = sp.coo_matrix((vals, (rows, cols)), shape=(max(rows) + 1, max(cols) + 1))
        else:
            X = (rows, cols, vals)
        model = MatrixFactorization(rank=2, solver=solver, max_iter=2, random_state=0).fit(X)
        assert model.n_users_ == max(rows) + 1 and model.n_items_ == max(cols) + 1
        pred = model.predict(torch.tensor(rows), torch.tensor(cols))
        assert pred.shape == (len(rows),) and torch.isfinite(pred).all()
        assert math.isfinite(model.score((rows, cols, vals)))
        top, scores = model.recommend([0, max(rows) + 5], n=3, exclude_seen=False)
        assert (top >= 0).all() and torch.isfinite(scores).all()
else:  # pragma: no cover
    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_fuzz_estimator_input_conversion():
        pass


# ---------------------------------------------------------------- counts

COVERED = {
    "factorize": len(FACTORIZE_CASES),
    "MatrixFactorization(hyperparameters)": len(HYPER_CASES),
    "MatrixFactorization.fit": len(FIT_CASES) + 3,  # + validation/early stopping
    "MatrixFactorization.predict": len(PREDICT_CASES),
    "MatrixFactorization.recommend": len(RECOMMEND_CASES) + 1,  # + not fitted
    "MatrixFactorization.fold_in": len(FOLD_IN_CASES),
    "MatrixFactorization.score": len(SCORE_CASES),
    "MatrixFactorization.load": len(LOAD_CASES) + 2,  # + missing file, directory
    "MatrixFactorization.save": 3,  # failure mid-write, missing directory, directory as path
    "datasets.load_movielens": len(DATASET_CASES) + 2,  # + missing file, empty directory
    "cli": len(CLI_CASES),
    "sgd_epoch_ (aliasing)": len(ALIAS_CASES) + len(INPUT_ALIAS_CASES),
}


def test_coverage_counts():
    assert all(count > 0 for count in COVERED.values())
    print(COVERED)
