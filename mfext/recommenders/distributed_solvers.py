"""Data-parallel solvers for :class:`mfext.MatrixFactorization` on torch.distributed.

This module owns what changes when the ratings are split over ranks; the
single-process math stays in :mod:`mfext.recommenders.solvers` and the process
group plumbing in :mod:`mfext.distributed` (which knows no model). Each solver
is a :class:`~mfext.recommenders.solvers.RatingsSolver` of the shared loop
(:mod:`mfext.training`) whose training error and rating count are global.

Each rank holds the ratings of a block of users with their rows of W and their
biases; the item factors Ht and biases are replicated. Per epoch:

- ``adam``: the item gradients and the loss are all-reduced (every rank then takes
  the same Adam step on the items);
- ``als``: users are solved locally; each item's normal equations (Gram and
  right-hand side) are summed over ranks, regularized with the global rating
  counts and solved on every rank;
- ``sgd``: DSGD. The items are dealt into one group per rank; in sub-epoch ``s``
  rank ``r`` runs the blocked SGD kernel on its ratings of item group
  ``(r + s) mod R`` only, so no two ranks ever update the same user or item row
  at once; after each sub-epoch the updated item groups are exchanged.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .. import cf_ops
from . import solvers
from .inputs import csr_by
from ..distributed import Communicator

__all__ = ["DistributedAdamSolver", "DistributedAlsSolver", "DsgdSolver", "global_item_counts"]


def global_item_counts(p: solvers.RatingsProblem, comm: Communicator) -> Tensor:
    """Ratings per item over every rank, (n,) int64."""
    counts = torch.bincount(p.cols, minlength=p.n).to(torch.float64)
    comm.all_reduce_sum_([counts], "all_reduce(item counts)")
    return counts.round().to(torch.int64)


class DistributedAdamSolver(solvers.AdamSolver):
    """Full-batch Adam; the item gradients and the loss are summed over ranks."""

    def __init__(self, p: solvers.RatingsProblem, f: solvers.Factors, comm: Communicator, *,
                 nnz_total: int, item_counts: Tensor, **kwargs):
        super().__init__(p, f, **kwargs)
        self.comm = comm
        self.nnz_total = float(nnz_total)
        self.scale = 1.0 / max(1, nnz_total)
        self.n_i = item_counts.to(p.vals.dtype)[:, None]

    def _reduce_item_grads(self, parts: List[Tensor]) -> None:
        self.comm.all_reduce_sum_(parts, "all_reduce(loss, item gradients)")

    def epoch(self, t: int) -> float:
        return self._epoch(t, self._reduce_item_grads)


class DistributedAlsSolver(solvers.AlsSolver):
    """ALS with the items' normal equations summed over ranks."""

    def __init__(self, p: solvers.RatingsProblem, f: solvers.Factors, comm: Communicator, *,
                 item_counts: Tensor, **kwargs):
        super().__init__(p, f, **kwargs)
        self.comm = comm
        self.nnz_total = comm.sum_scalar(float(p.rows.numel()), "rating count")
        self.item_counts = item_counts.to(p.vals.dtype)
        local = self.i_indptr[1:] - self.i_indptr[:-1]
        self.item_absent_here = local == 0  # their local "gram = I" must not be summed

    def _items(self) -> tuple[Tensor, Optional[Tensor]]:
        f, p = self.f, self.p
        k = f.W.shape[1]
        F = torch.cat([f.W, torch.ones_like(f.W[:, :1])], 1) if p.biases else f.W
        offset = f.bu if p.biases else None
        zero_reg = torch.zeros_like(self.reg_diag)
        gram, rhs = cf_ops.als_normal_equations(self.i_indptr, self.i_users, self.i_vals, F,
                                                offset, zero_reg, 0.0)
        gram[self.item_absent_here] = 0
        self.comm.all_reduce_sum_([gram, rhs], "all_reduce(ALS item normal equations)")
        ridge = self.reg_diag[None, :] * self.item_counts[:, None] ** self.exponent
        ridge[self.item_counts == 0] = 1.0  # unrated everywhere: solution 0
        gram.diagonal(dim1=-2, dim2=-1).add_(ridge)
        x = torch.linalg.solve(gram.double(), rhs.double().unsqueeze(-1)).squeeze(-1).to(rhs.dtype)
        factors = x[:, :k]
        if p.nonnegative:
            factors = factors.clamp_min(0)
        return factors, (x[:, k] if p.biases else None)


class DsgdSolver(solvers.RatingsSolver):
    """DSGD over ranks; blocked SGD (:class:`~mfext.recommenders.solvers.SgdSolver`) per rank."""

    def __init__(self, p: solvers.RatingsProblem, f: solvers.Factors, comm: Communicator, *,
                 gen: torch.Generator, **kwargs):
        self.p, self.f, self.comm = p, f, comm
        R = self.R = comm.world_size
        # The same item grouping on every rank: the generator is seeded alike.
        self.item_group = torch.randperm(p.n, generator=gen).to(p.cols.device) % R
        self.parts = []
        for g in range(R):
            mine = self.item_group[p.cols] == g
            sub = solvers.RatingsProblem(p.rows[mine], p.cols[mine], p.vals[mine], p.m, p.n,
                                         p.mu, p.biases, p.nonnegative)
            self.parts.append(solvers.SgdSolver(sub, f, gen=gen, **kwargs) if sub.rows.numel() else None)
        self.lr = kwargs.get("lr")
        self.nnz_total = comm.sum_scalar(float(p.rows.numel()), "rating count")

    def epoch(self, t: int) -> float:
        """One DSGD epoch (R sub-epochs); returns the training error summed over ranks."""
        f, comm, R = self.f, self.comm, self.R
        sse = torch.zeros(1, dtype=torch.float64)
        for s in range(R):
            g = (comm.rank + s) % R
            if self.parts[g] is not None:
                sse += self.parts[g].epoch(t)
            # Exchange the item group each rank just updated (disjoint groups): zero
            # the rows this rank did not own, then sum.
            owned = (self.item_group == g)[:, None].to(f.Ht.dtype)
            buf = torch.cat([f.Ht, f.bi[:, None]], 1) * owned
            comm.all_reduce_sum_([buf], "all_reduce(DSGD item groups)")
            f.Ht.copy_(buf[:, :-1])
            f.bi.copy_(buf[:, -1])
        comm.all_reduce_sum_([sse], "all_reduce(training error)")
        return float(sse)
