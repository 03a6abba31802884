"""The explicit-ratings solvers of :class:`~mfext.recommenders.MatrixFactorization`.

This module owns the per-epoch math: the factors (:class:`Factors`), the
training ratings (:class:`RatingsProblem`), their initialization, the SGD, ALS
and Adam solvers (one object each, one ``epoch`` method; :class:`RatingsSolver`
makes each a solver of the shared loop), the closed-form row solve
(:func:`ratings_half_step`, also behind ``fold_in``) and the prediction of
known entries. It leaves the loop (history, validation, early stopping,
divergence) to :mod:`mfext.training` (driven by
:mod:`mfext.recommenders.fitting`), the data-parallel variants to
:mod:`mfext.recommenders.distributed_solvers`, and input checks to
:mod:`mfext.recommenders.inputs`.

All three fit ``r ~ mu + b_u + b_i + w_u . h_i`` (or ``w_u . h_i`` without
biases) to the observed ratings. They share one objective family::

    sum_e (r_e - pred_e)^2 + reg * sum_u n_u^a |w_u|^2 + reg * sum_i n_i^a |h_i|^2
                          + bias_reg * (sum_u n_u^a b_u^2 + sum_i n_i^a b_i^2)

with ``n_u`` the number of training ratings of user ``u``. SGD with per-rating
regularization (Funk/Koren) and full-batch Adam minimize it with ``a = 1``; ALS
uses ``a = als_reg_exponent`` (0.75 by default, tuned on MovieLens).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from .. import cf_ops
from ..ops import sparse_loss_grad
from ..ops.implicit import implicit_als_cg_
from ..training import Report, Solver
from .inputs import csr_by


@dataclass
class Factors:
    """W (m, k), Ht (n, k) (H transposed, rows contiguous), bu (m,), bi (n,)."""

    W: Tensor
    Ht: Tensor
    bu: Tensor
    bi: Tensor

    def clone(self) -> "Factors":
        return Factors(self.W.clone(), self.Ht.clone(), self.bu.clone(), self.bi.clone())

    def is_finite(self) -> bool:
        """Whether every value is finite: the min and max of each tensor, in one pass.

        Both propagate NaN and an infinity is one of them, so the test is exact;
        it reads each tensor once, where ``isfinite(t).all()`` also writes a
        mask of the tensor's size (about 1 ms for a (6040, 128) factor).
        """
        for t in (self.W, self.Ht, self.bu, self.bi):
            if t.numel():
                lo, hi = torch.aminmax(t)
                if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
                    return False
        return True

    def copy_(self, other: "Factors") -> None:
        """Overwrite these tensors, in place, with ``other``'s values."""
        for dst, src in ((self.W, other.W), (self.Ht, other.Ht), (self.bu, other.bu),
                         (self.bi, other.bi)):
            dst.copy_(src)


@dataclass
class RatingsProblem:
    """Training ratings on the model's device and dtype (canonical order)."""

    rows: Tensor   # (nnz,) int32 (int64 when an id reaches 2**31)
    cols: Tensor   # (nnz,) int32 (int64 when an id reaches 2**31)
    vals: Tensor   # (nnz,) model dtype
    m: int
    n: int
    mu: float      # global mean (0 without biases)
    biases: bool
    nonnegative: bool


def init_factors(p: RatingsProblem, rank: int, init_std: float, gen: torch.Generator,
                 dtype: torch.dtype, device: torch.device) -> Factors:
    """N(0, init_std) factors (|N| when nonnegative), zero biases; drawn on the CPU.

    Users and items without training ratings start (and stay, under every
    solver) at zero, so they predict from the other side's bias.
    """
    W = torch.randn(p.m, rank, generator=gen, dtype=torch.float64) * init_std
    Ht = torch.randn(p.n, rank, generator=gen, dtype=torch.float64) * init_std
    if p.nonnegative:
        W, Ht = W.abs(), Ht.abs()
    W[torch.bincount(p.rows.cpu(), minlength=p.m) == 0] = 0
    Ht[torch.bincount(p.cols.cpu(), minlength=p.n) == 0] = 0
    return Factors(W.to(device=device, dtype=dtype).contiguous(),
                   Ht.to(device=device, dtype=dtype).contiguous(),
                   torch.zeros(p.m, dtype=dtype, device=device),
                   torch.zeros(p.n, dtype=dtype, device=device))


# Ratings a chunk of the exact training error: its float64 temporaries stay at
# 32 MiB each instead of 8 bytes a rating (2.4 GB at 100M ratings).
SSE_CHUNK = 1 << 22


class RatingsSolver(Solver):
    """An explicit-ratings solver as a :class:`mfext.training.Solver`: one epoch per step.

    A subclass sets ``p`` (:class:`RatingsProblem`) and ``f`` (:class:`Factors`,
    updated in place) and implements ``epoch(t)``: one epoch (from 0), returning
    the sum of squared training errors it measured (SGD: before each update;
    Adam: before its step) or None (ALS: then :meth:`step` measures it after the
    update). Every epoch is logged: its :class:`~mfext.training.Report` carries
    the training RMSE (NaN when a factor is not finite, which the loop treats
    as divergence) and a copy of the factors.
    """

    logs_after_step = True
    #: Set by the data-parallel solvers: training errors are then summed over ranks.
    comm: Optional[Any] = None
    #: Ratings over every rank (data-parallel); None: ``p``'s.
    nnz_total: Optional[float] = None
    p: RatingsProblem
    f: Factors

    def epoch(self, t: int) -> Optional[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, iteration: int, log: bool) -> Report:
        sse = self.epoch(iteration)
        f, p = self.f, self.p
        if sse is None:  # ALS: measure the training error exactly (on every rank, even at a NaN)
            sse = 0.0
            for i in range(0, p.rows.numel(), SSE_CHUNK):  # float64 a chunk at a time
                j = i + SSE_CHUNK
                pred = predict_entries(f, p.mu, p.biases, p.rows[i:j], p.cols[i:j])
                sse += float((pred.double() - p.vals[i:j].double()).square().sum())
            if self.comm is not None:
                sse = self.comm.sum_scalar(sse, "training error")
        nnz = float(p.rows.numel()) if self.nnz_total is None else self.nnz_total
        finite = f.is_finite() and math.isfinite(sse)
        return Report(math.sqrt(sse / nnz) if finite else math.nan, f.clone())

    def snapshot(self) -> Factors:
        return self.f.clone()

    def restore(self, snapshot: Factors) -> None:
        self.f.copy_(snapshot)


# Lanes of the CPU's blocked order (interleave): measured on ML-1M (k = 64) and
# at 10M ratings (k = 128), 4 lanes beat both the plain (user, item) order and
# a random order; 8 lanes gained at 10M and lost on ML-1M.
SGD_LANES = 4

# Row and column groups of the blocked GPU schedule (deterministic mode): one
# warp per block, so P warps run at once; P strata (launches) per epoch.
GPU_DETERMINISTIC_GROUPS = 128


def l2_cache_bytes() -> int:
    """One core's L2 cache (bytes, from Linux's sysfs), or 1 MiB when the system does not say."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            with open(os.path.join(base, entry, "level")) as f:
                if f.read().strip() != "2":
                    continue
            with open(os.path.join(base, entry, "size")) as f:
                text = f.read().strip().upper()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            return int(text.rstrip("KMG")) * scale
    except (OSError, ValueError):
        pass
    return 2**20


def cpu_groups(n_items: int, rank: int, itemsize: int, n_threads: int) -> int:
    """P of the CPU's blocked SGD: a block's item rows (n_items / P of them) take at most
    half of a core's L2 cache; at least 8 and 2 per thread (LIBMF's rule)."""
    row = (rank + 1) * itemsize  # a factor row and its bias
    fit = math.ceil(n_items * row / (l2_cache_bytes() // 2))
    return max(8, 2 * n_threads, fit)


def interleave(order: Tensor, block_ptr: Tensor, lanes: int,
               chunk: int = 1 << 22) -> Tensor:
    """``order`` (nnz,), in place, with each block's run dealt into ``lanes`` lanes read in turn.

    A block [o, o + L) is cut into ``lanes`` consecutive runs of c = ceil(L / lanes);
    the new order takes the first entry of each run, then the second of each, and
    so on. Consecutive updates then come from different runs, so from different
    users (in (user, item) order an update would wait for the previous one's
    write of the same user row), while each run still goes through its users in
    order and keeps their rows in L1. Done a range of whole blocks at a time
    (about ``chunk`` entries) in int32, so the scratch stays small at any nnz.
    """
    dev = block_ptr.device
    ptr = block_ptr.cpu()
    B = ptr.numel() - 1
    b0 = 0
    while b0 < B:
        # Whole blocks up to about `chunk` entries (at least one block).
        b1 = int(torch.searchsorted(ptr, ptr[b0] + chunk, right=True)) - 1
        b1 = min(B, max(b0 + 1, b1))
        o0, o1 = int(ptr[b0]), int(ptr[b1])
        if o1 > o0:
            lens = (block_ptr[b0 + 1:b1 + 1] - block_ptr[b0:b1]).to(torch.int32)  # (b,)
            c = (lens + lanes - 1) // lanes                                  # run length
            padded = torch.zeros(b1 - b0 + 1, dtype=torch.int32, device=dev)
            torch.cumsum(c * lanes, 0, out=padded[1:])                        # padded offsets
            blk = torch.repeat_interleave(torch.arange(b1 - b0, dtype=torch.int32,
                                                       device=dev), lens)
            j = torch.arange(o1 - o0, dtype=torch.int32, device=dev)
            j -= (block_ptr[b0:b1] - o0).to(torch.int32)[blk]                 # within block
            cb = c[blk]
            key = padded[blk] + (j % cb) * lanes + j // cb                    # padded slot
            del blk, j, cb
            slots = torch.full((int(padded[-1]),), -1, dtype=torch.int32, device=dev)
            slots[key] = torch.arange(o1 - o0, dtype=torch.int32, device=dev)
            del key
            order[o0:o1] = order[o0:o1][slots[slots >= 0]]  # in place, a chunk at a time
        b0 = b1
    return order


class SgdSolver(RatingsSolver):
    """Parallel SGD on :func:`mfext.cf_ops.sgd_epoch_`.

    CPU, and GPU under ``torch.use_deterministic_algorithms(True)``: blocked
    (LIBMF/DSGD style). Once per fit, users and items are dealt at random into
    P groups each and the ratings are sorted into the P x P blocks. Every
    epoch runs P strata of P blocks that share no user and no item, with a
    fresh random pairing of row and column groups and a fresh stratum order,
    so the result is the same for any thread count up to P / 2 and
    reproducible from the seed.

    On the CPU the blocks are sized for the cache, as LIBMF does:
    P = max(8, 2 * threads, the P at which a block's item rows take half of a
    core's L2 cache), and within a block the ratings keep their (user, item)
    order, so each user's ratings in the block run back to back while the
    user's row stays in L1 and the block's item rows stay in L2. (In a random
    order every update fetched a user row from memory: at 100M ratings the
    updates ran at a third of the speed.) On the GPU, P = 128 and the order
    within a block is random.

    GPU otherwise: Hogwild, as cuMF_SGD. The ratings are laid out once per fit
    in a random order and every epoch streams them through lock-free warps (one
    rating per warp at a time); the result depends on timing.

    The learning rate of epoch t (from 0) is ``lr * lr_decay ** t``.
    """

    def __init__(self, p: RatingsProblem, f: Factors, *, lr: float, lr_decay: float, reg: float,
                 bias_reg: float, gen: torch.Generator, n_threads: int):
        self.p, self.f, self.gen = p, f, gen
        self.lr, self.lr_decay, self.reg, self.bias_reg = lr, lr_decay, reg, bias_reg
        dev = p.rows.device
        on_gpu = dev.type == "cuda"
        self.hogwild = on_gpu and not torch.are_deterministic_algorithms_enabled()
        if self.hogwild:
            P = 1  # one block: a random order of all ratings
        elif on_gpu:
            P = GPU_DETERMINISTIC_GROUPS
        else:
            P = cpu_groups(p.n, f.W.shape[1], f.W.element_size(), n_threads)
        self.P = P
        # Every (nnz,) temporary in int32 (P * P < 2**31 blocks), and each freed as
        # soon as the next exists: at 100M ratings each int64 one is 0.8 GB.
        user_group = (torch.randperm(p.m, generator=gen) % P).to(dev, torch.int32)
        item_group = (torch.randperm(p.n, generator=gen) % P).to(dev, torch.int32)
        if on_gpu:  # a random order within each block
            perm = torch.randperm(p.rows.numel(), generator=gen).to(dev)
            block = user_group[p.rows[perm]]
            block.mul_(P).add_(item_group[p.cols[perm]])
            self.block_ptr, within = csr_by(block, P * P)
            del block
            order = perm[within]
            del perm, within
        else:  # the canonical (user, item) order within each block (a stable sort)
            block = user_group[p.rows]
            block.mul_(P).add_(item_group[p.cols])
            self.block_ptr, order = csr_by(block, P * P)
            del block
            order = interleave(order, self.block_ptr, SGD_LANES)
        idx = torch.int32 if max(p.m, p.n) < 2**31 else torch.int64
        # Data laid out in processing order: the kernel streams it (order=None).
        self.rows = p.rows[order].to(idx)
        self.cols = p.cols[order].to(idx)
        self.vals = p.vals[order].contiguous()

    def schedule(self) -> Tensor:
        P = self.P
        col_perm = torch.randperm(P, generator=self.gen)
        strata = torch.randperm(P, generator=self.gen)
        t = torch.arange(P)
        sched = (t * P)[None, :] + col_perm[(t[None, :] + strata[:, None]) % P]
        return sched.to(self.rows.device)

    def epoch(self, t: int) -> float:
        """One epoch; returns the sum of squared errors seen before each update."""
        f, p = self.f, self.p
        blocked = {} if self.hogwild else {"block_ptr": self.block_ptr,
                                           "schedule": self.schedule()}
        sse = cf_ops.sgd_epoch_(
            f.W, f.Ht, f.bu, f.bi, self.rows, self.cols, self.vals, **blocked,
            lr=self.lr * self.lr_decay ** t, reg=self.reg, bias_reg=self.bias_reg,
            global_mean=p.mu, use_biases=p.biases, nonnegative=p.nonnegative)
        return float(sse)


class AlsSolver(RatingsSolver):
    """Alternating least squares on :func:`mfext.cf_ops.als_solve`.

    Biases ride along as an augmented factor: solving for users, the item side
    is ``[h_i, 1]`` with targets ``r - mu - b_i`` and the unknown is
    ``[w_u, b_u]`` (regularized by ``reg`` and ``bias_reg``); items likewise.
    ``nonnegative`` clamps each solution at 0 (a heuristic, not an NNLS solve).
    """

    def __init__(self, p: RatingsProblem, f: Factors, *, reg: float, bias_reg: float,
                 exponent: float, cg_steps: Optional[int] = None):
        self.p, self.f, self.exponent, self.cg_steps = p, f, exponent, cg_steps
        k = f.W.shape[1]
        dev, dtype = p.vals.device, p.vals.dtype
        idx = torch.int32 if max(p.m, p.n) < 2**31 else torch.int64
        target = p.vals - p.mu
        # The ratings are in canonical (user, item) order, so the user CSR is the
        # user counts and the arrays themselves: no sort and no copy.
        self.u_indptr = torch.zeros(p.m + 1, dtype=torch.int64, device=dev)
        torch.cumsum(torch.bincount(p.rows, minlength=p.m), 0, out=self.u_indptr[1:])
        self.u_items, self.u_vals = p.cols.to(idx), target
        self.i_indptr, order = csr_by(p.cols, p.n)
        self.i_users, self.i_vals = p.rows[order].to(idx), target[order]
        del order
        self.reg_diag = reg_diagonal(k, reg, bias_reg, p.biases, dtype, dev)
        if cg_steps is not None:
            # CG: weight 1 on every entry, each row's ridge reg_diag * n^exponent.
            self.ones = torch.ones(1, dtype=dtype, device=dev).expand(p.vals.numel())
            self.u_scale = _ridge_scale(self.u_indptr, exponent, dtype)
            self.i_scale = _ridge_scale(self.i_indptr, exponent, dtype)

    def _half(self, indptr: Tensor, idx: Tensor, vals: Tensor, other: Tensor,
              other_bias: Tensor, x: Optional[Tensor] = None, x_bias: Optional[Tensor] = None,
              scale: Optional[Tensor] = None):
        if self.cg_steps is None:
            return ratings_half_step(indptr, idx, vals, other, other_bias, self.reg_diag,
                                     self.exponent, self.p.biases, self.p.nonnegative)
        return ratings_cg_half_step(indptr, idx, vals, other, other_bias, x, x_bias,
                                    self.reg_diag, scale, self.ones, self.cg_steps,
                                    self.p.biases, self.p.nonnegative)

    def _items(self) -> tuple[Tensor, Optional[Tensor]]:
        """Item factors (n, k) and biases (n,) or None, the users fixed."""
        f = self.f
        return self._half(self.i_indptr, self.i_users, self.i_vals, f.W, f.bu, f.Ht, f.bi,
                          getattr(self, "i_scale", None))

    def epoch(self, t: int) -> None:
        """One epoch: the users, then the items; returns None (no error measured)."""
        f = self.f
        W, bu = self._half(self.u_indptr, self.u_items, self.u_vals, f.Ht, f.bi, f.W, f.bu,
                           getattr(self, "u_scale", None))
        f.W.copy_(W)
        if bu is not None:
            f.bu.copy_(bu)
        Ht, bi = self._items()
        f.Ht.copy_(Ht)
        if bi is not None:
            f.bi.copy_(bi)


def reg_diagonal(k: int, reg: float, bias_reg: float, biases: bool, dtype: torch.dtype,
                 device: torch.device) -> Tensor:
    """(k,) or (k + 1,): the ridge of each unknown, the bias last."""
    d = k + 1 if biases else k
    diag = torch.full((d,), reg, dtype=dtype, device=device)
    if biases:
        diag[k] = bias_reg
    return diag


def ratings_half_step(indptr: Tensor, idx: Tensor, vals: Tensor, other: Tensor,
                      other_bias: Tensor, reg_diag: Tensor, exponent: float, biases: bool,
                      nonnegative: bool) -> tuple[Tensor, Optional[Tensor]]:
    """Solve one side with the other fixed: factors (R, k) and biases (R,) or None.

    indptr (R + 1,), idx (nnz,) and vals (nnz,) are the CSR of this side's
    ratings, targets already minus the global mean; other: (n, k) and
    other_bias: (n,) the fixed side.
    """
    k = other.shape[1]
    if biases:
        F = torch.cat([other, torch.ones_like(other[:, :1])], 1)
        x = cf_ops.als_solve(indptr, idx, vals, F, other_bias, reg_diag, exponent)
        factors, bias = x[:, :k], x[:, k]
    else:
        factors = cf_ops.als_solve(indptr, idx, vals, other, None, reg_diag, exponent)
        bias = None
    if nonnegative:
        factors = factors.clamp_min(0)
    return factors, bias


def _ridge_scale(indptr: Tensor, exponent: float, dtype: torch.dtype) -> Tensor:
    """(R,) n_r ** exponent of each row's ratings; 0 for a row without any."""
    counts = (indptr[1:] - indptr[:-1]).to(dtype)
    scale = counts.clamp_min(1).pow(exponent)
    scale[counts == 0] = 0
    return scale


def ratings_cg_half_step(indptr: Tensor, idx: Tensor, vals: Tensor, other: Tensor,
                         other_bias: Tensor, x: Tensor, x_bias: Tensor, reg_diag: Tensor,
                         scale: Tensor, ones: Tensor, steps: int, biases: bool,
                         nonnegative: bool) -> tuple[Tensor, Optional[Tensor]]:
    """:func:`ratings_half_step` by ``steps`` CG steps from the current x (R, k), x_bias (R,).

    The same normal equations (``sum_e f f^T + diag(reg_diag) n^exponent``, with
    the biases as an augmented column), solved by the implicit-feedback CG
    kernel with weight 1 and the ratings (minus the other side's biases) as its
    target. A row without ratings gets 0, as in the exact solve.
    """
    k = other.shape[1]
    if biases:
        F = torch.cat([other, torch.ones_like(other[:, :1])], 1)  # (n, k + 1)
        X = torch.cat([x, x_bias[:, None]], 1)                      # (R, k + 1)
        target = vals - other_bias[idx]                              # (nnz,)
    else:
        F, X, target = other, x.clone(), vals
    implicit_als_cg_(X, indptr, idx, ones, F, reg_diag, steps, target=target, row_scale=scale)
    X[scale == 0] = 0
    factors = X[:, :k]
    if nonnegative:
        factors = factors.clamp_min(0)
    return factors, (X[:, k] if biases else None)


class AdamSolver(RatingsSolver):
    """Full-batch Adam on the fused :func:`mfext.sparse_loss_grad`.

    The objective is the shared one (exponent 1) divided by the number of
    ratings. Biases ride along as augmented columns: ``[W, b_u, 1]`` and
    ``[H_t, 1, b_i]``, so one fused call gives every gradient.
    """

    def __init__(self, p: RatingsProblem, f: Factors, *, lr: float, reg: float, bias_reg: float):
        self.p, self.f = p, f
        self.lr, self.reg, self.bias_reg = lr, reg, bias_reg
        self.target = (p.vals - p.mu).contiguous()
        dtype = p.vals.dtype
        self.n_u = torch.bincount(p.rows, minlength=p.m).to(dtype)[:, None]
        self.n_i = torch.bincount(p.cols, minlength=p.n).to(dtype)[:, None]
        self.scale = 1.0 / max(1, p.rows.numel())
        params = [f.W, f.Ht] + ([f.bu, f.bi] if p.biases else [])
        self.opt = torch.optim.Adam(params, lr=lr)

    def epoch(self, t: int) -> float:
        """One Adam step; returns the sum of squared errors before the step."""
        return self._epoch(t, None)

    def _epoch(self, t: int, reduce) -> float:
        """The step; ``reduce([loss, gHt])`` may sum the data loss and item gradients over ranks."""
        f, p = self.f, self.p
        k = f.W.shape[1]
        if p.biases:
            ones_u = torch.ones_like(f.bu)[:, None]
            ones_i = torch.ones_like(f.bi)[:, None]
            W_aug = torch.cat([f.W, f.bu[:, None], ones_u], 1)
            Ht_aug = torch.cat([f.Ht, ones_i, f.bi[:, None]], 1)
        else:
            W_aug, Ht_aug = f.W, f.Ht
        loss, gW, gH = sparse_loss_grad(p.rows, p.cols, self.target, W_aug, Ht_aug.t())
        gHt = gH.t()
        if reduce is not None:  # before the regularization, which each rank adds once
            reduce([loss, gHt])
        s, reg2 = self.scale, 2.0 * self.reg
        f.W.grad = (gW[:, :k] + reg2 * self.n_u * f.W) * s
        f.Ht.grad = (gHt[:, :k] + reg2 * self.n_i * f.Ht) * s
        if p.biases:
            breg2 = 2.0 * self.bias_reg
            f.bu.grad = (gW[:, k] + breg2 * self.n_u[:, 0] * f.bu) * s
            f.bi.grad = (gHt[:, k + 1] + breg2 * self.n_i[:, 0] * f.bi) * s
        self.opt.step()
        if p.nonnegative:
            f.W.clamp_min_(0)
            f.Ht.clamp_min_(0)
        return float(loss)


def entry_dots(W: Tensor, Ht: Tensor, rows: Tensor, cols: Tensor,
               chunk: int = 1 << 18) -> Tensor:
    """``W[rows[e]] . Ht[cols[e]]`` (s,): the fused op on CPU and CUDA, chunked torch elsewhere."""
    if W.device.type in ("cpu", "cuda"):
        return cf_ops.sparse_dot(rows, cols, W, Ht)
    out = torch.empty(rows.numel(), dtype=W.dtype, device=W.device)
    for s in range(0, rows.numel(), chunk):
        out[s:s + chunk] = (W[rows[s:s + chunk]] * Ht[cols[s:s + chunk]]).sum(1)
    return out


def predict_entries(f: Factors, mu: float, biases: bool, rows: Tensor, cols: Tensor) -> Tensor:
    """Predictions (s,) for known (rows, cols)."""
    pred = entry_dots(f.W, f.Ht, rows, cols)
    if biases:
        pred += mu + f.bu[rows] + f.bi[cols]
    return pred


def fold_in_users(f: Factors, mu: float, biases: bool, nonnegative: bool, rows: Tensor,
                  cols: Tensor, vals: Tensor, n_new: int, *, reg: float, bias_reg: float,
                  exponent: float) -> tuple[Tensor, Optional[Tensor]]:
    """Closed-form factors (n_new, k) and biases (n_new,) of new users, items fixed."""
    indptr, order = csr_by(rows, n_new)
    idx = cols[order].to(torch.int32 if f.Ht.shape[0] < 2**31 else torch.int64)
    target = (vals - mu)[order].contiguous()
    diag = reg_diagonal(f.W.shape[1], reg, bias_reg, biases, f.W.dtype, f.W.device)
    return ratings_half_step(indptr, idx, target, f.Ht, f.bi, diag, exponent, biases,
                             nonnegative)
