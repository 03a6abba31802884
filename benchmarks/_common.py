"""Shared bits of the benchmark scripts: the machine record, file names, a log-log fit."""
from __future__ import annotations

import json
import re
import sys
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
