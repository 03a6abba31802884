"""What the mfext.factorize tests compare against: the documented objective by plain
torch, a plain float64 ALS, synthetic low-rank data and the Eckart-Young optimum.

Shares no code with mfext. The test files of this folder import it with
``from factorize_reference import ...`` (pytest puts this folder on ``sys.path``).
"""
from __future__ import annotations

import torch

from mfext import reference as ref


F64 = torch.float64


OPTIMIZERS = ["adam", "gd", "als"]


_DEFAULT_TOL = {F64: 1e-10, torch.float32: 1e-6}  # the documented defaults


def low_rank_plus_noise(gen, m, n, k, noise, dtype=F64):
    """U diag(10..1) V^T + noise * N(0, 1): rank k with a clear gap."""
    U = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=F64)).Q
    V = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=F64)).Q
    s = torch.linspace(10.0, 1.0, k, dtype=F64)
    A = (U * s) @ V.t() + noise * torch.randn(m, n, generator=gen, dtype=F64)
    return A.to(dtype)


def eckart_young_mse(A, k):
    """The optimal mean squared error of a rank-k approximation."""
    S = torch.linalg.svdvals(A.double())
    return float(S[k:].square().sum()) / A.numel()


def mse(result, A):
    return float(torch.nn.functional.mse_loss(result.W.double() @ result.H.double(), A.double()))


def objective(A, W, H, weight=None, reg=0.0, reduction="mean"):
    """The documented objective, by plain torch."""
    loss = ref.dense_loss(A, W, H, weight) + reg * (W.square().sum() + H.square().sum())
    if reduction == "sum":
        return loss
    return loss / (A.numel() if weight is None else weight.sum())


def objective64(A, W, H, weight=None, reg=0.0, reduction="mean"):
    """The documented objective in float64 (from float32 factors too); NaN in A is missing."""
    A = A.double()
    observed = ~torch.isnan(A)
    w = observed.double() if weight is None else weight.double() * observed
    value = objective(torch.where(observed, A, 0.0), W.double(), H.double(),
                      None if weight is None and bool(observed.all()) else w, reg, reduction)
    return float(value)


def reference_als(A, W, H, iterations, weight=None, reg=0.0, nonnegative=False, sweeps=3):
    """Plain ALS in float64, one row (column) at a time, from the dense matrix.

    Each row's normal equations ``(sum_j w_ij h_j h_j^T + reg I) x = sum_j w_ij a_ij h_j``
    are built from the dense data and solved by ``torch.linalg.solve``; in
    non-negative mode by ``sweeps`` sweeps of coordinate descent from the current
    row. Shares no code with mfext.
    """
    A = A.double()
    observed = ~torch.isnan(A)
    w = observed.double() if weight is None else weight.double() * observed
    A = torch.where(w > 0, A, 0.0)
    W, H = W.double().clone(), H.double().clone()
    k = W.shape[1]

    def solve_rows(data, wt, F, X):
        out = torch.zeros(data.shape[0], k, dtype=F64)
        for i in range(data.shape[0]):
            if float(wt[i].sum()) == 0.0:
                continue  # an unobserved row stays 0
            G = (F.t() * wt[i]) @ F + reg * torch.eye(k, dtype=F64)
            b = F.t() @ (wt[i] * data[i])
            if not nonnegative:
                out[i] = torch.linalg.solve(G, b)
                continue
            x = X[i].clamp_min(0).clone()
            for _ in range(sweeps):
                for r in range(k):
                    if float(G[r, r]) > 0:
                        x[r] = max(0.0, float(x[r] + (b[r] - G[r] @ x) / G[r, r]))
                    else:
                        x[r] = 0.0
            out[i] = x
        return out

    for _ in range(iterations):
        W = solve_rows(A, w, H.t(), W)
        H = solve_rows(A.t(), w.t(), W, H.t()).t()
    return W, H
