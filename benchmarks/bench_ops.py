"""Speed of the fused CPU ops against the autograd reference (the foundation's targets).

Runs in one process, all threads, float32; every figure is the median of repeats
taken in this run, and every ratio compares timings from this run.

    python benchmarks/bench_ops.py [--repeat 7] [--quick] [--out benchmarks/results/cpu_ops.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import mfext
from mfext import reference as ref


def median_time(fn, repeat: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_s": statistics.median(times), "min_s": times[0], "max_s": times[-1]}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mfext": mfext.__version__,
        "build": mfext.build_info(),
    }


def autograd_dense_step(A, W, H):
    W = W.detach().requires_grad_(True)
    H = H.detach().requires_grad_(True)
    ref.dense_loss(A, W, H).backward()
    return W.grad, H.grad


def autograd_sparse_step(rows, cols, vals, W, H):
    W = W.detach().requires_grad_(True)
    H = H.detach().requires_grad_(True)
    ref.sparse_loss(rows, cols, vals, W, H).backward()
    return W.grad, H.grad


def bench_dense(m: int, n: int, k: int, repeat: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    A = torch.rand(m, n, generator=gen)
    W = torch.rand(m, k, generator=gen)
    H = torch.rand(k, n, generator=gen)
    R = W @ H - A  # precomputed residual: the floor is the two gradient products alone
    fused = median_time(lambda: mfext.dense_loss_grad(A, W, H), repeat)
    auto = median_time(lambda: autograd_dense_step(A, W, H), repeat)
    floor = median_time(lambda: (torch.mm(R, H.t()), torch.mm(W.t(), R)), repeat)
    return {
        "m": m, "n": n, "k": k,
        "fused": fused, "autograd": auto, "floor_two_products": floor,
        "speedup_vs_autograd": auto["median_s"] / fused["median_s"],
        "fused_over_floor": fused["median_s"] / floor["median_s"],
        "gflops_fused": 6.0 * m * n * k / fused["median_s"] / 1e9,
    }


def bench_sparse(m: int, n: int, nnz: int, k: int, repeat: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(0, m, (nnz,), generator=gen)
    cols = torch.randint(0, n, (nnz,), generator=gen)
    vals = torch.rand(nnz, generator=gen) * 4 + 1
    W = torch.rand(m, k, generator=gen) * 0.1
    H = (torch.rand(n, k, generator=gen) * 0.1).t()  # the fast layout
    fused = median_time(lambda: mfext.sparse_loss_grad(rows, cols, vals, W, H), repeat)
    auto = median_time(lambda: autograd_sparse_step(rows, cols, vals, W, H), max(3, repeat // 2), 1)
    return {
        "m": m, "n": n, "nnz": nnz, "k": k,
        "fused": fused, "autograd": auto,
        "speedup_vs_autograd": auto["median_s"] / fused["median_s"],
        "entries_per_s": nnz / fused["median_s"],
    }


_MEM_CHILD = r"""
import sys, torch, mfext
from mfext import reference as ref
which, m, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
A = torch.rand(m, m); W = torch.rand(m, k); H = torch.rand(k, m)
small = (torch.rand(64, 64), torch.rand(64, k), torch.rand(k, 64))
def run(A, W, H):
    if which == "fused":
        return mfext.dense_loss_grad(A, W, H)
    W = W.detach().requires_grad_(True); H = H.detach().requires_grad_(True)
    ref.dense_loss(A, W, H).backward(); return W.grad, H.grad
def high_water_kib():  # VmHWM belongs to this process image (ru_maxrss survives fork + exec)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
run(*small)  # load code paths and thread pools before the baseline
before = high_water_kib()
out = run(A, W, H)
after = high_water_kib()
print((after - before) * 1024, A.numel() * A.element_size())
"""


def peak_extra_memory(which: str, m: int, k: int) -> dict:
    """Peak resident-set growth of one call, in a fresh process (includes the outputs)."""
    out = subprocess.run(
        [sys.executable, "-c", _MEM_CHILD, which, str(m), str(k)],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    extra, a_bytes = int(out[0]), int(out[1])
    return {"extra_bytes": extra, "A_bytes": a_bytes, "fraction_of_A": extra / a_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--out", default="benchmarks/results/cpu_ops.json")
    args = parser.parse_args()
    size = 1024 if args.quick else 4096
    results = {"machine": machine(), "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
               "dense": [], "sparse": [], "memory": {}}
    for k in (8, 32, 128):
        row = bench_dense(size, size, k, args.repeat)
        results["dense"].append(row)
        print(f"dense {size}x{size} k={k:3d}: fused {row['fused']['median_s']*1e3:8.2f} ms  "
              f"autograd {row['autograd']['median_s']*1e3:8.2f} ms  "
              f"floor {row['floor_two_products']['median_s']*1e3:8.2f} ms  "
              f"speedup {row['speedup_vs_autograd']:5.2f}x  fused/floor {row['fused_over_floor']:4.2f}",
              flush=True)
    m, n, nnz = (6040, 3706, 1_000_209) if not args.quick else (1000, 800, 100_000)
    row = bench_sparse(m, n, nnz, 64, args.repeat)
    results["sparse"].append(row)
    print(f"sparse {m}x{n} nnz={nnz} k=64: fused {row['fused']['median_s']*1e3:8.2f} ms  "
          f"autograd {row['autograd']['median_s']*1e3:8.2f} ms  speedup {row['speedup_vs_autograd']:6.1f}x",
          flush=True)
    for which in ("fused", "autograd"):
        results["memory"][which] = mem = peak_extra_memory(which, size, 32)
        print(f"peak extra memory {which:8s} {size}^2 k=32: {mem['extra_bytes']/2**20:8.1f} MiB "
              f"= {100*mem['fraction_of_A']:5.1f}% of A", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
