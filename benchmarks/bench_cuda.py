"""Speed of the CUDA ops against the autograd reference, in one run (issue 3's targets).

Every time is the median of CUDA-event timings after warm-up, float32, with
the autograd reference timed in the same process. The device's ceilings are
measured first: copy bandwidth (bytes read + written by a device-to-device
copy) and the matrix-product rate (float32, and TF32 for reference).

    python benchmarks/bench_cuda.py [--quick] [--out benchmarks/results/cuda_ops.json]

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
from pathlib import Path

import torch

import mfext
from mfext import reference as ref
from mfext.cuda import dense_path

NETFLIX = (480_189, 17_770)


def cuda_time(fn, reps: int, warmup: int = 2) -> dict:
    """Median (and spread) of `reps` CUDA-event timings of fn(), in ms."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return {"median_ms": statistics.median(times), "min_ms": times[0], "max_ms": times[-1], "reps": reps}


def free() -> None:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def device_facts() -> dict:
    p = torch.cuda.get_device_properties(0)
    return {
        "device": p.name,
        "compute_capability": f"{p.major}.{p.minor}",
        "sms": p.multi_processor_count,
        "memory_gib": round(p.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "mfext": mfext.__version__,
        "build": mfext.build_info(),
        "python": platform.python_version(),
        "command": " ".join([sys.executable] + sys.argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def ceilings(quick: bool) -> dict:
    n = (2**28) if not quick else (2**26)  # 1 GiB (256 MiB quick) of float32
    x = torch.rand(n, device="cuda")
    y = torch.empty_like(x)
    t = cuda_time(lambda: y.copy_(x), reps=10)
    copy_gbs = 2 * x.numel() * 4 / (t["median_ms"] * 1e-3) / 1e9
    del x, y
    free()
    s = 8192 if not quick else 4096
    a, b = torch.rand(s, s, device="cuda"), torch.rand(s, s, device="cuda")
    out = {"copy_GBps": copy_gbs, "copy": t}
    for name, tf32 in (("fp32", False), ("tf32", True)):
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            tg = cuda_time(lambda: a @ b, reps=10)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
        out[f"gemm_{name}_TFLOPs"] = 2 * s**3 / (tg["median_ms"] * 1e-3) / 1e12
        out[f"gemm_{name}"] = tg
    del a, b
    free()
    return out


def autograd_dense(A, W, H):
    return ref.dense_loss_grad(A, W, H)


def dense_target(quick: bool, ceil: dict, reps: int) -> dict:
    m = n = 16384 if not quick else 8192
    k = 32
    g = torch.Generator(device="cuda").manual_seed(0)
    A = torch.rand(m, n, device="cuda", generator=g)
    W = torch.rand(m, k, device="cuda", generator=g)
    H = torch.rand(k, n, device="cuda", generator=g)
    res = {"m": m, "n": n, "k": k, "dtype": "float32"}
    res["autograd"] = cuda_time(lambda: autograd_dense(A, W, H), reps)
    free()
    for path in ("fused", "tiled"):
        with dense_path(path):
            res[path] = cuda_time(lambda: mfext.dense_loss_grad(A, W, H), reps)
    # One pass must read A once and W, H once, and write both gradients.
    bytes_min = 4 * (m * n + 2 * (m * k + k * n))
    flops = 6 * m * n * k  # R = WH, G H^T, W^T G (useful float32 work)
    for path in ("fused", "tiled"):
        t = res[path]["median_ms"] * 1e-3
        res[path]["speedup_vs_autograd"] = res["autograd"]["median_ms"] / res[path]["median_ms"]
        res[path]["GBps"] = bytes_min / t / 1e9
        res[path]["TFLOPs"] = flops / t / 1e12
        res[path]["frac_copy_bw"] = res[path]["GBps"] / ceil["copy_GBps"]
        res[path]["frac_gemm_fp32"] = res[path]["TFLOPs"] / ceil["gemm_fp32_TFLOPs"]
    res["floor_ms"] = {
        "bytes_at_copy_bw": bytes_min / (ceil["copy_GBps"] * 1e9) * 1e3,
        "flops_at_gemm_fp32": flops / (ceil["gemm_fp32_TFLOPs"] * 1e12) * 1e3,
    }
    del A, W, H
    free()
    return res


def dense_crossover(quick: bool, reps: int) -> dict:
    m = n = 8192 if not quick else 4096
    ks = [8, 16, 32, 48, 64, 96, 128, 192, 256] if not quick else [16, 32, 64, 128]
    g = torch.Generator(device="cuda").manual_seed(1)
    A = torch.rand(m, n, device="cuda", generator=g)
    rows = []
    for k in ks:
        W = torch.rand(m, k, device="cuda", generator=g)
        H = torch.rand(k, n, device="cuda", generator=g)
        row = {"k": k}
        for path in ("fused", "tiled"):
            if path == "fused" and k > 64:
                continue
            with dense_path(path):
                row[path + "_ms"] = cuda_time(lambda: mfext.dense_loss_grad(A, W, H), reps)["median_ms"]
        row["autograd_ms"] = cuda_time(lambda: autograd_dense(A, W, H), max(3, reps // 2))["median_ms"]
        rows.append(row)
        free()
    # The crossover: the smallest k at which the tiled path is faster than the fused one.
    faster = [r["k"] for r in rows if "fused_ms" in r and r["tiled_ms"] < r["fused_ms"]]
    return {"m": m, "n": n, "rows": rows,
            "tiled_faster_from_k": faster[0] if faster else None,
            "note": "auto uses fused for k <= 64 (csrc/cuda/kernels.h kDenseFusedMaxK)"}


def sparse_inputs(nnz: int, k: int, seed: int, sort_rows: bool = False):
    m, n = NETFLIX
    g = torch.Generator(device="cuda").manual_seed(seed)
    rows = torch.randint(0, m, (nnz,), device="cuda", generator=g, dtype=torch.int32)
    cols = torch.randint(0, n, (nnz,), device="cuda", generator=g, dtype=torch.int32)
    if sort_rows:
        order = torch.argsort(rows, stable=True)
        rows, cols = rows[order], cols[order]
    vals = torch.rand(nnz, device="cuda", generator=g) * 4 + 1
    W = torch.rand(m, k, device="cuda", generator=g) * 0.1
    H = (torch.rand(n, k, device="cuda", generator=g) * 0.1).t()  # the fast layout
    return rows, cols, vals, W, H


@contextlib.contextmanager
def deterministic(enabled: bool):
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def sparse_targets(quick: bool, reps: int) -> dict:
    k = 128
    res = {"shape": list(NETFLIX), "k": k, "dtype": "float32", "index_dtype": "int32"}
    nnz = 25_000_000 if not quick else 5_000_000
    inputs = sparse_inputs(nnz, k, seed=2)
    entry = {"nnz": nnz}
    for mode in ("fast", "deterministic"):
        with deterministic(mode == "deterministic"):
            entry[mode] = cuda_time(lambda: mfext.sparse_loss_grad(*inputs), reps)
    # The gather reference holds several (nnz, k) temporaries; if they do not
    # fit, it is timed on the first half (quarter) of the entries and scaled
    # linearly, and the JSON says so.
    for part in (1, 2, 4):
        try:
            sub = [t[: nnz // part] if t.dim() == 1 else t for t in inputs]
            t = cuda_time(lambda: ref.sparse_loss_grad(*sub), max(3, reps // 2), warmup=1)
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

    nnz = 100_000_000 if not quick else 20_000_000
    for order in ("random", "row_sorted"):
        inputs = sparse_inputs(nnz, k, seed=3, sort_rows=order == "row_sorted")
        entry = {"nnz": nnz, "order": order}
        for mode in ("fast", "deterministic"):
            with deterministic(mode == "deterministic"):
                t = cuda_time(lambda: mfext.sparse_loss_grad(*inputs), reps)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--sections", default="dense,crossover,sparse")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/cuda_ops[_quick].json)")
    args = parser.parse_args()
    if not (torch.cuda.is_available() and mfext.build_info()["cuda"]):
        print("bench_cuda: needs a GPU and a CUDA build of mfext", file=sys.stderr)
        return 2
    reps = args.reps or (5 if args.quick else 15)
    sections = set(args.sections.split(","))
    result = {"facts": device_facts(), "quick": args.quick}
    result["ceilings"] = ceilings(args.quick)
    if "dense" in sections:
        result["dense"] = dense_target(args.quick, result["ceilings"], reps)
    if "crossover" in sections:
        result["crossover"] = dense_crossover(args.quick, reps)
    if "sparse" in sections:
        result["sparse"] = sparse_targets(args.quick, reps)
    out = Path(args.out or f"benchmarks/results/cuda_ops{'_quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], out.name).write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
