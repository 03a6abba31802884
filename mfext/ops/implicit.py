"""Implicit-feedback ALS: ``implicit_als_matvec``, the product of the CG half-step.

Hu, Koren and Volinsky's objective for one row ``x`` (a user; an item with the
roles swapped), the other side ``Y`` (n, d) fixed, is::

    sum over all n columns of c_c (p_c - x . y_c)^2 + reg |x|^2

with ``p_c = 1, c_c = 1 + w_c`` on the row's observed entries and ``p_c = 0,
c_c = 1`` elsewhere. Its normal equations are ``A x = b`` with::

    A = Y^T Y + reg I + sum_e w_e y_c y_c^T        b = sum_e c_e y_c

The conjugate-gradient solver never forms ``A``: it needs ``A x`` for every row
at once, which this op computes as one GEMM ``X @ gram`` (``gram = Y^T Y +
reg I``, shared by every row) plus one fused pass over the CSR entries for the
sparse part. With ``target`` (``c_e``) it returns ``A x - b`` instead, the
negated residual that starts the iteration.

The exact solve (Cholesky) is :func:`mfext.ops.als.als_solve` with
``base=gram`` and ``weight=w``. This module owns the op's typed wrapper and
fake kernel; the CG iteration belongs to the solver that calls it
(:mod:`mfext.recommenders.implicit_solvers`), the kernels to ``csrc/``. Not
differentiable: a solver step, not a loss.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _library  # noqa: F401  (loads the compiled ops)
from ._fake import check_same_device

__all__ = ["implicit_als_matvec"]


def implicit_als_matvec(indptr: Tensor, indices: Tensor, weight: Tensor, Y: Tensor,
                        gram: Tensor, X: Tensor, target: Optional[Tensor] = None) -> Tensor:
    """``A x`` (or ``A x - b``) of the implicit-ALS normal equations of every row.

    For row ``r`` with entries ``e`` in ``indptr[r]:indptr[r + 1]`` and
    ``c = indices[e]``::

        out[r] = gram @ X[r] + sum_e (weight[e] * (Y[c] . X[r]) - target[e]) * Y[c]

    (``target`` absent: 0). Rows are independent; each row's entries are summed
    in entry order, so the result does not depend on the thread count (the
    GEMM is torch's). Duplicate entries count each time.

    Parameters
    ----------
    indptr : Tensor, (R + 1,), int64
        Non-decreasing offsets into ``indices``/``weight``/``target``.
    indices : Tensor, (nnz,), int32 or int64
        Row ids into ``Y``, in ``[0, n)``.
    weight : Tensor, (nnz,), float32 or float64
        ``c_e - 1`` (``alpha * r`` for the linear confidence).
    Y : Tensor, (n, d), same dtype
        The fixed factors of the other side.
    gram : Tensor, (d, d), same dtype
        ``Y^T Y + reg I`` (symmetric: ``X @ gram`` is the product of every row).
    X : Tensor, (R, d), same dtype
        The vectors to multiply, one per row.
    target : Tensor, (nnz,), optional
        ``c_e``: subtract ``b = sum_e target[e] Y[c]``.

    Returns
    -------
    Tensor, (R, d), dtype of Y

    Raises
    ------
    IndexError
        ``indptr`` not non-decreasing within ``[0, nnz]``, or an index out of
        range for ``Y`` (on CUDA at the next mfext call; the output is NaN).
    RuntimeError
        Shapes, dtypes or devices disagree (the message names the argument).
    """
    return torch.ops.mfext.implicit_als_matvec.default(indptr, indices, weight, Y, gram, X,
                                                        target)


@torch.library.register_fake("mfext::implicit_als_matvec")
def _implicit_als_matvec_fake(indptr, indices, weight, Y, gram, X, target=None):
    """Output: (R, d), dtype of Y."""
    check_same_device("implicit_als_matvec", indptr=indptr, indices=indices, weight=weight,
                      Y=Y, gram=gram, X=X, target=target)
    torch._check(indptr.dim() == 1 and indptr.shape[0] >= 1,
                 lambda: "indptr must be a non-empty 1-D tensor")
    torch._check(Y.dim() == 2, lambda: "Y must be 2-D")
    d = Y.shape[1]
    torch._check(gram.dim() == 2 and gram.shape[0] == d and gram.shape[1] == d,
                 lambda: "gram must have shape (d, d)")
    torch._check(X.dim() == 2 and X.shape[0] == indptr.shape[0] - 1 and X.shape[1] == d,
                 lambda: "X must have shape (R, d)")
    return Y.new_empty((indptr.shape[0] - 1, d))
