"""The dense update loop on the fused ops (minimal form; see issue 4 for the full API)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
from torch import Tensor

from .ops import dense_loss_grad


@dataclass
class FactorizeResult:
    """W (m, k), H (k, n), the recorded losses, iterations run and wall time."""

    W: Tensor
    H: Tensor
    loss_history: List[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    seconds: float = 0.0


def factorize(
    A, rank: int, *, lr: float = 0.01, max_iter: int = 5000, seed: Optional[int] = 0,
    backend: str = "fused", log_every: int = 100,
) -> FactorizeResult:
    """Adam on the mean squared error of ``A ≈ W @ H``, like the reference loop.

    Parameters
    ----------
    A : Tensor or ndarray, (m, n)
    rank : int
    lr, max_iter, seed : as in :func:`mfext.reference.reference_factorize`.
    backend : "fused" (mfext ops) or "autograd" (the reference loop).

    Returns
    -------
    FactorizeResult
    """
    A = torch.as_tensor(np.asarray(A) if not isinstance(A, Tensor) else A)
    if not A.is_floating_point():
        A = A.double()
    if backend == "autograd":
        from .reference import reference_factorize

        ref = reference_factorize(A, rank, iterations=max_iter, lr=lr, seed=seed or 0,
                                  log_every=log_every)
        return FactorizeResult(ref.W, ref.H, ref.loss_history, max_iter, True, ref.seconds)
    if backend != "fused":
        raise ValueError(f"backend must be 'fused' or 'autograd', got {backend!r}")
    gen = torch.Generator(device="cpu").manual_seed(seed or 0)
    m, n = A.shape
    W = torch.rand(m, rank, generator=gen, dtype=A.dtype).to(A.device)
    H = torch.rand(rank, n, generator=gen, dtype=A.dtype).to(A.device)
    opt = torch.optim.Adam([W, H], lr=lr)
    scale = 1.0 / A.numel()  # mean reduction, as mse_loss
    history: List[float] = []
    start = time.perf_counter()
    for it in range(max_iter):
        loss, gW, gH = dense_loss_grad(A, W, H)
        W.grad = gW.mul_(scale)
        H.grad = gH.mul_(scale)
        opt.step()
        if log_every and it % log_every == 0:
            history.append(float(loss) * scale)
    history.append(float(dense_loss_grad(A, W, H)[0]) * scale)
    return FactorizeResult(W, H, history, max_iter, True, time.perf_counter() - start)
