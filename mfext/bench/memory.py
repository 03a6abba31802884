"""Peak extra memory of one call, beyond what was allocated before it.

CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``
(the caching allocator's view: every tensor, no driver overhead).

CPU, two measurements, because neither sees everything:

* ``rss``: the process's resident-set high-water mark. glibc's free lists are
  returned first (``malloc_trim``), the kernel's high-water mark is reset
  (``/proc/self/clear_refs`` = 5, Linux >= 4.0), then the call runs and
  ``VmHWM - VmRSS(before)`` is its peak. This sees every byte the call touches,
  torch tensors, ``std::vector`` scratch inside kernels and BLAS buffers alike,
  but a reused free block is invisible and other threads add noise of about a
  MiB. ``None`` where /proc is not writable.
* ``tensors``: the peak of the running sum of the CPU allocator's allocation
  and free events recorded by ``torch.profiler(profile_memory=True)``. Exact for
  tensors, blind to memory that does not go through torch's allocator.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

_LIBC = None
_PROFILER_WARM = False


def _malloc_trim() -> None:
    global _LIBC
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_bytes(key: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_rss_peak() -> Optional[int]:
    """Return the RSS now after resetting the high-water mark; None where that is impossible."""
    gc.collect(0)  # a full collection costs ~0.1 s with torch loaded; steps make no cycles
    _malloc_trim()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_bytes("VmRSS:")


def rss_peak_extra(fn: Callable[[], object]) -> Optional[int]:
    """Resident-set high-water mark of ``fn()`` above the RSS before it (bytes)."""
    base = _reset_rss_peak()
    out = fn()
    del out
    peak = _status_bytes("VmHWM:")
    return None if base is None or peak is None else max(0, peak - base)


@contextlib.contextmanager
def _quiet_stderr_fd():
    """Silence file descriptor 2 (the profiler's C++ start/stop lines) for a moment."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tensor_peak_extra(fn: Callable[[], object]) -> Optional[int]:
    """Peak of the CPU tensors ``fn()`` allocates, from the profiler's memory events (bytes)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with _quiet_stderr_fd(), profile(activities=[ProfilerActivity.CPU],
                                         profile_memory=True) as prof:
            out = fn()
            del out
        events = prof.profiler.kineto_results.events()
    except Exception:  # profiler unavailable on this build: report nothing, not 0
        return None
    mem = sorted((e.start_ns(), e.nbytes()) for e in events
                 if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"))
    running = peak = 0
    for _, nbytes in mem:
        running += nbytes
        peak = max(peak, running)
    return peak


def cuda_peak_extra(fn: Callable[[], object], device: str) -> int:
    """Peak bytes the CUDA caching allocator held for ``fn()`` above its level before."""
    torch.cuda.synchronize(device)
    gc.collect(0)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    del out
    return max(0, torch.cuda.max_memory_allocated(device) - base)


def peak_extra(fn: Callable[[], object], device: str) -> dict:
    """``{"rss": bytes|None, "tensors": bytes|None}``; on CUDA both are the allocator's peak."""
    if str(device).startswith("cuda"):
        peak = cuda_peak_extra(fn, device)
        return {"rss": None, "tensors": peak}
    global _PROFILER_WARM
    if not _PROFILER_WARM:  # the profiler's first start allocates tens of MiB of its own
        tensor_peak_extra(lambda: None)
        _PROFILER_WARM = True
    # One call serves both: the profiler's own records add well under a MiB of RSS.
    base = _reset_rss_peak()
    tensors = tensor_peak_extra(fn)
    peak = _status_bytes("VmHWM:")
    rss = None if base is None or peak is None else max(0, peak - base)
    return {"rss": rss, "tensors": tensors}
