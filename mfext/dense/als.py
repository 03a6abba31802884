"""Batched alternating-least-squares pieces: Gram matrices and k×k normal equations.

Every function here works on a whole batch of rows at once (no Python loop over
rows or entries). :func:`solve_normal_equations` is the reusable core: given the
Gram matrices ``G_i`` (k×k) and right-hand sides ``b_i`` (k) of a batch of
regularized least-squares problems it returns ``x_i = argmin`` of
``x^T G_i x - 2 b_i^T x + reg |x|^2`` (optionally with ``x >= 0``). The dense
factorizer uses it for the rows of W and the columns of H; a sparse
(collaborative-filtering) solver can build ``G_i``/``b_i`` from observed entries
and call it the same way.

Singular and ill-conditioned systems: every Cholesky pivot must clear
``k * eps * max(diag)``, with ``eps`` the precision the solutions are stored in
(float32's for float32 factors, although the systems are solved in float64); a
system that fails gets its minimum-norm least-squares solution. Without
regularization the dense factorizer also solves in an orthonormal basis of the
fixed factor (:func:`orthonormal_basis`), which keeps the systems well conditioned
and the factors bounded by the data.

:func:`dense_als_half_step` is one half of an ALS iteration of the dense
problem; the iteration itself (both halves, the loss) is
:class:`mfext.dense.rules.ALSRule`, and the recommenders' ALS runs on the
``als_solve`` op instead.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    "solve_normal_equations",
    "weighted_gram",
    "nnls_coordinate_descent",
    "dense_als_half_step",
    "orthonormal_basis",
]

# Budget (in elements) for the temporaries of the weighted update: the per-row
# Gram matrices of one block of rows and one block of the Khatri-Rao product.
_BLOCK_ELEMENTS = 1 << 24


def _add_diagonal(gram: Tensor, value) -> Tensor:
    """``gram + value * I`` for a (k, k) or (b, k, k) gram; ``value`` is a float or a (b,) tensor."""
    k = gram.shape[-1]
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    if isinstance(value, Tensor) and value.dim() == 1:
        return gram + value[:, None, None] * eye
    return gram + value * eye


def _pivot_floor(gram: Tensor, eps: float) -> Tensor:
    """``k * eps * max(diag(gram))`` per system: (,) for a (k, k) gram, (b,) for (b, k, k)."""
    k = gram.shape[-1]
    return k * eps * torch.diagonal(gram, dim1=-2, dim2=-1).amax(-1)


def _truncated_solve(gram: Tensor, rhs: Tensor, eps: float) -> Tensor:
    """Minimum-norm least-squares solutions of rank-deficient systems, by eigendecomposition.

    Eigenvalues up to ``k * eps * lambda_max`` count as zero: their directions are
    rounding noise of factors stored with precision ``eps``, and solving along
    them would give huge factor entries (the product ``W @ H`` then cancels in
    the factors' dtype). A system whose gram is not finite gets NaN (the loss
    reports it; ``eigh`` would fail on it).

    Parameters
    ----------
    gram : Tensor, (k, k) or (b, k, k), symmetric positive semi-definite
    rhs : Tensor, (b, k)
    eps : float

    Returns
    -------
    Tensor, (b, k)
    """
    k = gram.shape[-1]
    finite = torch.isfinite(gram).flatten(-2).all(-1)  # (,) or (b,)
    safe = torch.where(finite[..., None, None], gram, torch.zeros_like(gram))
    evals, V = torch.linalg.eigh(safe)  # ascending
    cutoff = k * eps * evals.amax(-1, keepdim=True)
    keep = evals > cutoff  # an all-zero gram keeps nothing: its solution is 0
    inv = torch.where(keep, 1.0 / torch.where(keep, evals, torch.ones_like(evals)),
                      torch.zeros_like(evals))
    if gram.dim() == 2:
        x = ((rhs @ V) * inv) @ V.t()
        return x if bool(finite) else torch.full_like(x, float("nan"))
    coef = (V.transpose(-1, -2) @ rhs.unsqueeze(-1)).squeeze(-1) * inv  # (b, k)
    x = (V @ coef.unsqueeze(-1)).squeeze(-1)
    return torch.where(finite[:, None], x, torch.full_like(x, float("nan")))


def _cholesky_solve_rows(gram: Tensor, rhs: Tensor, eps: Optional[float] = None) -> Tensor:
    """Solve ``gram_i x_i = rhs_i``; gram (k, k) or (b, k, k), rhs (b, k).

    Cholesky (``torch.linalg.cholesky_ex``) with the pivot rule of the CPU ALS op:
    every pivot must clear ``k * eps * max(diag(gram))``. A system that fails it
    (singular or ill-conditioned: rank-deficient factors with ``reg = 0``, or
    rows with fewer observed entries than k) gets the minimum-norm solution of
    :func:`_truncated_solve` instead. ``eps`` is the precision the solutions
    are stored in (default: ``rhs``'s): a float32 factor solved in float64
    must not follow directions that only float64 resolves.
    """
    if eps is None:
        eps = torch.finfo(rhs.dtype).eps
    L, info = torch.linalg.cholesky_ex(gram)
    pivots = torch.diagonal(L, dim1=-2, dim2=-1).square()
    ok = (info == 0) & (pivots > _pivot_floor(gram, eps).unsqueeze(-1)).all(-1)
    if gram.dim() == 2:
        if bool(ok):  # one host read per solve
            # One shared gram: solve all right-hand sides as the columns of rhs^T.
            return torch.cholesky_solve(rhs.t(), L).t()
        return _truncated_solve(gram, rhs, eps)
    x = torch.cholesky_solve(rhs.unsqueeze(-1), L).squeeze(-1)
    if not bool(ok.all()):  # one host read per solve; the rare path follows
        bad = (~ok).nonzero().squeeze(-1)
        x[bad] = _truncated_solve(gram[bad], rhs[bad], eps)
    return x


def orthonormal_basis(F: Tensor, reduce: Optional[Callable[[List[Tensor]], None]] = None) -> Tensor:
    """An orthonormal basis ``Q`` (n, k) of the column space of ``F`` (n, k): ``F = Q R``.

    The ALS update ``X = argmin |A - X F^T|`` depends on ``F`` only through its
    column space (without regularization), so ALS may replace the fixed factor by
    ``Q``. Its normal equations are then well conditioned, and the solution is
    bounded by the data: with a nearly rank-deficient ``F`` (exactly low-rank
    data, a large offset shared by every column) the solve in ``F``'s own basis
    gives factor entries so large that ``W @ H`` cancels in float32.

    Computed as ``F R^{-1}`` with ``R`` the Cholesky factor of the float64 Gram
    matrix (a CholeskyQR, so rows split over ranks need one all-reduce). When a
    pivot fails ``k * eps64 * max(diag)``, the basis comes from the Gram's
    eigendecomposition instead, with a zero column for each direction ``F`` does
    not span.

    Parameters
    ----------
    F : Tensor, (n, k), float32 or float64
    reduce : callable, optional
        Sums a list of tensors over data-parallel ranks in place, when ``F``'s rows
        are split over ranks.

    Returns
    -------
    Tensor, (n, k), dtype and device of ``F``
    """
    wide = torch.float64
    F64 = F.to(wide)
    gram = F64.t() @ F64
    if reduce is not None:
        reduce([gram])
    k = gram.shape[0]
    eps = torch.finfo(wide).eps
    L, info = torch.linalg.cholesky_ex(gram)
    pivots = torch.diagonal(L).square()
    if bool((info == 0) & (pivots > _pivot_floor(gram, eps)).all()):  # one host read
        Q = torch.linalg.solve_triangular(L, F64.t(), upper=False).t()  # (L^{-1} F^T)^T = F L^{-T}
        return Q.to(F.dtype)
    if not bool(torch.isfinite(gram).all()):
        return F  # NaN or Inf factors: the loss reports them
    evals, V = torch.linalg.eigh(gram)
    keep = evals > k * eps * evals.amax()
    scale = torch.where(keep, torch.where(keep, evals, torch.ones_like(evals)).rsqrt(),
                        torch.zeros_like(evals))
    return (F64 @ (V * scale)).to(F.dtype)


def nnls_coordinate_descent(gram: Tensor, rhs: Tensor, x0: Tensor, sweeps: int = 3) -> Tensor:
    """Non-negative least squares by warm-started, batched coordinate descent.

    Minimizes ``x^T G x - 2 b^T x`` over ``x >= 0`` for every row at once, one
    coordinate at a time (the HALS / scikit-learn ``solver="cd"`` update): each
    coordinate gets its exact constrained minimizer
    ``x_r = max(0, x_r + (b_r - G_r. x) / G_rr)``. The loop runs over the k
    coordinates and the sweeps, never over rows.

    Parameters
    ----------
    gram : Tensor, (k, k) shared by every row, or (b, k, k); symmetric PSD, regularization included
    rhs : Tensor, (b, k)
    x0 : Tensor, (b, k)
        The starting point (clamped at 0); the previous factor, so a few sweeps
        per half-step are enough.
    sweeps : int
        Passes over the k coordinates.

    Returns
    -------
    Tensor, (b, k), non-negative, same dtype as ``rhs``
    """
    x = x0.clamp_min(0).clone()
    k = rhs.shape[-1]
    shared = gram.dim() == 2
    diag = torch.diagonal(gram, dim1=-2, dim2=-1)  # (k,) or (b, k)
    # A zero diagonal means the coordinate does not enter the objective: set it to 0.
    safe_diag = torch.where(diag > 0, diag, torch.ones_like(diag))
    for _ in range(sweeps):
        for r in range(k):
            if shared:
                g_r = x @ gram[r]  # (b,)
                d_r = safe_diag[r]
                live = diag[r] > 0
            else:
                g_r = (gram[:, r, :] * x).sum(-1)  # (b,)
                d_r = safe_diag[:, r]
                live = diag[:, r] > 0
            new = (x[:, r] + (rhs[:, r] - g_r) / d_r).clamp_min(0)
            x[:, r] = torch.where(live, new, torch.zeros_like(new))
    return x


def solve_normal_equations(
    gram: Tensor,
    rhs: Tensor,
    reg: float = 0.0,
    *,
    nonnegative: bool = False,
    x0: Optional[Tensor] = None,
    sweeps: int = 3,
    eps: Optional[float] = None,
) -> Tensor:
    """Solve a batch of regularized normal equations ``(G_i + reg I) x_i = b_i``.

    Parameters
    ----------
    gram : Tensor, (k, k) shared by the whole batch, or (b, k, k) one per row
        Symmetric positive semi-definite Gram matrices, float32 or float64.
    rhs : Tensor, (b, k), same dtype and device
    reg : float
        L2 regularization added to every diagonal (>= 0).
    nonnegative : bool
        Solve the non-negative least-squares problem instead (``x_i >= 0``) by
        :func:`nnls_coordinate_descent`, starting from ``x0``.
    x0 : Tensor, (b, k), optional
        Warm start for the non-negative solve (default: the clamped unconstrained solution).
    sweeps : int
        Coordinate-descent sweeps for the non-negative solve.
    eps : float, optional
        The precision the solutions will be stored in (default: ``rhs``'s
        dtype's machine epsilon). ``factorize`` solves float32 factors' systems in
        float64 and passes float32's epsilon.

    Returns
    -------
    Tensor, (b, k)
        The solutions, one row per right-hand side. Unconstrained solves use a
        batched Cholesky factorization (``torch.linalg.cholesky_ex``) whose every
        pivot must clear ``k * eps * max(diag)`` (the CPU ALS op's rule). A
        system that does not (singular or ill-conditioned) gets the minimum-norm
        least-squares solution instead, from an eigendecomposition with the
        eigenvalues up to ``k * eps * lambda_max`` taken as zero.
    """
    if gram.dim() not in (2, 3) or gram.shape[-1] != gram.shape[-2]:
        raise ValueError(f"gram must be (k, k) or (b, k, k), got shape {tuple(gram.shape)}")
    if rhs.dim() != 2 or rhs.shape[-1] != gram.shape[-1]:
        raise ValueError(
            f"rhs must be (b, k) with k = {gram.shape[-1]}, got shape {tuple(rhs.shape)}"
        )
    if gram.dim() == 3 and gram.shape[0] != rhs.shape[0]:
        raise ValueError(
            f"gram (b, k, k) and rhs (b, k) disagree on b: {gram.shape[0]} vs {rhs.shape[0]}"
        )
    if not reg >= 0:  # NaN too
        raise ValueError(f"reg must be >= 0, got {reg}")
    if reg > 0:
        gram = _add_diagonal(gram, reg)
    if not nonnegative:
        return _cholesky_solve_rows(gram, rhs, eps)
    if x0 is None:
        x0 = _cholesky_solve_rows(gram, rhs, eps)
    return nnls_coordinate_descent(gram, rhs, x0, sweeps)


def _khatri_rao_rows(F: Tensor) -> Tensor:
    """(n, k) -> (n, k*k): row j is the flattened outer product ``f_j f_j^T``."""
    n, k = F.shape
    return (F[:, :, None] * F[:, None, :]).reshape(n, k * k)


def weighted_gram(weight: Tensor, F: Tensor) -> Tensor:
    """Per-row weighted Gram matrices ``G_i = sum_j weight[i, j] f_j f_j^T``.

    Computed as one GEMM of ``weight`` with the row-wise Khatri-Rao product of
    ``F``, in blocks of columns so the temporaries stay within a fixed budget.

    Parameters
    ----------
    weight : Tensor, (b, n), non-negative
    F : Tensor, (n, k), same dtype and device

    Returns
    -------
    Tensor, (b, k, k)
    """
    b, n = weight.shape
    k = F.shape[1]
    cols = max(1, min(n, _BLOCK_ELEMENTS // max(1, k * k)))
    out = None
    for c0 in range(0, n, cols):  # blocks of columns, not entries
        part = weight[:, c0:c0 + cols] @ _khatri_rao_rows(F[c0:c0 + cols])
        out = part if out is None else out.add_(part)
    return out.reshape(b, k, k)


def dense_als_half_step(
    A: Tensor,
    F: Tensor,
    X: Tensor,
    reg: float,
    weight: Optional[Tensor] = None,
    weighted_A: Optional[Tensor] = None,
    *,
    nonnegative: bool = False,
    sweeps: int = 3,
    reduce: Optional[Callable[[List[Tensor]], None]] = None,
    orthonormalize: bool = False,
) -> Tuple[Tensor, Tensor]:
    """Update every row of X given F: ``X_i = argmin sum_j w_ij (A_ij - X_i . F_j)^2 + reg |X_i|^2``.

    Used for both halves: the rows of W given ``F = H^T``, and the columns of H
    given ``F = W`` with ``A`` transposed. The k×k systems are built and solved
    in float64 (cheap next to the products with A), the products with A run in
    the data's dtype; the solves' pivot rule uses the data's precision (see
    :func:`solve_normal_equations`).

    Parameters
    ----------
    A : Tensor, (b, n)
        The data with missing entries already set to 0 (unused when ``weighted_A`` is given).
    F : Tensor, (n, k)
        The fixed factor.
    X : Tensor, (b, k)
        The current value of the factor being solved (warm start for NNLS).
    reg : float
    weight : Tensor, (b, n), optional
    weighted_A : Tensor, (b, n), optional
        ``weight * A``, precomputed once by the caller when weighted.
    nonnegative, sweeps : see :func:`solve_normal_equations`.
    reduce : callable, optional
        Sums a list of tensors over data-parallel ranks in place. Given when A's
        rows ``n`` are split over ranks and X is replicated: the Gram matrices
        and right-hand sides are summed before the solve (distributed ALS).
    orthonormalize : bool
        First replace ``F`` by :func:`orthonormal_basis` of it (same column
        space). Only valid without regularization and sign constraints, where the
        product ``X_new F^T`` does not depend on ``F``'s basis; the caller then
        keeps the returned basis as the fixed factor.

    Returns
    -------
    X_new : Tensor, (b, k), dtype of ``F``
    F_used : Tensor, (n, k)
        The fixed factor the solve used: ``F`` itself, or its orthonormal basis.
    """
    dtype = F.dtype
    wide = torch.float64
    eps = torch.finfo(dtype).eps
    if orthonormalize:
        F = orthonormal_basis(F, reduce)
    if weight is None:
        F64 = F.to(wide)
        gram = F64.t() @ F64  # (k, k)
        rhs = (A @ F).to(wide)  # (b, k): the one product with A
        if reduce is not None:
            reduce([gram, rhs])
        X_new = solve_normal_equations(
            gram, rhs, reg, nonnegative=nonnegative,
            x0=X.to(wide) if nonnegative else None, sweeps=sweeps, eps=eps,
        ).to(dtype)
        return X_new, F
    wA = weighted_A if weighted_A is not None else weight * A
    rhs = wA @ F  # (b, k)
    if reduce is not None:
        reduce([rhs])
    b, k = X.shape
    block = max(1, _BLOCK_ELEMENTS // max(1, k * k))
    X_new = torch.empty_like(rhs)
    for r0 in range(0, b, block):  # blocks of rows bound the (block, k, k) grams
        w = weight[r0:r0 + block]
        gram = weighted_gram(w, F).to(wide)
        w_total = w.sum(1)
        if reduce is not None:
            reduce([gram, w_total])
        # An unobserved row has gram 0 and rhs 0: a unit diagonal makes its solution 0.
        empty = (w_total == 0).to(wide)
        X_new[r0:r0 + block] = solve_normal_equations(
            _add_diagonal(gram, empty + reg), rhs[r0:r0 + block].to(wide), 0.0,
            nonnegative=nonnegative, x0=X[r0:r0 + block].to(wide) if nonnegative else None,
            sweeps=sweeps, eps=eps,
        ).to(dtype)
    return X_new, F
