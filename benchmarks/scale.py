"""Netflix scale on one machine: fit time, setup time and peak memory against nnz.

Seeded synthetic ratings at the Netflix prize's proportions (480,189 users x
17,770 items at 100M ratings; both sides scaled by sqrt(nnz / 100M), so the
density stays 1.2%), item popularity and user activity Zipf-like (exponents 0.45
and 0.3: at 100M the most rated item has about 0.25% of the ratings and the most
active user about 7,000, near the prize data's 0.23% and 17,000), distinct
(user, item) pairs, values 1..5, given to
``MatrixFactorization.fit`` as a ``(rows, cols, vals)`` triple of numpy arrays
(int64, int64, float32: 20 bytes a rating), as a new user would.

Each (size, solver) runs in a fresh process, so that one run's memory cannot hide
another's. The process loads the data (made once per size and kept in
``--cache``, outside the repository), then measures:

* ``setup_seconds``: everything ``fit`` does before its first epoch
  (``model.setup_seconds_``: checks, ids, canonical order, CSR orders, blocks);
* ``epoch_seconds``: the median epoch time over ``--epochs`` epochs (sgd: also
  updates per second, the bytes an update moves, 4 (k + 1) * 4 + 12, and the
  fraction of the machine's measured copy bandwidth that this reaches);
* ``input_mib``: the triple's bytes; ``rss_before_fit_mib``; ``peak_extra_mib``:
  the highest resident set size during ``fit`` (sampled every 5 ms) minus the
  one before it, the memory ``fit`` adds to what the user holds; and the bound
  the scale work sets, ``factors + 4 GiB``.

Writes ``benchmarks/results/scale-<machine>.json`` and a log-log plot of epoch
time, setup time and peak extra memory against nnz with the fitted slopes
(``.png``; needs matplotlib, else the plot is skipped).

    python3 benchmarks/scale.py                       # 1M, 10M, 100M; sgd, als, adam; k = 128
    python3 benchmarks/scale.py --solvers implicit-als   # ImplicitALS, ratings as strengths
    python3 benchmarks/scale.py --sizes 1e6 1e7 --solvers sgd --epochs 3
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

import _common  # noqa: F401  (puts the checkout on sys.path)
from _common import PeakRss, loglog_slope, markdown_table, record, save

NETFLIX = (480_189, 17_770, 100_480_507)  # users, items, ratings of the prize's data


def netflix_shape(nnz: int) -> Tuple[int, int]:
    """(users, items) at the Netflix proportions for ``nnz`` ratings (same density)."""
    s = math.sqrt(nnz / NETFLIX[2])
    return max(1, round(NETFLIX[0] * s)), max(1, round(NETFLIX[1] * s))


def _power_law(g: np.random.Generator, size: int, n: int, a: float) -> np.ndarray:
    """``size`` draws in [0, n) with P(i) about (i + 1)^-a: the continuous inverse CDF."""
    top = (n + 1.0) ** (1.0 - a) - 1.0
    x = (top * g.random(size) + 1.0) ** (1.0 / (1.0 - a)) - 1.0
    return np.minimum(x.astype(np.int64), n - 1)


def make_ratings(nnz: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Seeded distinct (user, item) pairs with popularity skew; values 1..5 (float32)."""
    m, n = netflix_shape(nnz)
    g = np.random.default_rng(seed)
    keys = np.empty(0, dtype=np.int64)
    while keys.size < nnz:  # draw, drop repeated pairs, draw again for the shortfall
        want = int((nnz - keys.size) * 1.05) + 1000
        fresh = _power_law(g, want, m, 0.3) * n + _power_law(g, want, n, 0.45)
        keys = np.sort(np.concatenate([keys, fresh]))
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    keys = g.permutation(keys)[:nnz]  # a random order, as ratings arrive
    rows, cols = keys // n, keys % n
    del keys
    # Relabel so that popular users/items are not simply the low ids.
    rows = g.permutation(m)[rows]
    cols = g.permutation(n)[cols]
    vals = g.integers(1, 6, size=nnz).astype(np.float32)
    return rows.astype(np.int64), cols.astype(np.int64), vals, m, n


def cached_ratings(nnz: int, cache: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """:func:`make_ratings`, saved to ``cache`` the first time and loaded after."""
    m, n = netflix_shape(nnz)
    path = cache / f"netflix-shape-{nnz}-seed0.npz"
    if not path.exists():
        rows, cols, vals, m, n = make_ratings(nnz)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, rows=rows, cols=cols, vals=vals)
        os.replace(tmp, path)
        return rows, cols, vals, m, n
    with np.load(path) as z:
        return z["rows"], z["cols"], z["vals"], m, n


def copy_bandwidth(threads: int, mib: int = 512) -> float:
    """The machine's copy bandwidth (bytes read + written per second), median of 5 copies."""
    import torch

    torch.set_num_threads(threads)
    a = torch.ones(mib * 2**18)
    b = torch.empty_like(a)
    times = []
    for _ in range(6):
        t = time.perf_counter()
        b.copy_(a)
        times.append(time.perf_counter() - t)
    return 2 * a.numel() * 4 / float(np.median(times[1:]))


def worker(nnz: int, solver: str, rank: int, epochs: int, threads: int,
           cache: Path) -> Dict[str, Any]:
    """One fit in this process; returns its figures."""
    import torch

    import mfext

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    rows, cols, vals, m, n = cached_ratings(nnz, cache)
    gen_s = time.perf_counter() - t0
    import gc

    gc.collect()
    if solver == "implicit-als":  # the ratings as interaction strengths
        model = mfext.ImplicitALS(rank=rank, max_iter=epochs, random_state=0, n_threads=threads)
    else:
        model = mfext.MatrixFactorization(rank=rank, solver=solver, max_iter=epochs,
                                          random_state=0, n_threads=threads)
    error = None
    with PeakRss(0.005) as watch:
        t = time.perf_counter()
        try:
            model.fit((rows, cols, vals))
        except MemoryError as e:  # the fit's own refusal, before it starts
            error = str(e)
        fit_s = time.perf_counter() - t
    before = watch.baseline
    out: Dict[str, Any] = {
        "nnz": int(vals.size), "users": m, "items": n, "solver": solver, "rank": rank,
        "threads": threads, "data_seconds": gen_s, "fit_seconds": fit_s,
        "input_mib": (rows.nbytes + cols.nbytes + vals.nbytes) / 2**20,
        "factors_mib": (m + n) * (rank + 1) * 4 / 2**20,
        "rss_before_fit_mib": before, "peak_extra_mib": watch.extra_mib, "error": error}
    if error is None:
        secs = [0.0] + [h["seconds"] for h in model.history_]
        setup = float(model.setup_seconds_)
        epoch_times = [b - a for a, b in zip(secs, secs[1:])]
        epoch_times[0] -= setup  # the first record's clock includes the setup
        out.update(setup_seconds=setup, epoch_seconds=float(np.median(epoch_times)),
                   all_epoch_seconds=epoch_times, epochs=len(epoch_times),
                   train_rmse=model.history_[-1].get("train_rmse"))
        if solver == "sgd":
            out["updates_per_second"] = out["nnz"] / out["epoch_seconds"]
            # Each update reads and writes a user and an item row (k + 1 values with
            # the bias) and reads its rating (two int32 ids and a float32 value).
            out["bytes_per_update"] = 4 * (rank + 1) * 4 + 12
            bw = copy_bandwidth(threads)
            out["copy_bandwidth_gb_s"] = bw / 1e9
            out["fraction_of_copy_bandwidth"] = (out["updates_per_second"]
                                                 * out["bytes_per_update"] / bw)
    out["bound_mib"] = out["factors_mib"] + 4096
    return out


def plot(points: List[Dict[str, Any]], fits: Dict[str, Any], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, key, label in ((axes[0], "epoch_seconds", "epoch (s)"),
                           (axes[1], "setup_seconds", "setup (s)"),
                           (axes[2], "peak_extra_mib", "peak extra memory (MiB)")):
        for solver in sorted({p["solver"] for p in points}):
            pts = sorted((p["nnz"], p[key]) for p in points
                         if p["solver"] == solver and p.get(key) is not None)
            if not pts:
                continue
            slope = fits.get(f"{solver}/{key}")
            ax.loglog([x for x, _ in pts], [y for _, y in pts], "o-",
                      label=f"{solver}" + (f" (slope {slope:.2f})" if slope is not None else ""))
        ax.set_xlabel("ratings (nnz)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7, 1e8])
    ap.add_argument("--solvers", nargs="+", default=["sgd", "als", "adam"],
                    help="MatrixFactorization solvers, or implicit-als (ImplicitALS)")
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="result name (default: scale-<machine>)")
    ap.add_argument("--cache", default="/tmp/mfext-scale-data",
                    help="folder for the generated data (default /tmp/mfext-scale-data)")
    ap.add_argument("--worker", nargs=2, metavar=("NNZ", "SOLVER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        res = worker(int(float(args.worker[0])), args.worker[1], args.rank, args.epochs,
                     args.threads, Path(args.cache))
        print("RESULT " + json.dumps(res))
        return res
    points: List[Dict[str, Any]] = []
    for size in args.sizes:
        for solver in args.solvers:
            cmd = [sys.executable, __file__, "--worker", str(int(size)), solver, "--rank",
                   str(args.rank), "--epochs", str(args.epochs), "--threads", str(args.threads),
                   "--cache", args.cache]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                res = {"nnz": int(size), "solver": solver, "rank": args.rank,
                       "error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
            else:
                res = json.loads(line[len("RESULT "):])
            points.append(res)
            print(json.dumps({k: v for k, v in res.items() if k != "all_epoch_seconds"}),
                  flush=True)
    fits: Dict[str, Any] = {}
    for solver in args.solvers:
        for key in ("epoch_seconds", "setup_seconds", "peak_extra_mib"):
            pts = [(p["nnz"], p[key]) for p in points
                   if p["solver"] == solver and p.get(key) is not None]
            if len(pts) >= 2:
                fits[f"{solver}/{key}"] = loglog_slope([x for x, _ in pts],
                                                       [y for _, y in pts])[0]
    result = record("scale", "cpu", {"settings": vars(args), "points": points,
                                     "loglog_slopes": fits})
    path = save(result, args.out or "scale-cpu")
    png = path.with_suffix(".png")
    title = f"mfext at the Netflix shape's proportions, k = {args.rank}, {args.threads} threads"
    plotted = plot([p for p in points if p.get("error") is None], fits, png, title)
    rows = []
    for p in points:
        if p.get("error"):
            rows.append([f"{p['nnz']:,}", p["solver"], "-", "-", "-", "-", p["error"][:60]])
            continue
        rows.append([f"{p['nnz']:,}", p["solver"], f"{p['setup_seconds']:.1f} s",
                     f"{p['epoch_seconds']:.2f} s",
                     f"{p['updates_per_second'] / 1e6:.1f}M/s" if "updates_per_second" in p
                     else "-", f"{p['peak_extra_mib']:.0f} MiB (input {p['input_mib']:.0f})",
                     f"bound {p['bound_mib']:.0f} MiB"])
    print(markdown_table(["nnz", "solver", "setup", "epoch", "sgd updates", "peak extra",
                          "rule"], rows))
    print("log-log slopes:", {k: round(v, 2) for k, v in fits.items()})
    print(f"wrote {path}" + (f" and {png}" if plotted else " (no matplotlib: no plot)"))
    return result


if __name__ == "__main__":
    main()
