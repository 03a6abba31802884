"""Typed wrappers around ``torch.ops.mfext``, with fake kernels and autograd.

The fused ops return the loss and both gradients in one call. The differentiable
forms :func:`dense_loss` and :func:`sparse_loss` return only the loss; their
backward reuses the gradients the fused kernel already computed.

Higher-order derivatives: a backward run with ``create_graph=True`` (double
backward, ``torch.autograd.gradgradcheck``) switches to a differentiable formula
built from torch ops; it forms the (m, n) residual (nnz entries for the sparse
loss), which the first-order path never does. The differentiable forms also
work under ``torch.func.grad``, ``vjp`` and ``jacrev``; these transforms record
the backward (so that they nest), so they take the differentiable formula too.
``vmap`` runs the op once per batch element. Forward-mode AD (``torch.func.jvp``,
``jacfwd``, ``hessian``) is not supported: torch raises NotImplementedError ("You
must implement the jvp function"); a custom jvp would stop torch.compile from
tracing the ops. ``jacrev(jacrev(f))`` gives the Hessian in reverse mode. The raw
ops ``torch.ops.mfext.*`` support first and second derivatives through autograd,
not torch.func.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor

from . import _library  # noqa: F401  (loads the compiled ops)

__all__ = ["dense_loss_grad", "sparse_loss_grad", "dense_loss", "sparse_loss"]


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


def dense_loss(A: Tensor, W: Tensor, H: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """Differentiable ``sum(weight * (A - W @ H)**2)``; a drop-in for the autograd loss.

    Shapes as in :func:`dense_loss_grad`. Returns a 0-dim tensor whose backward
    runs no extra kernel for ``W`` and ``H``. Second derivatives
    (``create_graph=True``) and ``torch.func.grad``/``vjp``/``jacrev`` are
    supported (see the module notes); forward-mode AD is not.
    """
    return _DenseLoss.apply(A, W, H, weight)[0]


def sparse_loss(
    rows: Tensor,
    cols: Tensor,
    vals: Tensor,
    W: Tensor,
    H: Tensor,
    weight: Optional[Tensor] = None,
) -> Tensor:
    """Differentiable loss over observed entries; shapes as in :func:`sparse_loss_grad`.

    Supports what :func:`dense_loss` supports (second derivatives, ``torch.func``
    reverse mode).
    """
    return _SparseLoss.apply(rows, cols, vals, W, H, weight)[0]


# --------------------------------------------------------------------------- fake kernels


def _check_same_device_fake(op: str, **tensors: Optional[Tensor]) -> None:
    present = {k: t for k, t in tensors.items() if t is not None}
    devices = {t.device for t in present.values()}
    torch._check(
        len(devices) <= 1,
        lambda: f"mfext::{op}: all tensors must share a device, got "
        + ", ".join(f"{k} on {t.device}" for k, t in present.items()),
    )


def _check_factors_fake(W: Tensor, H: Tensor) -> None:
    torch._check(W.dim() == 2 and H.dim() == 2, lambda: "W and H must be 2-D")
    torch._check(W.shape[1] == H.shape[0], lambda: "W and H disagree on the rank k")


@torch.library.register_fake("mfext::dense_loss_grad")
def _dense_loss_grad_fake(A, W, H, weight=None):
    _check_same_device_fake("dense_loss_grad", A=A, W=W, H=H, weight=weight)
    _check_factors_fake(W, H)
    torch._check(A.dim() == 2, lambda: "A must be 2-D")
    torch._check(A.shape[0] == W.shape[0], lambda: "A and W disagree on m")
    torch._check(A.shape[1] == H.shape[1], lambda: "A and H disagree on n")
    return A.new_empty(()), torch.empty_like(W), torch.empty_like(H)


@torch.library.register_fake("mfext::sparse_loss_grad")
def _sparse_loss_grad_fake(rows, cols, vals, W, H, weight=None):
    _check_same_device_fake(
        "sparse_loss_grad", rows=rows, cols=cols, vals=vals, W=W, H=H, weight=weight
    )
    _check_factors_fake(W, H)
    torch._check(rows.dim() == 1 and cols.dim() == 1 and vals.dim() == 1,
                 lambda: "rows, cols and vals must be 1-D")
    return vals.new_empty(()), torch.empty_like(W), torch.empty_like(H)


# --------------------------------------------------------------------------- autograd
# The gradient outputs are marked non-differentiable: only the loss output is
# differentiated. Its first-order backward scales the gradients the kernel already
# computed. When the backward itself is recorded (create_graph=True: double
# backward, gradgradcheck, torch.func.grad of a grad), those saved gradients would
# be constants, so the backward recomputes them with differentiable torch ops
# instead. Gradients for the data (A or vals) and the weights are rare; they are
# computed on demand from the residual.


def _masked_weighted(residual: Tensor, weight: Optional[Tensor]) -> Tensor:
    """``weight * residual``, 0 where the weight is 0 (the data may hold NaN there)."""
    if weight is None:
        return residual
    return torch.where(weight == 0, torch.zeros_like(residual), weight * residual)


def _dense_setup_context(ctx, inputs, output):
    A, W, H = inputs[:3]
    weight = inputs[3] if len(inputs) > 3 else None  # defaults may be dropped when tracing
    _, grad_W, grad_H = output
    ctx.mark_non_differentiable(grad_W, grad_H)
    ctx.save_for_backward(A, W, H, weight, grad_W, grad_H)


def _dense_backward(ctx, d_loss, _d_grad_W, _d_grad_H):
    A, W, H, weight, grad_W, grad_H = ctx.saved_tensors
    need_A, need_W, need_H = ctx.needs_input_grad[:3]
    need_weight = len(ctx.needs_input_grad) > 3 and ctx.needs_input_grad[3]
    dA = dW = dH = dweight = None
    residual = None
    if (need_W or need_H) and torch.is_grad_enabled():
        # create_graph=True: a differentiable formula, (m, n) temporaries on this path only.
        residual = A - W @ H
        scaled = -2.0 * _masked_weighted(residual, weight)  # d loss / d (W H)
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
            dA = 2.0 * d_loss * _masked_weighted(residual, weight)
        if need_weight:
            dweight = d_loss * residual.square()
    return (dA, dW, dH, dweight)[: len(ctx.needs_input_grad)]


def _sparse_setup_context(ctx, inputs, output):
    rows, cols, vals, W, H = inputs[:5]
    weight = inputs[5] if len(inputs) > 5 else None
    _, grad_W, grad_H = output
    ctx.mark_non_differentiable(grad_W, grad_H)
    ctx.save_for_backward(rows, cols, vals, W, H, weight, grad_W, grad_H)


def _sparse_backward(ctx, d_loss, _d_grad_W, _d_grad_H):
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
        scaled = (-2.0 * _masked_weighted(residual, weight)).unsqueeze(1)  # (nnz, 1)
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
            dvals = 2.0 * d_loss * _masked_weighted(residual, weight)
        if need_weight:
            dweight = d_loss * residual.square()
    return (None, None, dvals, dW, dH, dweight)[: len(need)]


def _batched(x: Optional[Tensor], dim: Optional[int], i: int) -> Optional[Tensor]:
    return x if x is None or dim is None else x.select(dim, i)


def _vmap_per_element(fn: Callable, info: Any, in_dims: tuple, inputs: tuple) -> tuple:
    """vmap rule: one op call per batch element (the kernels take single matrices).

    Returns ((loss, grad_W, grad_H) each stacked on a new dim 0, their out_dims).
    """
    outs = [fn(*(_batched(x, d, i) for x, d in zip(inputs, in_dims)))
            for i in range(info.batch_size)]
    return tuple(torch.stack(o) for o in zip(*outs)), (0, 0, 0)


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
        return _vmap_per_element(_DenseLoss.apply, info, in_dims, (A, W, H, weight))


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
        return _vmap_per_element(_SparseLoss.apply, info, in_dims,
                                 (rows, cols, vals, W, H, weight))


torch.library.register_autograd(
    "mfext::dense_loss_grad", _dense_backward, setup_context=_dense_setup_context
)
torch.library.register_autograd(
    "mfext::sparse_loss_grad", _sparse_backward, setup_context=_sparse_setup_context
)

# The collaborative-filtering kernels (sgd_epoch_, als_normal_equations, als_solve)
# register their fake kernels in their own module.
from . import cf_ops  # noqa: E402,F401
