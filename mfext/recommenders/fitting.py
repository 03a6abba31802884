"""How a recommender fit runs its solver on the shared training loop.

This module owns the glue between a model and :func:`mfext.training.train`:
the validation metrics of explicit ratings (:func:`rating_validation`), the loop's
settings for a recommender (one logged epoch per step, numbered from 1; early
stopping on the validation RMSE; the divergence check over every rank), and
publishing the outcome as fitted attributes (``history_``, ``best_epoch_``,
``n_iter_`` and the factors), also when the fit diverges. The loop itself
(history, early stopping, the best epoch restored, the divergence guard,
verbose printing) is :mod:`mfext.training`'s; the epoch math is the solvers'
(:mod:`mfext.recommenders.solvers`); the wording of the divergence message
is the model's.
"""
from __future__ import annotations

import time

from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..training import DivergenceError, Solver, TrainingResult, train
from .solvers import RatingsSolver

__all__ = ["fit_solver", "rating_validation"]

# Validation ratings on the model device: rows, cols (int64) and ratings (float64), each (s,).
Validation = Tuple[Tensor, Tensor, Tensor]


def rating_validation(model: Any, solver: RatingsSolver,
                      val: Validation) -> Callable[[], Dict[str, float]]:
    """``evaluate() -> {"val_rmse", "val_mae"}`` of the solver's current factors on ``val``.

    The errors are summed over every rank of a data-parallel fit (one all-reduce).
    """
    comm = model._comm

    def evaluate() -> Dict[str, float]:
        model._set_factors(solver.f, copy=False)  # predict through the model, uncopied
        err = model._predict_index(val[0], val[1]).double() - val[2]
        sums = torch.stack([err.square().sum(), err.abs().sum(),
                            torch.tensor(float(err.numel()), dtype=torch.float64)])
        comm.all_reduce_sum_([sums], "validation error")
        return {"val_rmse": float((sums[0] / sums[2]).sqrt()), "val_mae": float(sums[1] / sums[2])}

    return evaluate


def fit_solver(model: Any, solver: Solver, *, max_iter: int,
               evaluate: Optional[Callable[[], Dict[str, float]]], patience: Optional[int],
               describe_divergence: Callable[[int, float, Optional[int]], str],
               start: float, loss_name: str = "train_rmse", select: Optional[str] = None,
               maximize: bool = False) -> None:
    """Train ``solver`` for up to ``max_iter`` epochs and publish the fit on ``model``.

    Parameters
    ----------
    model : a recommender inside ``fit`` (the blank model the fit builds)
    solver : Solver
        A recommender solver: it holds its factors as ``solver.f``
        (:class:`~mfext.recommenders.solvers.Factors`).
    max_iter : int
        Epochs at most.
    evaluate : callable, optional
        Validation metrics.
    patience : int, optional
        Early-stopping rounds; the best epoch's factors are restored.
    describe_divergence : callable
        ``(epoch, value, last finite epoch or None) -> message``.
    start : float
        ``time.perf_counter()`` at the start of the fit.
    loss_name : str
        The record key of the training loss.
    select : str, optional
        The early-stopping metric (default with ``evaluate``: ``val_rmse``).
    maximize : bool
        Whether a larger ``select`` is better.

    Raises
    ------
    DivergenceError
        After publishing the fit as of the last finite epoch (its ``result`` is
        the loop's :class:`~mfext.training.TrainingResult`).
    """
    setup = time.perf_counter() - start  # checks, ids, orders, blocks: before epoch 1
    try:
        if select is None and evaluate is not None:
            select = "val_rmse"
        run = train(solver, max_iter=max_iter, loss_name=loss_name, step_name="epoch",
                    first_step=1, evaluate=evaluate, select=select, maximize=maximize,
                    patience=patience,
                    verbose=bool(model.verbose), comm=model._comm,
                    describe_divergence=describe_divergence, start=start)
    except DivergenceError as err:
        _publish(model, solver, err.result, setup)  # the loop restored the last finite epoch
        raise
    _publish(model, solver, run, setup)


def _publish(model: Any, solver: Solver, run: TrainingResult, setup: float) -> None:
    model.history_ = run.history
    model.setup_seconds_ = setup
    model.best_epoch_ = run.best_step
    model.n_iter_ = run.n_iter
    model._set_factors(solver.f)
