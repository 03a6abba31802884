"""Autograd machinery shared by the differentiable losses of :mod:`.dense` and :mod:`.sparse`.

The fused ops return ``(loss, grad_W, grad_H)``. Registered for autograd, only
the loss output is differentiated: the gradient outputs are marked
non-differentiable, and the first-order backward scales the gradients the
kernel already computed. This module owns the pieces both losses share: the
weighted residual of the recorded (``create_graph=True``) backward and the
``vmap`` rule of their ``autograd.Function``. Each loss's own setup, backward
and registration live beside its wrapper.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

__all__ = ["masked_weighted", "vmap_per_element"]


def masked_weighted(residual: Tensor, weight: Optional[Tensor]) -> Tensor:
    """``weight * residual``, 0 where the weight is 0 (the data may hold NaN there).

    Parameters
    ----------
    residual : Tensor, (m, n) for the dense loss, (nnz,) for the sparse loss
    weight : Tensor, same shape, optional (None: every weight is 1)

    Returns
    -------
    Tensor, shape and dtype of ``residual``
    """
    if weight is None:
        return residual
    return torch.where(weight == 0, torch.zeros_like(residual), weight * residual)


def _batched(x: Optional[Tensor], dim: Optional[int], i: int) -> Optional[Tensor]:
    """Element ``i`` of the batch dimension ``dim`` of ``x`` (unbatched inputs unchanged)."""
    return x if x is None or dim is None else x.select(dim, i)


def vmap_per_element(fn: Callable, info: Any, in_dims: tuple, inputs: tuple) -> tuple:
    """vmap rule: one op call per batch element (the kernels take single matrices).

    Parameters
    ----------
    fn : the ``Function.apply`` to call, returning ``(loss, grad_W, grad_H)``
    info : torch's vmap info (``info.batch_size``)
    in_dims : tuple, the batch dimension of each input (None: not batched)
    inputs : tuple, the op's inputs

    Returns
    -------
    ((loss (B,), grad_W (B, m, k), grad_H (B, k, n)), (0, 0, 0)): the outputs
    stacked on a new dim 0 and their out_dims.
    """
    outs = [fn(*(_batched(x, d, i) for x, d in zip(inputs, in_dims)))
            for i in range(info.batch_size)]
    return tuple(torch.stack(o) for o in zip(*outs)), (0, 0, 0)
