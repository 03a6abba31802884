"""``mfext.training``: the one training loop that every model runs on.

A model hands the loop a :class:`Solver`: a small object that owns the factors
and advances them by one step (an iteration of :func:`mfext.factorize`, an
epoch of a recommender) per call of :meth:`Solver.step`. The loop, :func:`train`,
owns what every model shares:

- which steps are *logged*: every ``log_every``-th. Only a logged step's loss
  reaches the host (one synchronization); in between, a solver may run on the
  device without waiting for it;
- the history: one record (a dict) per logged step;
- stopping: ``max_iter``; ``tol`` on the relative change of the monitored loss,
  with a resolution floor; a callback; a stalled solver; early stopping on a
  validation metric, with the best step's snapshot restored;
- the divergence guard: a NaN or Inf loss (on any rank, given a communicator)
  restores the last finite snapshot and raises :class:`DivergenceError`;
- the tqdm progress bar and verbose printing.

It leaves the update rule and its factors to the solver; argument checks,
validation metrics, the wording of the divergence message and the public
result to the caller (:mod:`mfext.dense`, :mod:`mfext.recommenders`). Adding a
solver touches no code here.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

from torch import Tensor

__all__ = ["DivergenceError", "LossOverflow", "Report", "Solver", "TrainingResult", "train"]

#: One logged step: the step number, the loss under ``loss_name``, the solver's
#: and the caller's metrics, and ``seconds`` since training started.
Record = Dict[str, Any]


class DivergenceError(FloatingPointError, RuntimeError):
    """The loss (or a factor) became NaN or Inf during training.

    A ``FloatingPointError`` and a ``RuntimeError`` both, so that ``except``
    clauses written for either keep catching it.

    Attributes
    ----------
    result : object
        What training produced up to the last finite step: for
        :func:`mfext.factorize` a :class:`~mfext.FactorizeResult` holding those
        factors; for the loop itself a :class:`TrainingResult`.
    iteration : int
        The step whose loss was not finite.
    lr : float or None
        The learning rate in use.
    """

    def __init__(self, message: str, result: Any = None, iteration: int = -1,
                 lr: Optional[float] = None):
        super().__init__(message)
        self.result = result
        self.iteration = iteration
        self.lr = lr


class LossOverflow(ArithmeticError):
    """A solver could not represent its loss in the factors' dtype: the loop reads it as Inf."""


@dataclass
class Report:
    """What a solver hands the loop at a logged step.

    Attributes
    ----------
    loss : Tensor (0-dim), float or None
        The monitored training loss. A tensor may still be on the device: the
        loop reads it once. None: not measured at this step (the record has
        no loss and ``tol`` does not apply); a solver that measures no loss
        reports NaN when its state is not finite, so that the divergence
        guard still applies.
    snapshot : object
        The state ``loss`` belongs to, in a form the solver will not mutate
        (what :meth:`Solver.restore` takes back).
    metrics : dict, optional
        Further entries of this step's record, after the loss.
    """

    loss: Union[Tensor, float, None]
    snapshot: Any
    metrics: Optional[Dict[str, float]] = None


class Solver:
    """One update rule on its own factors: the loop's only view of a model.

    Subclasses implement :meth:`step`, :meth:`snapshot` and :meth:`restore`,
    and may override :meth:`final_loss` and the class attributes.
    """

    #: True when a logged step's loss is the loss *after* its update (ALS, a
    #: recommender epoch): the loop then needs no final loss after a logged last step.
    logs_after_step: bool = False
    #: Set by a solver that cannot make progress any more (an exhausted line search).
    stalled: bool = False
    #: The learning rate, for messages (None: the rule has none).
    lr: Optional[float] = None

    def step(self, iteration: int, log: bool) -> Optional[Report]:
        """Advance the factors by one step.

        Parameters
        ----------
        iteration : int
            Steps done so far (from 0).
        log : bool
            Whether this step is logged. Only then must it return a
            :class:`Report`; otherwise it should return None without reading
            anything back from the device.

        Raises
        ------
        LossOverflow
            The loss does not fit the dtype (read as an infinite loss).
        """
        raise NotImplementedError

    def snapshot(self) -> Any:
        """A copy of the current state that later steps do not mutate."""
        raise NotImplementedError

    def restore(self, snapshot: Any) -> None:
        """Make ``snapshot`` the current state again (once, when training ends)."""
        raise NotImplementedError

    def final_loss(self) -> Optional[Union[Tensor, float]]:
        """The loss at the current state after the last step, or None for no final record."""
        return None


@dataclass
class TrainingResult:
    """What :func:`train` returns (and a :class:`DivergenceError` holds from it).

    Attributes
    ----------
    history : list of dict
        One record per logged step (see :func:`train`), then the final loss's
        record when the solver gives one.
    n_iter : int
        Steps run (on divergence: the steps before the failing one).
    stop_reason : str
        "max_iter", "tol", "callback", "stalled", "early_stopping" or "diverged".
    best_step : int or None
        The step with the lowest ``select`` metric, when records have it.
    seconds : float
        Since ``start``.
    """

    history: List[Record] = field(default_factory=list)
    n_iter: int = 0
    stop_reason: str = "max_iter"
    best_step: Optional[int] = None
    seconds: float = 0.0


def _print_record(record: Record) -> None:
    print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in record.items()), flush=True)


def train(
    solver: Solver,
    *,
    max_iter: int,
    log_every: int = 1,
    tol: float = 0.0,
    resolution: float = 0.0,
    loss_name: str = "loss",
    step_name: str = "iteration",
    first_step: int = 0,
    evaluate: Optional[Callable[[], Dict[str, float]]] = None,
    select: Optional[str] = None,
    maximize: bool = False,
    patience: Optional[int] = None,
    callback: Optional[Callable[[int, Record, Any], Optional[bool]]] = None,
    progress: Optional[str] = None,
    verbose: bool = False,
    comm: Optional[Any] = None,
    describe_divergence: Optional[Callable[[int, float, Optional[int]], str]] = None,
    start: Optional[float] = None,
) -> TrainingResult:
    """Run ``solver`` for up to ``max_iter`` steps.

    Parameters
    ----------
    solver : Solver
    max_iter : int
        Steps at most.
    log_every : int
        Log step ``i`` (from 0) when ``i % log_every == 0``.
    tol : float
        Stop when the loss of two consecutive logged steps differs by at most
        ``tol * max(|previous|, |loss|) + resolution``; 0: never.
    resolution : float
        The loss's own rounding level (see ``tol``).
    loss_name, step_name : str
        The record keys of the loss and of the step number.
    first_step : int
        The number of the first step (0: iterations; 1: epochs). Every step
        number the loop reports (records, ``best_step``, callbacks, divergence)
        counts from it.
    evaluate : callable, optional
        ``evaluate() -> dict`` of further metrics (validation), called at each
        logged step whose loss is finite, with the solver at that step's state.
    select : str, optional
        A record key to minimize (or maximize): tracks ``best_step``.
    maximize : bool
        Whether a larger ``select`` is better.
    patience : int, optional
        Early stopping: stop when ``select`` has not improved for this many
        steps, and restore the best step's snapshot at the end.
    callback : callable, optional
        ``callback(step, record, snapshot)`` at each logged step; True stops.
    progress : str, optional
        Show a tqdm progress bar with this description.
    verbose : bool
        Print every record.
    comm : mfext.distributed.Communicator, optional
        When given, a step diverges on every rank as soon as it diverges on one
        (one collective per logged step). Leave it out when the loss is already
        the same on every rank.
    describe_divergence : callable, optional
        ``describe_divergence(step, value, last_finite_step or None) -> str``:
        the :class:`DivergenceError` message.
    start : float, optional
        ``time.perf_counter()`` at the start of training (default: now).

    Returns
    -------
    TrainingResult

    Raises
    ------
    DivergenceError
        A logged loss (or the final one) was NaN or Inf, or the solver raised
        :class:`LossOverflow`. The solver is restored to its last finite
        snapshot first; the error's ``result`` is a :class:`TrainingResult`
        with the history up to it.
    """
    start = time.perf_counter() if start is None else start
    history: List[Record] = []
    # The last finite logged state; None: the initial one.
    good: Any = solver.snapshot()
    good_step: Optional[int] = None
    best_value, best_step, best = math.inf, None, None
    previous: Optional[float] = None
    stop_reason = "max_iter"

    def diverged(step: int, value: float, n_iter: int) -> DivergenceError:
        solver.restore(good)
        message = (describe_divergence(step, value, good_step) if describe_divergence is not None
                   else f"training diverged: the loss is {value} at {step_name} {step}")
        result = TrainingResult(list(history), n_iter, "diverged", best_step,
                                time.perf_counter() - start)
        return DivergenceError(message, result, step, solver.lr)

    def any_rank(flag: bool) -> bool:
        return comm.any(flag, "divergence check") if comm is not None else flag

    bar = None
    if progress is not None:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc=progress, leave=False)
    it = -1
    last_logged = -1
    try:
        for it in range(max_iter):
            step = it + first_step
            try:
                report = solver.step(it, it % log_every == 0)
            except LossOverflow:
                raise diverged(step, math.inf, it) from None
            if report is not None:
                # The loop's only host synchronization.
                value = None if report.loss is None else float(report.loss)
                last_logged = it
                if any_rank(value is not None and not math.isfinite(value)):
                    raise diverged(step, math.nan if value is None else value, it)
                good, good_step = report.snapshot, step
                record: Record = {step_name: step}
                if value is not None:
                    record[loss_name] = value
                if report.metrics:
                    record.update(report.metrics)
                if evaluate is not None:
                    record.update(evaluate())
                record["seconds"] = time.perf_counter() - start
                history.append(record)
                if bar is not None:
                    bar.update(it + 1 - bar.n)
                    if value is not None:
                        bar.set_postfix({loss_name: f"{value:.4e}"})
                if verbose:
                    _print_record(record)
                score = record.get(select, -math.inf if maximize else math.inf) if select else None
                if score is not None and (-score if maximize else score) < best_value:
                    best_value, best_step = (-score if maximize else score), step
                    if patience is not None:
                        best = report.snapshot
                if callback is not None and callback(step, record, report.snapshot):
                    stop_reason = "callback"
                    break
                if (tol > 0 and value is not None and previous is not None
                        and abs(previous - value)
                        <= tol * max(abs(previous), abs(value)) + resolution):
                    stop_reason = "tol"
                    break
                if value is not None:
                    previous = value
                if patience is not None and best_step is not None and step - best_step >= patience:
                    stop_reason = "early_stopping"
                    break
            if solver.stalled:
                stop_reason = "stalled"
                break
    finally:
        if bar is not None:
            bar.close()
    n_iter = it + 1
    if best is not None:
        solver.restore(best)
    if not (solver.logs_after_step and last_logged == it >= 0):
        try:
            final = solver.final_loss()
        except LossOverflow:
            final = math.inf
        if final is not None:
            value = float(final)
            if any_rank(not math.isfinite(value)):
                raise diverged(n_iter + first_step, value, n_iter)
            history.append({step_name: n_iter + first_step, loss_name: value,
                            "seconds": time.perf_counter() - start})
    return TrainingResult(history, n_iter, stop_reason, best_step, time.perf_counter() - start)
