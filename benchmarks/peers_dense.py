"""Dense peers, same machine, same run: time to reach the same loss.

A is a seeded m x n matrix of non-negative rank k plus a little non-negative
noise, so that unconstrained and non-negative factorizations aim at nearly the
same optimum. The loss is the relative error ||A - W H||_F / ||A||_F, computed
the same way (float64) for every method. The target is the Eckart–Young optimum
(the truncated SVD's error, from a full SVD that is not timed) times
(1 + --slack).

Every method has an effort knob (iterations). Each run is timed once, from its
inputs to its factors; the knob grows until the target is reached or a run
takes longer than --max-seconds. "time to target" is the time of the first run
that reached it. Peers: torch.svd_lowrank (niter), scikit-learn TruncatedSVD
(randomized, n_iter) and NMF (coordinate descent, max_iter); mfext.factorize
with each optimizer (max_iter, tol=0). Optimizers that this mfext does not have
yet are skipped and listed.

    python benchmarks/peers_dense.py            # 2000 x 2000, k = 32
    python benchmarks/peers_dense.py --quick    # 1000 x 1000, k = 16
"""
from __future__ import annotations

import argparse
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import _common  # noqa: F401  (puts the checkout on sys.path)
import numpy as np
import torch

import mfext

from _common import device_slug, markdown_table, record, save

Factors = Tuple[torch.Tensor, torch.Tensor]


def make_matrix(m: int, n: int, k: int, noise: float, seed: int = 0) -> torch.Tensor:
    """A (m, n) float32 = W0 H0 + noise, all entries >= 0, seeded."""
    gen = torch.Generator().manual_seed(seed)
    W0 = torch.rand(m, k, generator=gen, dtype=torch.float64)
    H0 = torch.rand(k, n, generator=gen, dtype=torch.float64)
    A = W0 @ H0
    A += noise * A.mean() * torch.rand(m, n, generator=gen, dtype=torch.float64)
    return A.float()


def rel_error(A: torch.Tensor, W, H) -> float:
    A64 = A.double()
    W = torch.as_tensor(np.asarray(W) if not isinstance(W, torch.Tensor) else W).double()
    H = torch.as_tensor(np.asarray(H) if not isinstance(H, torch.Tensor) else H).double()
    return float(torch.linalg.matrix_norm(A64 - W @ H) / torch.linalg.matrix_norm(A64))


def optimum(A: torch.Tensor, k: int) -> float:
    """The best rank-k relative error (Eckart–Young), from a full SVD in float64."""
    s = torch.linalg.svdvals(A.double())
    return float(torch.sqrt((s[k:] ** 2).sum() / (s ** 2).sum()))


# ----------------------------------------------------------------------------- methods


def svd_lowrank(A: torch.Tensor, k: int, niter: int) -> Factors:
    torch.manual_seed(0)
    U, S, V = torch.svd_lowrank(A, q=k, niter=niter)
    return U * S, V.t()


def truncated_svd(A_np: np.ndarray, k: int, n_iter: int) -> Factors:
    from sklearn.decomposition import TruncatedSVD

    tsvd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=n_iter, random_state=0)
    W = tsvd.fit_transform(A_np)
    return W, tsvd.components_


def nmf(A_np: np.ndarray, k: int, max_iter: int) -> Factors:
    from sklearn.decomposition import NMF

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at small max_iter: expected here
        model = NMF(n_components=k, init="nndsvda", solver="cd", max_iter=max_iter, tol=0.0,
                    random_state=0)
        W = model.fit_transform(A_np)
    return W, model.components_


def mfext_method(optimizer: str, nonnegative: bool = False, legacy: bool = False) -> Callable:
    def run(A: torch.Tensor, k: int, max_iter: int) -> Factors:
        if legacy:  # the foundation's factorize: Adam only, no optimizer= or tol=
            res = mfext.factorize(A, k, max_iter=max_iter, seed=0, log_every=0)
            return res.W, res.H
        kwargs = {"nonnegative": True} if nonnegative else {}
        res = mfext.factorize(A, k, optimizer=optimizer, max_iter=max_iter, tol=0.0, seed=0,
                              **kwargs)
        return res.W, res.H
    return run


def mfext_supports(optimizer: str, nonnegative: bool, A: torch.Tensor, k: int) -> Optional[str]:
    """None if ``mfext.factorize`` runs this optimizer, else why not."""
    try:
        mfext_method(optimizer, nonnegative)(A[:8, :8].contiguous(), min(k, 2), 1)
    except TypeError as exc:
        return f"mfext.factorize has no optimizer=/nonnegative=: {exc}"
    except (ValueError, NotImplementedError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def sweep(name: str, fn: Callable[[int], Factors], knobs: List[int], A: torch.Tensor,
          target: float, max_seconds: float) -> Dict[str, object]:
    fn(knobs[0])  # warm-up: imports, thread pools, first allocations
    runs = []
    for knob in knobs:
        t0 = time.perf_counter()
        W, H = fn(knob)
        seconds = time.perf_counter() - t0
        err = rel_error(A, W, H)
        runs.append({"knob": knob, "seconds": seconds, "rel_error": err})
        print(f"  {name:28s} knob {knob:6d}: {seconds:8.3f} s  rel. error {err:.6f}", flush=True)
        if err <= target or seconds > max_seconds:
            break
    hit = next((r for r in runs if r["rel_error"] <= target), None)
    best = min(runs, key=lambda r: r["rel_error"])
    return {"method": name, "runs": runs, "time_to_target": hit["seconds"] if hit else None,
            "knob_at_target": hit["knob"] if hit else None, "best_rel_error": best["rel_error"],
            "best_seconds": best["seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--m", type=int, default=2000)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--noise", type=float, default=0.05, help="noise level, relative to mean(A)")
    p.add_argument("--slack", type=float, default=0.01, help="target = optimum * (1 + slack)")
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--quick", action="store_true", help="1000 x 1000, k = 16, 20 s per run")
    args = p.parse_args()
    if args.quick:
        args.m, args.n, args.k, args.max_seconds = 1000, 1000, 16, 20.0
    A = make_matrix(args.m, args.n, args.k, args.noise)
    A_np = A.numpy()
    best = optimum(A, args.k)
    target = best * (1 + args.slack)
    print(f"A {args.m}x{args.n} float32, k={args.k}: optimum rel. error {best:.6f}, "
          f"target {target:.6f}")
    doubling = [2 ** i for i in range(0, 15)]
    methods = [
        ("torch.svd_lowrank", "unconstrained", lambda it: svd_lowrank(A, args.k, it),
         [0, 1, 2, 4, 8, 16]),
        ("sklearn TruncatedSVD", "unconstrained", lambda it: truncated_svd(A_np, args.k, it),
         [1, 2, 5, 10, 20]),
        ("sklearn NMF (cd)", "non-negative", lambda it: nmf(A_np, args.k, it),
         [10, 20, 50, 100, 200, 400, 800, 1600, 3200]),
    ]
    skipped = []
    for opt, nonneg, knobs in (("als", False, doubling[:9]), ("adam", False, doubling[4:]),
                               ("gd", False, doubling[4:]), ("als", True, doubling[:12])):
        label = f"mfext.factorize {opt}" + (" non-negative" if nonneg else "")
        why = mfext_supports(opt, nonneg, A, args.k)
        legacy = bool(why) and opt == "adam" and not nonneg
        if why and not legacy:
            skipped.append({"method": label, "reason": why})
            print(f"  {label}: skipped ({why})")
            continue
        if legacy:
            label += " (foundation API, lr 0.01)"
        fn = mfext_method(opt, nonneg, legacy)
        methods.append((label, "non-negative" if nonneg else "unconstrained",
                        (lambda f: lambda it: f(A, args.k, it))(fn), knobs))
    results = []
    for name, objective, fn, knobs in methods:
        try:
            r = sweep(name, fn, knobs, A, target, args.max_seconds)
        except ImportError as exc:
            skipped.append({"method": name, "reason": f"not installed: {exc}"})
            continue
        r["objective"] = objective
        results.append(r)
    slug = device_slug("cpu")
    res = record("peers-dense", "cpu", {"m": args.m, "n": args.n, "k": args.k,
                                        "noise": args.noise, "optimum": best, "target": target,
                                        "torch_threads": torch.get_num_threads(),
                                        "methods": results, "skipped": skipped})
    path = save(res, f"peers-dense-{slug}" + ("-quick" if args.quick else ""))
    table = markdown_table(
        ["method", "objective", "time to target (s)", "knob at target", "best rel. error",
         "its time (s)"],
        [[r["method"], r["objective"],
          f"{r['time_to_target']:.3f}" if r["time_to_target"] is not None else "not reached",
          r["knob_at_target"] if r["knob_at_target"] is not None else "-",
          f"{r['best_rel_error']:.6f}", f"{r['best_seconds']:.3f}"] for r in results])
    print(f"\noptimum {best:.6f}, target {target:.6f}\n{table}")
    for s in skipped:
        print(f"skipped: {s['method']}: {s['reason']}")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
