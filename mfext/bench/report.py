"""The run's records: results.json (everything) and results.md (a table).

This module owns the file formats and the table's columns; the rows come from
:mod:`.runner`, the machine facts from :mod:`.machine`, the plots from :mod:`.plots`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

MIB = 2.0 ** 20


def write_json(results: dict, path: Path) -> Path:
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return path


def _f(x: Optional[float], fmt: str, none: str = "-") -> str:
    return none if x is None else format(x, fmt)


def _mem(row: dict) -> str:
    rss, tens = row.get("peak_extra_rss_bytes"), row.get("peak_extra_tensor_bytes")
    if rss is None and tens is None:
        return "-"
    return f"{_f(None if rss is None else rss / MIB, '.1f')} / {_f(None if tens is None else tens / MIB, '.1f')}"


def machine_line(results: dict) -> str:
    m, v = results["machine"], results["versions"]
    mem = m.get("memory_bytes")
    gpus = ", ".join(g["name"] for g in m.get("gpus", [])) or "no GPU"
    return (f"{m['cpu_model']}, {m['logical_cpus']} logical CPUs, {m['torch_threads']} torch threads, "
            f"{_f(None if mem is None else mem / 2 ** 30, '.0f')} GiB, {gpus}; "
            f"python {v['python']}, torch {v['torch']}, numpy {v['numpy']}, "
            f"mfext {v['mfext']}" + (f" ({v['mfext_commit']})" if v.get("mfext_commit") else ""))


def table(rows: List[dict]) -> str:
    """The markdown table of ``rows``: one line per (case, device, backend)."""
    head = ("| device | kind | dtype | m × n | k | nnz | backend | median ms | spread ms (IQR) "
            "| speedup vs autograd | peak extra MiB (RSS / tensors) | GFLOP/s (% peak) "
            "| GB/s (% peak) | % of roofline | rel. err |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        shape = f"{r['m']} × {r['n']}"
        nnz = f"{r['nnz']:,}" if r["kind"] == "sparse" else "-"
        if r["status"] != "ok":
            err = (r.get("error") or "").replace("|", "/")
            lines.append(f"| {r['device']} | {r['kind']} | {r['dtype']} | {shape} | {r['k']} | {nnz} "
                         f"| {r['backend']} | failed: {err} | | | | | | | |")
            continue
        lines.append(
            f"| {r['device']} | {r['kind']} | {r['dtype']} | {shape} | {r['k']} | {nnz} | {r['backend']} "
            f"| {r['median_ms']:.3f} | {r['q1_ms']:.3f}–{r['q3_ms']:.3f} "
            f"| {_f(r.get('speedup_vs_autograd'), '.2f')}× | {_mem(r)} "
            f"| {r['gflops']:.1f} ({_f(r.get('pct_peak_flops'), '.0f')}%) "
            f"| {r['gbs']:.1f} ({r['pct_peak_bw']:.0f}%) | {_f(r.get('pct_roofline'), '.1f')}% "
            f"| {_f(r.get('rel_err'), '.1e')} |")
    return "\n".join(lines)


def markdown(results: dict) -> str:
    """The whole results.md: machine, ceilings, the table, and how to read it."""
    out = [f"# mfext bench: {results['preset']}", "",
           f"- Machine: {machine_line(results)}",
           f"- Command: `{results['command']}`",
           f"- Date: {results['created']}; grid time {results['seconds']:.1f} s; "
           f"{results['settings']['repeat']} samples per row; load average (1, 5, 15 min) "
           f"{results.get('load_average_start')} at the start, "
           f"{results['machine'].get('load_average')} at the end", ""]
    out += [f"- **Warning:** {w}" for w in results.get("warnings", [])]
    for device, c in results["ceilings"].items():
        gemm = ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in c["gemm_gflops"].items())
        out.append(f"- Ceilings on {device}: GEMM {c['gemm_size']}² {gemm}; "
                   f"copy {c['copy_gbs']:.1f} GB/s")
    out += ["", table(results["rows"]), "",
            "Median time per loss-and-gradient step; spread is the interquartile range of the "
            "samples. Peak extra memory: RSS high-water mark above the level before the step "
            "(all allocations) / peak of torch tensors allocated during the step (profiler), on "
            "CUDA the caching allocator's peak. GFLOP/s and GB/s count the useful work "
            "(6mnk + 4mn or 6·nnz·k + 4·nnz flops) and the compulsory traffic (inputs read once, "
            "outputs written once), compared with the measured ceilings; % of roofline is "
            "max(flops / peak GFLOP/s, bytes / peak GB/s) over the measured time. rel. err is "
            "the largest relative error of loss, grad_W and grad_H against autograd.", ""]
    if results.get("plots"):
        out += [f"![{Path(p).stem}]({Path(p).name})" for p in results["plots"]] + [""]
    return "\n".join(out)


def write_markdown(results: dict, path: Path) -> Path:
    path.write_text(markdown(results))
    return path
