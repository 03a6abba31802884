"""Speed of the CUDA ops against the autograd reference, in one run.

Every time is the median of CUDA-event timings after warm-up, float32, with
the autograd reference timed in the same process. The device's ceilings are
measured first: copy bandwidth (bytes read + written by a device-to-device
copy) and the matrix-product rate (float32, and TF32 for reference).

    python benchmarks/bench_cuda.py [--quick] [--out benchmarks/results/cuda_ops.json]
    python benchmarks/bench_cuda.py --smoke --device cpu   # a dry run of this script, no GPU


Sections: the dense target (m = n = 16384, k = 32; fused and tiled paths vs
autograd), both dense paths against k (the crossover), and the sparse targets
on a Netflix-shaped matrix (480,189 x 17,770, k = 128): 25M entries vs the
autograd gather reference, and entries/s at 100M, in both modes.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a source checkout without installing
    sys.path.insert(0, str(ROOT))

import mfext  # noqa: E402
from mfext import reference as ref  # noqa: E402
from mfext.cuda import dense_path  # noqa: E402

NETFLIX = (480_189, 17_770)

# The device every section runs on. "cuda" for the measurements; "cpu" runs the
# same code with wall-clock timings, so that tests check this script on
# machines without a GPU (--smoke --device cpu) before a GPU session uses it.
DEVICE = "cuda"


@dataclass(frozen=True)
class Sizes:
    """The problem sizes and repeats of one run."""
    copy_numel: int                 # float32 elements of the copy-bandwidth probe
    gemm: int                       # s of the s x s x s GEMM-rate probe
    dense: int                      # m = n of the dense target
    crossover: int                  # m = n of the dense sweep over k
    crossover_ks: Tuple[int, ...]
    sparse_shape: Tuple[int, int]   # (m, n) of the sparse matrices
    sparse_nnz: int                 # entries of the case timed against autograd
    throughput_nnz: int             # entries of the entries/s case
    reps: int


SIZES = {
    "full": Sizes(2**28, 8192, 16384, 8192, (8, 16, 32, 48, 64, 96, 128, 192, 256),
                  NETFLIX, 25_000_000, 100_000_000, 15),
    "quick": Sizes(2**26, 4096, 8192, 4096, (16, 32, 64, 128), NETFLIX, 5_000_000, 20_000_000, 5),
    # Seconds on a CPU: checks the script, measures nothing.
    "smoke": Sizes(2**12, 64, 96, 64, (8, 72), (997, 89), 5_000, 20_000, 1),
}


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def device_time(fn, reps: int, warmup: int = 2) -> dict:
    """Median (and spread) of `reps` timings of fn(), in ms: CUDA events on the GPU."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        if DEVICE == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"median_ms": statistics.median(times), "min_ms": times[0], "max_ms": times[-1], "reps": reps}


def free() -> None:
    sync()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def path(name: str):
    """mfext.cuda.dense_path on the GPU; the CPU op has one path."""
    return dense_path(name) if DEVICE == "cuda" else contextlib.nullcontext()


def generator(seed: int) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


def device_facts() -> dict:
    common = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "mfext": mfext.__version__,
        "build": mfext.build_info(),
        "python": platform.python_version(),
        "command": " ".join([sys.executable] + sys.argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if DEVICE != "cuda":
        return {"device": f"cpu ({platform.processor() or platform.machine()}, dry run)",
                "cpus": os.cpu_count(), **common}
    p = torch.cuda.get_device_properties(0)
    return {
        "device": p.name,
        "compute_capability": f"{p.major}.{p.minor}",
        "sms": p.multi_processor_count,
        "memory_gib": round(p.total_memory / 2**30, 1),
        **common,
    }


def ceilings(size: Sizes) -> dict:
    x = torch.rand(size.copy_numel, device=DEVICE)  # 1 GiB (256 MiB quick) of float32
    y = torch.empty_like(x)
    t = device_time(lambda: y.copy_(x), reps=10)
    copy_gbs = 2 * x.numel() * 4 / (t["median_ms"] * 1e-3) / 1e9
    del x, y
    free()
    s = size.gemm
    a, b = torch.rand(s, s, device=DEVICE), torch.rand(s, s, device=DEVICE)
    out = {"copy_GBps": copy_gbs, "copy": t}
    for name, tf32 in (("fp32", False), ("tf32", True)):
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            tg = device_time(lambda: a @ b, reps=10)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
        out[f"gemm_{name}_TFLOPs"] = 2 * s**3 / (tg["median_ms"] * 1e-3) / 1e12
        out[f"gemm_{name}"] = tg
    del a, b
    free()
    return out


def autograd_dense(A, W, H):
    return ref.dense_loss_grad(A, W, H)


def dense_target(size: Sizes, ceil: dict, reps: int) -> dict:
    m = n = size.dense
    k = 32
    g = generator(0)
    A = torch.rand(m, n, device=DEVICE, generator=g)
    W = torch.rand(m, k, device=DEVICE, generator=g)
    H = torch.rand(k, n, device=DEVICE, generator=g)
    res = {"m": m, "n": n, "k": k, "dtype": "float32"}
    res["autograd"] = device_time(lambda: autograd_dense(A, W, H), reps)
    free()
    for name in ("fused", "tiled"):
        with path(name):
            res[name] = device_time(lambda: mfext.dense_loss_grad(A, W, H), reps)
    # One pass must read A once and W, H once, and write both gradients.
    bytes_min = 4 * (m * n + 2 * (m * k + k * n))
    flops = 6 * m * n * k  # R = WH, G H^T, W^T G (useful float32 work)
    for name in ("fused", "tiled"):
        r = res[name]
        t = r["median_ms"] * 1e-3
        r["speedup_vs_autograd"] = res["autograd"]["median_ms"] / r["median_ms"]
        r["GBps"] = bytes_min / t / 1e9
        r["TFLOPs"] = flops / t / 1e12
        r["frac_copy_bw"] = r["GBps"] / ceil["copy_GBps"]
        r["frac_gemm_fp32"] = r["TFLOPs"] / ceil["gemm_fp32_TFLOPs"]
    res["floor_ms"] = {
        "bytes_at_copy_bw": bytes_min / (ceil["copy_GBps"] * 1e9) * 1e3,
        "flops_at_gemm_fp32": flops / (ceil["gemm_fp32_TFLOPs"] * 1e12) * 1e3,
    }
    del A, W, H
    free()
    return res


def dense_crossover(size: Sizes, reps: int) -> dict:
    m = n = size.crossover
    g = generator(1)
    A = torch.rand(m, n, device=DEVICE, generator=g)
    rows = []
    for k in size.crossover_ks:
        W = torch.rand(m, k, device=DEVICE, generator=g)
        H = torch.rand(k, n, device=DEVICE, generator=g)
        row = {"k": k}
        for name in ("fused", "tiled"):
            if name == "fused" and k > 64:
                continue
            with path(name):
                row[name + "_ms"] = device_time(lambda: mfext.dense_loss_grad(A, W, H), reps)["median_ms"]
        row["autograd_ms"] = device_time(lambda: autograd_dense(A, W, H), max(3, reps // 2))["median_ms"]
        rows.append(row)
        free()
    # The crossover: the smallest k at which the tiled path is faster than the fused one.
    faster = [r["k"] for r in rows if "fused_ms" in r and r["tiled_ms"] < r["fused_ms"]]
    return {"m": m, "n": n, "rows": rows,
            "tiled_faster_from_k": faster[0] if faster else None,
            "note": "auto uses fused for k <= 64 (csrc/cuda/dense_loss_grad.h kDenseFusedMaxK)"}


def sparse_inputs(shape: Tuple[int, int], nnz: int, k: int, seed: int, sort_rows: bool = False):
    m, n = shape
    g = generator(seed)
    rows = torch.randint(0, m, (nnz,), device=DEVICE, generator=g, dtype=torch.int32)
    cols = torch.randint(0, n, (nnz,), device=DEVICE, generator=g, dtype=torch.int32)
    if sort_rows:
        order = torch.argsort(rows, stable=True)
        rows, cols = rows[order], cols[order]
    vals = torch.rand(nnz, device=DEVICE, generator=g) * 4 + 1
    W = torch.rand(m, k, device=DEVICE, generator=g) * 0.1
    H = (torch.rand(n, k, device=DEVICE, generator=g) * 0.1).t()  # the fast layout
    return rows, cols, vals, W, H


@contextlib.contextmanager
def deterministic(enabled: bool):
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def sparse_targets(size: Sizes, reps: int) -> dict:
    k = 128
    res = {"shape": list(size.sparse_shape), "k": k, "dtype": "float32", "index_dtype": "int32"}
    nnz = size.sparse_nnz
    inputs = sparse_inputs(size.sparse_shape, nnz, k, seed=2)
    entry = {"nnz": nnz}
    for mode in ("fast", "deterministic"):
        with deterministic(mode == "deterministic"):
            entry[mode] = device_time(lambda: mfext.sparse_loss_grad(*inputs), reps)
    # The gather reference holds several (nnz, k) temporaries; if they do not
    # fit, it is timed on the first half (quarter) of the entries and scaled
    # linearly, and the JSON says so.
    for part in (1, 2, 4):
        try:
            sub = [t[: nnz // part] if t.dim() == 1 else t for t in inputs]
            t = device_time(lambda: ref.sparse_loss_grad(*sub), max(3, reps // 2), warmup=1)
            t["nnz_timed"] = nnz // part
            t["median_ms_scaled_to_nnz"] = t["median_ms"] * part
            entry["autograd"] = t
            break
        except torch.OutOfMemoryError as exc:
            entry["autograd"] = {"error": f"out of memory: {exc}"[:200]}
            free()
    if "median_ms_scaled_to_nnz" in entry["autograd"]:
        for mode in ("fast", "deterministic"):
            entry[mode]["speedup_vs_autograd"] = (
                entry["autograd"]["median_ms_scaled_to_nnz"] / entry[mode]["median_ms"])
    res["vs_autograd"] = entry
    del inputs
    free()

    nnz = size.throughput_nnz
    for order in ("random", "row_sorted"):
        inputs = sparse_inputs(size.sparse_shape, nnz, k, seed=3, sort_rows=order == "row_sorted")
        entry = {"nnz": nnz, "order": order}
        for mode in ("fast", "deterministic"):
            with deterministic(mode == "deterministic"):
                t = device_time(lambda: mfext.sparse_loss_grad(*inputs), reps)
            t["entries_per_s"] = nnz / (t["median_ms"] * 1e-3)
            entry[mode] = t
        res[f"throughput_{order}"] = entry
        del inputs
        free()
    return res


def table(result: dict) -> str:
    lines = []
    c = result["ceilings"]
    lines.append(f"device: {result['facts']['device']}  (torch {result['facts']['torch']}, CUDA {result['facts']['cuda']})")
    lines.append(f"ceilings: copy {c['copy_GBps']:.0f} GB/s, GEMM fp32 {c['gemm_fp32_TFLOPs']:.1f} TFLOP/s, tf32 {c['gemm_tf32_TFLOPs']:.1f} TFLOP/s")
    d = result.get("dense")
    if d:
        lines.append(f"dense m=n={d['m']} k={d['k']}: autograd {d['autograd']['median_ms']:.3f} ms")
        for p in ("fused", "tiled"):
            r = d[p]
            lines.append(f"  {p:6s} {r['median_ms']:.3f} ms  x{r['speedup_vs_autograd']:.1f} vs autograd  "
                         f"{r['GBps']:.0f} GB/s ({100 * r['frac_copy_bw']:.0f}% of copy)  "
                         f"{r['TFLOPs']:.1f} TFLOP/s ({100 * r['frac_gemm_fp32']:.0f}% of fp32 GEMM)   target x5")
    x = result.get("crossover")
    if x:
        lines.append(f"dense vs k (m=n={x['m']}), ms:   k  fused  tiled  autograd")
        for r in x["rows"]:
            f = f"{r['fused_ms']:.3f}" if "fused_ms" in r else "   -  "
            lines.append(f"  {r['k']:4d}  {f}  {r['tiled_ms']:.3f}  {r['autograd_ms']:.3f}")
        lines.append(f"  tiled faster from k = {x['tiled_faster_from_k']}")
    s = result.get("sparse")
    if s:
        e = s["vs_autograd"]
        auto = e["autograd"].get("median_ms_scaled_to_nnz")
        timed = e["autograd"].get("nnz_timed", e["nnz"])
        lines.append(f"sparse {s['shape'][0]}x{s['shape'][1]} k={s['k']} nnz={e['nnz']:,}: autograd "
                     + (f"{auto:.1f} ms" + (f" (timed at nnz={timed:,}, scaled)" if timed != e["nnz"] else "")
                        if auto else e["autograd"].get("error", "?")))
        for mode in ("fast", "deterministic"):
            sp = e[mode].get("speedup_vs_autograd")
            lines.append(f"  {mode:13s} {e[mode]['median_ms']:.2f} ms" + (f"  x{sp:.0f} vs autograd   target x50" if sp else ""))
        for order in ("random", "row_sorted"):
            t = s[f"throughput_{order}"]
            for mode in ("fast", "deterministic"):
                lines.append(f"  nnz={t['nnz']:,} {order:10s} {mode:13s} {t[mode]['median_ms']:.2f} ms  "
                             f"{t[mode]['entries_per_s']:.2e} entries/s   target 1e9")
    return "\n".join(lines)


def write_json(result: dict, out: Path) -> None:
    """The results to `out`, and to $OUT (what a device call returns) when it is set."""
    text = json.dumps(result, indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], out.name).write_text(text)


def main(argv=None) -> int:
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, one repeat: checks the script, measures nothing")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a dry run of the same code without a GPU (with --smoke)")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--sections", default="dense,crossover,sparse")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/cuda_ops[_quick].json)")
    args = parser.parse_args(argv)
    DEVICE = args.device
    if DEVICE == "cuda" and not (torch.cuda.is_available() and mfext.build_info()["cuda"]):
        print("bench_cuda: needs a GPU and a CUDA build of mfext", file=sys.stderr)
        return 2
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    size = SIZES[mode]
    reps = args.reps or size.reps
    sections = set(args.sections.split(","))
    suffix = "" if mode == "full" else f"_{mode}"
    out = Path(args.out or f"benchmarks/results/cuda_ops{suffix}.json")
    result = {"facts": device_facts(), "quick": args.quick, "mode": mode}
    result["ceilings"] = ceilings(size)
    sections_run = {"dense": lambda: dense_target(size, result["ceilings"], reps),
                    "crossover": lambda: dense_crossover(size, reps),
                    "sparse": lambda: sparse_targets(size, reps)}
    for name, run in sections_run.items():
        if name in sections:
            result[name] = run()
            write_json(result, out)  # after every section: a run cut short keeps what it measured
    write_json(result, out)
    print(table(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
