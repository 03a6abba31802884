"""Ops over the observed entries of a sparse matrix: the sparse loss and ``sparse_dot``.

``sparse_loss_grad`` (fused) and ``sparse_loss`` (differentiable) compute
``sum_e weight[e] * (W[rows[e]] . H[:, cols[e]] - vals[e])**2`` over the nnz
observed entries only; ``sparse_dot`` (internal op ``_sparse_dot``) gives the
predictions ``W[rows[e]] . H_t[cols[e]]`` themselves. This module owns their
typed wrappers, fake kernels, the loss's autograd registration and its
``autograd.Function``. The shared fake-kernel checks live in :mod:`._fake`,
the shared backward and vmap pieces in :mod:`._autograd`; the kernels in ``csrc/``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _library  # noqa: F401  (loads the compiled ops)
from ._autograd import masked_weighted, vmap_per_element
from ._fake import check_factors, check_same_device

__all__ = ["sparse_loss_grad", "sparse_loss", "sparse_dot"]


def sparse_loss_grad(
    rows: Tensor,
    cols: Tensor,
    vals: Tensor,
    W: Tensor,
    H: Tensor,
    weight: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Fused loss and gradients over observed entries only.

    ``loss = sum_e weight[e] * (W[rows[e]] . H[:, cols[e]] - vals[e])**2``.

    Parameters
    ----------
    rows, cols : Tensor, (nnz,), int32 or int64 (the same dtype)
        Entry coordinates in an (m, n) matrix; duplicates count each time.
    vals : Tensor, (nnz,), float32 or float64 (on CUDA also float16/bfloat16)
    W : Tensor, (m, k)
    H : Tensor, (k, n)
        Fastest as the ``.t()`` view of a contiguous (n, k) tensor.
    weight : Tensor, (nnz,), optional, non-negative

    Returns
    -------
    loss : Tensor, 0-dim, accumulated in float64
    grad_W : Tensor, (m, k), laid out like ``W``
    grad_H : Tensor, (k, n), laid out like ``H``

    Notes
    -----
    On CUDA the gradients are added with atomics (bits may differ between
    runs) unless ``torch.use_deterministic_algorithms(True)`` is set, and bad
    indices or weights are reported by the next mfext call or by
    :func:`mfext.cuda_check_errors` (the op never synchronizes).
    """
    return torch.ops.mfext.sparse_loss_grad.default(rows, cols, vals, W, H, weight)


def sparse_loss(
    rows: Tensor,
    cols: Tensor,
    vals: Tensor,
    W: Tensor,
    H: Tensor,
    weight: Optional[Tensor] = None,
) -> Tensor:
    """Differentiable loss over observed entries; shapes as in :func:`sparse_loss_grad`.

    Supports what :func:`mfext.dense_loss` supports (second derivatives,
    ``torch.func`` reverse mode).
    """
    return _SparseLoss.apply(rows, cols, vals, W, H, weight)[0]


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


# --------------------------------------------------------------------------- fake kernels


@torch.library.register_fake("mfext::sparse_loss_grad")
def _sparse_loss_grad_fake(rows, cols, vals, W, H, weight=None):
    """Outputs: loss (), grad_W like W (m, k), grad_H like H (k, n)."""
    check_same_device(
        "sparse_loss_grad", rows=rows, cols=cols, vals=vals, W=W, H=H, weight=weight
    )
    check_factors(W, H)
    torch._check(rows.dim() == 1 and cols.dim() == 1 and vals.dim() == 1,
                 lambda: "rows, cols and vals must be 1-D")
    return vals.new_empty(()), torch.empty_like(W), torch.empty_like(H)


@torch.library.register_fake("mfext::_sparse_dot")
def _sparse_dot_fake(rows, cols, W, H_t):
    """Output: (nnz,), dtype of W."""
    check_same_device("_sparse_dot", rows=rows, cols=cols, W=W, H_t=H_t)
    torch._check(W.dim() == 2 and H_t.dim() == 2 and W.shape[1] == H_t.shape[1],
                 lambda: "W (m, k) and H_t (n, k) must be 2-D and agree on k")
    torch._check(rows.dim() == 1 and cols.dim() == 1, lambda: "rows and cols must be 1-D")
    return W.new_empty((rows.shape[0],))


# --------------------------------------------------------------------------- autograd


def _sparse_setup_context(ctx, inputs, output):
    rows, cols, vals, W, H = inputs[:5]
    weight = inputs[5] if len(inputs) > 5 else None  # defaults may be dropped when tracing
    _, grad_W, grad_H = output
    ctx.mark_non_differentiable(grad_W, grad_H)
    ctx.save_for_backward(rows, cols, vals, W, H, weight, grad_W, grad_H)


def _sparse_backward(ctx, d_loss, _d_grad_W, _d_grad_H):
    """Gradients for (rows, cols: None; vals (nnz,), W (m, k), H (k, n), weight (nnz,))."""
    rows, cols, vals, W, H, weight, grad_W, grad_H = ctx.saved_tensors
    need = ctx.needs_input_grad
    dvals = dW = dH = dweight = None
    need_weight = len(need) > 5 and need[5]
    residual = None
    r, c = rows.long(), cols.long()
    if (need[3] or need[4]) and torch.is_grad_enabled():
        # create_graph=True: a differentiable formula over the nnz entries.
        Wr, Hc = W[r], H.t()[c]  # (nnz, k)
        residual = vals - (Wr * Hc).sum(1)
        scaled = (-2.0 * masked_weighted(residual, weight)).unsqueeze(1)  # (nnz, 1)
        if need[3]:
            grad_W = torch.zeros_like(W).index_add(0, r, scaled * Hc)
        if need[4]:
            grad_H = torch.zeros_like(H.t()).index_add(0, c, scaled * Wr).t()
    if need[3]:
        dW = d_loss * grad_W
    if need[4]:
        dH = d_loss * grad_H
    if need[2] or need_weight:
        if residual is None:
            residual = vals - (W[r] * H.t()[c]).sum(1)  # (nnz,)
        if need[2]:
            dvals = 2.0 * d_loss * masked_weighted(residual, weight)
        if need_weight:
            dweight = d_loss * residual.square()
    return (None, None, dvals, dW, dH, dweight)[: len(need)]


class _SparseLoss(torch.autograd.Function):
    """:func:`sparse_loss` as an autograd.Function, so that torch.func can transform it."""

    @staticmethod
    def forward(rows, cols, vals, W, H, weight):
        return torch.ops.mfext.sparse_loss_grad.default(rows, cols, vals, W, H, weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _sparse_setup_context(ctx, inputs, output)

    @staticmethod
    def backward(ctx, d_loss, d_grad_W, d_grad_H):
        return _sparse_backward(ctx, d_loss, d_grad_W, d_grad_H)

    @staticmethod
    def vmap(info, in_dims, rows, cols, vals, W, H, weight):
        return vmap_per_element(_SparseLoss.apply, info, in_dims,
                                (rows, cols, vals, W, H, weight))


torch.library.register_autograd(
    "mfext::sparse_loss_grad", _sparse_backward, setup_context=_sparse_setup_context
)
