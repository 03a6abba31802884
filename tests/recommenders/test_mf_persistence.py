"""MatrixFactorization save/load: the exact round trip, file modes (umask, a replaced
file's mode), and loading a model saved on a GPU this machine lacks. Corrupt files and
bad arguments: test_mf_persistence_bad_inputs.py."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

import mfext
from mfext import MatrixFactorization
from mfext.recommenders import persistence
from mf_helpers import _model


@pytest.mark.parametrize("solver", ["sgd", "als"])
def test_save_load_round_trip(small, solver, tmp_path):
    r, train, test = small
    m = _model(solver).fit(train, validation=test)
    path = tmp_path / "model.pt"
    m.save(path)
    assert os.listdir(tmp_path) == ["model.pt"]  # no temporary file left behind
    torch.load(path, weights_only=True)  # loadable without unpickling code
    m2 = MatrixFactorization.load(path)
    assert m2.get_params() == m.get_params()
    assert m2.history_ == m.history_ and m2.n_iter_ == m.n_iter_
    assert np.array_equal(m2.user_ids_, m.user_ids_) and np.array_equal(m2.item_ids_, m.item_ids_)
    u, i = torch.arange(60).repeat(40), torch.arange(40).repeat_interleave(60)
    assert torch.equal(m2.predict(u, i), m.predict(u, i))
    assert torch.equal(m2.recommend([0, 5], n=6)[0], m.recommend([0, 5], n=6)[0])
    f1, b1 = m.fold_in(([0, 0], [1, 2], [4.0, 2.0]))
    f2, b2 = m2.fold_in(([0, 0], [1, 2], [4.0, 2.0]))
    assert torch.equal(f1, f2) and torch.equal(b1, b2)
    m.save(path)  # overwrite in place
    assert torch.equal(MatrixFactorization.load(path).predict(u, i), m.predict(u, i))


def test_save_load_errors(small, tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        MatrixFactorization().save(tmp_path / "x.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a saved MatrixFactorization"):
        MatrixFactorization.load(tmp_path / "other.pt")
    m = _model().fit(small[1])
    with pytest.raises(OSError):
        m.save(tmp_path / "missing-dir" / "m.pt")


def test_load_of_a_foreign_pickle_never_advises_weights_only_false(tmp_path):
    path = tmp_path / "foreign.pt"
    import pickle
    path.write_bytes(pickle.dumps(np.random.RandomState(0)))
    with pytest.raises(ValueError, match="is not a readable MatrixFactorization file") as info:
        mfext.MatrixFactorization.load(path)
    assert "weights_only" not in str(info.value)


# --------------------------------------------------------------------------- file modes


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027, 0o002], ids=oct)
def test_save_creates_files_with_the_umask_mode(small, tmp_path, umask):
    m = _model(max_iter=1).fit(small[1])
    old = os.umask(umask)
    try:
        m.save(tmp_path / "model.pt")
        with open(tmp_path / "reference", "w"):  # what any new file of this process gets
            pass
    finally:
        os.umask(old)
    assert _mode(tmp_path / "model.pt") == _mode(tmp_path / "reference") == 0o666 & ~umask
    assert sorted(os.listdir(tmp_path)) == ["model.pt", "reference"]  # no temporary file left


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mode", [0o644, 0o600, 0o664, 0o640, 0o444], ids=oct)
def test_save_keeps_the_mode_of_a_replaced_file(small, tmp_path, mode):
    m = _model(max_iter=1).fit(small[1])
    path = tmp_path / "model.pt"
    path.write_bytes(b"an older model")
    os.chmod(path, mode)
    old = os.umask(0o077)  # a strict umask must not narrow the replaced file's mode
    try:
        m.save(path)
    finally:
        os.umask(old)
    assert _mode(path) == mode
    assert torch.equal(MatrixFactorization.load(path).user_factors_, m.user_factors_)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_save_umask_without_proc(small, tmp_path, monkeypatch):
    """Where /proc/self/status is unreadable the umask is read with os.umask (and restored)."""
    m = _model(max_iter=1).fit(small[1])

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(persistence, "open", no_proc, raising=False)
    old = os.umask(0o037)
    try:
        m.save(tmp_path / "model.pt")
        assert os.umask(0o037) == 0o037  # the umask is back where it was
    finally:
        os.umask(old)
    assert _mode(tmp_path / "model.pt") == 0o640


# --------------------------------------------------------------------------- load elsewhere


def _saved_on(path, out, device: str):
    """A copy of the saved model at ``path`` that says it was saved on ``device``."""
    state = torch.load(path, weights_only=True)
    state["device"] = device
    state["params"]["device"] = device
    torch.save(state, out)
    return out


def test_load_a_model_saved_on_an_unavailable_gpu(small, tmp_path, monkeypatch):
    m = _model("als").fit(small[1])
    m.save(tmp_path / "cpu.pt")
    path = _saved_on(tmp_path / "cpu.pt", tmp_path / "gpu.pt", "cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # any machine: no CUDA
    with pytest.raises(ValueError, match=r"gpu\.pt was saved on cuda:0, which is unavailable here: "
                                         r"CUDA is not available.*map_location='cpu'"):
        MatrixFactorization.load(path)
    with pytest.raises(ValueError,
                       match=r"^map_location='cuda:0' cannot hold the model: CUDA is not"):
        MatrixFactorization.load(path, map_location="cuda:0")
    u, i = torch.arange(60).repeat(40), torch.arange(40).repeat_interleave(60)
    for location in ("cpu", torch.device("cpu")):
        back = MatrixFactorization.load(path, map_location=location)
        assert back.user_factors_.device.type == "cpu"
        assert back.device == "cuda:0"  # the parameter stays as saved; a refit would say so
        assert torch.equal(back.predict(u, i), m.predict(u, i))
        assert torch.equal(back.recommend([0, 7], n=5)[0], m.recommend([0, 7], n=5)[0])
        f1, b1 = back.fold_in(([0, 0], [1, 2], [4.0, 2.0]))
        f2, b2 = m.fold_in(([0, 0], [1, 2], [4.0, 2.0]))
        assert torch.equal(f1, f2) and torch.equal(b1, b2)


def test_load_a_model_saved_on_a_missing_gpu_index(small, tmp_path, monkeypatch):
    m = _model("als", max_iter=1).fit(small[1])
    m.save(tmp_path / "cpu.pt")
    path = _saved_on(tmp_path / "cpu.pt", tmp_path / "gpu7.pt", "cuda:7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"saved on cuda:7, which is unavailable here: this "
                                         r"machine has 2 CUDA device\(s\).*map_location='cpu'"):
        MatrixFactorization.load(path)
    back = MatrixFactorization.load(path, map_location="cpu")
    assert torch.equal(back.item_factors_, m.item_factors_)
