"""mfext.training.train, the one training loop, driven by a scripted toy Solver.

The solver's factor is a vector that grows by one per step, so its value names the
step it belongs to; its losses and validation metrics are scripted. The tests check
what the loop promises: logging, tol (with the resolution floor), early stopping
(the best step restored), callbacks (the step numbers they see, and stopping), the
divergence guard (DivergenceError, also a FloatingPointError, with result, iteration
and lr, and the last finite factors restored), LossOverflow read as an infinite
loss, the final loss record, a stalled solver and divergence on another rank.
"""
from __future__ import annotations

import math

import pytest
import torch

import mfext
from mfext.training import DivergenceError, LossOverflow, Report, Solver, TrainingResult, train


class ScriptedSolver(Solver):
    """``x += 1`` per step; step ``i`` reports ``losses[i]`` and the metric ``x0``.

    ``overflow_at``: the step (from 0) whose update raises LossOverflow.
    ``final``: what final_loss returns (a number, None, or LossOverflow to raise).
    ``stall_after``: the step after which the solver says it is stalled.
    """

    def __init__(self, losses, *, logs_after_step=False, final=None, overflow_at=None,
                 stall_after=None, lr=0.25):
        self.x = torch.zeros(3)
        self.losses = list(losses)
        self.logs_after_step = logs_after_step
        self.final = final
        self.overflow_at = overflow_at
        self.stall_after = stall_after
        self.lr = lr
        self.calls = []  # (iteration, log) per step call
        self.restored = []  # x[0] of each snapshot restored

    def step(self, iteration, log):
        self.calls.append((iteration, log))
        if iteration == self.overflow_at:
            raise LossOverflow("the loss does not fit float32")
        self.x += 1
        if iteration == self.stall_after:
            self.stalled = True
        if not log:
            return None
        return Report(torch.tensor(self.losses[iteration], dtype=torch.float64), self.snapshot(),
                      {"x0": float(self.x[0])})

    def snapshot(self):
        return self.x.clone()

    def restore(self, snapshot):
        self.restored.append(float(snapshot[0]))
        self.x = snapshot.clone()

    def final_loss(self):
        if self.final is LossOverflow:
            raise LossOverflow("the final loss does not fit")
        return self.final


def _steps(result: TrainingResult, name: str = "iteration"):
    return [record[name] for record in result.history]


# ---------------------------------------------------------------- logging and max_iter


def test_max_iter_runs_every_step_and_logs_every_log_every_th():
    solver = ScriptedSolver([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25])
    result = train(solver, max_iter=7, log_every=3)
    assert result.n_iter == 7 and result.stop_reason == "max_iter" and result.best_step is None
    assert solver.calls == [(i, i % 3 == 0) for i in range(7)]
    assert _steps(result) == [0, 3, 6]
    assert [r["loss"] for r in result.history] == [5.0, 2.0, 0.25]
    assert [r["x0"] for r in result.history] == [1.0, 4.0, 7.0]  # the solver's metrics, in order
    seconds = [r["seconds"] for r in result.history]
    assert seconds == sorted(seconds) and result.seconds >= seconds[-1]
    assert float(solver.x[0]) == 7 and solver.restored == []


def test_record_keys_and_first_step_number_the_steps():
    solver = ScriptedSolver([3.0, 2.0, 1.0])
    result = train(solver, max_iter=3, loss_name="train_rmse", step_name="epoch", first_step=1)
    assert [list(r) for r in result.history] == [["epoch", "train_rmse", "x0", "seconds"]] * 3
    assert _steps(result, "epoch") == [1, 2, 3]


def test_final_loss_is_a_last_record_unless_the_last_step_logged_it():
    result = train(ScriptedSolver([3.0, 2.0, 1.0], final=0.5), max_iter=3)
    assert _steps(result) == [0, 1, 2, 3] and result.history[-1]["loss"] == 0.5
    assert set(result.history[-1]) == {"iteration", "loss", "seconds"}
    # a solver whose logged loss is the loss after its step needs no final record...
    logged_last = train(ScriptedSolver([3.0, 2.0, 1.0], final=0.5, logs_after_step=True),
                        max_iter=3)
    assert _steps(logged_last) == [0, 1, 2]
    # ...unless the last step was not logged (steps 0 and 2 of 0..3 are)
    unlogged_last = train(ScriptedSolver([3.0, 2.0, 1.0, 0.7], final=0.5, logs_after_step=True),
                          max_iter=4, log_every=2)
    assert _steps(unlogged_last) == [0, 2, 4] and unlogged_last.history[-1]["loss"] == 0.5
    # and no record at all when the solver has no final loss
    assert _steps(train(ScriptedSolver([3.0, 2.0, 1.0]), max_iter=3)) == [0, 1, 2]


# ---------------------------------------------------------------- tol


def test_tol_stops_early_and_reports_it():
    losses = [10.0, 5.0, 4.9, 4.0, 3.0, 2.0]
    solver = ScriptedSolver(losses)
    result = train(solver, max_iter=6, tol=0.05)
    # |10 - 5| > 0.05 * 10; |5 - 4.9| = 0.1 <= 0.05 * 5: stops after step 2
    assert result.stop_reason == "tol" and result.n_iter == 3
    assert _steps(result) == [0, 1, 2] and float(solver.x[0]) == 3
    assert solver.restored == []  # tol keeps the last factors
    # tol = 0 never stops early
    untouched = train(ScriptedSolver(losses), max_iter=6, tol=0.0)
    assert untouched.stop_reason == "max_iter" and untouched.n_iter == 6


def test_tol_compares_logged_steps_and_adds_the_resolution_floor():
    losses = [1.0, 1.0 + 1e-9, 1.0 + 2e-9, 1.0 + 3e-9]
    strict = train(ScriptedSolver(losses), max_iter=4, tol=1e-12)
    assert strict.stop_reason == "max_iter"
    floored = train(ScriptedSolver(losses), max_iter=4, tol=1e-12, resolution=1e-8)
    assert floored.stop_reason == "tol" and floored.n_iter == 2
    # with log_every=2 the comparison is between steps 0 and 2
    steps = [10.0, 1.0, 9.9, 1.0, 1.0]
    every_other = train(ScriptedSolver(steps), max_iter=5, log_every=2, tol=0.05)
    assert every_other.stop_reason == "tol" and every_other.n_iter == 3


# ---------------------------------------------------------------- early stopping


@pytest.mark.parametrize("first_step", [0, 1])
def test_early_stopping_restores_the_best_steps_factors(first_step):
    val = iter([5.0, 3.0, 2.0, 2.5, 2.7, 2.9, 3.0, 3.1])
    solver = ScriptedSolver([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0])
    seen_x = []

    def evaluate():
        seen_x.append(float(solver.x[0]))  # called at the state of the step it scores
        return {"val": next(val)}

    result = train(solver, max_iter=8, evaluate=evaluate, select="val", patience=2,
                   first_step=first_step)
    assert result.stop_reason == "early_stopping"
    assert result.best_step == 2 + first_step  # the third step's val 2.0
    assert result.n_iter == 5  # steps 3 and 4 did not improve on it
    assert [r["val"] for r in result.history] == [5.0, 3.0, 2.0, 2.5, 2.7]
    assert seen_x == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert solver.restored == [3.0] and float(solver.x[0]) == 3  # the best step's factors


def test_select_without_patience_tracks_the_best_step_but_keeps_the_last_factors():
    val = iter([5.0, 1.0, 2.0, 3.0])
    solver = ScriptedSolver([4.0, 3.0, 2.0, 1.0])
    result = train(solver, max_iter=4, evaluate=lambda: {"val": next(val)}, select="val")
    assert result.best_step == 1 and result.stop_reason == "max_iter"
    assert solver.restored == [] and float(solver.x[0]) == 4


# ---------------------------------------------------------------- callbacks


def test_callbacks_get_the_step_record_and_snapshot_and_can_stop():
    calls = []

    def callback(step, record, snapshot):
        calls.append((step, record["epoch"], record["loss"], float(snapshot[0])))
        return step == 5

    solver = ScriptedSolver([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0])
    result = train(solver, max_iter=8, log_every=2, first_step=1, step_name="epoch",
                   callback=callback)
    # logged steps are iterations 0, 2, 4 (epochs 1, 3, 5); True at epoch 5 stops there
    assert calls == [(1, 1, 9.0, 1.0), (3, 3, 7.0, 3.0), (5, 5, 5.0, 5.0)]
    assert result.stop_reason == "callback" and result.n_iter == 5
    assert float(solver.x[0]) == 5 and solver.restored == []


def test_a_callback_returning_none_or_false_does_not_stop():
    result = train(ScriptedSolver([3.0, 2.0, 1.0]), max_iter=3,
                   callback=lambda step, record, snap: None if step else False)
    assert result.stop_reason == "max_iter" and result.n_iter == 3


def test_a_stalled_solver_stops_the_loop():
    solver = ScriptedSolver([3.0, 2.0, 1.0, 0.5], stall_after=1)
    result = train(solver, max_iter=4)
    assert result.stop_reason == "stalled" and result.n_iter == 2


# ---------------------------------------------------------------- divergence


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_raises_divergence_error_keeping_the_last_finite_factors(bad):
    solver = ScriptedSolver([3.0, 2.0, bad, 1.0], lr=0.125)
    with pytest.raises(DivergenceError) as info:
        train(solver, max_iter=4)
    err = info.value
    assert isinstance(err, FloatingPointError) and isinstance(err, RuntimeError)
    assert mfext.DivergenceError is DivergenceError
    assert err.iteration == 2 and err.lr == 0.125
    assert str(err) == f"training diverged: the loss is {bad} at iteration 2"
    assert isinstance(err.result, TrainingResult)
    assert err.result.stop_reason == "diverged" and err.result.n_iter == 2
    assert [r["loss"] for r in err.result.history] == [3.0, 2.0]
    assert solver.restored == [2.0] and float(solver.x[0]) == 2  # step 1's factors
    assert len(solver.calls) == 3  # nothing ran after the failing step


def test_divergence_between_logged_steps_restores_the_last_logged_ones():
    solver = ScriptedSolver([3.0, 99.0, 2.0, 99.0, math.nan], lr=None)
    with pytest.raises(FloatingPointError) as info:  # what callers written for it catch
        train(solver, max_iter=6, log_every=2, step_name="epoch", first_step=1)
    assert info.value.iteration == 5 and info.value.lr is None
    assert float(solver.x[0]) == 3  # iteration 2 (epoch 3), the last logged finite step
    assert _steps(info.value.result, "epoch") == [1, 3]


def test_a_first_logged_loss_that_is_nan_restores_the_initial_factors():
    solver = ScriptedSolver([math.nan, 1.0])
    seen = []

    def describe(step, value, last_finite):
        seen.append((step, value, last_finite))
        return "custom message"

    with pytest.raises(DivergenceError, match="^custom message$") as info:
        train(solver, max_iter=2, describe_divergence=describe)
    assert len(seen) == 1 and seen[0][0] == 0 and math.isnan(seen[0][1]) and seen[0][2] is None
    assert float(solver.x[0]) == 0 and info.value.result.history == []


def test_a_nan_final_loss_diverges_too():
    solver = ScriptedSolver([3.0, 2.0], final=math.nan)
    with pytest.raises(DivergenceError) as info:
        train(solver, max_iter=2, first_step=1, step_name="epoch")
    assert info.value.iteration == 3 and info.value.result.n_iter == 2
    assert float(solver.x[0]) == 2  # the last logged step's factors


def test_loss_overflow_in_a_step_is_read_as_an_infinite_loss():
    """The documented handling: LossOverflow from step() is a divergence with loss inf at
    that step; the factors of the last finite logged step are restored."""
    solver = ScriptedSolver([3.0, 2.0, 1.0, 0.5], overflow_at=2, lr=0.5)
    with pytest.raises(DivergenceError) as info:
        train(solver, max_iter=4)
    err = info.value
    assert str(err) == "training diverged: the loss is inf at iteration 2"
    assert err.iteration == 2 and err.lr == 0.5 and err.result.n_iter == 2
    assert float(solver.x[0]) == 2 and solver.restored == [2.0]
    assert err.__cause__ is None and err.__suppress_context__  # raised "from None"


def test_loss_overflow_in_the_final_loss_is_read_as_an_infinite_loss():
    solver = ScriptedSolver([3.0, 2.0, 1.0], final=LossOverflow)
    with pytest.raises(DivergenceError, match=r"the loss is inf at iteration 3") as info:
        train(solver, max_iter=3)
    assert info.value.iteration == 3 and float(solver.x[0]) == 3


class _OtherRankDiverges:
    """A communicator stand-in: another rank reports divergence at its ``at``-th check."""

    def __init__(self, at):
        self.at, self.checks = at, []

    def any(self, flag, what):
        self.checks.append((flag, what))
        return flag or len(self.checks) == self.at


def test_divergence_on_another_rank_stops_every_rank():
    comm = _OtherRankDiverges(at=2)
    solver = ScriptedSolver([3.0, 2.0, 1.0])
    with pytest.raises(DivergenceError) as info:
        train(solver, max_iter=3, comm=comm)
    assert comm.checks == [(False, "divergence check")] * 2
    assert info.value.iteration == 1 and float(solver.x[0]) == 1  # step 0's factors


def test_verbose_prints_each_record(capsys):
    train(ScriptedSolver([3.0, 2.0]), max_iter=2, verbose=True, loss_name="rmse")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("iteration 0  rmse 3.0000  x0 1.0000  seconds ")
