"""What the benchmark ran on: the machine, the versions, and its measured ceilings.

The ceilings are the "limit" in the report's distance-to-the-limit columns: the
best GFLOP/s of a large matrix multiply (``torch.mm``) and the best GB/s of a
large copy (``dst.copy_(src)``, counted as one read plus one write), measured
on the same device, dtype and thread count as the grid, right before it.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from .timing import synchronize


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> Optional[int]:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _physical_cores() -> Optional[int]:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


def load_average() -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages (other work competing for the cores)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def busy_warning() -> Optional[str]:
    """A warning when the 1-minute load exceeds half the logical CPUs, else None."""
    load, cpus = load_average(), os.cpu_count() or 1
    if load and load[0] > 0.5 * cpus:
        return (f"the machine is busy (load average {load[0]:.1f} on {cpus} logical CPUs): "
                f"timings will be noisy; multi-threaded steps can stall for whole scheduler "
                f"time slices (try --threads 1, or a quiet machine)")
    return None


def gpu_info() -> List[dict]:
    """Name, memory, compute capability and SM count of each visible CUDA device."""
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({
            "index": i,
            "name": p.name,
            "memory_bytes": int(p.total_memory),
            "capability": f"{p.major}.{p.minor}",
            "multiprocessors": int(p.multi_processor_count),
        })
    return out


def machine_info() -> dict:
    """CPU model, cores, threads, memory and GPUs of this machine."""
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": _physical_cores(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": _memory_bytes(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "gpus": gpu_info(),
    }


def _git_commit() -> Optional[str]:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    """Versions of python, torch, numpy, mfext (with its build facts) and the peers present."""
    import numpy

    import mfext

    out: Dict[str, object] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": numpy.__version__,
        "mfext": mfext.__version__,
        "mfext_commit": _git_commit(),
        "mfext_build": mfext.build_info(),
    }
    from importlib import metadata

    for name in ("matplotlib", "scikit-learn", "scikit-surprise", "implicit", "scipy", "tqdm",
                 "psutil"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _best_seconds(fn, device: str, repeat: int) -> float:
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def measure_ceilings(device: str, dtypes: List[torch.dtype], *, small: bool = False) -> dict:
    """Best GEMM GFLOP/s per dtype and best copy GB/s on ``device``.

    Parameters
    ----------
    device : "cpu" or "cuda"
    dtypes : the dtypes of the grid (one GEMM ceiling each)
    small : use small operands (for ``--smoke``; the figures are then low)

    Returns
    -------
    dict with ``gemm_gflops`` {dtype name: GFLOP/s}, ``gemm_size`` (N of the N x N
    product), ``copy_gbs`` (GB/s, 1e9 bytes, read + write) and ``copy_bytes``.
    """
    cuda = device.startswith("cuda")
    n = 512 if small else (8192 if cuda else 2048)
    copy_elems = (4 << 20) if small else ((256 << 20) if cuda else (64 << 20))  # float32
    gen = torch.Generator().manual_seed(0)
    gemm = {}
    for dtype in dtypes:
        a = torch.rand(n, n, generator=gen, dtype=dtype).to(device)
        b = torch.rand(n, n, generator=gen, dtype=dtype).to(device)
        c = torch.empty(n, n, dtype=dtype, device=device)
        t = _best_seconds(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), device, 3)
        gemm[str(dtype).replace("torch.", "")] = 2.0 * n ** 3 / t / 1e9
    src = torch.rand(copy_elems, generator=gen).to(device)
    dst = torch.empty_like(src)
    t = _best_seconds(lambda: dst.copy_(src), device, 5)
    nbytes = 2 * src.numel() * src.element_size()
    return {"gemm_gflops": gemm, "gemm_size": n, "copy_gbs": nbytes / t / 1e9,
            "copy_bytes": nbytes}
