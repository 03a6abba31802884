"""Collaborative-filtering kernels: typed wrappers and fake kernels.

``sgd_epoch_`` runs one epoch of stochastic gradient descent over observed
ratings in place; ``als_normal_equations`` builds the per-row k x k systems of
alternating least squares and ``als_solve`` solves them without storing them.
None of them is differentiable: they are solver steps, not losses.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _library  # noqa: F401  (loads the compiled ops)
from .ops import _check_same_device_fake

__all__ = ["sgd_epoch_", "als_normal_equations", "als_solve", "sparse_dot", "bucket_sort"]


def sgd_epoch_(
    W: Tensor, H_t: Tensor, user_bias: Tensor, item_bias: Tensor,
    rows: Tensor, cols: Tensor, vals: Tensor, *,
    order: Optional[Tensor] = None, block_ptr: Optional[Tensor] = None,
    schedule: Optional[Tensor] = None, lr: float, reg: float, bias_reg: float = 0.0,
    global_mean: float = 0.0, use_biases: bool = True, nonnegative: bool = False,
) -> Tensor:
    """One in-place SGD epoch over observed ratings (biased matrix factorization).

    The model is ``pred = global_mean + user_bias[u] + item_bias[i] + W[u] . H_t[i]``
    (``use_biases``) or ``W[u] . H_t[i]``. For each entry, with ``e = r - pred``::

        b_u += lr (e - bias_reg b_u);  b_i += lr (e - bias_reg b_i)
        w_u += lr (e h_i - reg w_u);   h_i += lr (e w_u_old - reg h_i)

    Parameters
    ----------
    W : Tensor, (m, k), float32 or float64, contiguous; updated in place
    H_t : Tensor, (n, k), same dtype, contiguous; updated in place (H transposed)
    user_bias : Tensor, (m,); item_bias : Tensor, (n,)
        Updated in place when ``use_biases`` (otherwise unused; may be empty).
    rows, cols : Tensor, (nnz,), int32 or int64 (the same dtype)
    vals : Tensor, (nnz,), dtype of W
    order : Tensor, (len,), int64, optional
        Entry ids in processing order (None: storage order, the fastest).
    block_ptr : Tensor, (n_blocks + 1,), int64, optional
        Block ``b`` is positions ``block_ptr[b]:block_ptr[b + 1]`` of the order.
    schedule : Tensor, (n_strata, width), int64, optional
        Block ids (-1: empty slot). The blocks of one row run in parallel, the
        rows one after another. When the blocks of each row share no user and
        no item, the result is bitwise identical for every thread count. Give
        both ``block_ptr`` and ``schedule`` or neither; with neither, the
        threads split the order Hogwild-style (deterministic with one thread only).
    lr, reg, bias_reg, global_mean : float
    use_biases, nonnegative : bool
        ``nonnegative`` clamps W and H_t at 0 after every update (projected SGD).

    Returns
    -------
    Tensor, 0-dim, float64
        Sum of the squared errors seen before each update (a free estimate of
        the training error of the epoch).

    Raises
    ------
    RuntimeError
        When ``W``, ``H_t`` or (with ``use_biases``) a bias tensor requires grad
        while grad mode is on: the op is not differentiable, so updating a tensor
        autograd tracks would leave its graph wrong (torch's own in-place ops
        refuse a leaf that requires grad). The message names the argument; pass
        ``.detach()`` or call the op under ``torch.no_grad()``. Nothing is updated.
    """
    return torch.ops.mfext.sgd_epoch_.default(
        W, H_t, user_bias, item_bias, rows, cols, vals, order, block_ptr, schedule,
        float(lr), float(reg), float(bias_reg), float(global_mean), bool(use_biases),
        bool(nonnegative))


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


def sparse_dot(rows: Tensor, cols: Tensor, W: Tensor, H_t: Tensor) -> Tensor:
    """``out[e] = W[rows[e]] . H_t[cols[e]]`` without (nnz, k) temporaries (internal op).

    Parameters
    ----------
    rows, cols : Tensor, (nnz,), int32 or int64 (the same dtype)
    W : Tensor, (m, k); H_t : Tensor, (n, k), same float dtype

    Returns
    -------
    Tensor, (nnz,), dtype of W
    """
    return torch.ops.mfext._sparse_dot.default(rows, cols, W, H_t)


def bucket_sort(keys: Tensor, n_buckets: int) -> Tuple[Tensor, Tensor]:
    """Stable counting sort of entry ids by key (internal op).

    Parameters
    ----------
    keys : Tensor, (nnz,), int32 or int64, values in [0, n_buckets)
    n_buckets : int

    Returns
    -------
    order : Tensor, (nnz,), int64
        Entry ids grouped by key, in their original order within a key.
    offsets : Tensor, (n_buckets + 1,), int64
        Key ``b`` occupies ``order[offsets[b]:offsets[b + 1]]``.
    """
    return torch.ops.mfext._bucket_sort.default(keys, int(n_buckets))


# --------------------------------------------------------------------------- fake kernels


@torch.library.register_fake("mfext::sgd_epoch_")
def _sgd_epoch_fake(W, H_t, user_bias, item_bias, rows, cols, vals, order, block_ptr, schedule,
                    lr, reg, bias_reg, global_mean, use_biases, nonnegative):
    _check_same_device_fake("sgd_epoch_", W=W, H_t=H_t, user_bias=user_bias, item_bias=item_bias,
                 rows=rows, cols=cols, vals=vals, order=order, block_ptr=block_ptr,
                 schedule=schedule)
    torch._check(W.dim() == 2 and H_t.dim() == 2, lambda: "W and H_t must be 2-D")
    torch._check(W.shape[1] == H_t.shape[1], lambda: "W and H_t disagree on the rank k")
    torch._check(rows.dim() == 1 and cols.dim() == 1 and vals.dim() == 1,
                 lambda: "rows, cols and vals must be 1-D")
    return W.new_empty((), dtype=torch.float64)


def _als_fake_checks(op, indptr, indices, vals, F, col_offset, reg_diag):
    _check_same_device_fake(op, indptr=indptr, indices=indices, vals=vals, F=F, col_offset=col_offset,
                 reg_diag=reg_diag)
    torch._check(indptr.dim() == 1 and indptr.shape[0] >= 1,
                 lambda: "indptr must be a non-empty 1-D tensor")
    torch._check(F.dim() == 2, lambda: "F must be 2-D")
    torch._check(reg_diag.dim() == 1 and reg_diag.shape[0] == F.shape[1],
                 lambda: "reg_diag must have shape (d,)")


@torch.library.register_fake("mfext::als_normal_equations")
def _als_normal_equations_fake(indptr, indices, vals, F, col_offset, reg_diag, count_exponent):
    _als_fake_checks("als_normal_equations", indptr, indices, vals, F, col_offset, reg_diag)
    R, d = indptr.shape[0] - 1, F.shape[1]
    return F.new_empty((R, d, d)), F.new_empty((R, d))


@torch.library.register_fake("mfext::als_solve")
def _als_solve_fake(indptr, indices, vals, F, col_offset, reg_diag, count_exponent):
    _als_fake_checks("als_solve", indptr, indices, vals, F, col_offset, reg_diag)
    return F.new_empty((indptr.shape[0] - 1, F.shape[1]))


@torch.library.register_fake("mfext::_sparse_dot")
def _sparse_dot_fake(rows, cols, W, H_t):
    _check_same_device_fake("_sparse_dot", rows=rows, cols=cols, W=W, H_t=H_t)
    torch._check(W.dim() == 2 and H_t.dim() == 2 and W.shape[1] == H_t.shape[1],
                 lambda: "W (m, k) and H_t (n, k) must be 2-D and agree on k")
    torch._check(rows.dim() == 1 and cols.dim() == 1, lambda: "rows and cols must be 1-D")
    return W.new_empty((rows.shape[0],))


@torch.library.register_fake("mfext::_bucket_sort")
def _bucket_sort_fake(keys, n_buckets):
    torch._check(keys.dim() == 1, lambda: "keys must be 1-D")
    return (keys.new_empty((keys.shape[0],), dtype=torch.int64),
            keys.new_empty((n_buckets + 1,), dtype=torch.int64))
