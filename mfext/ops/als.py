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
) -> Tuple[Tensor, Tensor]:
    """Normal equations of the ALS least-squares problem of every row of a CSR matrix.

    For row ``r`` with entries ``e`` in ``indptr[r]:indptr[r + 1]`` and
    ``c = indices[e]``::

        gram[r] = sum_e F[c] F[c]^T + diag(reg_diag) * n_r ** count_exponent
        rhs[r]  = sum_e (vals[e] - col_offset[c]) F[c]

    A row without entries gets ``gram = I`` and ``rhs = 0``. On CUDA, bad
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

    Returns
    -------
    gram : Tensor, (R, d, d); rhs : Tensor, (R, d)
    """
    return torch.ops.mfext.als_normal_equations.default(
        indptr, indices, vals, F, col_offset, reg_diag, float(count_exponent))


def als_solve(
    indptr: Tensor, indices: Tensor, vals: Tensor, F: Tensor,
    col_offset: Optional[Tensor], reg_diag: Tensor, count_exponent: float = 1.0,
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
    finite and >= 0, as for :func:`als_normal_equations`.

    Returns
    -------
    Tensor, (R, d), dtype of F
    """
    return torch.ops.mfext.als_solve.default(
        indptr, indices, vals, F, col_offset, reg_diag, float(count_exponent))


# --------------------------------------------------------------------------- fake kernels


def _als_fake_checks(op, indptr, indices, vals, F, col_offset, reg_diag):
    """The checks both ALS ops make: indptr (R + 1,), F (n, d), reg_diag (d,), one device."""
    check_same_device(op, indptr=indptr, indices=indices, vals=vals, F=F,
                      col_offset=col_offset, reg_diag=reg_diag)
    torch._check(indptr.dim() == 1 and indptr.shape[0] >= 1,
                 lambda: "indptr must be a non-empty 1-D tensor")
    torch._check(F.dim() == 2, lambda: "F must be 2-D")
    torch._check(reg_diag.dim() == 1 and reg_diag.shape[0] == F.shape[1],
                 lambda: "reg_diag must have shape (d,)")


@torch.library.register_fake("mfext::als_normal_equations")
def _als_normal_equations_fake(indptr, indices, vals, F, col_offset, reg_diag, count_exponent):
    """Outputs: gram (R, d, d), rhs (R, d), dtype of F."""
    _als_fake_checks("als_normal_equations", indptr, indices, vals, F, col_offset, reg_diag)
    R, d = indptr.shape[0] - 1, F.shape[1]
    return F.new_empty((R, d, d)), F.new_empty((R, d))


@torch.library.register_fake("mfext::als_solve")
def _als_solve_fake(indptr, indices, vals, F, col_offset, reg_diag, count_exponent):
    """Output: x (R, d), dtype of F."""
    _als_fake_checks("als_solve", indptr, indices, vals, F, col_offset, reg_diag)
    return F.new_empty((indptr.shape[0] - 1, F.shape[1]))
