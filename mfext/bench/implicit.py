"""``mfext bench --movielens PATH --implicit``: ImplicitALS beside implicit's ALS.

The ratings >= 4 of a MovieLens file are the interactions (value 1), split
90/10 at random with seed 0. ``ImplicitALS`` (each solver) and, when it is
installed, implicit's CPU ALS train on the 90% at the same rank, reg,
iterations and confidence, and are ranked on the 10% with
:func:`mfext.metrics.ranking_metrics` (which equals implicit's own evaluation
on the same factors). implicit 0.7.3 weighs an interaction by ``alpha * r``
where mfext uses ``1 + alpha * r``: on binary data the two are the same model
when implicit's alpha is mfext's plus one, which is what is passed. implicit's
BLAS runs on one thread (threadpoolctl), as its documentation recommends.

The reg is the peer's best (:func:`select_reg`): each value of
:data:`REG_GRID` fits implicit (mfext's CG without it) on 90% of the training
set, and the one with the best P@10 on the other 10% (seed 1) is used by every
model at that rank. The test set plays no part in the choice. (A fixed small
reg leaves every model over-fitted: P@10 0.20 at k = 128 with reg 0.05
against 0.26 at reg 50, on ML-1M, for both libraries.)

This module owns those runs (:func:`run_mfext`, :func:`run_implicit`,
:func:`select_reg`, shared with
``benchmarks/bench_implicit.py``) and the command's record (implicit.json and a
printed table). The model is :class:`mfext.ImplicitALS`, the metrics
:mod:`mfext.metrics`, the loader and split :mod:`mfext.datasets`.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from mfext import ImplicitALS, datasets, metrics

from .machine import machine_info, versions

__all__ = ["run_mfext", "run_implicit", "run_implicit_movielens", "interaction_csr",
           "select_reg"]

ALPHA = 4.0      # mfext's alpha: c = 1 + alpha on an interaction (implicit's: alpha + 1)
REG = 0.05       # the reg of the timing-only runs (the lastfm-360k shape)
REG_GRID = (0.05, 1.0, 5.0, 20.0, 50.0, 100.0, 200.0)  # the reg values select_reg tries
ITERATIONS = 15


def interaction_csr(r: datasets.Ratings):
    """The interactions as a float32 scipy CSR matrix (n_users, n_items)."""
    import scipy.sparse as sp

    return sp.csr_matrix((r.vals.numpy().astype(np.float32), (r.rows.numpy(), r.cols.numpy())),
                         shape=(r.n_users, r.n_items))


def _summary(library: str, solver: str, rank: int, runs: List[tuple], train: Any,
             test: Any, factors: Any) -> Dict[str, Any]:
    """The median run's time per iteration and its P@10, nDCG@10 and MAP@10."""
    runs = sorted(runs, key=lambda r: r[1])
    total, per_iter = runs[len(runs) // 2][:2]
    res = metrics.ranking_metrics(factors(runs[len(runs) // 2][2]), train, test, k=10)
    return {"library": library, "solver": solver, "rank": rank, "fit_seconds": total,
            "seconds_per_iteration": per_iter,
            "all_runs_seconds_per_iteration": [r[1] for r in runs],
            "precision@10": res["precision"], "ndcg@10": res["ndcg"], "map@10": res["map"]}


def run_mfext(train: datasets.Ratings, test: datasets.Ratings, rank: int, solver: str,
              iterations: int = ITERATIONS, repeat: int = 3, threads: Optional[int] = None,
              device: Optional[str] = None, reg: float = REG) -> Dict[str, Any]:
    """``ImplicitALS`` ``repeat`` times: per-iteration time (median), P@10, nDCG@10."""
    runs = []
    for rep in range(repeat):
        model = ImplicitALS(rank=rank, reg=reg, alpha=ALPHA, max_iter=iterations, solver=solver,
                            random_state=rep, n_threads=threads, device=device)
        t0 = time.perf_counter()
        model.fit(train)
        total = time.perf_counter() - t0
        secs = [0.0] + [h["seconds"] for h in model.history_]
        per_iter = statistics.median(b - a for a, b in zip(secs, secs[1:]))
        runs.append((total, per_iter, model))
    return _summary("mfext", solver, rank, runs, train, test, lambda m: m)


def run_implicit(train: datasets.Ratings, test: datasets.Ratings, rank: int,
                 iterations: int = ITERATIONS, repeat: int = 3,
                 threads: int = 0, reg: float = REG) -> Optional[Dict[str, Any]]:
    """implicit's CPU ALS (CG) the same way; None when implicit or threadpoolctl is absent."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    X = interaction_csr(train)
    runs = []
    for rep in range(repeat):
        times: List[float] = []
        with threadpool_limits(1, "blas"):  # before the model: it checks the BLAS threads
            model = AlternatingLeastSquares(factors=rank, regularization=reg, alpha=ALPHA + 1.0,
                                            iterations=iterations, num_threads=threads,
                                            random_state=rep, dtype=np.float32)
            t0 = time.perf_counter()
            model.fit(X, show_progress=False,
                      callback=lambda it, dt, loss: times.append(float(dt)))
            total = time.perf_counter() - t0
        runs.append((total, statistics.median(times), model))
    return _summary("implicit", "cg", rank, runs, train, test,
                    lambda m: (torch.from_numpy(np.asarray(m.user_factors)),
                               torch.from_numpy(np.asarray(m.item_factors))))


def select_reg(train: datasets.Ratings, rank: int, iterations: int = ITERATIONS,
               threads: Optional[int] = None, grid: Sequence[float] = REG_GRID,
               seed: int = 1) -> Dict[str, Any]:
    """The reg of :data:`REG_GRID` with the peer's best validation P@10.

    ``train`` is split 90/10 at random (``seed``); implicit's ALS (mfext's CG
    when implicit is absent) fits the 90% once per value and is ranked on the
    10%. Returns ``{"reg", "chosen_by", "validation_precision@10": {reg: P@10}}``.
    """
    fit, valid = datasets.train_test_split(train, test_size=0.1, seed=seed)
    scores: Dict[float, float] = {}
    chosen_by = "implicit"
    for reg in grid:
        r = run_implicit(fit, valid, rank, iterations, 1, threads or 0, reg=reg)
        if r is None:
            chosen_by = "mfext cg"
            r = run_mfext(fit, valid, rank, "cg", iterations, 1, threads, reg=reg)
        scores[reg] = r["precision@10"]
    best = max(grid, key=lambda g: scores[g])
    return {"reg": best, "chosen_by": chosen_by, "validation_precision@10": scores}


def split_interactions(path: str, seed: int = 0):
    """Ratings >= 4 of the file at ``path`` as interactions, and a random 90/10 split."""
    positives = datasets.to_implicit(datasets.load_movielens(path), threshold=4.0)
    train, test = datasets.train_test_split(positives, test_size=0.1, seed=seed)
    return positives, train, test


def run_implicit_movielens(path: str, out_dir: Path, *, rank: int = 64,
                           iterations: Optional[int] = None, repeat: int = 3,
                           solvers: Sequence[str] = ("cg", "cholesky"),
                           threads: Optional[int] = None, device: Optional[str] = None,
                           reg: Optional[float] = None, command: str = "") -> Dict[str, Any]:
    """Both libraries on one split; writes ``out_dir/implicit.json`` and prints a table.

    ``reg`` None: :func:`select_reg`'s.
    """
    iterations = ITERATIONS if iterations is None else iterations
    positives, train, test = split_interactions(path)
    selection = select_reg(train, rank, iterations, threads) if reg is None else None
    reg = selection["reg"] if selection is not None else reg
    rows = [run_mfext(train, test, rank, s, iterations, repeat, threads, device, reg=reg)
            for s in solvers]
    imp = run_implicit(train, test, rank, iterations, repeat, threads or 0, reg=reg)
    if imp is not None:
        rows.append(imp)
    result = {"command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": machine_info(), "versions": versions(),
              "data": {"path": str(path), "interactions": int(positives.vals.numel()),
                       "train": int(train.vals.numel()), "test": int(test.vals.numel())},
              "settings": {"rank": rank, "iterations": iterations, "repeat": repeat,
                           "alpha_mfext": ALPHA, "alpha_implicit": ALPHA + 1.0, "reg": reg,
                           "reg_selection": selection,
                           "threads": torch.get_num_threads() if threads is None else threads},
              "rows": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "implicit.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"# implicit feedback, {path}: {positives.vals.numel():,} interactions (ratings >= 4), "
          f"rank {rank}, reg {reg:g}, {iterations} iterations")
    print(f"  {'model':<20} {'ms / iteration':>15} {'P@10':>8} {'nDCG@10':>8}")
    for r in rows:
        print(f"  {r['library'] + ' ' + r['solver']:<20} {r['seconds_per_iteration'] * 1e3:>15.1f} "
              f"{r['precision@10']:>8.4f} {r['ndcg@10']:>8.4f}")
    if imp is None:
        print("  (implicit is not installed: pip install implicit threadpoolctl to compare)")
    return result
