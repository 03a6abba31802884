"""The autograd reference: the loop users know, and reference losses/gradients.

Everything here is plain PyTorch. Tests check the fused ops against these
functions and benchmarks time them as the baseline; ``factorize(...,
backend="autograd")`` (:mod:`mfext.dense.objective`) takes its gradients from
here. It knows no mfext module: the fused ops live in :mod:`mfext.ops`, the
optimized loops in :mod:`mfext.dense` and :mod:`mfext.training`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

TOY_MATRIX = [[5.0, 3.0], [3.0, 2.0], [2.0, 1.0], [1.0, 1.0]]


def dense_loss(A: Tensor, W: Tensor, H: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """``sum(weight * (A - W @ H)**2)`` through autograd ops (m x n temporaries)."""
    residual = W @ H - A
    sq = residual.square()
    return (sq if weight is None else weight * sq).sum()


def sparse_loss(
    rows: Tensor, cols: Tensor, vals: Tensor, W: Tensor, H: Tensor,
    weight: Optional[Tensor] = None,
) -> Tensor:
    """The gather reference: ``((W[rows] * H.t()[cols]).sum(1) - vals)**2``, summed."""
    pred = (W[rows.long()] * H.t()[cols.long()]).sum(1)
    sq = (pred - vals).square()
    return (sq if weight is None else weight * sq).sum()


def _loss_and_grads(loss_fn, data: tuple, W: Tensor, H: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    W = W.detach().requires_grad_(True)
    H = H.detach().requires_grad_(True)
    loss = loss_fn(*data, W, H) if len(data) else loss_fn(W, H)
    grad_W, grad_H = torch.autograd.grad(loss, (W, H))
    return loss.detach(), grad_W, grad_H


def dense_loss_grad(
    A: Tensor, W: Tensor, H: Tensor, weight: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor, Tensor]:
    """Reference loss, grad_W (m, k) and grad_H (k, n) by autograd."""
    return _loss_and_grads(lambda W_, H_: dense_loss(A, W_, H_, weight), (), W, H)


def sparse_loss_grad(
    rows: Tensor, cols: Tensor, vals: Tensor, W: Tensor, H: Tensor,
    weight: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Reference sparse loss and gradients by autograd."""
    return _loss_and_grads(
        lambda W_, H_: sparse_loss(rows, cols, vals, W_, H_, weight), (), W, H
    )


@dataclass
class ReferenceResult:
    """Output of :func:`reference_factorize`: W (m, k), H (k, n), and the losses."""

    W: Tensor
    H: Tensor
    loss_history: List[float] = field(default_factory=list)
    seconds: float = 0.0


def reference_factorize(
    A: Tensor, rank: int, *, iterations: int = 5000, lr: float = 0.01, seed: int = 0,
    log_every: int = 0,
) -> ReferenceResult:
    """The loop users write by hand: Adam on ``mse_loss(W @ H, A)``.

    Parameters
    ----------
    A : Tensor, (m, n)
    rank : int
        k.
    iterations, lr, seed : Adam steps, learning rate and the seed of ``torch.rand``.
    log_every : int
        Record the loss every this many steps (0: only the last).

    Returns
    -------
    ReferenceResult with W (m, k) and H (k, n).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    m, n = A.shape
    W = torch.rand(m, rank, generator=gen, dtype=A.dtype).to(A.device).requires_grad_(True)
    H = torch.rand(rank, n, generator=gen, dtype=A.dtype).to(A.device).requires_grad_(True)
    opt = torch.optim.Adam([W, H], lr=lr)
    history: List[float] = []
    start = time.perf_counter()
    for it in range(iterations):
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(W @ H, A)
        loss.backward()
        opt.step()
        if log_every and it % log_every == 0:
            history.append(loss.item())
    with torch.no_grad():
        history.append(float(F.mse_loss(W @ H, A)))
    return ReferenceResult(W.detach(), H.detach(), history, time.perf_counter() - start)
