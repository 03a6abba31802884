"""Shared fixtures: the device x dtype matrix and the per-test generator.

Fixtures and markers only; the helpers test files share (tolerances, ``rel_err``,
data paths, case builders) live in ``tests/helpers.py``. Under pytest's default
``prepend`` import mode, loading this file puts ``tests/`` on ``sys.path``, so
every test file, in any folder below, imports them with ``from helpers import ...``
(and each test file's own folder is on ``sys.path`` too, for its sibling modules
such as ``tests/recommenders/contract.py``). Test file basenames are unique across
the tree, and there are no ``__init__.py`` files, as that mode needs.
"""
from __future__ import annotations

import os
import zlib

import pytest
import torch

# PyTorch refuses cuBLAS calls under torch.use_deterministic_algorithms(True)
# unless this is set before CUDA starts (the tiled dense path uses cuBLAS).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from helpers import HAS_CUDA, TEST_SEED  # noqa: E402

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device or CUDA build")],
    ),
]
DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(params=DTYPES)
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture
def gen(request) -> torch.Generator:
    """A generator seeded from the test's name: fresh inputs per test, reproducible.

    The name is the node id without its file path (``test_x[f64-cpu]``, or
    ``TestClass::test_x[...]``), so moving a test to another file keeps its inputs.
    """
    name = request.node.nodeid.split("::", 1)[-1]
    seed = zlib.crc32(name.encode()) ^ TEST_SEED
    return torch.Generator().manual_seed(seed)
