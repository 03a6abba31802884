"""The update rules of :func:`mfext.factorize`: Adam, gradient descent and ALS.

Each rule is a small "stepper" that owns the current factors and does one
iteration per :meth:`step`. The objective they all minimize is

    loss = (sum(weight * (A - W @ H)**2) + reg * (|W|_F**2 + |H|_F**2)) / denom

with ``denom = 1`` (``reduction="sum"``) or ``sum(weight)`` (``"mean"``; ``m * n``
without weights, which is ``mse_loss``). The backend only decides how the data
term and its gradients are computed: the fused op (``backend="fused"``) or the
autograd reference (``"autograd"``); the update rules are shared, so both
backends follow the same trajectory.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor

from . import reference
from ._als import als_half_step
from ._problem import Problem
from .ops import dense_loss_grad

__all__ = ["ADAM_DEFAULT_LR", "LossOverflow", "Objective", "AdamStepper", "GDStepper", "LineSearchGDStepper", "ALSStepper"]

# What a step hands to the loop at a logged iteration: the loss (0-dim, still on
# the device) and the factors it belongs to (tensors the stepper will not mutate).
Logged = Tuple[Tensor, Tensor, Tensor]

#: The reference loop's learning rate.
ADAM_DEFAULT_LR = 0.01


class LossOverflow(ArithmeticError):
    """The data loss does not fit the factors' dtype (the fused op refuses to round it to Inf)."""


def _guard_overflow(fn: Callable, *args):
    try:
        return fn(*args)
    except RuntimeError as exc:
        # The CPU op accumulates in float64 and fails to convert a loss beyond the
        # float32 range; for the loop that is an infinite loss.
        if "overflow" in str(exc):
            raise LossOverflow(str(exc)) from exc
        raise


class Objective:
    """The loss, its gradients and the projection, for one problem and backend.

    Parameters
    ----------
    problem : Problem
    reg : float
        L2 regularization on W and H (inside the reduction).
    nonnegative : bool
        Project the factors on ``>= 0`` after every gradient step.
    backend : "fused" or "autograd"
    comm : mfext.distributed.Communicator, optional
        When distributed, ``problem.A`` and W are this rank's rows and H is
        replicated: the data loss, grad_H and sums over W are summed over ranks,
        so every rank sees the global objective and updates H identically.
    """

    def __init__(self, problem: Problem, reg: float, nonnegative: bool, backend: str, comm=None):
        from .distributed import Communicator

        self.comm = comm if comm is not None else Communicator(None)
        self.A = problem.A
        self.weight = problem.weight
        self.scale = 1.0 / problem.denom
        self.reg = reg
        self.nonnegative = nonnegative
        self.backend = backend
        self._loss_grad: Callable = dense_loss_grad if backend == "fused" else reference.dense_loss_grad

    def data_loss_grad(self, W: Tensor, H: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Unreduced ``sum(weight * (A - W H)^2)`` (0-dim), grad_W (m, k), grad_H (k, n).

        Raises :class:`LossOverflow` when the loss overflows the dtype.
        """
        data, gW, gH = _guard_overflow(self._loss_grad, self.A, W, H, self.weight)
        self.comm.all_reduce_sum_([data, gH], "all_reduce(loss, grad_H)")
        return data, gW, gH

    def data_loss(self, W: Tensor, H: Tensor) -> Tensor:
        """The unreduced data term only (0-dim)."""
        if self.backend == "fused":
            data = _guard_overflow(dense_loss_grad, self.A, W, H, self.weight)[0]
        else:
            with torch.no_grad():
                data = reference.dense_loss(self.A, W, H, self.weight)
        self.comm.all_reduce_sum_([data], "all_reduce(loss)")
        return data

    def sq_norm_W(self, W: Tensor) -> Tensor:
        """``|W|_F^2`` over every rank's rows (0-dim)."""
        total = W.square().sum()
        self.comm.all_reduce_sum_([total], "all_reduce(|W|^2)")
        return total

    def total(self, data: Tensor, W: Tensor, H: Tensor) -> Tensor:
        """The objective from its data term: adds the regularization and reduces (0-dim)."""
        if self.reg:
            data = data + self.reg * (self.sq_norm_W(W) + H.square().sum())
        return data * self.scale

    def objective_grads_(self, gW: Tensor, gH: Tensor, W: Tensor, H: Tensor) -> None:
        """Turns the data gradients into the objective's, in place: ``(g + 2 reg X) / denom``."""
        gW.mul_(self.scale)
        gH.mul_(self.scale)
        if self.reg:
            gW.add_(W, alpha=2.0 * self.reg * self.scale)
            gH.add_(H, alpha=2.0 * self.reg * self.scale)

    def project_(self, W: Tensor, H: Tensor) -> None:
        if self.nonnegative:
            W.clamp_(min=0)
            H.clamp_(min=0)


class Stepper:
    """One update rule. Subclasses set ``W`` (m, k), ``H`` (k, n) and ``lr``."""

    #: True when the loss a step logs is the loss *after* its update (ALS);
    #: False when it is the loss at the factors the step started from (Adam, GD).
    logs_after_step = False
    #: Set when the rule cannot make progress any more (line search exhausted).
    stalled = False
    lr: Optional[float] = None

    def __init__(self, objective: Objective, W: Tensor, H: Tensor):
        self.obj = objective
        self.W = W
        self.H = H

    def step(self, log: bool) -> Optional[Logged]:  # pragma: no cover - abstract
        raise NotImplementedError

    def final_loss(self) -> Tensor:
        """The objective at the current factors (0-dim)."""
        return self.obj.total(self.obj.data_loss(self.W, self.H), self.W, self.H)


def _make_adam(params: List[Tensor], lr: float) -> torch.optim.Optimizer:
    """torch's Adam, fused where this build supports it, else foreach, else plain."""
    for kwargs in ({"fused": True}, {"foreach": True}, {}):
        try:
            return torch.optim.Adam(params, lr=lr, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            continue
    raise RuntimeError("mfext.factorize: torch.optim.Adam could not be constructed")  # pragma: no cover


class AdamStepper(Stepper):
    """Adam on the fused (or autograd) gradients, stepped in place.

    With the defaults this is the reference loop: the gradients of the mean
    loss, ``torch.optim.Adam(lr)``; the non-negative mode clamps after each step.
    """

    def __init__(self, objective: Objective, W: Tensor, H: Tensor, lr: float):
        super().__init__(objective, W, H)
        self.lr = lr
        self.opt = _make_adam([W, H], lr)

    def step(self, log: bool) -> Optional[Logged]:
        W, H, obj = self.W, self.H, self.obj
        data, gW, gH = obj.data_loss_grad(W, H)
        logged = (obj.total(data, W, H), W.clone(), H.clone()) if log else None
        obj.objective_grads_(gW, gH, W, H)
        W.grad, H.grad = gW, gH
        self.opt.step()
        W.grad = H.grad = None
        obj.project_(W, H)
        return logged


class GDStepper(Stepper):
    """Gradient descent with a fixed step ``lr`` (projected in non-negative mode)."""

    def __init__(self, objective: Objective, W: Tensor, H: Tensor, lr: float):
        super().__init__(objective, W, H)
        self.lr = lr

    def step(self, log: bool) -> Optional[Logged]:
        W, H, obj = self.W, self.H, self.obj
        data, gW, gH = obj.data_loss_grad(W, H)
        logged = (obj.total(data, W, H), W.clone(), H.clone()) if log else None
        obj.objective_grads_(gW, gH, W, H)
        W.sub_(gW, alpha=self.lr)
        H.sub_(gH, alpha=self.lr)
        obj.project_(W, H)
        return logged


class LineSearchGDStepper(Stepper):
    """Gradient descent with a backtracking (Armijo) line search.

    Each iteration tries ``X' = P(X - t g)`` (P: the projection on ``>= 0`` in
    non-negative mode, else the identity) and accepts it when
    ``f(X') <= f(X) - c |X' - X|^2 / t``; otherwise it halves ``t`` and tries
    again. An accepted step doubles ``t`` for the next iteration. Every trial is
    one fused loss-and-gradient call, and the accepted trial's gradients are
    reused, so an iteration usually costs one or two calls. The test needs the
    loss on the host, so this rule synchronizes on every trial.
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
        try:
            data, gW, gH = self.obj.data_loss_grad(W, H)
        except LossOverflow:
            return math.inf  # a rejected trial
        self._f_tensor = self.obj.total(data, W, H)
        self.obj.objective_grads_(gW, gH, W, H)
        self._trial = (W, H, gW, gH, self._f_tensor)
        return float(self._f_tensor)

    def step(self, log: bool) -> Optional[Logged]:
        W, H, _, _, f_tensor = self._trial
        gW, gH = self._trial[2], self._trial[3]
        f = float(f_tensor)
        logged = (f_tensor, W.clone(), H.clone()) if log else None
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
                return logged
            t *= 0.5
        # No step decreases the loss: a stationary point to working precision.
        self._trial = (W, H, gW, gH, f_tensor)
        self.stalled = True
        return logged

    def final_loss(self) -> Tensor:
        return self._trial[4]


class ALSStepper(Stepper):
    """Alternating least squares: the rows of W, then the columns of H, in closed form.

    Each half-step solves the k×k regularized normal equations of every row (or
    column) in one batch (:func:`mfext._als.als_half_step`): one shared Cholesky
    factorization without weights, a batch of them with weights or missing
    entries. In non-negative mode each half-step solves the non-negative
    least-squares problems by warm-started coordinate descent (NNLS, not a
    projection of the unconstrained solution).

    The fused backend gets the loss after each iteration from the normal
    equations' by-products (``sum w A^2 - 2 <rhs, X> + X^T G X``, accumulated in
    float64), with no pass over the residual; the autograd backend evaluates the
    reference loss on the residual instead (at logged iterations).
    """

    logs_after_step = True

    def __init__(self, objective: Objective, W: Tensor, H: Tensor, nnls_sweeps: int = 3):
        super().__init__(objective, W, H)
        A, w = objective.A, objective.weight
        self.sweeps = nnls_sweeps
        self.wA = None if w is None else w * A
        # sum(w * A^2) in float64, for the loss identity.
        if w is None:
            # Row norms in the data's dtype, summed in float64: one fast pass,
            # accurate to ~1e-8 (a float64 cast of A would cost a slow pass).
            self.aa = torch.linalg.vector_norm(A, dim=1).to(torch.float64).square().sum()
        else:
            self.aa = torch.sum(self.wA * A, dtype=torch.float64)
        objective.comm.all_reduce_sum_([self.aa], "all_reduce(sum w A^2)")
        # Distributed: H's normal equations are summed over the ranks' rows.
        self._reduce = (
            (lambda ts: objective.comm.all_reduce_sum_(ts, "all_reduce(ALS normal equations)"))
            if objective.comm.distributed else None
        )
        self._loss: Optional[Tensor] = None
        self.obj.project_(self.W, self.H)

    def step(self, log: bool) -> Optional[Logged]:
        obj = self.obj
        A, w, wA, reg = obj.A, obj.weight, self.wA, obj.reg
        nonneg = obj.nonnegative
        W, _, _ = als_half_step(A, self.H.t(), self.W, reg, w, wA,
                                nonnegative=nonneg, sweeps=self.sweeps)
        Ht, cross, quad = als_half_step(
            A.t(), W, self.H.t(), reg, None if w is None else w.t(),
            None if wA is None else wA.t(), nonnegative=nonneg, sweeps=self.sweeps,
            reduce=self._reduce,
        )
        self.W, self.H = W, Ht.t()
        if obj.backend == "fused":
            data = self.aa - 2.0 * cross + quad
            self._loss = obj.total(data.clamp_min(0), W.double(), Ht.double())
        else:
            self._loss = None  # evaluated on the residual when asked
        if not log:
            return None
        return self.final_loss(), self.W, self.H

    def final_loss(self) -> Tensor:
        if self._loss is None:
            self._loss = super().final_loss()
        return self._loss
