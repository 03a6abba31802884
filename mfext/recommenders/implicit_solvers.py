"""The implicit-feedback ALS solver of :class:`~mfext.recommenders.ImplicitALS`.

Hu, Koren and Volinsky (2008): every user-item pair counts, with preference
``p_ui = 1`` where the user interacted (``r_ui > 0``) and 0 elsewhere, and
confidence ``c_ui = 1 + alpha * r_ui`` (``"linear"``) or ``1 + alpha * log(1 +
r_ui / epsilon)`` (``"log"``) on the interactions, 1 elsewhere. The objective::

    L = sum_{u, i} c_ui (p_ui - x_u . y_i)^2 + reg (sum_u |x_u|^2 + sum_i |y_i|^2)

is minimized by alternating exact or approximate least-squares solves of all
users (items fixed), then of all items. The m x n matrix is never formed: each
half-step uses ``Y^T Y`` once plus a sparse correction over the observed
entries of each row (:mod:`mfext.ops.implicit`).

This module owns the interactions in both CSR orders (:class:`ImplicitProblem`),
the confidences, the two half-steps (``"cg"``: a few conjugate-gradient steps
for all rows at once, warm-started from the current factors, as implicit does;
``"cholesky"``: the exact solve), the full objective computed without the m x
n matrix, and the solver of the shared loop (:class:`ImplicitAlsSolver`). The
loop itself is :mod:`mfext.training`'s; the model's parameters and serving are
:mod:`mfext.recommenders.implicit_als`'s and the base's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..ops.als import als_solve
from ..ops.implicit import implicit_als_cg_
from ..ops.sparse import sparse_dot
from ..training import Report, Solver
from .inputs import csr_by
from .solvers import Factors

__all__ = ["ImplicitProblem", "ImplicitAlsSolver", "confidence", "implicit_half_step",
           "implicit_objective", "interactions", "csr_side"]

def interactions(rows: Tensor, cols: Tensor, vals: Tensor, n_cols: int
                 ) -> Tuple[Tensor, Tensor, Tensor]:
    """Sum duplicate (row, col) entries and drop the zeros: one entry per interaction.

    rows, cols (nnz,) int32/int64 and vals (nnz,) in canonical (row, col) order;
    returns the same with each pair once and ``vals > 0``.
    """
    if rows.numel() == 0:
        return rows, cols, vals
    # Canonical order: duplicates are adjacent. Only when there are some is the
    # (nnz,) int64 key made (8 bytes an entry, plus unique's outputs).
    if bool(((rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1])).any()):
        rows, cols, vals = _sum_duplicates(rows, cols, vals, n_cols)
    keep = vals > 0
    if not bool(keep.all()):
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    return rows, cols, vals


def _sum_duplicates(rows: Tensor, cols: Tensor, vals: Tensor, n_cols: int
                    ) -> Tuple[Tensor, Tensor, Tensor]:
    """Adjacent equal (row, col) entries of a canonical order summed into the first."""
    key = rows.to(torch.int64) * n_cols + cols  # int64: rows may be int32, m * n may not fit
    uniq, inverse = torch.unique_consecutive(key, return_inverse=True)
    if uniq.numel() != key.numel():
        summed = torch.zeros(uniq.numel(), dtype=vals.dtype, device=vals.device)
        summed.index_add_(0, inverse, vals)
        first = torch.ones(key.numel(), dtype=torch.bool, device=key.device)
        first[1:] = key[1:] != key[:-1]  # canonical order: duplicates are adjacent
        rows, cols, vals = rows[first], cols[first], summed
    return rows, cols, vals


def confidence(vals: Tensor, alpha: float, kind: str, epsilon: float) -> Tensor:
    """``c - 1`` (nnz,) of each interaction: ``alpha r`` or ``alpha log(1 + r / epsilon)``."""
    if kind == "linear":
        return vals * alpha
    return torch.log1p(vals / epsilon) * alpha


@dataclass
class _Side:
    """One CSR order of the interactions: the rows to solve and their entries (:func:`csr_side`)."""

    indptr: Tensor   # (R + 1,) int64
    indices: Tensor  # (nnz,) int32/int64 ids of the other side
    weight: Tensor   # (nnz,) c - 1

    @property
    def target(self) -> Tensor:
        """(nnz,) c (= c p: the preference is 1 on every entry), made when asked: the
        exact solve's right-hand side; the CG path never needs it."""
        return self.weight + 1


def csr_side(keys: Tensor, others: Tensor, weight: Tensor, n_keys: int, n_others: int,
             keys_sorted: bool = False) -> _Side:
    """The entries grouped by ``keys`` (a stable counting sort); with ``keys_sorted``
    they already are, and the CSR is the key counts and the arrays themselves."""
    idx = torch.int32 if n_others < 2**31 else torch.int64
    if keys_sorted:
        indptr = torch.zeros(n_keys + 1, dtype=torch.int64, device=keys.device)
        torch.cumsum(torch.bincount(keys, minlength=n_keys), 0, out=indptr[1:])
        return _Side(indptr, others.to(idx).contiguous(), weight.contiguous())
    indptr, order = csr_by(keys, n_keys)
    return _Side(indptr, others[order].to(idx).contiguous(), weight[order].contiguous())


@dataclass
class ImplicitProblem:
    """The interactions on the model's device and dtype, in both CSR orders.

    rows, cols (nnz,) int32/int64 and weight (nnz,) (``c - 1``) in (user,
    item) order, one entry per interacting pair: the user side's CSR is these
    arrays themselves.
    """

    rows: Tensor
    cols: Tensor
    weight: Tensor
    m: int
    n: int

    def __post_init__(self) -> None:
        self.users = csr_side(self.rows, self.cols, self.weight, self.m, self.n,
                              keys_sorted=True)
        self.items = csr_side(self.cols, self.rows, self.weight, self.n, self.m)


def _gram(Y: Tensor, reg: float, wide: bool) -> Tensor:
    """``Y^T Y + reg I`` (d, d) in Y's dtype; ``wide``: accumulated in float64, rounded once.

    The exact (Cholesky) path takes the wide Gram: it is the base of every
    row's normal equations. The CG path takes Y's own: a few CG steps from a
    warm start do not resolve the difference, and in float32 the wide Gram
    costs about as much as a whole CG pass at k = 128 (the float64 GEMM and
    the copy of Y).
    """
    if wide:
        Yd = Y.double()
        g = Yd.t() @ Yd
    else:
        g = Y.t() @ Y
    g.diagonal().add_(reg)
    return g.to(Y.dtype)


def implicit_half_step(side: _Side, Y: Tensor, X: Tensor, reg: float, method: str,
                       cg_steps: int) -> None:
    """Solve every row of ``side`` for its factors X (R, d), in place, with Y (n, d) fixed.

    ``"cholesky"``: the exact minimizer of each row's objective. ``"cg"``:
    ``cg_steps`` conjugate-gradient steps on the normal equations from the
    current X, for all rows at once (each row stops when its residual norm^2
    falls below 1e-20, as in implicit).

    On the CPU the CG runs in the eigenbasis of ``Y^T Y = Q diag(lam) Q^T``:
    with ``Y Q`` and ``Q^T x`` the shared term is ``diag(lam) + reg I``, CG's
    iterates are the same vectors rotated (CG is invariant under an orthogonal
    change of basis, up to rounding), and the op then needs no GEMM per step
    and runs each row's steps back to back while the row's entries are in
    cache (:func:`mfext.ops.implicit.implicit_als_cg_` with a 1-D gram). The
    rotation costs one d x d eigendecomposition and three GEMMs, against four
    (R, d) x (d, d) GEMMs and four streaming passes over the CG state. On a
    GPU the GEMMs are cheap and the op takes the full Gram.
    """
    d = Y.shape[1]
    if method == "cholesky":
        G = _gram(Y, 0.0, wide=True)
        reg_diag = torch.full((d,), reg, dtype=Y.dtype, device=Y.device)
        X.copy_(als_solve(side.indptr, side.indices, side.target, Y, None, reg_diag, 0.0,
                          base=G, weight=side.weight))
        return
    G = _gram(Y, 0.0, wide=False)  # (d, d)
    if Y.device.type != "cpu" or not bool(torch.isfinite(G).all()):
        # A non-finite Y (a diverged fit) goes through the plain op, which passes
        # the NaN on to X for the divergence guard; eigh would raise instead.
        G.diagonal().add_(reg)
        implicit_als_cg_(X, side.indptr, side.indices, side.weight, Y, G, cg_steps)
        return
    lam, Q = torch.linalg.eigh(G)  # (d,), (d, d)
    lam = lam.clamp_(min=0.0) + reg  # Y^T Y is positive semi-definite: drop rounding below 0
    Xr = X @ Q  # (R, d)
    implicit_als_cg_(Xr, side.indptr, side.indices, side.weight, Y @ Q, lam, cg_steps)
    torch.mm(Xr, Q.t(), out=X)


def implicit_objective(p: ImplicitProblem, W: Tensor, Ht: Tensor, reg: float) -> float:
    """The full objective L of the module docstring, in float64, without the m x n matrix.

    ``sum over all pairs of (x.y)^2`` is ``<X^T X, Y^T Y>`` (two k x k Grams);
    the observed pairs then add ``c (1 - s)^2 - s^2`` each (``s = x.y``). The
    unobserved part is a sum of squares that the Gram identity gives to
    float64 rounding of the all-pairs total, so the result is exact to about
    1e-15 of that total.
    """
    Wd, Hd = W.double(), Ht.double()
    total = float(((Wd.t() @ Wd) * (Hd.t() @ Hd)).sum())
    s = sparse_dot(p.rows, p.cols, W, Ht).double()
    c = p.weight.double() + 1.0
    total += float((c * (1.0 - s).square() - s.square()).sum())
    total += reg * float(Wd.square().sum() + Hd.square().sum())
    return total


class ImplicitAlsSolver(Solver):
    """Implicit ALS as a :class:`mfext.training.Solver`: one epoch (users, then items) per step.

    ``f`` holds W (m, k) and Ht (n, k), updated in place, and zero biases (the
    model has none). With ``measure_loss`` each epoch reports
    :func:`implicit_objective` (one extra pass over the interactions); without,
    it reports no loss (``None``), or NaN when a factor is not finite, which
    the loop treats as divergence.
    """

    logs_after_step = True

    def __init__(self, p: ImplicitProblem, f: Factors, *, reg: float, method: str,
                 cg_steps: int, measure_loss: bool):
        self.p, self.f = p, f
        self.reg, self.method, self.cg_steps = reg, method, cg_steps
        self.measure_loss = measure_loss

    def step(self, iteration: int, log: bool) -> Report:
        p, f = self.p, self.f
        implicit_half_step(p.users, f.Ht, f.W, self.reg, self.method, self.cg_steps)
        implicit_half_step(p.items, f.W, f.Ht, self.reg, self.method, self.cg_steps)
        loss: Optional[float]
        if not f.is_finite():
            loss = math.nan
        elif self.measure_loss:
            loss = implicit_objective(p, f.W, f.Ht, self.reg)
        else:
            loss = None
        return Report(loss, f.clone())

    def snapshot(self) -> Factors:
        return self.f.clone()

    def restore(self, snapshot: Factors) -> None:
        self.f.copy_(snapshot)
