"""Runs the grid: every case on every device with every backend, one row each.

This module owns the order of the rows, the error of each backend against
autograd and the derived rates (GFLOP/s, GB/s, % of roofline). The cases and
inputs come from :mod:`.grid`, the steps from :mod:`.backends`, the clocks from
:mod:`.timing` and :mod:`.memory`, the work counts from :mod:`.cost`.
"""
from __future__ import annotations

import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

from . import cost
from .backends import make_step
from .grid import Case, make_inputs
from .memory import peak_extra
from .timing import synchronize, time_call


def _rel_err(out: tuple, ref_out: tuple) -> float:
    """Largest relative error of loss, grad_W, grad_H against the autograd outputs."""
    worst = 0.0
    for x, r in zip(out, ref_out):
        x = x.detach().double().cpu()
        r = r.detach().double().cpu()
        denom = r.norm().item()
        diff = (x - r).norm().item()
        worst = max(worst, diff / denom if denom > 0 else diff)
    return worst


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def run_case(case: Case, device: str, backend: str, *, repeat: int, ceilings: dict,
             reference: Optional[tuple], measure_memory: bool = True) -> Dict[str, object]:
    """Time one (case, device, backend); errors become a row with ``status`` "error".

    Returns
    -------
    dict: the case's fields, ``device``, ``backend``, ``status``, ``error``,
    ``first_call_s`` (includes compilation for "compile"), timing in ms
    (``median_ms``, ``q1_ms``, ``q3_ms``, ``min_ms``, ``max_ms``, ``number``),
    ``peak_extra_rss_bytes``, ``peak_extra_tensor_bytes``, ``flops``, ``bytes``,
    ``gflops``, ``gbs``, ``pct_peak_flops``, ``pct_peak_bw``, ``pct_roofline``
    (roofline time / measured time, in %), ``rel_err`` (against autograd) and
    ``outputs`` (the step's outputs, for the next rows' ``rel_err``; removed before
    the row is stored).
    """
    row: Dict[str, object] = {**case.as_dict(), "device": device, "backend": backend,
                              "status": "ok", "error": None}
    inputs = None
    try:
        inputs = make_inputs(case, device)
        step = make_step(backend, case.kind, inputs)
        t0 = time.perf_counter()
        outputs = step()
        synchronize(device)
        row["first_call_s"] = time.perf_counter() - t0
        timing = time_call(step, device, repeat=repeat)
        row.update({f"{k}_ms": getattr(timing, k) * 1e3 for k in ("median", "q1", "q3", "min", "max")})
        row["samples_ms"] = [s * 1e3 for s in timing.samples]
        row["number"] = timing.number
        if measure_memory:
            mem = peak_extra(step, device)
            row["peak_extra_rss_bytes"] = mem["rss"]
            row["peak_extra_tensor_bytes"] = mem["tensors"]
        row["rel_err"] = _rel_err(outputs, reference) if reference is not None else None
        row["outputs"] = tuple(o.detach() for o in outputs)
    except Exception as exc:  # a failing backend is a row, not the end of the run
        row["status"] = "error"
        row["error"] = _first_line(exc)
    finally:
        del inputs  # the next row allocates its own; nothing here forms reference cycles
    row["flops"] = cost.flops(case)
    row["bytes"] = cost.bytes_moved(case)
    if row["status"] == "ok":
        seconds = row["median_ms"] / 1e3
        peak_flops = ceilings["gemm_gflops"].get(case.dtype)
        row["gflops"] = row["flops"] / seconds / 1e9
        row["gbs"] = row["bytes"] / seconds / 1e9
        row["pct_peak_flops"] = 100.0 * row["gflops"] / peak_flops if peak_flops else None
        row["pct_peak_bw"] = 100.0 * row["gbs"] / ceilings["copy_gbs"]
        row["pct_roofline"] = (100.0 * cost.roofline_seconds(case, peak_flops, ceilings["copy_gbs"])
                               / seconds if peak_flops else None)
    return row


def add_speedups(rows: List[dict]) -> None:
    """Set ``speedup_vs_autograd`` = autograd median / row median, per case and device."""
    key = lambda r: (r["device"], r["kind"], r["m"], r["n"], r["k"], r["nnz"], r["dtype"])  # noqa: E731
    base = {key(r): r["median_ms"] for r in rows
            if r["backend"] == "autograd" and r["status"] == "ok"}
    for r in rows:
        b = base.get(key(r))
        r["speedup_vs_autograd"] = (b / r["median_ms"]) if (b and r["status"] == "ok") else None


def run_grid(cases: Sequence[Case], devices: Sequence[str], backends: Sequence[str], *,
             repeat: int, ceilings: Dict[str, dict], progress: bool = True,
             measure_memory: bool = True) -> List[dict]:
    """All rows of the grid, autograd first within a case (the other rows compare to it)."""
    from tqdm.auto import tqdm

    order = sorted(backends, key=lambda b: b != "autograd")
    rows: List[dict] = []
    bar = tqdm(total=len(devices) * len(cases) * len(order), desc="mfext bench",
               unit="row", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        for device in devices:
            for case in cases:
                reference = None
                for backend in order:
                    bar.set_postfix_str(f"{device} {case.kind} {case.dtype} {case.label} {backend}",
                                        refresh=False)
                    row = run_case(case, device, backend, repeat=repeat,
                                   ceilings=ceilings[device], reference=reference,
                                   measure_memory=measure_memory)
                    outputs = row.pop("outputs", None)
                    if backend == "autograd" and outputs is not None:
                        reference = outputs
                    rows.append(row)
                    bar.update(1)
                del reference
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    finally:
        bar.close()
    add_speedups(rows)
    return rows
