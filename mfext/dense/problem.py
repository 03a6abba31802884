"""The data of a dense factorization: input checks, weights and the loss reduction.

Turns what the user passed to :func:`mfext.factorize` (tensor, numpy array or
nested list; NaN for missing entries; an optional weight) into one
:class:`DenseProblem` on the target device and dtype, with clear errors for
anything unusable. The other arguments are checked in
:mod:`mfext.dense.factorization`; the loss itself lives in
:mod:`mfext.dense.objective`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..distributed import Communicator

__all__ = ["DenseProblem", "prepare_problem", "as_float_dtype"]

_FLOAT_DTYPES = (torch.float32, torch.float64)


@dataclass
class DenseProblem:
    """The data of one factorization, ready for the ops.

    Attributes
    ----------
    A : Tensor, (m, n)
        float32 or float64; missing entries (NaN in the input, or weight 0) hold 0.
    weight : Tensor, (m, n) or None
        Non-negative, same dtype and device as ``A``; None means every entry
        has weight 1 (the unweighted fast path).
    denom : float
        The divisor of the loss: 1 for ``reduction="sum"``, ``sum(weight)``
        (``m * n`` without weights) for ``"mean"``.
    empty_rows : Tensor, (m,) bool, or None
        Rows with no observed entry (None when there are none).
    empty_cols : Tensor, (n,) bool, or None
        Columns with no observed entry.
    """

    A: Tensor
    weight: Optional[Tensor]
    denom: float
    empty_rows: Optional[Tensor] = None
    empty_cols: Optional[Tensor] = None

    @property
    def shape(self):
        return tuple(self.A.shape)


def as_float_dtype(dtype: Optional[torch.dtype], data_dtype: torch.dtype) -> torch.dtype:
    """The dtype the factorization runs in: ``dtype`` if given, else the data's.

    Integer, bool and half-precision data run in ``torch.get_default_dtype()``
    (float32 unless changed); complex data is refused.
    """
    if dtype is not None:
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        return dtype
    if data_dtype.is_complex:
        raise TypeError(f"A must be real, got dtype {data_dtype}")
    if data_dtype in _FLOAT_DTYPES:
        return data_dtype
    default = torch.get_default_dtype()
    return default if default in _FLOAT_DTYPES else torch.float32


def _as_tensor(x, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}") from exc
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got an object array")
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype} "
                        f"({type(x).__name__} input)")
    return torch.as_tensor(arr)


def prepare_problem(
    A,
    weight=None,
    *,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    reduction: str = "mean",
    comm=None,
) -> DenseProblem:
    """Check and convert the data of a factorization.

    Parameters
    ----------
    A : Tensor, ndarray or nested list, (m, n)
        NaN entries are missing: they get weight 0 and their value becomes 0.
    weight : Tensor or ndarray, (m, n), optional
        Finite and non-negative; 0 marks a missing entry.
    device, dtype : where and in which float dtype to run (default: A's).
    reduction : "mean" or "sum"
    comm : Communicator, optional
        When distributed, ``A`` is this rank's block of rows: the weighting
        decision, the mean's divisor and the empty columns are agreed over ranks.

    Returns
    -------
    DenseProblem
    """
    comm = comm if comm is not None else Communicator(None)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    A = _as_tensor(A, "A")
    for what, dev in (("A", A.device), ("device", torch.device(device) if device is not None else None)):
        if dev is not None and dev.type == "meta":
            raise ValueError(f"{what} is on the meta device, which holds no data; factorize "
                             "needs real values (cpu or cuda)")
    if A.dim() != 2:
        raise ValueError(f"A must be a 2-D matrix (m, n), got shape {tuple(A.shape)}")
    m, n = A.shape
    if m == 0 or n == 0:
        raise ValueError(f"A must have at least one row and one column, got shape {(m, n)}")
    run_dtype = as_float_dtype(dtype, A.dtype)
    device = torch.device(device) if device is not None else A.device
    A = A.to(device=device, dtype=run_dtype)

    w: Optional[Tensor] = None
    if weight is not None:
        w = _as_tensor(weight, "weight")
        if tuple(w.shape) != (m, n):
            raise ValueError(
                f"weight must have the shape of A {(m, n)}, got {tuple(w.shape)}"
            )
        if w.dtype.is_complex:
            raise TypeError(f"weight must be real, got dtype {w.dtype}")
        w = w.to(device=device, dtype=run_dtype)
        bad = ~torch.isfinite(w) | (w < 0)
        if bool(bad.any()):
            raise ValueError(
                "weight must be finite and non-negative (0 marks a missing entry); found "
                f"{int(bad.sum())} negative, NaN or Inf entries"
            )

    # Fast path, one cheap pass: a finite sum means no NaN and no Inf. Ranks must
    # agree on it (the weighted and unweighted ALS exchange different terms).
    if not comm.any(w is not None or not math.isfinite(float(A.sum())), "weighting check"):
        m_total = comm.sum_scalar(float(m), "row count")
        return DenseProblem(A, None, m_total * n if reduction == "mean" else 1.0)
    missing = torch.isnan(A)
    if bool(missing.any()):
        w = (~missing).to(run_dtype) if w is None else w.masked_fill(missing, 0)
    if w is not None:
        # Missing entries may hold anything (NaN, Inf): the ops see 0 there.
        A = A.masked_fill(w == 0, 0)
    infinite = torch.isinf(A)
    if bool(infinite.any()):
        raise ValueError(
            f"A holds {int(infinite.sum())} infinite entries where it is observed; "
            "use NaN (or weight 0) for missing entries"
        )

    if w is None:
        w = torch.ones_like(A)  # another rank has weights: use them everywhere
    total = comm.sum_scalar(float(w.sum(dtype=torch.float64)), "weight total")
    if total == 0.0:
        raise ValueError("A has no observed entry (every entry is NaN or has weight 0)")
    empty_rows = w.sum(1) == 0
    col_weight = w.sum(0)
    comm.all_reduce_sum_([col_weight], "column weights")
    empty_cols = col_weight == 0
    return DenseProblem(
        A,
        w,
        total if reduction == "mean" else 1.0,
        empty_rows if bool(empty_rows.any()) else None,
        empty_cols if bool(empty_cols.any()) else None,
    )
