"""Typed wrappers around ``torch.ops.mfext``, with fake kernels and autograd.

One module per op family, each holding its ops' wrappers, ``register_fake``
kernels and (for the losses) ``register_autograd`` side by side:

================  ==============================================================
:mod:`.dense`     ``dense_loss_grad`` (fused) and ``dense_loss`` (differentiable)
:mod:`.sparse`    ``sparse_loss_grad``, ``sparse_loss`` and ``sparse_dot``
:mod:`.sgd`       ``sgd_epoch_``: one in-place SGD epoch over observed ratings
:mod:`.als`       ``als_normal_equations`` and ``als_solve``
:mod:`.implicit`  ``implicit_als_cg_``: implicit ALS's fused in-place CG steps
:mod:`.sort`      ``bucket_sort``: a stable counting sort by key
:mod:`.cuda`      ``cuda_check_errors`` and ``dense_path`` (CUDA only)
================  ==============================================================

:mod:`._fake` holds the checks every fake kernel shares, :mod:`._autograd` the
backward and vmap pieces the two losses share. Importing this package
registers every fake kernel and autograd formula; the ops themselves come
from the compiled library (:mod:`mfext._library`). The ops know no model: the
training loops and solvers that call them live elsewhere in mfext.

The fused losses return the loss and both gradients in one call. The
differentiable forms :func:`dense_loss` and :func:`sparse_loss` return only
the loss; their backward reuses the gradients the fused kernel already
computed.

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
not torch.func. The solver ops (``sgd_epoch_``, ``als_*``) and the internal ops
(``sparse_dot``, ``bucket_sort``) are not differentiable.
"""
from __future__ import annotations

from . import als, cuda, dense, implicit, sgd, sort, sparse
from .als import als_normal_equations, als_solve
from .cuda import cuda_check_errors, dense_path
from .dense import dense_loss, dense_loss_grad
from .implicit import implicit_als_cg_
from .sgd import sgd_epoch_
from .sort import bucket_sort
from .sparse import sparse_dot, sparse_loss, sparse_loss_grad

__all__ = [
    "dense_loss_grad", "sparse_loss_grad", "dense_loss", "sparse_loss",
    "sgd_epoch_", "als_normal_equations", "als_solve", "implicit_als_cg_", "sparse_dot",
    "bucket_sort",
    "cuda_check_errors", "dense_path",
]
