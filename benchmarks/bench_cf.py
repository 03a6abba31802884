"""Collaborative-filtering benchmark: mfext's SGD and ALS kernels and the estimator on
MovieLens 1M, side by side with scikit-surprise's SVD on the same split.

CPU, float32, 2 threads (``--threads``), one run. Measures:

* SGD throughput: rating updates per second of one ``sgd_epoch_`` call at k=64
  (the median of ``--repeat`` epochs, in the estimator's blocked layout);
* one ALS epoch (users + items) at k=64: the median of ``--repeat`` epochs;
* time to test RMSE <= 0.865 for ``MatrixFactorization`` (sgd and als, defaults,
  timed from the start of ``fit`` to the end of the first epoch whose test
  RMSE is <= 0.865, per-epoch evaluation included) and the final test RMSE;
* Surprise ``SVD()`` with its defaults: fit time and test RMSE.

Writes JSON to ``benchmarks/results/`` (machine, versions, figures) and prints
a table. ``--quick`` is a smoke run on ML-100K with fewer repeats.

    python3 benchmarks/bench_cf.py [--quick] [--data DIR] [--threads 2] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mfext  # noqa: E402
from mfext.recommenders import solvers  # noqa: E402
from mfext import datasets as ds  # noqa: E402

TARGET_RMSE = 0.865


def machine_info(threads: int) -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import surprise
        surprise_version = surprise.__version__
    except ImportError:
        surprise_version = None
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "mfext": mfext.__version__,
        "mfext_build": mfext.build_info(),
        "surprise": surprise_version,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }


def problem(train: ds.Ratings, biases: bool = True) -> solvers.RatingsProblem:
    vals = train.vals.float()
    return solvers.RatingsProblem(train.rows, train.cols, vals, train.n_users, train.n_items,
                                  float(vals.double().mean()), biases, False)


def epoch_times(solver, repeat: int) -> list:
    """Seconds of ``repeat`` epochs after one warm-up epoch."""
    solver.epoch(0)
    times = []
    for t in range(repeat):
        start = time.perf_counter()
        solver.epoch(t + 1)
        times.append(time.perf_counter() - start)
    return times


def bench_sgd_throughput(train: ds.Ratings, rank: int, repeat: int) -> dict:
    p = problem(train)
    gen = torch.Generator().manual_seed(0)
    f = solvers.init_factors(p, rank, 0.05, gen, torch.float32, torch.device("cpu"))
    solver = solvers.SgdSolver(p, f, lr=0.01, lr_decay=1.0, reg=0.05, bias_reg=0.01, gen=gen,
                               n_threads=torch.get_num_threads())
    times = epoch_times(solver, repeat)
    med = statistics.median(times)
    return {"nnz": train.nnz, "rank": rank, "epoch_seconds": times, "median_epoch_seconds": med,
            "updates_per_second": train.nnz / med, "grid": solver.P}


def bench_als_epoch(train: ds.Ratings, rank: int, repeat: int) -> dict:
    p = problem(train)
    gen = torch.Generator().manual_seed(0)
    f = solvers.init_factors(p, rank, 0.05, gen, torch.float32, torch.device("cpu"))
    start = time.perf_counter()
    solver = solvers.AlsSolver(p, f, reg=0.3, bias_reg=0.3, exponent=0.75)
    setup = time.perf_counter() - start
    times = epoch_times(solver, repeat)
    return {"nnz": train.nnz, "rank": rank, "setup_seconds": setup, "epoch_seconds": times,
            "median_epoch_seconds": statistics.median(times)}


def bench_estimator(train: ds.Ratings, test: ds.Ratings, solver: str) -> dict:
    start = time.perf_counter()
    model = mfext.MatrixFactorization(solver=solver, random_state=0).fit(train, validation=test)
    total = time.perf_counter() - start
    hit = next((h for h in model.history_ if h["val_rmse"] <= TARGET_RMSE), None)
    return {
        "params": {k: (str(v) if isinstance(v, torch.dtype) else v)
                   for k, v in model.get_params().items()},
        "fit_seconds": total,
        "epochs": model.n_iter_,
        "final_test_rmse": model.score(test),
        "seconds_to_target": None if hit is None else hit["seconds"],
        "epoch_at_target": None if hit is None else hit["epoch"],
        "history": model.history_,
    }


def bench_surprise(train: ds.Ratings, test: ds.Ratings) -> dict:
    try:
        from surprise import SVD, Dataset, Reader, accuracy
    except ImportError:
        return {"skipped": "scikit-surprise is not installed (pip install scikit-surprise)"}
    users = train.user_ids[train.rows.numpy()]
    items = train.item_ids[train.cols.numpy()]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.tsv"
        with open(path, "w") as fh:
            for u, i, r in zip(users.tolist(), items.tolist(), train.vals.tolist()):
                fh.write(f"{u}\t{i}\t{r:g}\n")
        lo, hi = float(train.vals.min()), float(train.vals.max())
        data = Dataset.load_from_file(str(path), Reader(line_format="user item rating", sep="\t",
                                                        rating_scale=(lo, hi)))
        trainset = data.build_full_trainset()
    algo = SVD()  # the defaults: 100 factors, 20 epochs, lr 0.005, reg 0.02
    start = time.perf_counter()
    algo.fit(trainset)
    fit_seconds = time.perf_counter() - start
    testset = list(zip(map(str, test.user_ids[test.rows.numpy()].tolist()),
                       map(str, test.item_ids[test.cols.numpy()].tolist()),
                       test.vals.tolist()))
    rmse = accuracy.rmse(algo.test(testset), verbose=False)
    return {"fit_seconds": fit_seconds, "test_rmse": rmse,
            "params": {"n_factors": algo.n_factors, "n_epochs": algo.n_epochs,
                       "lr_all": 0.005, "reg_all": 0.02}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on ML-100K")
    parser.add_argument("--data", default=os.environ.get("MFEXT_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--no-surprise", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    repeat = args.repeat or (2 if args.quick else 5)
    name = "ml-100k/u.data" if args.quick else "ml-1m"
    path = Path(args.data) / name
    if not path.exists():
        print(f"bench_cf: MovieLens data {path} is absent; nothing to measure")
        return 1
    result = {"benchmark": "cf", "quick": args.quick, "dataset": name,
              "machine": machine_info(args.threads), "target_rmse": TARGET_RMSE,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    start = time.perf_counter()
    ratings = ds.load_movielens(path)
    result["load_seconds"] = time.perf_counter() - start
    train, test = ds.train_test_split(ratings, 0.1, seed=0)
    result["split"] = {"train": train.nnz, "test": test.nnz, "seed": 0}

    result["sgd_throughput"] = bench_sgd_throughput(train, args.rank, repeat)
    result["als_epoch"] = bench_als_epoch(train, args.rank, repeat)
    result["mfext_sgd"] = bench_estimator(train, test, "sgd")
    result["mfext_als"] = bench_estimator(train, test, "als")
    result["surprise_svd"] = ({"skipped": "--no-surprise"} if args.no_surprise
                              else bench_surprise(train, test))
    result["gpu"] = {"status": "CPU benchmark; the GPU epochs are benchmarks/bench_cf_cuda.py",
                     "target": "Netflix-shaped 480189 x 17770, 100M ratings, k=128: <= 0.1 s/epoch"}

    out = Path(args.out) if args.out else (
        ROOT / "benchmarks" / "results" / f"cf-{'quick-' if args.quick else ''}{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))

    sgd, als = result["sgd_throughput"], result["als_epoch"]
    sur = result["surprise_svd"]
    rows = [
        ("dataset", f"{name}: {train.nnz} train / {test.nnz} test ratings, seed 0"),
        ("machine", f"{result['machine']['cpu']}, {args.threads} threads, torch {torch.__version__}"),
        ("SGD updates/s (k=%d)" % args.rank, f"{sgd['updates_per_second'] / 1e6:.1f} M "
         f"(median epoch {sgd['median_epoch_seconds'] * 1e3:.1f} ms)"),
        ("ALS epoch (k=%d)" % args.rank, f"{als['median_epoch_seconds']:.3f} s"),
    ]
    for solver in ("sgd", "als"):
        r = result[f"mfext_{solver}"]
        to_target = ("not reached" if r["seconds_to_target"] is None
                     else f"{r['seconds_to_target']:.2f} s (epoch {r['epoch_at_target']})")
        rows.append((f"mfext {solver}: to RMSE<={TARGET_RMSE}", to_target))
        rows.append((f"mfext {solver}: full fit", f"{r['fit_seconds']:.2f} s, "
                     f"{r['epochs']} epochs, test RMSE {r['final_test_rmse']:.4f}"))
    if "skipped" in sur:
        rows.append(("Surprise SVD()", sur["skipped"]))
    else:
        rows.append(("Surprise SVD() fit", f"{sur['fit_seconds']:.2f} s, test RMSE {sur['test_rmse']:.4f}"))
        best = result["mfext_sgd"]["seconds_to_target"]
        if best is not None:
            rows.append(("Surprise fit / mfext sgd to target", f"{sur['fit_seconds'] / best:.1f}x"))
    rows.append(("GPU target", result["gpu"]["status"]))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
