"""CUDA-specific helpers of the ops: the deferred error check and the dense path switch.

The CUDA kernels never synchronize the device, so they cannot raise on bad
input (an out-of-range index, a negative weight) while the call is running.
They skip the bad entries, return a NaN loss and NaN gradients, and leave a
description in host memory. The next mfext CUDA op raises it, or call
:func:`cuda_check_errors` to raise it now.

This module owns that check and :func:`dense_path`, the switch between the
two CUDA paths of ``dense_loss_grad``. The error record and the paths
themselves live in the compiled library (``csrc/cuda/``). Public as
:mod:`mfext.cuda` (an alias) and ``mfext.cuda_check_errors``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .. import _library

__all__ = ["cuda_check_errors", "dense_path"]

_PATHS = {"auto": 0, "fused": 1, "tiled": 2}


def _cuda_built() -> bool:
    return bool(_library._C.cuda_built())


def cuda_check_errors(synchronize: bool = True) -> None:
    """Raise the first input error that an mfext CUDA kernel found, if any.

    Parameters
    ----------
    synchronize : bool
        Wait for all work on the current CUDA device first (so that every op
        already launched has reported). With False, only finished work is seen.

    Raises
    ------
    IndexError
        An index in ``rows``/``cols`` was out of range.
    ValueError
        A weight was negative, NaN or infinite.
    """
    if not _cuda_built():
        return
    if synchronize and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    _library._C.cuda_raise_pending_errors()


@contextlib.contextmanager
def dense_path(name: str) -> Iterator[None]:
    """Force the dense CUDA path inside the block: "auto", "fused" or "tiled".

    For tests and benchmarks. "auto" (the default) runs the fused tensor-core
    kernel for float32/float64 with k <= 64 on compute capability 8.0+, and the
    tiled cuBLAS path otherwise. Process-wide, not thread-local.
    """
    if name not in _PATHS:
        raise ValueError(f"dense_path: name must be one of {sorted(_PATHS)}, got {name!r}")
    if not _cuda_built():
        raise RuntimeError("dense_path: this mfext build has no CUDA kernels")
    previous = _library._C._cuda_dense_path()
    _library._C._set_cuda_dense_path(_PATHS[name])
    try:
        yield
    finally:
        _library._C._set_cuda_dense_path(previous)
