"""``mfext.factorize``: the entry point of the dense factorizer.

This module owns the arguments of :func:`factorize` (checks, per-optimizer
defaults, the data-parallel start-up agreement), the initial factors, the
choice of update rule, and :class:`FactorizeResult`, the public result. The
data checks live in :mod:`mfext.dense.problem`, the objective in
:mod:`mfext.dense.objective`, the update rules in :mod:`mfext.dense.rules`, and
the loop itself (logging every ``log_every`` iterations, ``tol``, callbacks, the
progress bar and the divergence guard) in :mod:`mfext.training`.
"""
from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..distributed import get_communicator
from ..training import DivergenceError, TrainingResult, train
from .init import initial_factors_of_rows
from .objective import Objective
from .problem import prepare_problem
from .rules import ADAM_DEFAULT_LR, ALSRule, AdamRule, DenseRule, GDRule, LineSearchGDRule

__all__ = ["factorize", "FactorizeResult"]

OPTIMIZERS = ("adam", "gd", "als")
BACKENDS = ("fused", "autograd")

# Per-optimizer defaults for max_iter and log_every. ALS logs every iteration: its
# loss pass (one fused op call) costs about what one of its two half-steps costs.
_DEFAULT_MAX_ITER = {"adam": 5000, "gd": 5000, "als": 200}
_DEFAULT_MAX_ITER_NONNEGATIVE_ALS = 1000  # NNLS-ALS converges slowly, as every NMF solver
_DEFAULT_LOG_EVERY = {"adam": 100, "gd": 100, "als": 1}
# Relative change of the logged loss that counts as converged, by dtype.
_DEFAULT_TOL = {torch.float64: 1e-10, torch.float32: 1e-6}


@dataclass
class FactorizeResult:
    """What :func:`factorize` returns.

    Attributes
    ----------
    W : Tensor, (m, k)
    H : Tensor, (k, n)
    loss_history : list of float
        The loss at every ``log_every``-th iteration (Adam and GD: at the factors
        that iteration started from; ALS: after that iteration's update), then
        the loss at the returned factors. Every entry is evaluated on the
        residual ``A - W @ H`` of those factors: in float64 by the fused op; in
        float32 by the fused op when a bound on its rounding error proves the
        value within 0.1% of the exact objective, else from a float64 residual.
    n_iter : int
        Iterations run.
    converged : bool
        True when the loop stopped on ``tol`` (or the line search could not
        decrease the loss any further).
    seconds : float
        Wall time of the call (initialization and loop).
    stop_reason : str
        "tol", "max_iter", "callback", "stalled" or "diverged".
    seed : int or None
        The seed the initial factors were drawn with (drawn at random when
        ``seed=None``; pass it back to reproduce the run).
    lr : float or None
        The learning rate (for GD with line search: the next trial step).
    """

    W: Tensor
    H: Tensor
    loss_history: List[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    seconds: float = 0.0
    stop_reason: str = ""
    seed: Optional[int] = None
    lr: Optional[float] = None

    @property
    def loss(self) -> float:
        """The final loss (the last entry of ``loss_history``)."""
        return self.loss_history[-1] if self.loss_history else float("nan")


def _check_number(name: str, value, *, positive: bool = False, integer: bool = False,
                  allow_none: bool = False):
    """Check one numeric argument and return it as a Python int or float (or None).

    Python and numpy numbers are accepted (``numpy.int64`` for an int, say);
    bools, numpy bools and anything else are refused with a TypeError naming
    the argument.
    """
    if value is None and allow_none:
        return None
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, kinds):
        kind = "an int" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}")
    value = int(value) if isinstance(value, (int, np.integer)) else float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if not positive and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def factorize(
    A,
    rank: int,
    *,
    optimizer: str = "adam",
    lr: Optional[float] = None,
    max_iter: Optional[int] = None,
    tol: Optional[float] = None,
    reg: float = 0.0,
    nonnegative: bool = False,
    weight=None,
    init: Union[str, Tuple[Tensor, Tensor]] = "random",
    seed: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    backend: str = "fused",
    callback: Optional[Callable[[int, float, Tensor, Tensor], Optional[bool]]] = None,
    progress: bool = False,
    log_every: Optional[int] = None,
    reduction: str = "mean",
    line_search: Optional[bool] = None,
    nnls_sweeps: int = 3,
    distributed: Optional[bool] = None,
) -> FactorizeResult:
    """Factorize ``A (m, n) ≈ W (m, k) @ H (k, n)``.

    Minimizes ``(sum(weight * (A - W @ H)**2) + reg * (|W|² + |H|²)) / D`` with
    ``D = sum(weight)`` for ``reduction="mean"`` (``m * n`` without weights: the
    ``mse_loss``) or ``D = 1`` for ``"sum"``. ``reduction`` rescales the loss (and
    so the gradient steps) but not the minimizer.

    Parameters
    ----------
    A : Tensor, ndarray or nested list, (m, n)
        NaN entries are missing: weight 0, and A is set to 0 there before the ops
        see it. Integer, bool and half-precision data run in float32 (the torch
        default dtype) unless ``dtype`` says otherwise.
    rank : int
        k, in ``1..min(m, n)``; larger ranks need ``reg > 0``. Every integer
        argument (``rank``, ``max_iter``, ``log_every``, ``nnls_sweeps``, ``seed``)
        may be a Python or numpy integer (not a bool), every real one (``lr``,
        ``tol``, ``reg``) also a numpy float.
    optimizer : "adam", "gd" or "als"
        - ``"adam"``: ``torch.optim.Adam`` (fused/foreach where available) stepped
          in place on the fused gradients; with the defaults this is the
          reference loop :func:`mfext.reference.reference_factorize`.
        - ``"gd"``: gradient descent, with a backtracking line search by default.
        - ``"als"``: alternating least squares, batched k×k solves per row of W
          and per column of H (weighted when there are weights or missing entries),
          built and solved in float64. A system that is singular or
          ill-conditioned for the factors' dtype (a Cholesky pivot below
          ``k * eps * max(diag)``) gets its minimum-norm least-squares solution.
          Without ``reg`` and ``nonnegative``, each half-step first replaces the
          fixed factor by an orthonormal basis of its span (the same product
          ``W @ H``, well-conditioned systems), so the returned W has
          orthonormal columns.
    lr : float, optional
        Adam: 0.01. GD: the fixed step; without it (or with ``line_search=True``)
        the line search starts from an estimate (or from ``lr``). Unused by ALS.
    max_iter : int, optional
        Iterations (default: 5000 for Adam and GD, 200 for ALS, 1000 for
        non-negative ALS).
    tol : float, optional
        Stop when the loss changes by at most ``tol`` (relative) between two
        logged iterations, or by less than the data's resolution
        ``eps**2 * sum(weight * A**2) / D`` (``eps`` of the dtype; an exact fit's
        loss falls to that level, then only fluctuates). Default 1e-10 in
        float64, 1e-6 in float32; 0 runs ``max_iter`` iterations.
    reg : float
        L2 regularization of W and H (>= 0).
    nonnegative : bool
        Keep W, H >= 0. Adam and GD project (clamp at 0) after each step; ALS
        solves non-negative least-squares problems by warm-started coordinate
        descent (``nnls_sweeps`` sweeps per half-step; not a projection).
    weight : Tensor or ndarray, (m, n), optional
        Finite, non-negative entry weights; 0 marks a missing entry.
    init : "random", "svd" or (W0 (m, k), H0 (k, n))
        ``"random"``: ``torch.rand`` W then H from a CPU generator seeded with
        ``seed`` (as the reference loop). ``"svd"``: a seeded randomized
        truncated SVD (NNDSVD in non-negative mode). A pair: those factors.
    seed : int, optional
        Seeds the initialization; None draws a seed (kept in ``result.seed``).
        The same seed, device and thread count give identical factors.
    device, dtype : where and in which dtype (float32 or float64) to run;
        default: A's.
    backend : "fused" or "autograd"
        "fused": the mfext ops. "autograd": the reference loss and autograd
        gradients, with the same update rules (the same trajectory).
    callback : callable, optional
        ``callback(iteration, loss, W, H)`` at every logged iteration (loss a
        float, W and H copies); returning True stops the loop.
    progress : bool
        Show a tqdm progress bar with the loss.
    log_every : int, optional
        Bring the loss to the host (history, tol, callback, progress, divergence
        check) every this many iterations (default: 100 for Adam and GD, 1 for
        ALS). Adam and fixed-step GD do not synchronize in between.
    reduction : "mean" or "sum"
    line_search : bool, optional
        GD only: backtracking line search (default: on unless ``lr`` is given).
    nnls_sweeps : int
        ALS in non-negative mode: coordinate-descent sweeps per half-step.
    distributed : bool, optional
        Data-parallel training on torch.distributed (see :mod:`mfext.distributed`):
        ``A`` (and ``weight``) is then this rank's block of rows, in rank order,
        and the result's W holds the same rows; H is replicated. None (default)
        trains data-parallel whenever a process group is initialized; False never.
        For the same seed, every world size follows the same trajectory as one
        process (within float rounding). ``init`` must be "random" or a pair whose
        W0 has either this rank's rows or all rows.

    Returns
    -------
    FactorizeResult
        W (m, k) and H (k, n) in ``dtype`` on ``device``, the loss history,
        iterations run, whether it converged, and the wall time.

    Raises
    ------
    mfext.DivergenceError
        (a RuntimeError and a FloatingPointError) when the loss becomes NaN or
        Inf; its ``result`` holds the last factors with a finite loss.
    ValueError, TypeError
        For unusable input, naming the argument.

    Notes
    -----
    A row (column) of A with no observed entry gets a zero row of W (column of
    H): its predictions are 0. The other factors are unaffected.
    """
    start = time.perf_counter()
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    reg = _check_number("reg", reg)
    lr = _check_number("lr", lr, positive=True, allow_none=True)
    tol = _check_number("tol", tol, allow_none=True)
    max_iter = _check_number("max_iter", max_iter, integer=True, allow_none=True)
    log_every = _check_number("log_every", log_every, positive=True, integer=True, allow_none=True)
    nnls_sweeps = _check_number("nnls_sweeps", nnls_sweeps, positive=True, integer=True)
    seed = _check_number("seed", seed, integer=True, allow_none=True)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")

    comm = get_communicator(distributed)
    problem = prepare_problem(A, weight, device=device, dtype=dtype, reduction=reduction, comm=comm)
    m, n = problem.shape
    row0, m_total = comm.row_offset(m) if comm.distributed else (0, m)
    if isinstance(rank, (bool, np.bool_)) or not isinstance(rank, (int, np.integer)):
        raise TypeError(f"rank must be an int, got {type(rank).__name__} {rank!r}")
    rank = int(rank)
    if rank < 1 or (reg == 0 and rank > min(m_total, n)):
        raise ValueError(
            f"rank must be in 1..min(m, n) = 1..{min(m_total, n)} for A of shape {(m_total, n)}, got {rank}"
            + ("" if rank < 1 else "; a larger rank needs reg > 0")
        )

    if max_iter is None:
        max_iter = _DEFAULT_MAX_ITER[optimizer]
        if optimizer == "als" and nonnegative:
            max_iter = _DEFAULT_MAX_ITER_NONNEGATIVE_ALS
    log_every = _DEFAULT_LOG_EVERY[optimizer] if log_every is None else log_every
    tol = _DEFAULT_TOL[problem.A.dtype] if tol is None else tol
    if seed is None:
        seed = comm.all_gather_objects(secrets.randbits(62), "seed")[0]  # rank 0's
    if comm.distributed:
        comm.check_consistent(
            n=n, rank=rank, dtype=problem.A.dtype, optimizer=optimizer, lr=lr, max_iter=max_iter,
            tol=tol, reg=float(reg), nonnegative=bool(nonnegative), backend=backend,
            log_every=log_every, reduction=reduction, seed=seed,
            init=init if isinstance(init, str) else "pair", line_search=line_search,
        )
    gen = torch.Generator(device="cpu").manual_seed(seed)
    W, H = initial_factors_of_rows(problem.A, rank, init, gen, bool(nonnegative), row0, m_total)
    # Rows/columns with nothing observed: zero factors, which no update changes.
    if problem.empty_rows is not None:
        W[problem.empty_rows] = 0
    if problem.empty_cols is not None:
        H[:, problem.empty_cols] = 0

    objective = Objective(problem, float(reg), bool(nonnegative), backend, comm)
    rule: DenseRule
    if optimizer == "adam":
        rule = AdamRule(objective, W, H, ADAM_DEFAULT_LR if lr is None else lr)
    elif optimizer == "gd":
        if line_search is None:
            line_search = lr is None
        if line_search:
            rule = LineSearchGDRule(objective, W, H, lr)
        elif lr is None:
            raise ValueError("optimizer='gd' with line_search=False needs a learning rate lr")
        else:
            rule = GDRule(objective, W, H, lr)
    else:
        rule = ALSRule(objective, W, H, nnls_sweeps)

    # Changes below the data's own rounding level also count as converged: an exact
    # fit's loss decreases to that level and then only fluctuates.
    resolution = objective.loss_resolution() if tol > 0 and max_iter > 0 else 0.0
    loop_callback = None
    if callback is not None:
        user_callback = callback

        def loop_callback(step: int, record: Dict[str, Any], snapshot: Tuple[Tensor, Tensor]):
            # The user gets copies: what they do with them cannot disturb the loop.
            return user_callback(step, record["loss"], snapshot[0].clone(), snapshot[1].clone())

    try:
        run = train(
            rule, max_iter=max_iter, log_every=log_every, tol=tol, resolution=resolution,
            callback=loop_callback, progress=f"mfext {optimizer}" if progress else None,
            describe_divergence=lambda it, value, last: _divergence_message(rule, optimizer, it,
                                                                            value, last),
            start=start,
        )
    except DivergenceError as err:
        # The loop restored the last finite factors: hand them over as a FactorizeResult.
        err.result = _result(rule, err.result, seed, start, contiguous=False)
        raise
    return _result(rule, run, seed, start)


def _divergence_message(rule: DenseRule, optimizer: str, it: int, value: float,
                        last: Optional[int]) -> str:
    lr_text = (f"lr={rule.lr:g}" if rule.lr is not None
               else "als has no learning rate; try reg > 0 or a smaller rank")
    if last is None:
        last_text = "no logged iteration had a finite loss; .result holds the initial factors"
    else:
        last_text = f"the last finite loss was at iteration {last}; .result holds those factors"
    advice = ("Add reg or lower the rank." if optimizer == "als"
              else "Lower the learning rate, add reg, or use optimizer='als'.")
    return (
        f"mfext.factorize diverged: the loss is {value} at iteration {it} "
        f"(optimizer={optimizer!r}, {lr_text}); {last_text}. {advice}"
    )


def _result(rule: DenseRule, run: TrainingResult, seed: int, start: float,
            contiguous: bool = True) -> FactorizeResult:
    """The public result: the rule's factors and the loop's history of losses."""
    W, H = rule.W.detach(), rule.H.detach()
    if contiguous and not H.is_contiguous():
        H = H.contiguous()
    return FactorizeResult(
        W, H, [record["loss"] for record in run.history], run.n_iter,
        run.stop_reason in ("tol", "stalled"), time.perf_counter() - start,
        run.stop_reason, seed, rule.lr,
    )
