"""``sgd_epoch_``: one in-place epoch of stochastic gradient descent over observed ratings.

This module owns the op's typed wrapper and its fake kernel. The op is a
solver step, not a loss: it has no autograd (it refuses factors that require
grad while grad mode is on). The epoch loop, the block schedule and the
learning-rate policy belong to the recommender's SGD solver; the kernels to
``csrc/``; the shared fake-kernel checks to :mod:`._fake`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _library  # noqa: F401  (loads the compiled ops)
from ._fake import check_same_device

__all__ = ["sgd_epoch_"]


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


# --------------------------------------------------------------------------- fake kernel


@torch.library.register_fake("mfext::sgd_epoch_")
def _sgd_epoch_fake(W, H_t, user_bias, item_bias, rows, cols, vals, order, block_ptr, schedule,
                    lr, reg, bias_reg, global_mean, use_biases, nonnegative):
    """Output: the epoch's squared error, (), float64 (W and H_t are updated in place)."""
    check_same_device("sgd_epoch_", W=W, H_t=H_t, user_bias=user_bias, item_bias=item_bias,
                      rows=rows, cols=cols, vals=vals, order=order, block_ptr=block_ptr,
                      schedule=schedule)
    torch._check(W.dim() == 2 and H_t.dim() == 2, lambda: "W and H_t must be 2-D")
    torch._check(W.shape[1] == H_t.shape[1], lambda: "W and H_t disagree on the rank k")
    torch._check(rows.dim() == 1 and cols.dim() == 1 and vals.dim() == 1,
                 lambda: "rows, cols and vals must be 1-D")
    return W.new_empty((), dtype=torch.float64)
