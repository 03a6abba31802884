"""Wall-clock timing of one call: median and spread over repeated samples.

This module owns the sampling (warm-up, batching of short calls, device
synchronization around every sample); what is timed belongs to the caller.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List


def synchronize(device: str) -> None:
    """Wait for queued CUDA work on ``device`` (a no-op on the CPU)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds per call: median, quartiles, extremes, and the raw samples.

    Each sample is the mean of ``number`` back-to-back calls (``number`` > 1
    only for calls shorter than ``min_sample_s``).
    """

    median: float
    q1: float
    q3: float
    min: float
    max: float
    number: int
    samples: List[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _quantile(sorted_xs: List[float], q: float) -> float:
    pos = q * (len(sorted_xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def time_call(fn: Callable[[], object], device: str, repeat: int = 5,
              min_sample_s: float = 2e-3, warmup: int = 1) -> Timing:
    """Time ``fn()``; the device is synchronized around every sample.

    Parameters
    ----------
    fn : the call to time; its result is dropped
    device : "cpu" or "cuda[:i]"
    repeat : number of samples (>= 1)
    min_sample_s : calls shorter than this are repeated within one sample
    warmup : untimed calls first (the first one also sizes ``number``)
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    t_first = float("inf")
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        t_first = min(t_first, time.perf_counter() - t0)
    number = 1 if t_first >= min_sample_s else min(1000, math.ceil(min_sample_s / max(t_first, 1e-7)))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        synchronize(device)
        samples.append((time.perf_counter() - t0) / number)
    xs = sorted(samples)
    return Timing(statistics.median(xs), _quantile(xs, 0.25), _quantile(xs, 0.75),
                  xs[0], xs[-1], number, samples)
