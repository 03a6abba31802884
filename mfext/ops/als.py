"""Alternating least squares: ``als_normal_equations`` and ``als_solve``.

``als_normal_equations`` builds the k x k normal equations of the ridge
least-squares problem of every row of a CSR matrix; ``als_solve`` builds and
solves them without storing the (R, d, d) batch. This module owns the two
ops' typed wrappers and fake kernels. They are solver steps, not losses: no
autograd. The half-step around them (biases, regularization, the other side)
belongs to the solvers that call them; the kernels to ``csrc/``; the shared
fake-kernel checks to :mod:`._fake`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _library  # noqa: F401  (loads the compiled ops)
from ._fake import check_same_device

__all__ = ["als_normal_equations", "als_solve"]


def als_normal_equations(
    indptr: Tensor, indices: Tensor, vals: Tensor, F: Tensor,
    col_offset: Optional[Tensor], reg_diag: Tensor, count_exponent: float = 1.0,
    *, base: Optional[Tensor] = None, weight: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Normal equations of the ALS least-squares problem of every row of a CSR matrix.

    For row ``r`` with entries ``e`` in ``indptr[r]:indptr[r + 1]`` and
    ``c = indices[e]``::

        gram[r] = base + sum_e weight[e] F[c] F[c]^T + diag(reg_diag) * n_r ** count_exponent
        rhs[r]  = sum_e (vals[e] - col_offset[c]) F[c]

    (``base`` absent: 0; ``weight`` absent: 1). A row without entries gets
    ``gram = I`` and ``rhs = 0``. Implicit-feedback ALS passes ``base = Y^T Y``,
    the confidences minus one as ``weight`` and the confidences as ``vals``. On CUDA, bad
    ``indptr`` or ``indices`` values give NaN results and raise at the next
    mfext call or at :func:`mfext.cuda_check_errors` (the op never synchronizes).

    Parameters
    ----------
    indptr : Tensor, (R + 1,), int64
        Non-decreasing offsets into ``indices``/``vals`` (a slice of a larger
        ``indptr`` selects a range of rows).
    indices : Tensor, (nnz,), int32 or int64
        Row ids into ``F``.
    vals : Tensor, (nnz,), float32 or float64
    F : Tensor, (n, d), same dtype
        The fixed factors of the other side.
    col_offset : Tensor, (n,), optional
        Subtracted from the value of each entry, by its column.
    reg_diag : Tensor, (d,)
        Finite and >= 0 (a NaN or negative ridge would make the systems
        indefinite): otherwise a ``ValueError`` naming ``reg_diag[q]``, on CUDA
        at the next mfext call (the outputs of the call are NaN).
    count_exponent : float
        0: the same regularization for every row; 1: proportional to the
        row's entry count (ALS-WR).
    base : Tensor, (d, d), optional
        A symmetric matrix added to every row's Gram matrix.
    weight : Tensor, (nnz,), optional
        The weight of each entry's term of the Gram matrix.

    Returns
    -------
    gram : Tensor, (R, d, d); rhs : Tensor, (R, d)
    """
    return torch.ops.mfext.als_normal_equations.default(
        indptr, indices, vals, F, col_offset, reg_diag, float(count_exponent), base, weight)


def als_solve(
    indptr: Tensor, indices: Tensor, vals: Tensor, F: Tensor,
    col_offset: Optional[Tensor], reg_diag: Tensor, count_exponent: float = 1.0,
    *, base: Optional[Tensor] = None, weight: Optional[Tensor] = None,
) -> Tensor:
    """Solves ``gram[r] x[r] = rhs[r]`` of :func:`als_normal_equations` for every row.

    Each row's system is built and solved (Cholesky) in a scratch of its own
    (a CPU thread's; on CUDA a thread block's shared memory, or a bounded
    global workspace for large d), so the (R, d, d) Gram batch is never
    stored. Bad input on CUDA is reported as for :func:`als_normal_equations`.
    A system that is not numerically positive definite (possible only with
    zero regularization: a pivot at or below d * eps * its largest diagonal
    entry, eps the dtype's machine epsilon) is solved with a ridge of
    max(1e-4, 4 d eps) times that entry; if that fails too its row comes
    back NaN. The same rule on the CPU and on CUDA. ``reg_diag`` must be
    finite and >= 0, as for :func:`als_normal_equations`, whose ``base`` and
    ``weight`` this op takes too.

    Returns
    -------
    Tensor, (R, d), dtype of F
    """
    return torch.ops.mfext.als_solve.default(
        indptr, indices, vals, F, col_offset, reg_diag, float(count_exponent), base, weight)


# --------------------------------------------------------------------------- fake kernels


def _als_fake_checks(op, indptr, indices, vals, F, col_offset, reg_diag, base, weight):
    """The checks both ALS ops make: indptr (R + 1,), F (n, d), reg_diag (d,), one device."""
    check_same_device(op, indptr=indptr, indices=indices, vals=vals, F=F,
                      col_offset=col_offset, reg_diag=reg_diag, base=base, weight=weight)
    torch._check(indptr.dim() == 1 and indptr.shape[0] >= 1,
                 lambda: "indptr must be a non-empty 1-D tensor")
    torch._check(F.dim() == 2, lambda: "F must be 2-D")
    torch._check(reg_diag.dim() == 1 and reg_diag.shape[0] == F.shape[1],
                 lambda: "reg_diag must have shape (d,)")
    if base is not None:
        torch._check(base.dim() == 2 and base.shape[0] == F.shape[1]
                     and base.shape[1] == F.shape[1], lambda: "base must have shape (d, d)")


@torch.library.register_fake("mfext::als_normal_equations")
def _als_normal_equations_fake(indptr, indices, vals, F, col_offset, reg_diag, count_exponent,
                               base=None, weight=None):
    """Outputs: gram (R, d, d), rhs (R, d), dtype of F."""
    _als_fake_checks("als_normal_equations", indptr, indices, vals, F, col_offset, reg_diag,
                     base, weight)
    R, d = indptr.shape[0] - 1, F.shape[1]
    return F.new_empty((R, d, d)), F.new_empty((R, d))


@torch.library.register_fake("mfext::als_solve")
def _als_solve_fake(indptr, indices, vals, F, col_offset, reg_diag, count_exponent, base=None,
                    weight=None):
    """Output: x (R, d), dtype of F."""
    _als_fake_checks("als_solve", indptr, indices, vals, F, col_offset, reg_diag, base, weight)
    return F.new_empty((indptr.shape[0] - 1, F.shape[1]))
