"""Checks shared by the fake kernels (``torch.library.register_fake``) of every op.

A fake kernel runs on tensors without data (``FakeTensor``, meta tensors) when
``torch.compile`` traces a graph or ``opcheck`` tests an op: it states the
output shapes and repeats the shape and device checks that the C++ kernel
makes, with ``torch._check`` so that symbolic sizes stay symbolic. This module
owns the checks that more than one op makes; each op's own fake kernel, its
wrapper and its autograd live in that op family's module (:mod:`.dense`,
:mod:`.sparse`, :mod:`.sgd`, :mod:`.als`, :mod:`.sort`).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["check_same_device", "check_factors"]


def check_same_device(op: str, **tensors: Optional[Tensor]) -> None:
    """Every tensor given (None: an absent optional input) is on one device.

    Parameters
    ----------
    op : str
        The op's name in the message, e.g. ``"sgd_epoch_"``.
    **tensors : Tensor or None
        The op's tensor arguments by name; the message names them with their devices.
    """
    present = {k: t for k, t in tensors.items() if t is not None}
    devices = {t.device for t in present.values()}
    torch._check(
        len(devices) <= 1,
        lambda: f"mfext::{op}: all tensors must share a device, got "
        + ", ".join(f"{k} on {t.device}" for k, t in present.items()),
    )


def check_factors(W: Tensor, H: Tensor) -> None:
    """``W`` (m, k) and ``H`` (k, n) are 2-D and agree on the rank k."""
    torch._check(W.dim() == 2 and H.dim() == 2, lambda: "W and H must be 2-D")
    torch._check(W.shape[1] == H.shape[0], lambda: "W and H disagree on the rank k")
