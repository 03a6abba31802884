"""The work of one loss-and-gradient step: useful floating-point operations and
compulsory memory traffic, the same for every backend.

Dense (A m x n, rank k): the product WH, grad_W = -2 R H^T and grad_H = -2 W^T R
cost 2mnk each, the residual, square and sum about 4mn:  6mnk + 4mn flops.
Sparse (nnz entries): a k-long dot product and two k-long updates per entry:
6 nnz k + 4 nnz flops.

Bytes are the compulsory traffic: every input read once and every output
written once (A or the entry lists, W, H, grad_W, grad_H). A backend that
materializes m x n temporaries moves more, so its achieved GB/s in these units
is a lower bound of what it moved: the figure says how close the step is to the
fastest possible one, not how busy the memory bus was.
"""
from __future__ import annotations

from .grid import Case

_ITEMSIZE = {"float32": 4, "float64": 8}
_INDEX_BYTES = 8  # rows and cols are int64 in the grid


def flops(case: Case) -> float:
    """Useful floating-point operations of one step of ``case``."""
    if case.kind == "dense":
        return 6.0 * case.m * case.n * case.k + 4.0 * case.m * case.n
    return 6.0 * case.nnz * case.k + 4.0 * case.nnz


def bytes_moved(case: Case) -> float:
    """Compulsory bytes of one step of ``case`` (inputs read once, outputs written once)."""
    s = _ITEMSIZE[case.dtype]
    factors = 2.0 * s * (case.m * case.k + case.k * case.n)  # read W, H; write the gradients
    if case.kind == "dense":
        return s * case.m * case.n + factors
    return case.nnz * (2 * _INDEX_BYTES + s) + factors


def roofline_seconds(case: Case, peak_gflops: float, peak_gbs: float) -> float:
    """The shortest time the machine's ceilings allow: max(flops / peak, bytes / bandwidth)."""
    return max(flops(case) / (peak_gflops * 1e9), bytes_moved(case) / (peak_gbs * 1e9))
