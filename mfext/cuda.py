"""CUDA-specific helpers under their public name ``mfext.cuda``.

:func:`cuda_check_errors` raises the first input error that an mfext CUDA
kernel recorded (the kernels never synchronize, so they report bad input
late); :func:`dense_path` forces one of the two CUDA paths of
``dense_loss_grad``. This module only re-exports them: they live in
:mod:`mfext.ops.cuda`. Both names stay valid.
"""
from __future__ import annotations

from .ops.cuda import cuda_check_errors, dense_path

__all__ = ["cuda_check_errors", "dense_path"]
