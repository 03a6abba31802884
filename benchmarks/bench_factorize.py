"""Speed of ``mfext.factorize``, CPU, float32, all threads.

1. Time per Adam iteration: ``mfext.factorize`` (fused) against the reference
   loop ``mfext.reference.reference_factorize`` at m = n = 4096, k = 32
   (target: >= 3x).
2. Time for ``optimizer="als"`` to get within 1e-4 (relative) of the
   Eckart-Young optimum on a 4096 x 4096 matrix of rank 32 plus noise, against
   ``torch.svd_lowrank(A, q=32, niter=4)`` on the same matrix (target: ALS time
   <= svd_lowrank time). Both times and both final losses are reported.

Every figure is a median of repeats taken in this one run; every ratio compares
timings from this run. Results go to a JSON file with the machine and versions.

    python benchmarks/bench_factorize.py [--quick] [--repeat 5] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ops import machine, median_time  # noqa: E402  (shared timing and machine record)

import mfext  # noqa: E402
from mfext import reference as ref  # noqa: E402

TARGET_GAP = 1e-4


# --------------------------------------------------------------------------- 1. Adam


def bench_adam(size: int, rank: int, iterations: int, repeat: int) -> dict:
    """Per-iteration time of the two loops: (time of N iterations - time of 0) / N.

    Subtracting the 0-iteration call removes what both do once (input checks,
    initial factors, the final loss), leaving the update loop itself.
    """
    gen = torch.Generator().manual_seed(0)
    A = torch.rand(size, size, generator=gen)

    def fused(n):
        return lambda: mfext.factorize(A, rank, max_iter=n, seed=0, tol=0)

    def reference(n):
        return lambda: ref.reference_factorize(A, rank, iterations=n, seed=0)

    out = {"m": size, "n": size, "k": rank, "iterations": iterations}
    for name, make in (("fused", fused), ("reference", reference)):
        full = median_time(make(iterations), repeat, warmup=1)
        empty = median_time(make(0), repeat, warmup=1)
        out[name] = {
            "run_s": full, "setup_s": empty,
            "per_iteration_s": (full["median_s"] - empty["median_s"]) / iterations,
        }
    out["speedup"] = out["reference"]["per_iteration_s"] / out["fused"]["per_iteration_s"]
    # Same trajectory: the factors after the timed run agree (float32 rounding).
    a = mfext.factorize(A, rank, max_iter=iterations, seed=0, tol=0)
    b = ref.reference_factorize(A, rank, iterations=iterations, seed=0)
    out["max_abs_diff_W"] = float((a.W - b.W).abs().max())
    return out


# --------------------------------------------------------------------------- 2. ALS


def low_rank_plus_noise(size: int, rank: int, seed: int = 0):
    """U diag(s) V^T + noise: s log-spaced from 1000 to 100, noise std such that the
    noise's largest singular value (~ std * (sqrt(m) + sqrt(n))) is s_min / 5."""
    gen = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(size, rank, generator=gen)).Q
    V = torch.linalg.qr(torch.randn(size, rank, generator=gen)).Q
    s = torch.logspace(3, 2, rank)
    std = float(s[-1]) / 5 / (2 * math.sqrt(size))
    A = (U * s) @ V.t() + std * torch.randn(size, size, generator=gen)
    return A, {"singular_values": "logspace(1000 -> 100)", "noise_std": std}


def exact_loss(A: torch.Tensor, W: torch.Tensor, H: torch.Tensor, block: int = 512) -> float:
    """sum((A - W H)^2) in float64, in blocks of rows (no m x n float64 temporary)."""
    W, H = W.double(), H.double()
    total = 0.0
    for r0 in range(0, A.shape[0], block):
        total += float((A[r0:r0 + block].double() - W[r0:r0 + block] @ H).square().sum())
    return total


def eckart_young_optimum(A: torch.Tensor, rank: int) -> dict:
    """|A|^2 - sum of the top-k squared singular values, in float64.

    The top singular values come from a converged float64 subspace iteration
    (16 extra columns, 10 power iterations); the full SVD is used when small.
    """
    Ad = A.double()
    if A.shape[0] <= 2048:
        S = torch.linalg.svdvals(Ad)
        method = "full svdvals (float64)"
    else:
        gen = torch.Generator().manual_seed(1)
        Q = torch.linalg.qr(Ad @ torch.randn(A.shape[1], rank + 16, generator=gen,
                                             dtype=torch.float64)).Q
        for _ in range(10):
            Q = torch.linalg.qr(Ad.t() @ Q).Q
            Q = torch.linalg.qr(Ad @ Q).Q
        S = torch.linalg.svdvals(Q.t() @ Ad)
        method = "float64 subspace iteration, q=k+16, 10 power iterations"
    total = float(Ad.square().sum())
    return {
        "optimum": total - float(S[:rank].square().sum()),
        "sigma_k": float(S[rank - 1]), "sigma_k_plus_1": float(S[rank]),
        "method": method,
    }


def bench_als(size: int, rank: int, repeat: int, max_iter: int = 15) -> dict:
    A, spectrum = low_rank_plus_noise(size, rank)
    best = eckart_young_optimum(A, rank)
    opt = best["optimum"]

    def gap(W, H):
        loss = exact_loss(A, W, H)
        return loss, (loss - opt) / opt

    torch.manual_seed(0)  # svd_lowrank draws from the global generator
    svd_time = median_time(lambda: torch.svd_lowrank(A, q=rank, niter=4), repeat, warmup=1)
    U, S, V = torch.svd_lowrank(A, q=rank, niter=4)
    svd_loss, svd_gap = gap(U * S, V.t())

    # Time to target: the fewest ALS iterations whose result is within TARGET_GAP,
    # timed as a whole factorize call (checks, init, loop).
    sweep = []
    target = None
    for iters in range(1, max_iter + 1):
        run = lambda: mfext.factorize(A, rank, optimizer="als", max_iter=iters, tol=0, seed=0)
        t = median_time(run, repeat, warmup=1)
        res = run()
        loss, g = gap(res.W, res.H)
        sweep.append({"iterations": iters, "time": t, "loss": loss, "relative_gap": g,
                      "reported_loss": res.loss_history[-1] * A.numel()})
        print(f"  als {iters:2d} iterations: {t['median_s']*1e3:8.1f} ms  gap {g:.2e}", flush=True)
        if g <= TARGET_GAP:
            target = sweep[-1]
            break

    # The call a user makes: default tolerance, it decides when to stop.
    run = lambda: mfext.factorize(A, rank, optimizer="als", seed=0)
    t = median_time(run, repeat, warmup=1)
    res = run()
    loss, g = gap(res.W, res.H)
    default = {"time": t, "n_iter": res.n_iter, "stop_reason": res.stop_reason,
               "loss": loss, "relative_gap": g}
    out = {
        "m": size, "n": size, "k": rank, "matrix": spectrum, "eckart_young": best,
        "target_relative_gap": TARGET_GAP,
        "svd_lowrank": {"call": f"torch.svd_lowrank(A, q={rank}, niter=4)", "time": svd_time,
                        "loss": svd_loss, "relative_gap": svd_gap},
        "als_sweep": sweep, "als_to_target": target, "als_default_tol": default,
    }
    if target is not None:
        out["als_over_svd_lowrank"] = target["time"]["median_s"] / svd_time["median_s"]
    out["als_default_over_svd_lowrank"] = t["median_s"] / svd_time["median_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1024 x 1024, for a smoke run")
    parser.add_argument("--size", type=int, default=None, help="m = n (default 4096, quick 1024)")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=None,
                        help="Adam iterations per timed run (default 20, quick 10)")
    parser.add_argument("--out", default=None,
                        help="JSON path (default benchmarks/results/cpu_factorize[_quick].json)")
    args = parser.parse_args()
    size = args.size or (1024 if args.quick else 4096)
    iterations = args.iterations or (10 if args.quick else 20)
    repeat = max(1, args.repeat if not args.quick else min(args.repeat, 3))
    out_path = Path(args.out or f"benchmarks/results/cpu_factorize{'_quick' if args.quick else ''}.json")
    torch.set_grad_enabled(True)
    results = {"machine": machine(),
               "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
               "dtype": "float32", "repeat": repeat}
    print(f"mfext.factorize benchmark, {size}x{size}, k={args.rank}, float32, "
          f"{torch.get_num_threads()} threads, medians of {repeat}", flush=True)

    adam = bench_adam(size, args.rank, iterations, repeat)
    results["adam"] = adam
    print(f"1. Adam iteration: fused {adam['fused']['per_iteration_s']*1e3:8.2f} ms   "
          f"reference {adam['reference']['per_iteration_s']*1e3:8.2f} ms   "
          f"speedup {adam['speedup']:.2f}x (target >= 3x)", flush=True)

    als = bench_als(size, args.rank, repeat)
    results["als"] = als
    svd = als["svd_lowrank"]
    print(f"2. svd_lowrank(q={args.rank}, niter=4): {svd['time']['median_s']*1e3:8.1f} ms, "
          f"loss {svd['loss']:.6e} (gap {svd['relative_gap']:.1e})")
    tgt = als["als_to_target"]
    if tgt is None:
        print(f"   als: did not reach a gap of {TARGET_GAP:g} in {len(als['als_sweep'])} iterations")
    else:
        print(f"   als to within {TARGET_GAP:g}: {tgt['iterations']} iterations, "
              f"{tgt['time']['median_s']*1e3:8.1f} ms, loss {tgt['loss']:.6e} "
              f"(gap {tgt['relative_gap']:.1e}); als/svd_lowrank = {als['als_over_svd_lowrank']:.2f} "
              "(target <= 1)")
    d = als["als_default_tol"]
    print(f"   als with the default tol: {d['n_iter']} iterations ({d['stop_reason']}), "
          f"{d['time']['median_s']*1e3:8.1f} ms, loss {d['loss']:.6e} (gap {d['relative_gap']:.1e}); "
          f"als/svd_lowrank = {als['als_default_over_svd_lowrank']:.2f}")
    print(f"   optimum {als['eckart_young']['optimum']:.6e} ({als['eckart_young']['method']})")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2))
    print("wrote", out_path)


if __name__ == "__main__":
    main()
