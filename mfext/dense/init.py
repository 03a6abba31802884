"""Initial factors for :func:`mfext.factorize`.

``"random"`` draws exactly what the reference loop draws (``torch.rand`` for W,
then H, from a CPU generator), so the two can follow the same trajectory.
``"svd"`` is a seeded randomized range finder (a cheap truncated SVD); with
``nonnegative=True`` it becomes NNDSVD (Boutsidis & Gallopoulos, 2008).
:func:`initial_factors_of_rows` gives a data-parallel rank its rows of the
factors one process would draw. The checks of the other arguments live in
:mod:`mfext.dense.factorization`.
"""
from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import Tensor

__all__ = ["initial_factors", "initial_factors_of_rows", "randomized_svd"]

# Extra columns of the range finder and its power iterations.
_OVERSAMPLE = 10
_POWER_ITERATIONS = 2


def randomized_svd(A: Tensor, rank: int, gen: torch.Generator) -> Tuple[Tensor, Tensor, Tensor]:
    """A seeded randomized truncated SVD (Halko, Martinsson & Tropp, 2011).

    Parameters
    ----------
    A : Tensor, (m, n), float32 or float64
    rank : int
        Components wanted (at most ``min(m, n)`` come back).
    gen : torch.Generator
        CPU generator for the Gaussian test matrix.

    Returns
    -------
    U : Tensor, (m, r), S : Tensor, (r,), Vh : Tensor, (r, n), with ``r = min(rank, m, n)``.
    """
    m, n = A.shape
    q = min(rank + _OVERSAMPLE, m, n)
    omega = torch.randn(n, q, generator=gen, dtype=A.dtype).to(A.device)
    Q = torch.linalg.qr(A @ omega).Q  # (m, q)
    for _ in range(_POWER_ITERATIONS):
        Q = torch.linalg.qr(A.t() @ Q).Q  # (n, q)
        Q = torch.linalg.qr(A @ Q).Q  # (m, q)
    Ub, S, Vh = torch.linalg.svd(Q.t() @ A, full_matrices=False)  # (q, q), (q,), (q, n)
    r = min(rank, q)
    return Q @ Ub[:, :r], S[:r], Vh[:r]


def _nndsvd(U: Tensor, S: Tensor, Vh: Tensor) -> Tuple[Tensor, Tensor]:
    """NNDSVD: for each component, the larger of its positive and negative parts."""
    up, un = U.clamp_min(0), (-U).clamp_min(0)  # (m, r)
    vp, vn = Vh.clamp_min(0), (-Vh).clamp_min(0)  # (r, n)
    nup, nun = up.norm(dim=0), un.norm(dim=0)  # (r,)
    nvp, nvn = vp.norm(dim=1), vn.norm(dim=1)
    pos = nup * nvp >= nun * nvn
    u = torch.where(pos[None, :], up, un)  # (m, r)
    v = torch.where(pos[:, None], vp, vn)  # (r, n)
    nu = torch.where(pos, nup, nun).clamp_min(torch.finfo(U.dtype).tiny)
    nv = torch.where(pos, nvp, nvn).clamp_min(torch.finfo(U.dtype).tiny)
    scale = (S * nu * nv).sqrt()  # (r,)
    return u / nu * scale, (v / nv[:, None]) * scale[:, None]


def initial_factors(
    A: Tensor,
    rank: int,
    init: Union[str, Tuple[Tensor, Tensor]],
    gen: torch.Generator,
    *,
    nonnegative: bool = False,
) -> Tuple[Tensor, Tensor]:
    """W (m, k) and H (k, n), fresh tensors on A's device in A's dtype.

    Parameters
    ----------
    A : Tensor, (m, n)
        The data, missing entries set to 0 (only ``"svd"`` looks at it).
    rank : int
    init : "random", "svd", or a pair (W0 (m, k), H0 (k, n)) of tensors or arrays
    gen : torch.Generator
        CPU generator; ``"random"`` draws W then H from it with ``torch.rand``.
    nonnegative : bool
        Clamp an explicit init at 0, and use NNDSVD for ``"svd"``.
    """
    m, n = A.shape
    dtype, device = A.dtype, A.device
    if isinstance(init, str):
        if init == "random":
            W = torch.rand(m, rank, generator=gen, dtype=dtype).to(device)
            H = torch.rand(rank, n, generator=gen, dtype=dtype).to(device)
            return W, H
        if init == "svd":
            U, S, Vh = randomized_svd(A, rank, gen)
            if nonnegative:
                W, H = _nndsvd(U, S, Vh)
            else:
                root = S.sqrt()
                W, H = U * root, root[:, None] * Vh
            r = S.shape[0]
            if r < rank:  # rank > min(m, n) (allowed with reg > 0): small random extra columns
                small = 1e-3 * float(S[0].sqrt()) if r else 1e-3
                W = torch.cat([W, small * torch.rand(m, rank - r, generator=gen, dtype=dtype).to(device)], 1)
                H = torch.cat([H, small * torch.rand(rank - r, n, generator=gen, dtype=dtype).to(device)], 0)
            return W.contiguous(), H.contiguous()
        raise ValueError(f"init must be 'random', 'svd' or a pair (W0, H0), got {init!r}")
    if not (isinstance(init, (tuple, list)) and len(init) == 2):
        raise ValueError(f"init must be 'random', 'svd' or a pair (W0, H0), got {type(init).__name__}")
    W, H = (torch.as_tensor(x).detach().to(device=device, dtype=dtype).clone() for x in init)
    if tuple(W.shape) != (m, rank) or tuple(H.shape) != (rank, n):
        raise ValueError(
            f"init (W0, H0) must have shapes {(m, rank)} and {(rank, n)}, got "
            f"{tuple(W.shape)} and {tuple(H.shape)}"
        )
    if not (bool(torch.isfinite(W).all()) and bool(torch.isfinite(H).all())):
        raise ValueError("init (W0, H0) must be finite")
    if nonnegative:
        W.clamp_(min=0)
        H.clamp_(min=0)
    return W, H


def initial_factors_of_rows(
    A: Tensor,
    rank: int,
    init: Union[str, Tuple[Tensor, Tensor]],
    gen: torch.Generator,
    nonnegative: bool,
    row0: int,
    m_total: int,
) -> Tuple[Tensor, Tensor]:
    """This rank's rows ``[row0, row0 + m)`` of W (m, k), and H (k, n), for ``m_total`` rows in all.

    Every rank draws the same global W and H and keeps its rows, so a world of any
    size starts where one process does.

    Parameters
    ----------
    A : Tensor, (m, n)
        This rank's rows of the data.
    rank, init, gen, nonnegative : see :func:`initial_factors`; a distributed
        ``init`` is "random" or a pair whose W0 has this rank's rows or all rows.
    row0, m_total : int
        This rank's first global row, and the global row count.
    """
    m, n = A.shape
    if m == m_total:
        return initial_factors(A, rank, init, gen, nonnegative=nonnegative)
    if isinstance(init, str) and init != "random":
        raise ValueError(f"distributed factorize supports init='random' or a pair (W0, H0), got {init!r}")
    if isinstance(init, str):
        proxy = A.new_empty((1, 1)).expand(m_total, n)  # only shape, dtype and device are read
        W, H = initial_factors(proxy, rank, init, gen, nonnegative=nonnegative)
        return W[row0:row0 + m].contiguous(), H
    W0 = torch.as_tensor(init[0])
    if W0.shape[0] == m_total:  # all rows given: keep this rank's
        init = (W0[row0:row0 + m], init[1])
    return initial_factors(A, rank, init, gen, nonnegative=nonnegative)
