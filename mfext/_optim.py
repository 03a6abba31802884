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

# A reported float32 loss may differ from the true objective by this much
# (relative); beyond it the data term is recomputed from a float64 residual.
_REPORT_RTOL = 1e-3
# Elements of one float64 residual block in that recomputation.
_LOSS_BLOCK_ELEMENTS = 1 << 18


def _product_unit_roundoff(device: torch.device) -> float:
    """Relative error bound of one product term in the fused op's float32 residual.

    The CPU op runs float32 BLAS (2^-24). On CUDA, float32 runs 3xTF32 (float32
    accuracy up to the dropped low-low term: 2^-21 is a safe bound), or 1xTF32
    (inputs rounded to 10 mantissa bits) or bfloat16 when torch allows reduced
    precision matmuls.
    """
    if device.type != "cuda":
        return 2.0 ** -24
    precision = torch.get_float32_matmul_precision()
    if precision == "medium":
        return 2.0 ** -7
    if precision == "high" or torch.backends.cuda.matmul.allow_tf32:
        return 2.0 ** -10
    return 2.0 ** -21


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
        # (sum(w * A^2), max(w), entries) over every rank, for the float32 loss bound.
        self._bound_inputs: Optional[Tuple[float, float, float]] = None

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
        """``|W|_F^2`` over every rank's rows (0-dim, accumulated in float64)."""
        total = W.square().sum(dtype=torch.float64)
        self.comm.all_reduce_sum_([total], "all_reduce(|W|^2)")
        return total

    def total(self, data: Tensor, W: Tensor, H: Tensor) -> Tensor:
        """The objective from its data term: adds the regularization and reduces (0-dim float64)."""
        data = data.to(torch.float64)
        if self.reg:
            data = data + self.reg * (self.sq_norm_W(W) + H.square().sum(dtype=torch.float64))
        return data * self.scale

    def reported_total(self, data: Tensor, W: Tensor, H: Tensor) -> Tensor:
        """The objective to report (history, ``tol``, divergence guard, final loss), 0-dim float64.

        ``data`` is the backend's data term at (W, H). In float64 it is reported
        as is: the fused op forms the residual in float64 and accumulates in
        float64. In float32 the op's residual ``W @ H - A`` is rounded to float32,
        which near an exact fit is mostly rounding error; so the value is kept
        only when a bound on that error (:meth:`_certified`) proves it within
        0.1% of the true data term, and recomputed from a float64 residual
        (:meth:`data_loss_float64`) otherwise. The autograd backend's float32
        value (summed in float32) is always recomputed.
        """
        if self.A.dtype != torch.float64:
            if self.backend != "fused" or not self._certified(data, W, H):
                data = self.data_loss_float64(W, H)
        return self.total(data, W, H)

    def loss_resolution(self) -> float:
        """``eps^2 * sum(w * A^2) / denom``: the objective's resolution in the data's dtype.

        A residual whose root mean square is below one unit roundoff of the
        data's has a loss below this; two losses closer than this cannot be told
        apart by the data (the rounding of A alone moves the loss that much).
        """
        eps = torch.finfo(self.A.dtype).eps
        resolution = eps * eps * self._bound_terms()[0] * self.scale
        return resolution if math.isfinite(resolution) else 0.0  # |A|^2 beyond float64: no floor

    def reported_loss(self, W: Tensor, H: Tensor) -> Tensor:
        """The objective at (W, H) as :meth:`reported_total` reports it (0-dim float64)."""
        if self.A.dtype != torch.float64 and self.backend != "fused":
            return self.total(self.data_loss_float64(W, H), W, H)  # skip the float32 pass
        return self.reported_total(self.data_loss(W, H), W, H)

    def _bound_terms(self) -> Tuple[float, float, float]:
        """``sum(w * A^2)``, ``max(w)`` and the number of entries, over every rank."""
        if self._bound_inputs is None:
            A, w = self.A, self.weight
            m, n = A.shape
            rows = max(1, _LOSS_BLOCK_ELEMENTS // max(1, n))
            aa = torch.zeros((), dtype=torch.float64, device=A.device)
            for r0 in range(0, m, rows):  # float64 squares: float32 ones may underflow
                block = A[r0:r0 + rows].to(torch.float64).square()  # not in place: A may be float64
                aa += (block if w is None else block.mul_(w[r0:r0 + rows])).sum()
            self.comm.all_reduce_sum_([aa], "all_reduce(sum w A^2)")
            wmax = 1.0 if w is None or w.numel() == 0 else float(w.max())
            wmax = max(self.comm.all_gather_objects(wmax, "max weight"))
            entries = self.comm.sum_scalar(float(A.numel()), "entry count")
            self._bound_inputs = (float(aa), wmax, entries)
        return self._bound_inputs

    def _certified(self, data: Tensor, W: Tensor, H: Tensor) -> bool:
        """True when the fused op's float32 data term is within ``_REPORT_RTOL`` of the truth.

        The op computes each residual ``r = (W H)_ij - A_ij`` as a float32 sum of
        k + 1 terms, so ``|r_hat - r| <= g (sum_l |W_il H_lj| + |A_ij|)`` with
        ``g = (k+1) u / (1 - (k+1) u)``. Hence, in the weighted norm,
        ``| |r_hat|_w - |r|_w | <= E = g (sqrt(max w) |W|_F |H|_F + sqrt(sum w A^2))``
        (plus underflow). The squares are summed in float64 (relative error at
        most ``entries * 2^-53``) and the sum is rounded to float32 (2^-24 per
        rank). A NaN or Inf value is reported as is (the divergence guard).
        """
        value = float(data)
        if not math.isfinite(value):
            return True
        k = W.shape[1]
        nu = (k + 1) * _product_unit_roundoff(self.A.device)
        if nu >= 0.5:
            return False
        gamma = nu / (1.0 - nu)
        aa, wmax, entries = self._bound_terms()
        norm_wh = math.sqrt(float(self.sq_norm_W(W)) * float(H.square().sum(dtype=torch.float64)))
        bound = (gamma * (math.sqrt(wmax) * norm_wh + math.sqrt(aa))
                 + math.sqrt(wmax * entries) * (k + 1) * 2.0 ** -149)  # float32 underflow
        rho = (self.comm.world_size + 1) * 2.0 ** -24 + entries * 2.0 ** -53
        if not rho < 0.5:
            return False
        high = math.sqrt(value / (1.0 - rho)) + bound
        low = math.sqrt(value / (1.0 + rho)) - bound
        return (low > 0.0 and low * low >= (1.0 - _REPORT_RTOL) * value
                and high * high <= (1.0 + _REPORT_RTOL) * value)

    def data_loss_float64(self, W: Tensor, H: Tensor) -> Tensor:
        """The unreduced data term from a float64 residual, in row blocks (0-dim float64).

        No m×n temporary: blocks of ``_LOSS_BLOCK_ELEMENTS`` entries.
        """
        A, w = self.A, self.weight
        m, n = A.shape
        wide = torch.float64
        H64 = H.to(wide)
        rows = max(1, _LOSS_BLOCK_ELEMENTS // max(1, n))
        total = torch.zeros((), dtype=wide, device=A.device)
        for r0 in range(0, m, rows):
            R = torch.addmm(A[r0:r0 + rows].to(wide), W[r0:r0 + rows].to(wide), H64,
                            beta=1.0, alpha=-1.0).square_()  # (rows, n)
            total += (R if w is None else R.mul_(w[r0:r0 + rows])).sum()
        self.comm.all_reduce_sum_([total], "all_reduce(float64 loss)")
        return total

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
        """The objective at the current factors, as reported (0-dim)."""
        return self.obj.reported_loss(self.W, self.H)


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
        logged = (obj.reported_total(data, W, H), W.clone(), H.clone()) if log else None
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
        logged = (obj.reported_total(data, W, H), W.clone(), H.clone()) if log else None
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
        f_tensor = self.obj.total(data, W, H)
        self.obj.objective_grads_(gW, gH, W, H)
        self._trial = (W, H, gW, gH, f_tensor, data)
        return float(f_tensor)

    def step(self, log: bool) -> Optional[Logged]:
        W, H, gW, gH, f_tensor, data = self._trial
        f = float(f_tensor)
        logged = (self.obj.reported_total(data, W, H), W.clone(), H.clone()) if log else None
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
        self._trial = (W, H, gW, gH, f_tensor, data)
        self.stalled = True
        return logged

    def final_loss(self) -> Tensor:
        W, H, _, _, _, data = self._trial
        return self.obj.reported_total(data, W, H)


class ALSStepper(Stepper):
    """Alternating least squares: the rows of W, then the columns of H, in closed form.

    Each half-step solves the k×k regularized normal equations of every row (or
    column) in one batch (:func:`mfext._als.als_half_step`): one shared Cholesky
    factorization without weights, a batch of them with weights or missing
    entries. In non-negative mode each half-step solves the non-negative
    least-squares problems by warm-started coordinate descent (NNLS, not a
    projection of the unconstrained solution).

    Without regularization and sign constraints the objective depends on the
    factors only through ``W @ H``, so each half-step first replaces the fixed
    factor by an orthonormal basis of its span (:func:`mfext._als.orthonormal_basis`):
    the same products ``W @ H`` as plain ALS, with well-conditioned normal
    equations. W leaves each iteration with orthonormal columns.

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

    def step(self, log: bool) -> Optional[Logged]:
        obj = self.obj
        A, w, wA, reg = obj.A, obj.weight, self.wA, obj.reg
        nonneg = obj.nonnegative
        W, Ht = als_half_step(A, self.H.t(), self.W, reg, w, wA, nonnegative=nonneg,
                              sweeps=self.sweeps, orthonormalize=self._orthonormal)
        Ht, W = als_half_step(
            A.t(), W, Ht, reg, None if w is None else w.t(),
            None if wA is None else wA.t(), nonnegative=nonneg, sweeps=self.sweeps,
            reduce=self._reduce, orthonormalize=self._orthonormal,
        )
        self.W, self.H = W, Ht.t()
        self._loss = None
        if not log:
            return None
        return self.final_loss(), self.W, self.H

    def final_loss(self) -> Tensor:
        if self._loss is None:
            self._loss = super().final_loss()
        return self._loss
