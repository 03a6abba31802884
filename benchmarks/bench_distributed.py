"""Time per epoch of data-parallel training for a world of 1, 2 and 4 processes.

Dense: a 4096x4096 matrix (adam and als). Sparse: MovieLens-1M with the estimator
(sgd, als, adam), when its data are present. Each rank runs in its own process
(gloo on loopback); the communication share is the time ranks spend inside
all-reduces over the wall time. On a 2-core machine a world of 4 oversubscribes
the cores: the figures say so instead of hiding it.

    python benchmarks/bench_distributed.py [--worlds 1 2 4] [--size 4096] [--quick]
        [--movielens ../shared/data/ml-1m/ratings_no_timestamp.dat]
        [--out benchmarks/results/distributed.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _worker(rank: int, world: int, init_file: str, out_dir: str, job: dict) -> None:
    import torch.distributed as dist

    import mfext
    import mfext.distributed as mdist

    torch.set_num_threads(max(1, job["cores"] // world))
    mdist.init(backend="gloo", init_method=f"file://{init_file}", world_size=world, rank=rank,
               timeout_s=300)
    record = {"rank": rank, "world": world, "kind": job["kind"], "solver": job["solver"]}
    if job["kind"] == "dense":
        gen = torch.Generator().manual_seed(0)
        size, k = job["size"], job["rank"]
        r0, r1 = mdist.row_block(size, world, rank)
        # Every rank draws the same matrix and keeps its rows (cheap next to training).
        A = (torch.rand(size, k, generator=gen) @ torch.rand(k, size, generator=gen))[r0:r1].contiguous()
        kwargs = dict(optimizer=job["solver"], max_iter=job["iters"] + 1, tol=0.0, seed=0,
                      log_every=job["iters"] + 1, distributed=True)
        mfext.factorize(A, k, **dict(kwargs, max_iter=1))  # warm-up
        mdist.collective_stats(reset=True)
        dist.barrier()
        t0 = time.perf_counter()
        result = mfext.factorize(A, k, **kwargs)
        record["seconds"] = time.perf_counter() - t0
        record["epochs"] = result.n_iter
    else:
        X, V, _ = mdist.load_ratings_shard(job["path"], test_size=0.1, seed=0)
        model = mfext.MatrixFactorization(rank=job["rank"], solver=job["solver"],
                                          max_iter=job["iters"], random_state=0,
                                          n_threads=max(1, job["cores"] // world))
        mdist.collective_stats(reset=True)
        dist.barrier()
        t0 = time.perf_counter()
        model.fit(X, validation=V, distributed=True)
        record["seconds"] = time.perf_counter() - t0
        record["test_rmse"] = model.history_[-1]["val_rmse"]
        record["epochs"] = job["iters"]
    stats = mdist.collective_stats()
    record.update(comm_seconds=stats["seconds"], comm_bytes=stats["bytes"], comm_calls=stats["calls"])
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    dist.destroy_process_group()


def run_job(world: int, job: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_worker, args=(world, os.path.join(tmp, "init"), tmp, job),
                           nprocs=world, join=True, start_method="spawn")
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    seconds = max(r["seconds"] for r in ranks)
    comm = max(r["comm_seconds"] for r in ranks)
    epochs = ranks[0]["epochs"]
    return {
        "kind": job["kind"], "solver": job["solver"], "world": world,
        "test_rmse": ranks[0].get("test_rmse"), "epochs": epochs,
        "seconds_per_epoch": seconds / epochs, "comm_share": comm / seconds if seconds else 0.0,
        "bytes_all_reduced_per_epoch_per_rank": ranks[0]["comm_bytes"] / epochs,
        "threads_per_rank": max(1, job["cores"] // world),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--movielens", default=str(Path(__file__).resolve().parents[2] / "shared/data/ml-1m/ratings_no_timestamp.dat"))
    parser.add_argument("--out", default="benchmarks/results/distributed.json")
    args = parser.parse_args()
    if args.quick:
        args.size, args.iters = 1024, 3
    cores = os.cpu_count() or 1
    jobs = [dict(kind="dense", solver=s, size=args.size, rank=args.rank, iters=args.iters, cores=cores)
            for s in ("adam", "als")]
    if Path(args.movielens).exists():
        epochs = {"sgd": 40, "als": 10, "adam": 50} if not args.quick else {"sgd": 3, "als": 2, "adam": 5}
        jobs += [dict(kind="sparse", solver=s, path=args.movielens, rank=64, iters=epochs[s], cores=cores)
                 for s in ("sgd", "als", "adam")]
    else:
        print(f"skipping the sparse jobs: {args.movielens} is absent")
    rows = []
    for job in jobs:
        for world in args.worlds:
            try:
                row = run_job(world, job)
            except Exception as exc:  # a solver without distributed support is reported, not fatal
                row = {"kind": job["kind"], "solver": job["solver"], "world": world, "error": repr(exc)[:300]}
            rows.append(row)
            if "error" in row:
                print(f"{row['kind']:6s} {row['solver']:4s} world={world}: FAILED {row['error']}", flush=True)
            else:
                print(f"{row['kind']:6s} {row['solver']:4s} world={world}: {row['seconds_per_epoch']*1e3:9.1f} ms/epoch, "
                      f"comm {100*row['comm_share']:5.1f}%, {row['bytes_all_reduced_per_epoch_per_rank']/2**20:8.2f} MiB "
                      f"all-reduced/epoch/rank, {row['threads_per_rank']} thread(s)/rank", flush=True)
    out = {
        "machine": {"cpu_count": cores, "python": platform.python_version(), "torch": torch.__version__,
                    "load_average": os.getloadavg()},
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
