"""Resource and range checks shared by every recommender, made before anything is allocated.

This module owns the checks that turn an allocator failure or an overflow deep
inside a fit into a clear error up front: the model size against the device's
memory, ratings against the model dtype, whether a device can hold the fitted
tensors, and the scoped CPU thread count of a fit. It knows no model class:
the recommenders call it with their sizes.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

import torch
from torch import Tensor

from .._library import build_info

__all__ = ["num_threads", "device_memory", "check_model_size", "check_fits_dtype", "dtype_name",
           "device_problem"]


@contextlib.contextmanager
def num_threads(n: Optional[int]) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (None: unchanged), restored afterwards."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def device_memory(device: torch.device) -> Optional[int]:
    """Total memory (bytes) of ``device``, or None when unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        if device.type == "cpu":
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None
    return None


def available_memory(device: torch.device) -> Optional[int]:
    """Memory (bytes) a new allocation on ``device`` can take now, or None when unknown.

    The CPU's is the kernel's ``MemAvailable`` (free memory plus what it can
    reclaim), a CUDA device's the driver's free memory.
    """
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        if device.type == "cpu":
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
    except (ValueError, OSError, AttributeError, RuntimeError, IndexError):
        return None
    return None


def check_fit_memory(need: int, device: torch.device, what: str, name: str = "X") -> None:
    """A ``MemoryError`` before the fit allocates anything, when ``need`` bytes are not there.

    ``need`` is the fit's estimated working memory besides the input and the
    model's own factors' first copy (see the models' ``_fit_working_memory``);
    without this check such a fit runs until the kernel's out-of-memory killer
    ends the process, minutes in, with no message.
    """
    free = available_memory(device)
    if free is not None and need > free:
        raise MemoryError(
            f"{name}: {what} needs about {need / 2**30:,.1f} GiB of working memory besides the "
            f"input, more than the {free / 2**30:,.1f} GiB available on {device} now; fit fewer "
            "ratings or a lower rank, or free memory first")


def check_model_size(n_users: int, n_items: int, rank: int, dtype: torch.dtype,
                     device: torch.device, name: str, systems: int = 0) -> None:
    """A clear error, before any allocation, when a fit needs more than the device's memory.

    Without a stated shape the model has ``max id + 1`` users and items, so one
    stray huge id (a raw id such as 2**40 passed as an index) would otherwise
    end in an allocator failure deep inside fit. ``systems`` rows of ALS
    normal equations ((systems, rank+1, rank+1) Gram matrices and their
    factorizations) are held at once by the ALS half-step and by fold_in; a
    huge rank there would otherwise abort the process in the allocator.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    need = (n_users + n_items) * (rank * itemsize + itemsize + 16)  # factors, biases, counts
    als = systems * (rank + 1) * (rank + 2) * 2 * itemsize  # gram + solve workspace
    total = device_memory(device)
    if total is not None and need > total:
        raise ValueError(
            f"{name}: {n_users:,} users x {n_items:,} items at rank {rank} need about "
            f"{need / 2**30:,.1f} GiB, more than the {total / 2**30:,.1f} GiB of {device}; the "
            "ids must be indices (max id + 1 sets the size): map raw ids to 0..n-1 first, e.g. "
            "with mfext.datasets.Ratings")
    if total is not None and need + als > total:
        raise ValueError(
            f"rank: ALS at rank {rank} holds {systems:,} systems of size {rank + 1} at once, "
            f"about {(need + als) / 2**30:,.1f} GiB with the factors, more than the "
            f"{total / 2**30:,.1f} GiB of {device}; lower the rank or use solver='sgd' or 'adam'")


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"`` (the spelling of saved files and messages)."""
    return str(dtype).replace("torch.", "")


CHUNK = 1 << 22  # entries a chunk of the float64 reductions below (32 MiB in float64)


def sum_float64(x: Tensor, square: bool = False) -> float:
    """``sum(x)`` (or ``sum(x**2)``) accumulated in float64, a chunk at a time.

    A float64 copy of all ratings would be 8 bytes an entry on top of the
    input (0.8 GB at 100M ratings); chunks of :data:`CHUNK` keep the extra
    memory fixed.
    """
    total = 0.0
    for i in range(0, x.numel(), CHUNK):
        c = x[i:i + CHUNK].to(torch.float64)
        total += float(c.square().sum() if square else c.sum())
    return total


def check_fits_dtype(vals: Tensor, dtype: torch.dtype, name: str) -> None:
    """A clear error when ratings ``vals`` (s,) overflow the model dtype.

    Without it a float32 model fed ratings of 1e300 (or ratings whose squared
    errors overflow, such as 1e20) fails in the first epoch with a message
    about the global mean or about divergence and a lower learning rate,
    neither of which is the cause.
    """
    if vals.numel() == 0:
        return
    big = float(torch.finfo(dtype).max)
    v = vals.detach()
    lo, hi = (float(x) for x in torch.aminmax(v))
    if max(-lo, hi) > big:  # only now a mask: the common case makes no (nnz,) temporary
        over = v.to(torch.float64).abs() > big
        pos = int(over.nonzero()[0, 0])
        raise ValueError(
            f"{name}: rating {pos} = {v[pos].item():.6g} overflows {dtype_name(dtype)} (largest "
            f"finite value {big:.6g}); rescale the ratings"
            + (" or use dtype=torch.float64" if dtype != torch.float64 else ""))
    # The training error sums squared residuals in the model dtype: starting
    # from a zero prediction that sum is at most sum(v**2), so it must fit too.
    squares = sum_float64(v, square=True)
    if not squares <= big:
        raise ValueError(
            f"{name}: the ratings are too large for a {dtype_name(dtype)} model: their sum of "
            f"squares ({squares:.3g}) overflows {dtype_name(dtype)} (largest finite value "
            f"{big:.6g}), so the training error cannot be represented; rescale the ratings"
            + (" or use dtype=torch.float64" if dtype != torch.float64 else ""))


def device_problem(device: torch.device) -> Optional[str]:
    """Why fitted tensors cannot live on ``device`` here, or None when they can."""
    if device.type == "meta":
        return "meta tensors hold no data"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
        if not build_info()["cuda"]:
            return "this mfext build has no CUDA kernels (mfext.build_info()['cuda'] is False)"
        return None
    if device.type == "cpu":
        return None
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {first}"
    return None
