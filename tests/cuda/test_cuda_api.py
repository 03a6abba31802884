"""The CUDA helpers' Python surface, on any build (GPU or not)."""
from __future__ import annotations

import pytest

import mfext
from mfext.cuda import dense_path


def test_check_errors_is_a_no_op_without_pending_errors():
    assert mfext.cuda_check_errors(synchronize=False) is None


def test_dense_path_rejects_unknown_names():
    with pytest.raises(ValueError, match="name must be one of"):
        with dense_path("fastest"):
            pass


def test_dense_path_needs_a_cuda_build():
    if mfext.build_info()["cuda"]:
        with dense_path("tiled"):
            pass  # restores the previous path on exit
    else:
        with pytest.raises(RuntimeError, match="no CUDA kernels"):
            with dense_path("tiled"):
                pass
