"""Saving and loading a fitted recommender: one safe, atomic file with an exact round trip.

This module owns :class:`PersistenceMixin`: ``save`` writes the constructor
parameters and the fitted state (factors, biases, counts, the seen-items index,
id maps, history) as a ``torch.save`` dict of tensors and plain values, through
a temporary file and ``os.replace``; ``load`` reads it with
``torch.load(weights_only=True)`` (no code is ever unpickled) and checks every
field before it builds the model. The file format is the one every earlier
release wrote (``format`` names the model class, ``version`` 1), so saved
models keep loading. The model class supplies ``_FORMAT``, its parameter names
and ``_resolved`` (the parameter checks); device checks come from
:mod:`mfext.recommenders.limits`.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import stat
import tempfile
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import Tensor

from .limits import device_problem, dtype_name

__all__ = ["PersistenceMixin", "FORMAT_VERSION", "UNREADABLE_FILE_ERRORS"]

FORMAT_VERSION = 1

# What torch.load(weights_only=True) raises on a file that is not a sound
# torch.save file, measured on truncated and byte-flipped model files, foreign
# pickles and text: the zip reader (RuntimeError: "PytorchStreamReader
# failed"; OSError: a seek past a broken header; EOFError: a truncated record),
# the weights-only unpickler refusing a global (pickle.UnpicklingError) and
# decoding garbage opcodes (ValueError, UnicodeDecodeError among them;
# KeyError: a memo slot never stored; IndexError: an empty stack; TypeError and
# AttributeError: a tensor-rebuild record with the wrong arguments). Anything
# else (MemoryError, KeyboardInterrupt, a bug) propagates unchanged, and so do
# the OSErrors that concern the path rather than its content (see _ENVIRONMENT).
UNREADABLE_FILE_ERRORS = (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError,
                          KeyError, IndexError, TypeError, AttributeError)
_ENVIRONMENT = (FileNotFoundError, PermissionError, IsADirectoryError)

# What checking a decoded state dict raises on a field of the wrong kind: a
# missing key, a wrong type, shape or dtype, or a tensor op on a wrong value.
_MALFORMED_STATE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, RuntimeError)


def _umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it elsewhere
    os.umask(mask)
    return mask


def _saved_file_mode(path: str) -> int:
    """Permission bits for a file written to ``path``.

    A replaced file keeps its mode (a model another user's service reads stays
    readable); a new file gets ``0o666 & ~umask``, as ``open`` would give it.
    """
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _ids_out(ids: Optional[np.ndarray]) -> Any:
    """Raw ids (n,) -> an int64 tensor or a list of str (what weights_only can load)."""
    if ids is None:
        return None
    if np.issubdtype(ids.dtype, np.integer):
        return torch.from_numpy(ids.astype(np.int64))
    if ids.dtype.kind in "US":
        return [str(x) for x in ids]
    raise TypeError(f"raw ids of dtype {ids.dtype} cannot be saved; use integers or strings")


def _ids_in(ids: Any, n: int, side: str) -> Optional[np.ndarray]:
    if ids is None:
        return None
    out = ids.numpy() if isinstance(ids, Tensor) else np.asarray(ids)
    if out.shape != (n,):
        raise ValueError(f"{side}_ids must have {n} entries, got shape {out.shape}")
    return out


def _write_atomic(state: Dict[str, Any], path: str, who: str) -> None:
    """``torch.save(state)`` to ``path`` through a temporary file in the same folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{who}.save: no such directory: {folder}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{who}.save: {path} is a directory")
    mode = _saved_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=".mfext-", suffix=".tmp", dir=folder)
    try:
        # mkstemp creates the file 0o600; give it the mode a plain open (or
        # the file it replaces) would have.
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:  # pragma: no cover - Windows
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def saved_format(path: "os.PathLike[str] | str") -> Optional[str]:
    """The ``format`` field of a file written by ``save`` (the model class), or None.

    None for anything else: no file, an unreadable or foreign file. The class's
    own ``load`` then gives the precise error.
    """
    try:
        state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any failure: the class's load explains it
        return None
    fmt = state.get("format") if isinstance(state, dict) else None
    return fmt if isinstance(fmt, str) else None


class PersistenceMixin:
    """``save`` and ``load`` of the fitted state the recommender base defines."""

    _FORMAT: str  # the "format" field of saved files, set by each model class

    def save(self, path: "os.PathLike[str] | str") -> None:
        """Write the fitted model to ``path`` (a torch file of tensors and plain values).

        The file loads with ``torch.load(weights_only=True)``: no code is
        pickled. The write is atomic (a temporary file, then ``os.replace``).
        A replaced file keeps its permission bits; a new file gets
        ``0o666 & ~umask``, like any file the process creates.
        """
        self._check_fitted()
        params = {k: (v.item() if isinstance(v, np.generic) else v)
                  for k, v in self.get_params().items()}
        params["dtype"] = dtype_name(self.dtype)
        params["device"] = None if self.device is None else str(self.device)
        state = {
            "format": self._FORMAT,
            "version": FORMAT_VERSION,
            "params": params,
            "device": str(self._device),
            "tensors": {
                "user_factors": self.user_factors_.cpu(),
                "item_factors": self.item_factors_.cpu(),
                "user_bias": self.user_bias_.cpu(),
                "item_bias": self.item_bias_.cpu(),
                "user_counts": self.user_counts_.cpu(),
                "item_counts": self.item_counts_.cpu(),
                "seen_indptr": self._seen_indptr.cpu(),
                "seen_items": self._seen_items.cpu(),
            },
            "scalars": {
                "global_mean": float(self.global_mean_),
                "rating_mean": float(self.rating_mean_),
                "n_users": int(self.n_users_),
                "n_items": int(self.n_items_),
                "n_iter": int(getattr(self, "n_iter_", 0)),
                "best_epoch": self.best_epoch_,
            },
            "history": [dict(r) for r in self.history_],
            "user_ids": _ids_out(self.user_ids_),
            "item_ids": _ids_out(self.item_ids_),
        }
        _write_atomic(state, os.fspath(path), type(self).__name__)

    @classmethod
    def load(cls, path: "os.PathLike[str] | str", map_location: Optional[Any] = None) -> Any:
        """Read a model written by :meth:`save` (``torch.load(weights_only=True)``).

        Parameters
        ----------
        path : str or PathLike
        map_location : str or torch.device, optional
            Where to put the fitted tensors, e.g. ``"cpu"`` for a model saved
            on a GPU. Default: the device it was saved on. The ``device``
            parameter (used by a refit) stays as saved.

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        ValueError
            The file is not a model written by :meth:`save`: corrupt, truncated,
            another torch file or a pickle (refused, never executed), an
            unsupported version, or fields of the wrong type, shape or dtype.
            Also: the saved device is unavailable here (a model saved on
            ``cuda:0``, loaded on a machine without CUDA) and no
            ``map_location`` was given (the message names the device and
            suggests ``map_location="cpu"``), or ``map_location`` is not a
            usable device.
        """
        name = cls.__name__
        path = os.fspath(path)
        target = None
        if map_location is not None:
            try:
                target = torch.device(map_location)
            except (RuntimeError, TypeError, ValueError) as exc:
                raise ValueError(f"map_location must be a device such as 'cpu' or 'cuda:0', got "
                                 f"{map_location!r} ({exc})") from None
            problem = device_problem(target)
            if problem is not None:
                raise ValueError(f"map_location={str(target)!r} cannot hold the model: {problem}")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{name}.load: no such file: {path}")
        try:
            # weights_only: a foreign or malicious pickle is refused, never executed
            state = torch.load(path, map_location="cpu", weights_only=True)
        except UNREADABLE_FILE_ERRORS as exc:
            if isinstance(exc, _ENVIRONMENT):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            if "weights_only" in first:
                # torch's own advice (weights_only=False) would run arbitrary code from the file.
                first = "not a safe torch.save file of tensors and plain values"
            raise ValueError(f"{path} is not a readable {name} file (corrupt, "
                             f"truncated or not written by save): {type(exc).__name__}: "
                             f"{first[:200]}") from None
        if not isinstance(state, dict) or state.get("format") != cls._FORMAT:
            raise ValueError(f"{path} is not a saved {name}")
        if state.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported format version {state.get('version')!r}")
        if target is None:
            try:
                target = torch.device(state.get("device"))
            except (RuntimeError, TypeError, ValueError) as exc:
                raise ValueError(f"{path} holds a malformed {name}: device "
                                 f"{state.get('device')!r}: {exc}") from None
            problem = device_problem(target)
            if problem is not None:
                raise ValueError(f"{path} was saved on {target}, which is unavailable here: "
                                 f"{problem}; load it with map_location='cpu' (or another "
                                 "available device)")
        try:
            model = cls._from_state(state, target)
        except _MALFORMED_STATE_ERRORS as exc:
            raise ValueError(f"{path} holds a malformed {name}: "
                             f"{type(exc).__name__}: {exc}") from None
        return model

    @classmethod
    def _from_state(cls, state: Dict[str, Any], device: torch.device) -> Any:
        """Rebuild a model on ``device`` from the dict of :meth:`save`, checking every field."""
        params = dict(state["params"])
        unknown = set(params) - set(cls._param_names())
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}")
        if params.get("dtype") not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {params.get('dtype')!r}")
        params["dtype"] = getattr(torch, params["dtype"])
        model = cls(**params)
        model._resolved()  # the saved hyperparameters must be valid
        s = state["scalars"]
        n_users, n_items = s["n_users"], s["n_items"]
        for key, v in (("n_users", n_users), ("n_items", n_items)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{key} must be a non-negative int, got {v!r}")
        tensors = state["tensors"]
        rank = int(params["rank"])
        expected = {"user_factors": (params["dtype"], (n_users, rank)),
                    "item_factors": (params["dtype"], (n_items, rank)),
                    "user_bias": (params["dtype"], (n_users,)),
                    "item_bias": (params["dtype"], (n_items,)),
                    "user_counts": (torch.int64, (n_users,)),
                    "item_counts": (torch.int64, (n_items,)),
                    "seen_indptr": (torch.int64, (n_users + 1,)),
                    # int32 since fits keep their item ids in int32 where they fit
                    "seen_items": ((torch.int32, torch.int64), None)}
        for key, (dtype, shape) in expected.items():
            t = tensors[key]
            dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
            if not isinstance(t, Tensor) or t.dtype not in dtypes or (
                    shape is not None and tuple(t.shape) != shape) or (
                    shape is None and t.dim() != 1):
                got = (f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor)
                       else type(t).__name__)
                want = " or ".join(str(d) for d in dtypes)
                raise ValueError(f"tensor {key!r} must be {want} of shape "
                                 f"{shape if shape is not None else '(nnz,)'}, got {got}")
        indptr, seen = tensors["seen_indptr"], tensors["seen_items"]
        if (int(indptr[0]) != 0 or int(indptr[-1]) != seen.numel()
                or bool((indptr[1:] < indptr[:-1]).any())
                or (seen.numel() and (int(seen.min()) < 0 or int(seen.max()) >= n_items))):
            raise ValueError("the seen-items index is inconsistent")
        for key in ("user_factors", "item_factors", "user_bias", "item_bias"):
            if not bool(torch.isfinite(tensors[key]).all()):
                raise ValueError(f"tensor {key!r} holds NaN or Inf")
        model._device = device
        t = {k: tensors[k].to(device) for k in expected}
        model.user_factors_, model.item_factors_ = t["user_factors"], t["item_factors"]
        model.user_bias_, model.item_bias_ = t["user_bias"], t["item_bias"]
        model.user_counts_, model.item_counts_ = t["user_counts"], t["item_counts"]
        model._seen_indptr, model._seen_items = t["seen_indptr"], t["seen_items"]
        model.global_mean_, model.rating_mean_ = float(s["global_mean"]), float(s["rating_mean"])
        model.n_users_, model.n_items_ = n_users, n_items
        model.n_iter_, model.best_epoch_ = int(s["n_iter"]), s["best_epoch"]
        model.history_ = list(state["history"])
        model.user_ids_ = _ids_in(state["user_ids"], n_users, "user")
        model.item_ids_ = _ids_in(state["item_ids"], n_items, "item")
        model._lookups = {}
        return model
