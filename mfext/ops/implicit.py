"""Implicit-feedback ALS: ``implicit_als_cg_``, the fused conjugate-gradient half-step.

Hu, Koren and Volinsky's objective for one row ``x`` (a user; an item with the
roles swapped), the other side ``Y`` (n, d) fixed, is::

    sum over all n columns of c_c (p_c - x . y_c)^2 + reg |x|^2

with ``p_c = 1, c_c = 1 + w_c`` on the row's observed entries and ``p_c = 0,
c_c = 1`` elsewhere. Its normal equations are ``A x = b`` with::

    A = Y^T Y + reg I + sum_e w_e y_c y_c^T        b = sum_e (1 + w_e) y_c

The conjugate-gradient solver never forms ``A``. Per step the op runs one GEMM
over every row (``P @ gram``, ``gram = Y^T Y + reg I`` shared by every row),
then one fused pass per row that adds the sparse part and updates the row's
CG state (``x``, ``r``, ``p``, ``|r|^2``) while the row is in cache. In the
eigenbasis of ``Y^T Y`` (``Y -> Y Q``, ``x -> Q^T x``) the shared term is
diagonal, CG's iterates are the same vectors rotated, and the op takes the
diagonal alone (a 1-D ``gram``): no GEMM at all.

The exact solve (Cholesky) is :func:`mfext.ops.als.als_solve` with
``base=gram`` and ``weight=w``. This module owns the op's typed wrapper and
fake kernel; the kernels live in ``csrc/``. Not differentiable: a solver step,
not a loss.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _library  # noqa: F401  (loads the compiled ops)
from ._fake import check_same_device

__all__ = ["implicit_als_cg_"]


def implicit_als_cg_(X: Tensor, indptr: Tensor, indices: Tensor, weight: Tensor, Y: Tensor,
                     gram: Tensor, cg_steps: int, target: Optional[Tensor] = None,
                     row_scale: Optional[Tensor] = None) -> None:
    """``cg_steps`` conjugate-gradient steps on every row's normal equations, in place.

    For row ``r`` with entries ``e`` in ``indptr[r]:indptr[r + 1]`` and
    ``c = indices[e]``, the system is ``A x = b`` with::

        A = G + sum_e weight[e] Y[c] Y[c]^T        b = sum_e t[e] Y[c]

    (``G = gram``, or ``diag(gram) * row_scale[r]`` for a 1-D gram; ``t = target``,
    or ``1 + weight`` without one) and, from ``x = X[r]``, the op runs implicit's CG::

        r = b - A x ; p = r ; rs = r . r
        for s in range(cg_steps):
            if rs < 1e-20: break
            Ap = A p ; pAp = p . Ap ; if pAp <= 0: break
            a = rs / pAp ; x += a p ; r -= a Ap ; rs_new = r . r
            if rs_new < 1e-20: break
            p = r + (rs_new / rs) p ; rs = rs_new

    With a full ``gram``, ``G p`` of every row is one GEMM per step (torch's;
    cuBLAS on CUDA) and the sparse part and the vector update are one fused
    pass over the rows. With a diagonal one, ``G p`` is ``d`` products: on the
    CPU each row then runs all of its steps back to back while its rows of Y
    are in cache. On the CPU each row's entries are summed in a fixed order by
    one thread, so the result depends on the thread count only through the
    full gram's GEMM, and not at all with a diagonal gram. Duplicate
    entries count each time. With ``cg_steps >= d`` the result is the exact
    solution up to rounding.

    Parameters
    ----------
    X : Tensor, (R, d), float32 or float64
        The current factors of the rows; overwritten with the result.
    indptr : Tensor, (R + 1,), int64
        Non-decreasing offsets into ``indices``/``weight``, within ``[0, nnz]``.
    indices : Tensor, (nnz,), int32 or int64
        Row ids into ``Y``, in ``[0, n)``.
    weight : Tensor, (nnz,), dtype of X
        ``c_e - 1 >= 0`` (``alpha * r`` for the linear confidence).
    Y : Tensor, (n, d), dtype of X
        The fixed factors of the other side.
    gram : Tensor, (d, d) or (d,), dtype of X
        ``G``: ``Y^T Y + reg I`` (symmetric), or the diagonal of a diagonal
        ``G`` (then ``A = diag(gram) + ...``; :class:`~mfext.ImplicitALS`
        rotates Y into the eigenbasis of ``Y^T Y`` to get this form).
    cg_steps : int
        CG steps, at least 1.
    target : Tensor, (nnz,), dtype of X, optional
        The right-hand side's coefficients (default ``1 + weight``, the
        implicit-feedback preference times confidence). Explicit-ratings ALS
        passes the ratings (minus the offsets), with ``weight`` all ones.
    row_scale : Tensor, (R,), dtype of X, optional
        With a 1-D gram only: row r's shared term is ``diag(gram) * row_scale[r]``
        (explicit ALS: the ridge times ``n_r ** exponent``).

    Returns
    -------
    None (X is updated in place).

    Raises
    ------
    ValueError
        ``cg_steps < 1``.
    IndexError
        ``indptr`` not non-decreasing within ``[0, nnz]``, or an index out of
        range for ``Y`` (on the CPU before X is touched; on CUDA at the next
        mfext call, and X is then NaN).
    RuntimeError
        Shapes, dtypes or devices disagree (the message names the argument).
    """
    torch.ops.mfext.implicit_als_cg_.default(X, indptr, indices, weight, Y, gram, cg_steps,
                                             target, row_scale)


@torch.library.register_fake("mfext::implicit_als_cg_")
def _implicit_als_cg_fake(X, indptr, indices, weight, Y, gram, cg_steps, target=None,
                          row_scale=None):
    """Checks the shapes as the kernels do; X is updated in place, nothing returned."""
    extra = {k: v for k, v in (("target", target), ("row_scale", row_scale)) if v is not None}
    check_same_device("implicit_als_cg_", X=X, indptr=indptr, indices=indices, weight=weight,
                      Y=Y, gram=gram, **extra)
    torch._check(target is None or (target.dim() == 1 and target.shape[0] == indices.shape[0]),
                 lambda: "target must have length nnz")
    torch._check(row_scale is None or (row_scale.dim() == 1 and gram.dim() == 1
                                       and row_scale.shape[0] == indptr.shape[0] - 1),
                 lambda: "row_scale must have length R and needs a (d,) gram")
    torch._check(cg_steps >= 1, lambda: f"cg_steps must be at least 1, got {cg_steps}")
    torch._check(indptr.dim() == 1 and indptr.shape[0] >= 1,
                 lambda: "indptr must be a non-empty 1-D tensor")
    torch._check(indices.dim() == 1 and weight.dim() == 1
                 and weight.shape[0] == indices.shape[0],
                 lambda: "indices and weight must have the same length")
    torch._check(Y.dim() == 2, lambda: "Y must be 2-D")
    d = Y.shape[1]
    torch._check((gram.dim() == 2 and gram.shape[0] == d and gram.shape[1] == d)
                 or (gram.dim() == 1 and gram.shape[0] == d),
                 lambda: "gram must have shape (d, d) or (d,)")
    torch._check(X.dim() == 2 and X.shape[0] == indptr.shape[0] - 1 and X.shape[1] == d,
                 lambda: "X must have shape (R, d)")
    return None
