"""Sparse peers on MovieLens, same machine, same split: time to reach the same test RMSE.

The ratings are split 90/10 with seed 0. The target is the test RMSE of
Surprise's SVD (biased MF trained by SGD, 20 epochs, the same rank). Each mfext
solver trains with the test split as validation; its ``history_`` gives the
RMSE after every epoch and the time to the first epoch at or below the target.

implicit's ALS is timed on the same training ratings, but its objective does
not match: it is the implicit-feedback loss (Hu, Koren & Volinsky 2008), a
confidence-weighted squared error over *all* m x n cells against 0/1
preferences, with the ratings used as confidences. Its dot products are not
rating predictions, so its RMSE is recorded but marked as not comparable.

    python benchmarks/peers_sparse.py --data ../shared/data/ml-100k/u.data
    python benchmarks/peers_sparse.py --data ../shared/data/ml-1m/ratings_no_timestamp.dat

Needs mfext.MatrixFactorization and mfext.datasets for the mfext rows
and the loader; without them the peers still run on a split made here (seeded
permutation, 10% test), and the mfext rows are listed as skipped.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import _common  # noqa: F401  (puts the checkout on sys.path)
import numpy as np
import torch

import mfext
from mfext.bench.peers import surprise_svd

from _common import ROOT, device_slug, markdown_table, record, save

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"


def _fallback_load(path: Path):
    """user, item, rating from u.data (tab), ratings.dat (::) or ratings.csv (header)."""
    text = path.read_text()
    if "::" in text[:200]:
        text = text.replace("::", "\t")
    delim = "," if path.suffix == ".csv" else None
    skip = 1 if path.suffix == ".csv" else 0
    a = np.loadtxt(text.splitlines(), delimiter=delim, skiprows=skip, usecols=(0, 1, 2))
    users, rows = np.unique(a[:, 0].astype(np.int64), return_inverse=True)
    items, cols = np.unique(a[:, 1].astype(np.int64), return_inverse=True)
    return SimpleNamespace(rows=torch.from_numpy(rows), cols=torch.from_numpy(cols),
                           vals=torch.from_numpy(a[:, 2].astype(np.float32)),
                           user_ids=users, item_ids=items, n_users=len(users), n_items=len(items))


def _fallback_split(r, test_size: float = 0.1, seed: int = 0):
    perm = torch.randperm(r.vals.numel(), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_size * perm.numel()))

    def take(ix):
        return SimpleNamespace(**{**vars(r), "rows": r.rows[ix], "cols": r.cols[ix],
                                  "vals": r.vals[ix]})
    return take(perm[n_test:]), take(perm[:n_test])


def load_split(path: Path):
    """(train, test, how): mfext.datasets when present, else the fallback here."""
    try:
        from mfext import datasets

        r = datasets.load_movielens(path)
        train, test = datasets.train_test_split(r, test_size=0.1, seed=0)
        return r, train, test, "mfext.datasets.train_test_split(test_size=0.1, seed=0)"
    except ImportError:
        r = _fallback_load(path)
        train, test = _fallback_split(r)
        return r, train, test, "fallback split in benchmarks/peers_sparse.py (no mfext.datasets)"


def mfext_rows(train, test, rank: int, solvers: List[str], target: float,
               max_iter: Optional[int]) -> List[dict]:
    rows = []
    for solver in solvers:
        options = {"max_iter": max_iter} if max_iter else {}
        model = mfext.MatrixFactorization(rank=rank, solver=solver, random_state=0, **options)
        t0 = time.perf_counter()
        model.fit(train, validation=test)
        seconds = time.perf_counter() - t0
        from mfext.bench.movielens import _curve

        curve = _curve(list(model.history_), seconds)
        hit = next((c for c in curve if c["val_rmse"] is not None and c["val_rmse"] <= target), None)
        rows.append({"library": "mfext", "model": f"MatrixFactorization({solver})",
                     "objective": "explicit (biased MF, L2)", "comparable": True,
                     "fit_seconds": seconds, "test_rmse": float(model.score(test)),
                     "time_to_target": hit["seconds"] if hit else None, "curve": curve})
        print(f"mfext {solver}: RMSE {rows[-1]['test_rmse']:.4f} in {seconds:.2f} s", flush=True)
    return rows


def implicit_row(train, test, rank: int, iterations: int) -> Optional[dict]:
    try:
        import implicit
        from scipy.sparse import csr_matrix
    except ImportError:
        return None
    ui = csr_matrix((train.vals.numpy().astype(np.float32),
                     (train.rows.numpy(), train.cols.numpy())),
                    shape=(int(train.n_users), int(train.n_items)))
    try:  # implicit asks for a single-threaded BLAS (it parallelizes over users itself)
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        threadpool_limits = lambda *a, **k: contextlib.nullcontext()  # noqa: E731
    with threadpool_limits(1, "blas"):
        model = implicit.als.AlternatingLeastSquares(factors=rank, iterations=iterations,
                                                     regularization=0.01, random_state=0)
        t0 = time.perf_counter()
        model.fit(ui, show_progress=False)
        seconds = time.perf_counter() - t0
    U, V = np.asarray(model.user_factors), np.asarray(model.item_factors)
    pred = np.einsum("ij,ij->i", U[test.rows.numpy()], V[test.cols.numpy()])
    rmse = float(np.sqrt(np.mean((pred - test.vals.numpy()) ** 2)))
    print(f"implicit ALS: {seconds:.2f} s (RMSE {rmse:.4f}, not comparable)", flush=True)
    return {"library": "implicit", "model": f"AlternatingLeastSquares({iterations} it.)",
            "objective": "implicit feedback (all cells, 0/1 preference, ratings as confidence)",
            "comparable": False, "fit_seconds": seconds, "test_rmse": rmse,
            "time_to_target": None, "curve": []}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--rank", type=int, default=100, help="every method's rank (Surprise's default)")
    p.add_argument("--solvers", default="sgd,als,adam")
    p.add_argument("--max-iter", type=int, default=None, help="epochs for mfext (its default)")
    p.add_argument("--surprise-epochs", type=int, default=20)
    p.add_argument("--implicit-iterations", type=int, default=15)
    args = p.parse_args()
    if not args.data.exists():
        raise SystemExit(f"--data {args.data} does not exist")
    ratings, train, test, how = load_split(args.data)
    print(f"{args.data}: {train.vals.numel():,} train / {test.vals.numel():,} test ratings; {how}")
    rows, skipped = [], []
    peer = surprise_svd(train, test, rank=args.rank, n_epochs=args.surprise_epochs)
    target = None
    if peer is None:
        skipped.append({"method": "surprise SVD", "reason": "scikit-surprise is not installed"})
    else:
        target = peer["test_rmse"]
        peer.update({"objective": "explicit (biased MF, L2)", "comparable": True,
                     "time_to_target": peer["fit_seconds"], "curve": []})
        rows.append(peer)
        print(f"surprise SVD: RMSE {target:.4f} in {peer['fit_seconds']:.2f} s (the target)")
    if hasattr(mfext, "MatrixFactorization") and target is not None:
        rows += mfext_rows(train, test, args.rank, args.solvers.split(","), target, args.max_iter)
    else:
        skipped.append({"method": "mfext MatrixFactorization",
                        "reason": "needs mfext.MatrixFactorization"
                        if not hasattr(mfext, "MatrixFactorization") else "no target (no Surprise)"})
    imp = implicit_row(train, test, args.rank, args.implicit_iterations)
    if imp is None:
        skipped.append({"method": "implicit ALS", "reason": "implicit is not installed"})
    else:
        rows.append(imp)
    name = args.data.parent.name
    res = record("peers-sparse", "cpu", {"data": str(args.data), "split": how, "rank": args.rank,
                                         "n_train": int(train.vals.numel()),
                                         "n_test": int(test.vals.numel()), "target_rmse": target,
                                         "torch_threads": torch.get_num_threads(),
                                         "rows": rows, "skipped": skipped})
    path = save(res, f"peers-sparse-{name}-{device_slug('cpu')}")
    print("\n" + markdown_table(
        ["library", "model", "objective", "fit s", "test RMSE", "time to target RMSE (s)"],
        [[r["library"], r["model"], r["objective"], f"{r['fit_seconds']:.2f}",
          f"{r['test_rmse']:.4f}" + ("" if r["comparable"] else " (not comparable)"),
          f"{r['time_to_target']:.2f}" if r["time_to_target"] is not None else "-"]
         for r in rows]))
    for s in skipped:
        print(f"skipped: {s['method']}: {s['reason']}")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
