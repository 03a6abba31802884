"""Collaborative filtering on the GPU: SGD and ALS epochs on Netflix-shaped data.

Synthetic ratings shaped like Netflix (480,189 users x 17,770 items, 100M
ratings; ``--quick``: 20M) from a rank-10 model plus noise, k = 128, float32,
int32 indices. Every time is the median of CUDA-event timings after one
warm-up epoch. Measures:

* one Hogwild SGD epoch (``mfext.cf_ops.sgd_epoch_``, the estimator's GPU
  path) and its rating updates per second, against the 0.1 s target and the
  published cuMF_SGD figure (0.156 s per Netflix epoch at k = 128);
* one blocked, deterministic SGD epoch (P = 128 groups, the path under
  ``torch.use_deterministic_algorithms``);
* one ALS epoch (users then items, ``mfext.cf_ops.als_solve`` with biases,
  d = 129);
* the training RMSE the epochs see, so that speed is not bought with learning;
* MovieLens 1M on the GPU (when ``../shared/data`` has it): the estimator's
  sgd and als with their defaults, fit time and test RMSE (bar 0.850).

    python benchmarks/bench_cf_cuda.py [--quick] [--sections sgd,als,movielens] [--out FILE]
    python benchmarks/bench_cf_cuda.py --smoke --device cpu   # a dry run of this script, no GPU
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mfext  # noqa: E402
from mfext.recommenders import solvers  # noqa: E402
from mfext import cf_ops  # noqa: E402
from mfext import datasets as ds  # noqa: E402
import bench_cuda as bc  # noqa: E402  (its DEVICE, timer and facts serve this script too)
from bench_cuda import NETFLIX, device_facts, device_time, free, generator  # noqa: E402

RANK = 128
# (m, n) and ratings of the synthetic data; "smoke" checks the script in seconds on a CPU.
SHAPES = {"full": (NETFLIX, 100_000_000), "quick": (NETFLIX, 20_000_000),
          "smoke": ((997, 89), 20_000)}
CUMF_SGD_EPOCH_S = 0.156  # cuMF_SGD, Netflix, k = 128 (Xie et al., HPDC 2017), older GPUs
TARGET_EPOCH_S = 0.1


def netflix_like(shape, nnz: int, seed: int = 0) -> solvers.RatingsProblem:
    """(rows, cols, vals) drawn uniformly on `shape` (Netflix's), ratings ~ 3.6 +/- 1."""
    m, n = shape
    dev = bc.DEVICE
    g = generator(seed)
    rows = torch.randint(0, m, (nnz,), device=dev, generator=g, dtype=torch.int32)
    cols = torch.randint(0, n, (nnz,), device=dev, generator=g, dtype=torch.int32)
    true_rank = 10
    W0 = torch.randn(m, true_rank, device=dev, generator=g) / math.sqrt(true_rank)
    H0 = torch.randn(n, true_rank, device=dev, generator=g) / math.sqrt(true_rank)
    vals = torch.empty(nnz, device=dev)
    chunk = 1 << 24
    for s in range(0, nnz, chunk):
        r, c = rows[s:s + chunk].long(), cols[s:s + chunk].long()
        vals[s:s + chunk] = 3.6 + (W0[r] * H0[c]).sum(1)
    vals += 0.3 * torch.randn(nnz, device=dev, generator=g)
    mu = float(vals.double().mean())
    return solvers.RatingsProblem(rows, cols, vals, m, n, mu, True, False)


def fresh_factors(p: solvers.RatingsProblem, seed: int = 1) -> solvers.Factors:
    g, dev = generator(seed), bc.DEVICE
    return solvers.Factors(torch.randn(p.m, RANK, device=dev, generator=g) * 0.1,
                           torch.randn(p.n, RANK, device=dev, generator=g) * 0.1,
                           torch.zeros(p.m, device=dev), torch.zeros(p.n, device=dev))


def bench_sgd(p: solvers.RatingsProblem, reps: int) -> dict:
    nnz = p.rows.numel()
    out = {}
    for mode in ("hogwild", "blocked"):
        f = fresh_factors(p)
        deterministic = mode == "blocked"
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(deterministic)
        try:
            solver = solvers.SgdSolver(p, f, lr=0.005, lr_decay=1.0, reg=0.02, bias_reg=0.01,
                                       gen=torch.Generator().manual_seed(0), n_threads=1)
        finally:
            torch.use_deterministic_algorithms(previous)
        rmse = []
        sse = torch.zeros((), dtype=torch.float64, device=bc.DEVICE)
        schedule = solver.schedule() if deterministic else None
        blocked = {"block_ptr": solver.block_ptr, "schedule": schedule} if deterministic else {}

        def epoch():
            sse.copy_(cf_ops.sgd_epoch_(f.W, f.Ht, f.bu, f.bi, solver.rows, solver.cols,
                                        solver.vals, **blocked, lr=0.005, reg=0.02,
                                        bias_reg=0.01, global_mean=p.mu))
        t = device_time(epoch, reps=reps if mode == "hogwild" else max(2, reps // 2), warmup=1)
        rmse.append(math.sqrt(float(sse) / nnz))  # the last timed epoch's training RMSE
        t["updates_per_s"] = nnz / (t["median_ms"] * 1e-3)
        t["train_rmse_last_epoch"] = rmse[-1]
        t["epochs_run"] = 1 + t["reps"]
        if mode == "hogwild":
            t["target_s"] = TARGET_EPOCH_S
            t["meets_target"] = t["median_ms"] * 1e-3 <= TARGET_EPOCH_S
            t["vs_cumf_sgd"] = CUMF_SGD_EPOCH_S / (t["median_ms"] * 1e-3)
        out[mode] = t
        del solver, f
        free()
    return out


def bench_als(p: solvers.RatingsProblem, reps: int) -> dict:
    f = fresh_factors(p)
    solver = solvers.AlsSolver(p, f, reg=0.05, bias_reg=0.05, exponent=0.75)
    t = device_time(lambda: solver.epoch(0), reps=reps, warmup=1)
    sample = slice(0, 1_000_000)
    pred = solvers.predict_entries(f, p.mu, True, p.rows[sample].long(), p.cols[sample].long())
    t["train_rmse_sample"] = float((pred - p.vals[sample]).double().square().mean().sqrt())
    t["d"] = RANK + 1
    del solver, f
    free()
    return t


def bench_movielens(data: Path, path: str = "ml-1m/ratings_no_timestamp.dat",
                    bar: float = 0.850) -> dict:
    """The estimator's sgd and als with their defaults on a 90/10 split (seed 0)."""
    file = data / path
    if not file.exists():
        return {"skipped": f"{file} not found"}
    train, test = ds.train_test_split(ds.load_movielens(file), 0.1, seed=0)
    out = {"data": path}
    for solver in ("sgd", "als"):
        bc.sync()
        t0 = time.perf_counter()
        model = mfext.MatrixFactorization(solver=solver, random_state=0, device=bc.DEVICE).fit(train)
        bc.sync()
        out[solver] = {"fit_s": time.perf_counter() - t0, "test_rmse": model.score(test),
                       "epochs": model.n_iter_, "bar": bar}
    return out


def table(res: dict) -> str:
    lines = [f"device: {res['facts']['device']} | torch {res['facts']['torch']} | "
             f"CUDA {res['facts']['cuda']}"]
    if "sgd" in res:
        nnz = res["nnz"]
        for mode, t in res["sgd"].items():
            extra = ""
            if mode == "hogwild":
                extra = (f" | target {TARGET_EPOCH_S} s: {'met' if t['meets_target'] else 'MISSED'}"
                         f" | {t['vs_cumf_sgd']:.2f}x cuMF_SGD's {CUMF_SGD_EPOCH_S} s")
            lines.append(f"SGD epoch ({mode}, {nnz:,} ratings, k={RANK}): "
                         f"{t['median_ms'] / 1e3:.4f} s, {t['updates_per_s'] / 1e9:.2f} G updates/s, "
                         f"train RMSE {t['train_rmse_last_epoch']:.4f}{extra}")
    if "als" in res:
        t = res["als"]
        lines.append(f"ALS epoch (users + items, d={t['d']}): {t['median_ms'] / 1e3:.3f} s, "
                     f"train RMSE (1M sample) {t['train_rmse_sample']:.4f}")
    if "movielens" in res:
        ml = res["movielens"]
        name = ml.get("data", "?").split("/")[0]
        for solver, r in ml.items():
            if isinstance(r, dict):
                lines.append(f"{name} {solver} on {res['device']}: fit {r['fit_s']:.2f} s, test RMSE "
                             f"{r['test_rmse']:.4f} (bar {r['bar']:.3f}), {r['epochs']} epochs")
            elif solver == "skipped":
                lines.append(f"MovieLens: skipped, {r}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20M ratings, fewer repeats")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny data and ML-100K, one repeat: checks the script, measures nothing")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a dry run of the same code without a GPU (with --smoke)")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--sections", default="sgd,als,movielens")
    parser.add_argument("--data", default=os.environ.get("MFEXT_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    bc.DEVICE = args.device
    if bc.DEVICE == "cuda" and not (torch.cuda.is_available() and mfext.build_info()["cuda"]):
        print("bench_cf_cuda: needs a GPU and a CUDA build of mfext", file=sys.stderr)
        return 2
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    reps = args.reps or {"full": 7, "quick": 3, "smoke": 1}[mode]
    sections = set(args.sections.split(","))
    shape, nnz = SHAPES[mode]
    res = {"facts": device_facts(), "device": bc.DEVICE, "quick": args.quick, "mode": mode,
           "nnz": nnz, "shape": list(shape), "rank": RANK, "dtype": "float32"}
    suffix = "" if mode == "full" else f"_{mode}"
    out = Path(args.out or ROOT / f"benchmarks/results/cf_cuda{suffix}.json")
    if sections & {"sgd", "als"}:
        p = netflix_like(shape, nnz)
        if "sgd" in sections:
            res["sgd"] = bench_sgd(p, reps)
            bc.write_json(res, out)  # after every section: a run cut short keeps what it measured
        if "als" in sections:
            res["als"] = bench_als(p, max(2, reps // 2))
            bc.write_json(res, out)
        del p
        free()
    if "movielens" in sections:
        res["movielens"] = (bench_movielens(Path(args.data), "ml-100k/u.data", 0.905)
                            if mode == "smoke" else bench_movielens(Path(args.data)))
    bc.write_json(res, out)
    print(table(res))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
