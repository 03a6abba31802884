"""PNG plots of a run (matplotlib, Agg backend): speedup against size, time against k.

This module owns the figures drawn from the grid's rows; the rows come from
:mod:`.runner`, the machine line of the title from :mod:`.report`.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

_STYLE = {"fused": "o-", "autograd": "s--", "compile": "^:"}
_COLOR = {"fused": "tab:green", "autograd": "tab:blue", "compile": "tab:orange"}


def _size(r: dict) -> float:
    return float(r["m"] * r["n"]) if r["kind"] == "dense" else float(r["nnz"])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _plain_log_ticks(ax) -> None:
    """Plain numbers on the log x axis, no crowded minor labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for axis in (ax.xaxis,):  # y keeps matplotlib's log labels (minor ones when the range is short)
        fmt = ScalarFormatter()
        fmt.set_scientific(False)
        axis.set_major_formatter(fmt)
        axis.set_minor_formatter(NullFormatter())


def _series(rows: List[dict], fixed: Tuple[str, ...], x: str) -> Dict[tuple, List[dict]]:
    """Group ok rows by ``fixed`` fields; keep groups where ``x`` takes >= 2 values."""
    groups: Dict[tuple, List[dict]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok":
            groups[tuple(r[f] for f in fixed)].append(r)
    out = {}
    for key, rs in groups.items():
        xs = {(_size(r) if x == "size" else r[x]) for r in rs}
        if len(xs) >= 2:
            out[key] = sorted(rs, key=lambda r: _size(r) if x == "size" else r[x])
    return out


def speedup_vs_size(rows: List[dict], path: Path, title: str = "") -> Path:
    """Speedup over autograd against m·n (dense) and nnz (sparse), one line per backend."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    fixed = ("device", "dtype", "k", "backend", "kind")
    for ax, kind in zip(axes, ("dense", "sparse")):
        # Dense: square matrices only, so that one size is one point.
        keep = [r for r in rows if r["kind"] == kind and r["backend"] != "autograd"
                and r.get("speedup_vs_autograd") and (kind == "sparse" or r["m"] == r["n"])]
        for key, rs in sorted(_series(keep, fixed, "size").items()):
            device, dtype, k, backend = key[:4]
            ax.plot([_size(r) for r in rs], [r["speedup_vs_autograd"] for r in rs],
                    _STYLE.get(backend, "o-"), color=_COLOR.get(backend),
                    alpha=1.0 if dtype == "float32" else 0.55,
                    label=f"{backend} {device} {dtype} k={k}")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_ticks(ax)
        ax.set_xlabel("m·n (entries of A)" if kind == "dense" else "nnz (observed entries)")
        ax.set_ylabel("speedup over autograd (×)")
        ax.set_title(f"{kind}: loss + gradients")
        _legend(ax)
    return _save(plt, fig, path, title)


def time_vs_k(rows: List[dict], path: Path, title: str = "") -> Path:
    """Median step time against k at a fixed shape, log-log, one line per backend."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    fixed = ("device", "dtype", "m", "n", "nnz", "backend", "kind")
    for ax, kind in zip(axes, ("dense", "sparse")):
        keep = [r for r in rows if r["kind"] == kind]
        for key, rs in sorted(_series(keep, fixed, "k").items()):
            device, dtype, m, n, nnz, backend = key[:6]
            shape = f"{m}×{n}" + (f" nnz={nnz:,}" if kind == "sparse" else "")
            ax.plot([r["k"] for r in rs], [r["median_ms"] for r in rs],
                    _STYLE.get(backend, "o-"), color=_COLOR.get(backend),
                    alpha=1.0 if dtype == "float32" else 0.55,
                    label=f"{backend} {device} {dtype} {shape}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_log_ticks(ax)
        ax.set_xlabel("rank k")
        ax.set_ylabel("median ms per step")
        ax.set_title(f"{kind}: time against k")
        _legend(ax)
    return _save(plt, fig, path, title)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _save(plt, fig, path: Path, title: str) -> Path:
    """Title the figure with the machine, write it to ``path`` and close it."""
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(rows: List[dict], out_dir: Path, title: str = "") -> List[str]:
    """Both plots in ``out_dir``, labelled with ``title`` (the machine); their paths."""
    return [str(speedup_vs_size(rows, out_dir / "speedup_vs_size.png", title)),
            str(time_vs_k(rows, out_dir / "time_vs_k.png", title))]
