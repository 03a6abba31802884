"""MatrixFactorization save/load refuse bad input clearly: corrupt, foreign or hostile
files are a ValueError naming the file (never unpickled code), bad map_location and
destinations name the argument, and a failed save keeps the previous file."""
from __future__ import annotations

import pytest
import torch

from mfext import MatrixFactorization
from helpers import _fitted, _write_corrupt


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


def test_load_directory(tmp_path):
    with pytest.raises(IsADirectoryError):
        MatrixFactorization.load(tmp_path)


LOAD_ARG_CASES = {  # map_location
    "garbage": ("gpu7", r"^map_location must be a device such as 'cpu' or 'cuda:0', got 'gpu7'"),
    "meta": ("meta", r"^map_location='meta' cannot hold the model: meta tensors hold no data"),
    "wrong_type": (3.5, r"^map_location must be a device"),
}


@pytest.mark.parametrize("case", sorted(LOAD_ARG_CASES))
def test_load_bad_map_location(saved_model, case):
    location, match = LOAD_ARG_CASES[case]
    with pytest.raises(ValueError, match=match):
        MatrixFactorization.load(saved_model, map_location=location)


def test_save_bad_destination(tmp_path):
    model = _fitted()
    with pytest.raises(FileNotFoundError, match="no such directory"):
        model.save(tmp_path / "missing" / "model.pt")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        model.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


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
