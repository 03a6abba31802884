"""The update rules of :func:`mfext.factorize`: Adam, gradient descent (fixed step or
line search) and ALS, each a :class:`mfext.training.Solver` of the shared loop.

Each rule owns the current factors W (m, k) and H (k, n) and does one
iteration per :meth:`DenseRule.step`. At a logged iteration it hands the loop
the reported loss (a 0-dim float64 tensor, still on the device) and the
factors it belongs to; at the others it reads nothing back from the device
(Adam and fixed-step GD never synchronize between logged iterations; the line
search needs the loss on the host at every trial).

The objective, its gradients and the reported loss are :class:`Objective`'s
(:mod:`mfext.dense.objective`), the batched least-squares solves live in
:mod:`mfext.dense.als`, and logging, stopping and the divergence guard in
:mod:`mfext.training`.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..training import LossOverflow, Report, Solver
from .als import dense_als_half_step
from .objective import Objective

__all__ = ["ADAM_DEFAULT_LR", "DenseRule", "AdamRule", "GDRule", "LineSearchGDRule", "ALSRule"]

#: The reference loop's learning rate.
ADAM_DEFAULT_LR = 0.01

# A snapshot of the factors: W (m, k), H (k, n), tensors no later step mutates.
Factors = Tuple[Tensor, Tensor]


class DenseRule(Solver):
    """One update rule of the dense problem. Subclasses set ``lr`` and implement ``step``.

    Parameters
    ----------
    objective : Objective
    W : Tensor, (m, k)
    H : Tensor, (k, n)
        The initial factors, owned (and, by Adam and GD, updated in place) from now on.
    """

    def __init__(self, objective: Objective, W: Tensor, H: Tensor):
        self.obj = objective
        self.W = W
        self.H = H

    def snapshot(self) -> Factors:
        return self.W.clone(), self.H.clone()

    def restore(self, snapshot: Factors) -> None:
        self.W, self.H = snapshot

    def final_loss(self) -> Tensor:
        """The objective at the current factors, as reported (0-dim float64)."""
        return self.obj.reported_loss(self.W, self.H)


def _make_adam(params: List[Tensor], lr: float) -> torch.optim.Optimizer:
    """torch's Adam, fused where this build supports it, else foreach, else plain."""
    for kwargs in ({"fused": True}, {"foreach": True}, {}):
        try:
            return torch.optim.Adam(params, lr=lr, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            continue
    raise RuntimeError("mfext.factorize: torch.optim.Adam could not be constructed")  # pragma: no cover


class AdamRule(DenseRule):
    """Adam on the fused (or autograd) gradients, stepped in place.

    With the defaults this is the reference loop: the gradients of the mean
    loss, ``torch.optim.Adam(lr)``; the non-negative mode clamps after each step.
    A logged iteration reports the loss at the factors it started from.
    """

    def __init__(self, objective: Objective, W: Tensor, H: Tensor, lr: float):
        super().__init__(objective, W, H)
        self.lr = lr
        self.opt = _make_adam([W, H], lr)

    def step(self, iteration: int, log: bool) -> Optional[Report]:
        W, H, obj = self.W, self.H, self.obj
        data, gW, gH = obj.data_loss_grad(W, H)
        report = Report(obj.reported_total(data, W, H), self.snapshot()) if log else None
        obj.objective_grads_(gW, gH, W, H)
        W.grad, H.grad = gW, gH
        self.opt.step()
        W.grad = H.grad = None
        obj.project_(W, H)
        return report


class GDRule(DenseRule):
    """Gradient descent with a fixed step ``lr`` (projected in non-negative mode)."""

    def __init__(self, objective: Objective, W: Tensor, H: Tensor, lr: float):
        super().__init__(objective, W, H)
        self.lr = lr

    def step(self, iteration: int, log: bool) -> Optional[Report]:
        W, H, obj = self.W, self.H, self.obj
        data, gW, gH = obj.data_loss_grad(W, H)
        report = Report(obj.reported_total(data, W, H), self.snapshot()) if log else None
        obj.objective_grads_(gW, gH, W, H)
        W.sub_(gW, alpha=self.lr)
        H.sub_(gH, alpha=self.lr)
        obj.project_(W, H)
        return report


class LineSearchGDRule(DenseRule):
    """Gradient descent with a backtracking (Armijo) line search.

    Each iteration tries ``X' = P(X - t g)`` (P: the projection on ``>= 0`` in
    non-negative mode, else the identity) and accepts it when
    ``f(X') <= f(X) - c |X' - X|^2 / t``; otherwise it halves ``t`` and tries
    again. An accepted step doubles ``t`` for the next iteration. Every trial is
    one fused loss-and-gradient call, and the accepted trial's gradients are
    reused, so an iteration usually costs one or two calls. The test needs the
    loss on the host, so this rule synchronizes on every trial. When no trial
    decreases the loss the rule sets ``stalled``.
    """

    ARMIJO = 1e-4
    MAX_TRIALS = 60

    def __init__(self, objective: Objective, W: Tensor, H: Tensor, lr: Optional[float]):
        super().__init__(objective, W, H)
        self._evaluate(W, H)
        if lr is None:
            # 1 / (a bound on the Lipschitz constant of one block's gradient); the
            # search corrects it within a few iterations either way.
            wmax = 1.0 if objective.weight is None else float(objective.weight.max())
            wmax = max(objective.comm.all_gather_objects(wmax, "max weight"))
            bound = 2.0 * objective.scale * wmax * (
                float(objective.sq_norm_W(W)) + float(H.square().sum()) + objective.reg
            )
            lr = 1.0 / bound if bound > 0 else 1.0
        self.lr = lr

    def _evaluate(self, W: Tensor, H: Tensor) -> float:
        """The objective at (W, H) on the host; keeps it and the gradients as the trial."""
        try:
            data, gW, gH = self.obj.data_loss_grad(W, H)
        except LossOverflow:
            return math.inf  # a rejected trial
        f_tensor = self.obj.total(data, W, H)
        self.obj.objective_grads_(gW, gH, W, H)
        self._trial = (W, H, gW, gH, f_tensor, data)
        return float(f_tensor)

    def step(self, iteration: int, log: bool) -> Optional[Report]:
        W, H, gW, gH, f_tensor, data = self._trial
        f = float(f_tensor)
        # W and H are replaced, never mutated, by this rule: no copy needed.
        report = Report(self.obj.reported_total(data, W, H), (W, H)) if log else None
        t = self.lr
        for _ in range(self.MAX_TRIALS):
            Wn = W - t * gW
            Hn = H - t * gH
            self.obj.project_(Wn, Hn)
            moved = float(self.obj.sq_norm_W(Wn - W) + (Hn - H).square().sum())
            if moved == 0.0:
                break
            fn = self._evaluate(Wn, Hn)
            if math.isfinite(fn) and fn <= f - self.ARMIJO * moved / t:
                self.W, self.H = Wn, Hn
                self.lr = 2.0 * t
                return report
            t *= 0.5
        # No step decreases the loss: a stationary point to working precision.
        self._trial = (W, H, gW, gH, f_tensor, data)
        self.stalled = True
        return report

    def final_loss(self) -> Tensor:
        W, H, _, _, _, data = self._trial
        if W is not self.W:  # restored to an earlier snapshot
            return super().final_loss()
        return self.obj.reported_total(data, W, H)


class ALSRule(DenseRule):
    """Alternating least squares: the rows of W, then the columns of H, in closed form.

    Each half-step solves the k×k regularized normal equations of every row (or
    column) in one batch (:func:`mfext.dense.als.dense_als_half_step`): one shared
    Cholesky factorization without weights, a batch of them with weights or
    missing entries. In non-negative mode each half-step solves the non-negative
    least-squares problems by warm-started coordinate descent (NNLS, not a
    projection of the unconstrained solution).

    Without regularization and sign constraints the objective depends on the
    factors only through ``W @ H``, so each half-step first replaces the fixed
    factor by an orthonormal basis of its span
    (:func:`mfext.dense.als.orthonormal_basis`): the same products ``W @ H`` as
    plain ALS, with well-conditioned normal equations. W leaves each iteration
    with orthonormal columns.

    The loss of a logged iteration is evaluated on the residual at the new
    factors (:meth:`Objective.reported_total`: the fused op, or a float64
    residual where float32 rounding could make the op's value inexact).
    """

    logs_after_step = True

    def __init__(self, objective: Objective, W: Tensor, H: Tensor, nnls_sweeps: int = 3):
        super().__init__(objective, W, H)
        A, w = objective.A, objective.weight
        self.sweeps = nnls_sweeps
        self.wA = None if w is None else w * A
        self._orthonormal = objective.reg == 0 and not objective.nonnegative
        # Distributed: H's normal equations are summed over the ranks' rows.
        self._reduce = (
            (lambda ts: objective.comm.all_reduce_sum_(ts, "all_reduce(ALS normal equations)"))
            if objective.comm.distributed else None
        )
        self._loss: Optional[Tensor] = None
        self.obj.project_(self.W, self.H)

    def step(self, iteration: int, log: bool) -> Optional[Report]:
        obj = self.obj
        A, w, wA, reg = obj.A, obj.weight, self.wA, obj.reg
        nonneg = obj.nonnegative
        W, Ht = dense_als_half_step(A, self.H.t(), self.W, reg, w, wA, nonnegative=nonneg,
                                    sweeps=self.sweeps, orthonormalize=self._orthonormal)
        Ht, W = dense_als_half_step(
            A.t(), W, Ht, reg, None if w is None else w.t(),
            None if wA is None else wA.t(), nonnegative=nonneg, sweeps=self.sweeps,
            reduce=self._reduce, orthonormalize=self._orthonormal,
        )
        self.W, self.H = W, Ht.t()
        self._loss = None
        if not log:
            return None
        # Each iteration makes new factors: the current ones are the snapshot.
        return Report(self.final_loss(), (self.W, self.H))

    def restore(self, snapshot: Factors) -> None:
        super().restore(snapshot)
        self._loss = None

    def final_loss(self) -> Tensor:
        if self._loss is None:
            self._loss = super().final_loss()
        return self._loss
