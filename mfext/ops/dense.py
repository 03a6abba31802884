"""The dense loss: ``dense_loss_grad`` (fused) and ``dense_loss`` (differentiable).

``loss = sum(weight * (A - W @ H)**2)`` over an (m, n) matrix ``A``, without an
(m, n) temporary. This module owns the op's typed wrapper, its fake kernel, its
autograd registration and the ``autograd.Function`` behind :func:`dense_loss`.
The shared fake-kernel checks live in :mod:`._fake`, the shared backward and
vmap pieces in :mod:`._autograd`; the kernels in ``csrc/``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _library  # noqa: F401  (loads the compiled ops)
from ._autograd import masked_weighted, vmap_per_element
from ._fake import check_factors, check_same_device

__all__ = ["dense_loss_grad", "dense_loss"]


def dense_loss_grad(
    A: Tensor, W: Tensor, H: Tensor, weight: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor, Tensor]:
    """Fused ``sum(weight * (A - W @ H)**2)`` and its gradients in one pass.

    Parameters
    ----------
    A : Tensor, (m, n), float32 or float64 (on CUDA also float16/bfloat16)
    W : Tensor, (m, k), same dtype and device
    H : Tensor, (k, n), same dtype and device
    weight : Tensor, (m, n), optional
        Non-negative; 0 marks a missing entry (it contributes nothing, even if
        ``A`` holds NaN there).

    Returns
    -------
    loss : Tensor, 0-dim, accumulated in float64
    grad_W : Tensor, (m, k), laid out like ``W``
    grad_H : Tensor, (k, n), laid out like ``H``
    """
    return torch.ops.mfext.dense_loss_grad.default(A, W, H, weight)


def dense_loss(A: Tensor, W: Tensor, H: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """Differentiable ``sum(weight * (A - W @ H)**2)``; a drop-in for the autograd loss.

    Shapes as in :func:`dense_loss_grad`. Returns a 0-dim tensor whose backward
    runs no extra kernel for ``W`` and ``H``. Second derivatives
    (``create_graph=True``) and ``torch.func.grad``/``vjp``/``jacrev`` are
    supported (see :mod:`mfext.ops`); forward-mode AD is not.
    """
    return _DenseLoss.apply(A, W, H, weight)[0]


# --------------------------------------------------------------------------- fake kernel


@torch.library.register_fake("mfext::dense_loss_grad")
def _dense_loss_grad_fake(A, W, H, weight=None):
    """Outputs: loss (), grad_W like W (m, k), grad_H like H (k, n)."""
    check_same_device("dense_loss_grad", A=A, W=W, H=H, weight=weight)
    check_factors(W, H)
    torch._check(A.dim() == 2, lambda: "A must be 2-D")
    torch._check(A.shape[0] == W.shape[0], lambda: "A and W disagree on m")
    torch._check(A.shape[1] == H.shape[1], lambda: "A and H disagree on n")
    return A.new_empty(()), torch.empty_like(W), torch.empty_like(H)


# --------------------------------------------------------------------------- autograd


def _dense_setup_context(ctx, inputs, output):
    A, W, H = inputs[:3]
    weight = inputs[3] if len(inputs) > 3 else None  # defaults may be dropped when tracing
    _, grad_W, grad_H = output
    ctx.mark_non_differentiable(grad_W, grad_H)
    ctx.save_for_backward(A, W, H, weight, grad_W, grad_H)


def _dense_backward(ctx, d_loss, _d_grad_W, _d_grad_H):
    """Gradients for (A (m, n), W (m, k), H (k, n), weight (m, n)) from d_loss (0-dim)."""
    A, W, H, weight, grad_W, grad_H = ctx.saved_tensors
    need_A, need_W, need_H = ctx.needs_input_grad[:3]
    need_weight = len(ctx.needs_input_grad) > 3 and ctx.needs_input_grad[3]
    dA = dW = dH = dweight = None
    residual = None
    if (need_W or need_H) and torch.is_grad_enabled():
        # create_graph=True: a differentiable formula, (m, n) temporaries on this path only.
        residual = A - W @ H
        scaled = -2.0 * masked_weighted(residual, weight)  # d loss / d (W H)
        grad_W = scaled @ H.t() if need_W else None
        grad_H = W.t() @ scaled if need_H else None
    if need_W:
        dW = d_loss * grad_W
    if need_H:
        dH = d_loss * grad_H
    if need_A or need_weight:
        if residual is None:
            residual = A - W @ H  # (m, n): only on this rarely used path
        if need_A:
            dA = 2.0 * d_loss * masked_weighted(residual, weight)
        if need_weight:
            dweight = d_loss * residual.square()
    return (dA, dW, dH, dweight)[: len(ctx.needs_input_grad)]


class _DenseLoss(torch.autograd.Function):
    """:func:`dense_loss` as an autograd.Function, so that torch.func can transform it."""

    @staticmethod
    def forward(A, W, H, weight):
        return torch.ops.mfext.dense_loss_grad.default(A, W, H, weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _dense_setup_context(ctx, inputs, output)

    @staticmethod
    def backward(ctx, d_loss, d_grad_W, d_grad_H):
        return _dense_backward(ctx, d_loss, d_grad_W, d_grad_H)

    @staticmethod
    def vmap(info, in_dims, A, W, H, weight):
        return vmap_per_element(_DenseLoss.apply, info, in_dims, (A, W, H, weight))


torch.library.register_autograd(
    "mfext::dense_loss_grad", _dense_backward, setup_context=_dense_setup_context
)
