"""How the cost of one loss-and-gradient step grows: time against m·n (dense) and
nnz (sparse) at a fixed k, and against k at a fixed shape.

The fused kernels do O(m·n·k) and O(nnz·k) work, so on log-log axes the time
should rise with slope ~1 in each sweep once the problem is large enough that
per-call overhead no longer shows. The slope is fitted by least squares over the
points that take at least --min-ms.

    python benchmarks/scaling.py                  # CPU, float32, fused + autograd
    python benchmarks/scaling.py --quick          # smaller sweeps
    python benchmarks/scaling.py --device cuda    # GPU (results named after the device)

Writes benchmarks/results/scaling-<device>.json and .png and prints a table.
"""
from __future__ import annotations

import argparse
from typing import Dict, List

import _common  # noqa: F401  (puts the checkout on sys.path)
import torch

from mfext.bench.backends import make_step
from mfext.bench.grid import Case, make_inputs
from mfext.bench.timing import time_call

from _common import device_slug, loglog_slope, markdown_table, record, save

SWEEPS = {
    "full": {
        "dense_size": [(s, s) for s in (256, 512, 1024, 2048, 4096, 8192)],
        "dense_k": [8, 16, 32, 64, 128, 256],
        "sparse_nnz": [100_000, 300_000, 1_000_000, 3_000_000, 10_000_000],
        "sparse_k": [8, 16, 32, 64, 128, 256],
    },
    "quick": {
        "dense_size": [(s, s) for s in (256, 512, 1024, 2048)],
        "dense_k": [8, 32, 128],
        "sparse_nnz": [100_000, 300_000, 1_000_000],
        "sparse_k": [8, 32, 128],
    },
}
SPARSE_SHAPE = (69878, 10677)  # MovieLens-10M's users x items


def sweep_cases(sweep: Dict[str, list], k: int, dtype: str, dense_k_size: int,
                sparse_k_nnz: int) -> Dict[str, List[Case]]:
    m, n = SPARSE_SHAPE
    return {
        "dense_size": [Case("dense", a, b, k, 0, dtype) for a, b in sweep["dense_size"]],
        "dense_k": [Case("dense", dense_k_size, dense_k_size, kk, 0, dtype) for kk in sweep["dense_k"]],
        "sparse_nnz": [Case("sparse", m, n, k, nnz, dtype) for nnz in sweep["sparse_nnz"]],
        "sparse_k": [Case("sparse", m, n, kk, sparse_k_nnz, dtype) for kk in sweep["sparse_k"]],
    }


def x_of(name: str, c: Case) -> float:
    return {"dense_size": c.m * c.n, "dense_k": c.k, "sparse_nnz": c.nnz, "sparse_k": c.k}[name]


X_LABEL = {"dense_size": "m·n (k fixed)", "dense_k": "k (m×n fixed)",
           "sparse_nnz": "nnz (k fixed)", "sparse_k": "k (nnz fixed)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--backends", default="fused,autograd")
    p.add_argument("--k", type=int, default=32, help="k of the size sweeps")
    p.add_argument("--dense-k-size", type=int, default=2048, help="m = n of the dense k sweep")
    p.add_argument("--sparse-k-nnz", type=int, default=1_000_000, help="nnz of the sparse k sweep")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--min-ms", type=float, default=1.0, help="fit the slope on points >= this")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = [b for b in args.backends.split(",") if b]
    sweeps = sweep_cases(SWEEPS["quick" if args.quick else "full"], args.k, args.dtype,
                         args.dense_k_size, args.sparse_k_nnz)
    points, fits = [], []
    for name, cases in sweeps.items():
        for backend in backends:
            for c in cases:
                inputs = make_inputs(c, args.device)
                step = make_step(backend, c.kind, inputs)
                try:
                    t = time_call(step, args.device, repeat=args.repeat)
                except RuntimeError as exc:  # e.g. out of memory for autograd at the top
                    print(f"{name} {backend} {c.label}: failed ({str(exc).splitlines()[0]})")
                    continue
                finally:
                    del inputs, step
                points.append({"sweep": name, "backend": backend, **c.as_dict(),
                               "x": x_of(name, c), "median_ms": t.median * 1e3,
                               "q1_ms": t.q1 * 1e3, "q3_ms": t.q3 * 1e3})
                print(f"{name:10s} {backend:8s} {c.label:32s} {t.median * 1e3:10.3f} ms", flush=True)
            used = [q for q in points if q["sweep"] == name and q["backend"] == backend
                    and q["median_ms"] >= args.min_ms]
            if len(used) >= 2:
                slope, _ = loglog_slope([q["x"] for q in used], [q["median_ms"] for q in used])
                fits.append({"sweep": name, "backend": backend, "slope": slope,
                             "points": len(used), "x_range": [used[0]["x"], used[-1]["x"]]})
    slug = device_slug(args.device)
    res = record("scaling", args.device, {"dtype": args.dtype, "k": args.k, "points": points,
                                          "fits": fits, "min_ms": args.min_ms})
    name = f"scaling-{slug}" + ("-quick" if args.quick else "")
    path = save(res, name)
    png = path.with_suffix(".png")
    plot(points, fits, png, f"{slug}, {args.dtype}")
    print()
    print(markdown_table(["sweep", "backend", "fitted slope", "points", "x range"],
                         [[f["sweep"], f["backend"], f"{f['slope']:.2f}", f["points"],
                           f"{f['x_range'][0]:,} – {f['x_range'][1]:,}"] for f in fits]))
    print(f"\nwrote {path} and {png}")


def plot(points: List[dict], fits: List[dict], path, title: str) -> None:
    from mfext.bench.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    slope_of = {(f["sweep"], f["backend"]): f["slope"] for f in fits}
    for ax, name in zip(axes.flat, X_LABEL):
        for backend in sorted({q["backend"] for q in points}):
            pts = [q for q in points if q["sweep"] == name and q["backend"] == backend]
            if not pts:
                continue
            s = slope_of.get((name, backend))
            ax.plot([q["x"] for q in pts], [q["median_ms"] for q in pts], "o-",
                    label=f"{backend}" + (f" (slope {s:.2f})" if s is not None else ""))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(X_LABEL[name])
        ax.set_ylabel("median ms per step")
        ax.set_title(name.replace("_", ": time vs "))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
