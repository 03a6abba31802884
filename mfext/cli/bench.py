"""``mfext bench``: the synthetic grid against autograd (or ``--movielens``), written to ``--out``.

This module owns the command's arguments, their checks and the order of the
run: machine facts and ceilings, the grid, then results.json, results.md and
the plots. The benchmark's parts belong to :mod:`mfext.bench`: the cases
(``grid``), the steps under test (``backends``), the timing, the memory, the
machine facts, the runner, the reports, the plots and the MovieLens run.
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

from mfext.bench.backends import BACKENDS
from mfext.bench.grid import DTYPES, select_cases

from .options import check_device, check_out_dir, check_positive_int

__all__ = ["add_bench_arguments", "run_bench"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` and its arguments to the subcommands ``sub``."""
    bench = sub.add_parser("bench", help="benchmark against autograd (see --help)",
                           description="Benchmark the fused ops against the autograd "
                                       "reference and torch.compile; write results.json, "
                                       "results.md and PNG plots to --out.")
    add_bench_arguments(bench)


def run(args: argparse.Namespace, argv: Optional[List[str]] = None) -> None:
    """Run ``mfext bench`` with the parsed ``args``; ``argv`` is recorded as the command."""
    run_bench(args, argv)


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``mfext bench`` (the grid's and ``--movielens``'s) on ``p``."""
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a subset: under a minute on two cores")
    size.add_argument("--smoke", action="store_true", help="a tiny grid, for CI")
    p.add_argument("--sizes", metavar="SPEC",
                   help="comma-separated MxNxK (dense) or MxNxK@NNZ (sparse), e.g. "
                        "2048x2048x32,6040x3706x32@1000000 (with --smoke: small ceilings)")
    size.add_argument("--movielens", metavar="PATH",
                      help="train and evaluate each solver on a MovieLens ratings file instead")
    p.add_argument("--device", default="all", help="cpu, cuda or all (default: cpu, and cuda "
                                                  "when present)")
    p.add_argument("--dtype", default=None, help=f"comma-separated, among {', '.join(DTYPES)} "
                                                 "(default: the grid's own)")
    p.add_argument("--kind", choices=("all", "dense", "sparse"), default="all")
    p.add_argument("--backends", default=",".join(BACKENDS),
                   help=f"comma-separated, among {', '.join(BACKENDS)} (default: all)")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed samples per row (default 5; 3 with --smoke)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads first")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", default="bench-out", help="output folder (default ./bench-out)")
    p.add_argument("--rank", type=int, default=64, help="--movielens: the rank (default 64)")
    p.add_argument("--solvers", default="sgd,als,adam", help="--movielens: solvers to train")
    p.add_argument("--max-iter", type=int, default=None, help="--movielens: epochs per solver")
    p.add_argument("--implicit", action="store_true",
                   help="--movielens: implicit feedback instead (ratings >= 4): ImplicitALS's "
                        "time per iteration, P@10 and nDCG@10 beside implicit's ALS when it is "
                        "installed")
    p.add_argument("--reg", type=float, default=None,
                   help="--movielens --implicit: every model's reg (default: the value of a grid "
                        "with the peer's best P@10 on a validation part of the training set)")


def _devices(spec: str) -> List[str]:
    has_cuda = torch.cuda.is_available()
    if spec == "all":
        return ["cpu"] + (["cuda"] if has_cuda else [])
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    for d in devices:
        if d != "cpu" and not d.startswith("cuda"):
            raise ValueError(f"--device must be cpu, cuda or all, got {d!r}")
        if d.startswith("cuda") and not has_cuda:
            raise ValueError(f"--device {d}: no CUDA device is available to torch "
                             f"{torch.__version__}")
    return devices


def _list(spec: Optional[str]) -> Optional[List[str]]:
    return [s.strip() for s in spec.split(",") if s.strip()] if spec else None


def run_bench(args: argparse.Namespace, argv: Optional[List[str]] = None) -> dict:
    """Run the grid (or the MovieLens benchmark) that ``args`` selects; write the reports."""
    command = "python -m mfext " + shlex.join(argv if argv is not None else sys.argv[1:])
    out_dir = Path(args.out)
    check_positive_int(args.threads, "--threads")
    check_positive_int(args.repeat, "--repeat")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.implicit and not args.movielens:
        raise ValueError("--implicit needs --movielens PATH (the ratings to turn into "
                         "interactions)")
    if args.movielens and args.implicit:
        from mfext.bench.implicit import run_implicit_movielens

        solvers = _list(args.solvers) if args.solvers != "sgd,als,adam" else ["cg", "cholesky"]
        for s in solvers:
            if s not in ("cg", "cholesky"):
                raise ValueError(f"--solvers: ImplicitALS's solvers are cg and cholesky, got {s!r}")
        check_positive_int(args.rank, "--rank")
        check_positive_int(args.max_iter, "--max-iter")
        device = None if args.device == "all" else str(check_device(args.device))
        if args.reg is not None and not (math.isfinite(args.reg) and args.reg >= 0):
            raise ValueError(f"--reg must be a finite number >= 0, got {args.reg}")
        check_out_dir(out_dir)
        return run_implicit_movielens(args.movielens, out_dir, rank=args.rank,
                                      iterations=args.max_iter, solvers=solvers, reg=args.reg,
                                      repeat=args.repeat if args.repeat is not None else 1,
                                      threads=args.threads, device=device, command=command)
    if args.movielens:
        from mfext.bench.movielens import run_movielens

        return run_movielens(args.movielens, out_dir, solvers=_list(args.solvers),
                             rank=args.rank, max_iter=args.max_iter,
                             device=None if args.device == "all" else args.device,
                             command=command)
    from mfext.bench import machine, plots, report
    from mfext.bench.runner import run_grid

    preset = "smoke" if args.smoke else "quick" if args.quick else "default"
    cases = select_cases(preset, args.sizes, _list(args.dtype), args.kind)
    backends = _list(args.backends) or list(BACKENDS)
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"--backends: unknown backend {b!r}; choose among {BACKENDS}")
    repeat = args.repeat if args.repeat is not None else (3 if args.smoke else 5)
    devices = _devices(args.device)
    check_out_dir(out_dir)  # before the grid runs, not when its results are written

    load_start = machine.load_average()
    busy = machine.busy_warning()
    if busy:
        print(f"mfext bench: warning: {busy}", file=sys.stderr)
    start = time.perf_counter()
    dtypes = sorted({c.dtype for c in cases})
    ceilings = {d: machine.measure_ceilings(d, [DTYPES[t] for t in dtypes], small=args.smoke)
                for d in devices}
    rows = run_grid(cases, devices, backends, repeat=repeat, ceilings=ceilings,
                    progress=not args.no_progress, measure_memory=not args.no_memory)
    results = {
        "schema": "mfext-bench/1",
        "preset": "sizes" if args.sizes else preset,
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {"repeat": repeat, "devices": devices, "dtypes": dtypes,
                     "backends": backends, "kind": args.kind, "torch_threads": torch.get_num_threads(),
                     "cases": [c.as_dict() for c in cases]},
        "machine": machine.machine_info(),
        "load_average_start": load_start,
        "warnings": [busy] if busy else [],
        "versions": machine.versions(),
        "ceilings": ceilings,
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
    try:
        results["plots"] = plots.write_plots(rows, out_dir, report.machine_line(results))
    except ImportError as exc:  # matplotlib is in the `bench` extra
        results["plots"] = []
        print(f"mfext bench: no plots ({exc}); pip install matplotlib", file=sys.stderr)
    report.write_json(results, out_dir / "results.json")
    report.write_markdown(results, out_dir / "results.md")
    print(f"# mfext bench ({results['preset']}): {report.machine_line(results)}")
    print(report.table(rows))
    print(f"\n{len(rows)} rows in {results['seconds']:.1f} s; wrote "
          f"{out_dir / 'results.json'}, {out_dir / 'results.md'}"
          + "".join(f", {p}" for p in results["plots"]))
    return results
