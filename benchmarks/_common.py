"""Shared bits of the benchmark scripts: the machine record, file names, a log-log fit,
the peak resident memory of a block of code."""
from __future__ import annotations

import json
import re
import resource
import sys
import threading
import time
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a source checkout without installing
    sys.path.insert(0, str(ROOT))

from mfext.bench.machine import machine_info, versions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def device_slug(device: str) -> str:
    """``cpu-amd-epyc`` or ``cuda-nvidia-h100-80gb-hbm3``: the device's name for file names."""
    if device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(device)
    else:
        name = machine_info()["cpu_model"]
    return re.sub(r"[^a-z0-9]+", "-", f"{device.split(':')[0]} {name}".lower()).strip("-")


def record(kind: str, device: str, payload: dict) -> dict:
    """The payload with the command, date, machine and versions."""
    return {"benchmark": kind, "command": "python " + " ".join(sys.argv),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": device,
            "machine": machine_info(), "versions": versions(), **payload}


def save(results: dict, name: str, out_dir: Path = RESULTS) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return path


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> Tuple[float, float]:
    """Least-squares ``(slope, intercept)`` of log y against log x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(intercept)


def markdown_table(header: List[str], rows: List[List[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def rss_mib() -> float:
    """This process's resident set size now (MiB; Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class PeakRss:
    """``with PeakRss() as w: ...``: the highest RSS inside the block, sampled every
    ``interval`` seconds by a thread; ``w.extra_mib`` is it minus ``baseline`` (default:
    the RSS on entry)."""

    def __init__(self, interval: float = 0.005, baseline: float | None = None):
        self.interval, self.baseline = interval, baseline
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRss":
        now = rss_mib()
        self.baseline = now if self.baseline is None else self.baseline
        self.peak = now
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())

    @property
    def extra_mib(self) -> float:
        return self.peak - float(self.baseline or 0.0)
