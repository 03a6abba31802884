"""Loads the compiled library (``mfext._C``) and reports how it was built.

Importing ``mfext._C`` registers every op schema and kernel under
``torch.ops.mfext``; this module owns that import (with a message that says how
to rebuild when it fails) and :func:`build_info`. The typed wrappers, fake
kernels and autograd of the ops live in :mod:`mfext.ops`; the kernels in ``csrc/``.
"""
from __future__ import annotations

import torch

try:
    from . import _C  # registers torch.ops.mfext.*
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "mfext: the compiled library mfext._C failed to load (%s). It must be built "
        "against the installed torch %s. Rebuild it from the source folder with\n"
        "    pip install --no-build-isolation --no-deps -e .\n"
        "(add --force-reinstall if pip thinks it is up to date)." % (exc, torch.__version__)
    ) from exc


def build_info() -> dict:
    """Facts about the compiled library.

    Returns
    -------
    dict
        ``cuda`` (CUDA kernels compiled in), ``openmp`` (OpenMP compiled in),
        ``openmp_threads``, ``torch_built`` (the torch version it was built
        against), ``torch_running`` and ``torch_threads``.
    """
    return {
        "cuda": bool(_C.cuda_built()),
        "openmp": bool(_C.openmp_built()),
        "openmp_threads": int(_C.openmp_max_threads()),
        "torch_built": str(_C.torch_version_built()),
        "torch_running": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
