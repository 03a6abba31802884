"""Checks of command-line options, done before any work, with messages that name the option.

A command that trains for minutes and then cannot write its output, or that
reads a 100 MB ratings file and then rejects ``--rank 0``, wastes the user's
time; these checks run first. Each raises ``ValueError`` naming the option as
the user typed it (``--out``, ``--device``...), which :func:`mfext.cli.main.main`
turns into one line on stderr.

This module owns those checks and the renaming of the estimator's parameter
names to the options that set them; the commands (:mod:`mfext.cli` and the
benchmark's ``--movielens`` run) call them, and the estimator keeps its own
checks of the values.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Optional

import torch

__all__ = ["ESTIMATOR_OPTIONS", "check_out_file", "check_out_dir", "check_device",
           "check_share", "check_positive_int", "estimator_option_errors"]

# The estimator's parameter names and the command-line options that set them.
ESTIMATOR_OPTIONS: Dict[str, str] = {
    "rank": "--rank",
    "max_iter": "--max-iter",
    "reg": "--reg",
    "lr": "--lr",
    "random_state": "--seed",
    "solver": "--solver",
    "device": "--device",
    "alpha": "--alpha",
}


def _writable(folder: Path, option: str, value: str) -> None:
    """Create and remove a scratch file in ``folder``: the only check that also holds for root,
    read-only mounts and ACLs (``os.access`` answers yes to root whatever the mount)."""
    try:
        fd, scratch = tempfile.mkstemp(prefix=".mfext-check-", dir=folder)
    except OSError as exc:
        raise ValueError(f"{option} {value}: cannot write in {folder} "
                         f"({exc.strerror or exc})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(scratch)


def check_out_file(out: "os.PathLike[str] | str", option: str = "--out") -> Path:
    """``out`` is a file path that can be written: not a directory, in a writable directory.

    Returns
    -------
    Path: ``out`` unchanged.
    """
    path = Path(out)
    if not str(out):
        raise ValueError(f"{option} must be a file path, got an empty string")
    if path.is_dir():
        raise ValueError(f"{option} {out}: is a directory; give a file path such as "
                         f"{path / 'model.pt'}")
    # the directory save() writes its temporary file in: that of the path itself, not of
    # a symlink's target (os.replace replaces the link)
    folder = Path(os.path.abspath(path)).parent
    if not folder.exists():
        raise ValueError(f"{option} {out}: no such directory {folder}")
    if not folder.is_dir():
        raise ValueError(f"{option} {out}: {folder} is not a directory")
    _writable(folder, option, str(out))
    return path


def check_out_dir(out: "os.PathLike[str] | str", option: str = "--out") -> Path:
    """``out`` is a writable directory, created (with its parents) when missing.

    Returns
    -------
    Path: ``out``.
    """
    path = Path(out)
    if not str(out):
        raise ValueError(f"{option} must be a directory path, got an empty string")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {out}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{option} {out}: cannot create the directory "
                         f"({exc.strerror or exc})") from None
    _writable(path, option, str(out))
    return path


def check_device(spec: Optional[str], option: str = "--device") -> Optional[torch.device]:
    """``spec`` parsed as a torch device that exists here (None stays None)."""
    if spec is None:
        return None
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{option} {spec!r} is not a device ({first})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {spec}: no CUDA device is available to torch "
                             f"{torch.__version__}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {spec}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
    return device


def check_share(value: float, option: str) -> float:
    """A share in [0, 1): finite, not negative, below 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{option} must be a number in [0, 1), got {value!r}")
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"{option} must be a share in [0, 1) (0: train on all), got {value}")
    return float(value)


def check_positive_int(value: Optional[int], option: str, minimum: int = 1,
                       maximum: Optional[int] = None) -> None:
    """``value`` is None or an int in [``minimum``, ``maximum``]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{option} must be an integer <= {maximum}, got {value!r}")


@contextlib.contextmanager
def estimator_option_errors() -> Iterator[None]:
    """Rewrite the estimator's ``"rank must be ..."`` as ``"--rank must be ..."``.

    The estimator names its own parameters; on the command line the user typed
    options, and ``random_state`` is ``--seed`` there.
    """
    try:
        yield
    except (ValueError, TypeError) as exc:
        text = str(exc)
        for name, option in ESTIMATOR_OPTIONS.items():
            if text.startswith((name + " ", name + ":", name + "=")):
                raise type(exc)(option + text[len(name):]) from exc
        raise
