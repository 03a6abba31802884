"""The three ways of computing one loss-and-gradient step that the grid compares.

``fused``     mfext's fused op: ``mfext.dense_loss_grad`` / ``mfext.sparse_loss_grad``.
``autograd``  the plain-PyTorch reference (``mfext.reference``): the same sum loss,
              forward and backward through autograd.
``compile``   that reference loss under ``torch.compile`` (specialized to the
              shape: ``dynamic=False`` after ``torch._dynamo.reset()``), backward
              through the compiled graph. Its first call compiles; the grid
              reports that time apart.

This module owns the choice between them; the ops belong to :mod:`mfext.ops`,
the reference losses to :mod:`mfext.reference`, the timing to :mod:`.timing`.
"""
from __future__ import annotations

from typing import Callable, Tuple

from torch import Tensor

import mfext
from mfext import reference as ref

BACKENDS = ("autograd", "fused", "compile")

Step = Callable[[], Tuple[Tensor, Tensor, Tensor]]


def make_step(backend: str, kind: str, inputs: dict) -> Step:
    """A no-argument callable returning ``(loss, grad_W, grad_H)`` for ``inputs``.

    Parameters
    ----------
    backend : one of :data:`BACKENDS`
    kind : "dense" (inputs A, W, H) or "sparse" (rows, cols, vals, W, H)
    inputs : from :func:`mfext.bench.grid.make_inputs`
    """
    W, H = inputs["W"], inputs["H"]
    data = (inputs["A"],) if kind == "dense" else (inputs["rows"], inputs["cols"], inputs["vals"])
    if backend == "fused":
        op = mfext.dense_loss_grad if kind == "dense" else mfext.sparse_loss_grad
        return lambda: op(*data, W, H)
    loss_fn = ref.dense_loss if kind == "dense" else ref.sparse_loss
    if backend == "compile":
        import torch

        torch._dynamo.reset()
        loss_fn = torch.compile(loss_fn, dynamic=False)
    elif backend != "autograd":
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return lambda: ref._loss_and_grads(loss_fn, data, W, H)
