"""The objective of :func:`mfext.factorize`: the loss, its gradients, and what it reports.

    loss = (sum(weight * (A - W @ H)**2) + reg * (|W|_F**2 + |H|_F**2)) / denom

with ``denom = 1`` (``reduction="sum"``) or ``sum(weight)`` (``"mean"``; ``m * n``
without weights, which is ``mse_loss``). :class:`Objective` computes the data
term and its gradients with the fused op (``backend="fused"``) or the autograd
reference (``"autograd"``), adds the regularization, projects on ``>= 0`` in
non-negative mode, and reports the loss: in float32 only when a bound on the
op's rounding error certifies it within 0.1% of the exact objective, else from
a float64 residual. Under data parallelism it sums over ranks through a
:class:`~mfext.distributed.Communicator`.

The update rules that use it live in :mod:`mfext.dense.rules`; the data comes
checked from :mod:`mfext.dense.problem`.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from .. import reference
from ..distributed import Communicator
from ..ops import dense_loss_grad
from ..training import LossOverflow
from .problem import DenseProblem

__all__ = ["Objective"]

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
    problem : DenseProblem
    reg : float
        L2 regularization on W and H (inside the reduction).
    nonnegative : bool
        Project the factors on ``>= 0`` after every gradient step.
    backend : "fused" or "autograd"
    comm : Communicator, optional
        When distributed, ``problem.A`` and W are this rank's rows and H is
        replicated: the data loss, grad_H and sums over W are summed over ranks,
        so every rank sees the global objective and updates H identically.
    """

    def __init__(self, problem: DenseProblem, reg: float, nonnegative: bool, backend: str,
                 comm: Optional[Communicator] = None):
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
