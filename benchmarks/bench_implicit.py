"""Implicit-feedback benchmark: ``mfext.ImplicitALS`` side by side with implicit's ALS.

Both libraries run in one process, on the same split, the same threads and float32:

* **Quality and speed** on MovieLens 1M: ratings >= 4 are the interactions (value 1),
  a random 90/10 split of them (seed 0). Both models at the same rank (64 and 128),
  reg, iterations (15) and confidence. The reg at each rank is the peer's best:
  the value of a grid with implicit's best P@10 on a validation tenth of the
  training set (``select_reg``; ``--reg`` fixes it instead). On the confidence,
  implicit 0.7.3 weighs an interaction by ``alpha_implicit * r`` where mfext (and Hu,
  Koren and Volinsky) use ``1 + alpha * r``; on binary data these are the same model when ``alpha_implicit = 1 + alpha``, which is
  what this script passes. Reported: time per iteration (the median over the
  iterations of the median run of ``--repeat``), P@10 and nDCG@10 (both by
  :mod:`mfext.metrics`, which equals implicit's evaluation on the same factors), for
  mfext's ``cg`` and ``cholesky`` solvers and implicit's CG solver. implicit's BLAS
  is held at one thread (threadpoolctl), as its documentation recommends.
* **Scale**: a synthetic data set of lastfm-360k's shape (358,868 users x 160,113
  items, 17.5M interactions, popularity-skewed), k = 64: one iteration of each
  library and mfext's peak extra memory (RSS growth during its fit).

Writes JSON to ``benchmarks/results/`` (machine, versions, figures) and prints a
table. implicit is optional: without it only mfext's figures are reported.

    python3 benchmarks/bench_implicit.py [--data DIR] [--threads 2] [--repeat 3]
                                         [--ranks 64 128] [--reg R] [--no-scale] [--quick]
"""
from __future__ import annotations

import argparse
import gc
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from _common import PeakRss, markdown_table, record, rss_mib, save

import mfext  # noqa: E402
from mfext import datasets as ds  # noqa: E402

from mfext.bench.implicit import (ALPHA, ITERATIONS, REG, interaction_csr,  # noqa: E402
                                  run_implicit, run_mfext, select_reg, split_interactions)


def synthetic_interactions(m: int, n: int, nnz: int, seed: int = 0) -> ds.Ratings:
    """Seeded popularity-skewed interactions (value 1), duplicates removed."""
    g = np.random.default_rng(seed)
    item_p = 1.0 / np.arange(1, n + 1) ** 0.8
    item_p /= item_p.sum()
    user_p = 1.0 / np.arange(1, m + 1) ** 0.5
    user_p /= user_p.sum()
    rows = g.choice(m, size=int(nnz * 1.02), p=user_p)
    cols = g.choice(n, size=rows.size, p=item_p)
    key = np.unique(rows.astype(np.int64) * n + cols)[:nnz]
    rows, cols = key // n, key % n
    return ds.Ratings(torch.from_numpy(rows), torch.from_numpy(cols),
                      torch.ones(rows.size, dtype=torch.float32), np.arange(m), np.arange(n),
                      m, n)


def scale(threads: int, quick: bool) -> Dict[str, Any]:
    """One iteration of each library on lastfm-360k's shape, k = 64; mfext's peak extra memory.

    mfext fits two iterations and reports the second (the first includes the setup:
    summing duplicates, both CSR orders, the initial factors); implicit's figure is its
    own per-iteration callback time. Peak extra memory is the resident-set growth
    during the fit, sampled every 10 ms.
    """
    m, n, nnz = (358_868, 160_113, 17_500_000) if not quick else (35_886, 16_011, 1_750_000)
    t0 = time.perf_counter()
    data = synthetic_interactions(m, n, nnz)
    out: Dict[str, Any] = {"shape": [m, n], "nnz": int(data.vals.numel()),
                           "generate_seconds": time.perf_counter() - t0, "rank": 64}
    gc.collect()
    before = rss_mib()
    for solver in ("cg", "cholesky"):
        model = mfext.ImplicitALS(rank=64, reg=REG, alpha=ALPHA, max_iter=2, solver=solver,
                                  random_state=0, n_threads=threads)
        with PeakRss(0.01, baseline=before) as watch:
            t = time.perf_counter()
            model.fit(data)
            fit = time.perf_counter() - t
        secs = [h["seconds"] for h in model.history_]
        out[f"mfext_{solver}_fit_seconds_2_iterations"] = fit
        out[f"mfext_{solver}_setup_and_first_iteration_seconds"] = secs[0]
        out[f"mfext_{solver}_iteration_seconds"] = secs[1] - secs[0]  # the second iteration
        out[f"mfext_{solver}_peak_extra_mib"] = watch.extra_mib
        del model
        gc.collect()
    imp = None
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        X = interaction_csr(data)
        times: List[float] = []
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=64, regularization=REG, alpha=ALPHA + 1.0,
                                            iterations=1, num_threads=threads, random_state=0)
            model.fit(X, show_progress=False, callback=lambda it, dt, loss: times.append(dt))
        imp = {"iteration_seconds": times[0]}
    except ImportError:
        pass
    out["implicit"] = imp
    out["factor_bytes_mib"] = (m + n) * 64 * 4 / 2**20
    return out


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/ml-1m", help="MovieLens 1M directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ranks", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--iterations", type=int, default=ITERATIONS)
    ap.add_argument("--reg", type=float, default=None,
                    help="every model's reg (default: chosen per rank by select_reg)")
    ap.add_argument("--no-scale", action="store_true", help="skip the lastfm-360k-shaped run")
    ap.add_argument("--scale-only", action="store_true", help="only the lastfm-360k-shaped run")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 repeat, 3 iterations, a scale run at 1/10 of the shape")
    ap.add_argument("--out", default=None, help="JSON file name (default: implicit-<device>)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeat, iters = (1, 3) if args.quick else (args.repeat, args.iterations)

    if args.scale_only:
        result = record("implicit-als-scale", "cpu", {"scale": scale(args.threads, args.quick)})
        print(result["scale"])
        print(f"wrote {save(result, args.out or 'implicit-scale-cpu')}")
        return result
    positives, train, test = split_interactions(args.data)
    rows: List[Dict[str, Any]] = []
    regs: Dict[int, Any] = {}
    for rank in args.ranks:
        sel = select_reg(train, rank, iters, args.threads) if args.reg is None else None
        reg = sel["reg"] if sel is not None else args.reg
        regs[rank] = {"reg": reg, "selection": sel}
        print(f"k = {rank}: reg {reg:g}" + (f" (validation P@10 of {sel['chosen_by']}: "
                                             f"{sel['validation_precision@10']})" if sel else ""))
        for solver in ("cg", "cholesky"):
            rows.append(run_mfext(train, test, rank, solver, iters, repeat, args.threads,
                                  reg=reg))
        imp = run_implicit(train, test, rank, iters, repeat, args.threads, reg=reg)
        if imp is not None:
            rows.append(imp)
    result = record("implicit-als", "cpu", {
        "data": str(args.data), "interactions": int(positives.vals.numel()),
        "train": int(train.vals.numel()), "test": int(test.vals.numel()),
        "settings": {"alpha_mfext": ALPHA, "alpha_implicit": ALPHA + 1.0, "reg_by_rank": regs,
                     "iterations": iters, "threads": args.threads, "dtype": "float32",
                     "repeat": repeat},
        "runs": rows})
    try:
        import implicit

        result["implicit_version"] = implicit.__version__
    except ImportError:
        result["implicit_version"] = None
    table = []
    for rank in args.ranks:
        ref = next((r for r in rows if r["library"] == "implicit" and r["rank"] == rank), None)
        for r in (x for x in rows if x["rank"] == rank):
            ratio = (f"{ref['seconds_per_iteration'] / r['seconds_per_iteration']:.2f}x"
                     if ref is not None else "-")
            table.append([rank, f"{regs[rank]['reg']:g}", f"{r['library']} {r['solver']}",
                          f"{r['seconds_per_iteration'] * 1e3:.1f} ms", ratio,
                          f"{r['precision@10']:.4f}", f"{r['ndcg@10']:.4f}"])
    print(markdown_table(["k", "reg", "model", "time / iteration", "speed-up vs implicit",
                          "P@10", "nDCG@10"], table))
    if not args.no_scale:
        result["scale"] = scale(args.threads, args.quick)
        print(result["scale"])
    path = save(result, args.out or ("implicit-quick-cpu" if args.quick else "implicit-cpu"))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
