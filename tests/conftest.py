"""Shared fixtures: the device x dtype matrix, seeds and data paths."""
from __future__ import annotations

import contextlib
import os
import zlib
from pathlib import Path

import pytest
import torch

# PyTorch refuses cuBLAS calls under torch.use_deterministic_algorithms(True)
# unless this is set before CUDA starts (the tiled dense path uses cuBLAS).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import mfext  # noqa: E402

HAS_CUDA = torch.cuda.is_available() and mfext.build_info()["cuda"]

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device or CUDA build")],
    ),
]
DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]

# MFEXT_TEST_SEED=N draws other inputs for every test (the default is 0).
TEST_SEED = int(os.environ.get("MFEXT_TEST_SEED", "0"))

# Relative tolerances against the autograd reference.
RTOL = {torch.float64: 1e-10, torch.float32: 1e-4}

SHARED_DATA = Path(
    os.environ.get("MFEXT_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(params=DTYPES)
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture
def gen(request) -> torch.Generator:
    """A generator seeded from the test's name: fresh inputs per test, reproducible."""
    seed = zlib.crc32(request.node.nodeid.encode()) ^ TEST_SEED
    return torch.Generator().manual_seed(seed)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref|| in float64 (absolute when ref is 0)."""
    x = x.detach().double().cpu()
    ref = ref.detach().double().cpu()
    denom = ref.norm().item()
    diff = (x - ref).norm().item()
    return diff / denom if denom > 0 else diff


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True):
    """torch.use_deterministic_algorithms(enabled) inside the block only."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def assert_no_device_sync(run) -> None:
    """Call ``run()`` once to warm up, then again with CUDA syncs turned into errors."""
    run()  # module loading, first allocations, the error mailbox, library handles
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def movielens_path(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"MovieLens data {path} is absent")
    return path
