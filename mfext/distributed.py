"""Data-parallel training on ``torch.distributed`` (gloo on CPUs, NCCL on GPUs).

Each rank holds a block of rows of A (dense) or the ratings of a block of users
(sparse), with the matching rows of W. H is replicated: its gradient (Adam, GD)
or its normal-equation terms (ALS) are summed with ``all_reduce``. The training
loop (:mod:`mfext.training`) and the solvers of :mod:`mfext.dense` and
:mod:`mfext.recommenders` talk to the other ranks only through a
:class:`Communicator`, so one process is the world of size 1. This module knows
no model: it holds the plumbing (process group, collectives, checkpoints,
sharded loading) and nothing else.

Launch with ``torchrun --nproc_per_node=N script.py`` (or any launcher that
initializes a process group); :func:`init` starts the group from the usual
environment variables when the script has not.
"""
from __future__ import annotations

import datetime
import os
import pickle
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "Communicator",
    "DistributedTrainingError",
    "init",
    "get_communicator",
    "row_block",
    "collective_stats",
    "save_checkpoint",
    "load_checkpoint",
    "load_ratings_shard",
]

DEFAULT_TIMEOUT_S = float(os.environ.get("MFEXT_DIST_TIMEOUT", "60"))

# Time and payload of this process's collectives, for benchmarks (see collective_stats).
_STATS = {"seconds": 0.0, "bytes": 0, "calls": 0}


def collective_stats(reset: bool = False) -> Dict[str, float]:
    """Seconds spent in, bytes sent to and calls of this process's all-reduces so far."""
    out = dict(_STATS)
    if reset:
        _STATS.update(seconds=0.0, bytes=0, calls=0)
    return out


class DistributedTrainingError(RuntimeError):
    """A collective failed: a peer died, hung past the timeout, or disagreed at start-up."""


def init(backend: Optional[str] = None, timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs) -> None:
    """Initialize the default process group unless one already exists.

    Parameters
    ----------
    backend : "gloo" or "nccl"; default NCCL when CUDA is available, else gloo.
    timeout_s : seconds a collective may wait for a peer before every rank fails.
    **kwargs : passed to ``torch.distributed.init_process_group`` (init_method,
        world_size, rank, ...). Without them, torchrun's environment is used.
    """
    if dist.is_initialized():
        return
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(
        backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs
    )


def row_block(total: int, world_size: int, rank: int) -> Tuple[int, int]:
    """Rows ``[start, stop)`` of ``total`` owned by ``rank``: contiguous, sizes differ by <= 1."""
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass
class Communicator:
    """The collectives the training loops need; a no-op for a world of one.

    Parameters
    ----------
    group : a torch.distributed process group, or None for a single process.
    """

    group: Optional[Any] = None

    @property
    def distributed(self) -> bool:
        return self.group is not None

    @property
    def world_size(self) -> int:
        return dist.get_world_size(self.group) if self.distributed else 1

    @property
    def rank(self) -> int:
        return dist.get_rank(self.group) if self.distributed else 0

    def _fail(self, what: str, exc: BaseException) -> DistributedTrainingError:
        return DistributedTrainingError(
            f"mfext.distributed: rank {self.rank} of {self.world_size}: {what} failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "A peer may have exited or hung past the timeout "
            f"(MFEXT_DIST_TIMEOUT / timeout_s, default {DEFAULT_TIMEOUT_S:g} s)."
        )

    def all_reduce_sum_(self, tensors: Sequence[Tensor], what: str = "all_reduce") -> None:
        """Sum each tensor over ranks, in place, with one collective for all of them."""
        if not self.distributed or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        t0 = time.perf_counter()
        try:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        except Exception as exc:  # gloo raises RuntimeError, NCCL DistBackendError
            raise self._fail(what, exc) from exc
        _STATS["seconds"] += time.perf_counter() - t0
        _STATS["bytes"] += flat.numel() * flat.element_size()
        _STATS["calls"] += 1
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def sum_scalar(self, value: float, what: str = "all_reduce (scalar)") -> float:
        """``value`` summed over ranks (float64)."""
        if not self.distributed:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64)
        self.all_reduce_sum_([t], what)
        return float(t)

    def any(self, flag: bool, what: str = "all_reduce (flag)") -> bool:
        """True on every rank when ``flag`` is True on any rank."""
        return self.sum_scalar(1.0 if flag else 0.0, what) > 0 if self.distributed else flag

    def row_offset(self, local_rows: int) -> Tuple[int, int]:
        """(first global row of this rank, global row count) for row blocks in rank order."""
        sizes = [int(s) for s in self.all_gather_objects(local_rows, "row-block sizes")]
        return sum(sizes[: self.rank]), sum(sizes)

    def all_gather_objects(self, obj: Any, what: str = "all_gather") -> List[Any]:
        """Every rank's ``obj`` (small, picklable), in rank order."""
        if not self.distributed:
            return [obj]
        out: List[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(out, obj, group=self.group)
        except Exception as exc:
            raise self._fail(what, exc) from exc
        return out

    def gather_rows(self, local: Tensor, what: str = "gather_rows") -> Tensor:
        """Concatenate every rank's row block (sizes may differ) on every rank."""
        if not self.distributed:
            return local
        sizes = [int(s) for s in self.all_gather_objects(local.shape[0], what + " (sizes)")]
        width = local.shape[1:]
        padded = local.new_zeros((max(sizes), *width))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in sizes]
        try:
            dist.all_gather(parts, padded, group=self.group)
        except Exception as exc:
            raise self._fail(what, exc) from exc
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    def broadcast_(self, tensor: Tensor, src: int = 0, what: str = "broadcast") -> Tensor:
        if self.distributed:
            try:
                dist.broadcast(tensor, src=src, group=self.group)
            except Exception as exc:
                raise self._fail(what, exc) from exc
        return tensor

    def check_consistent(self, **facts: Any) -> None:
        """Fail on every rank, at start-up, if the ranks disagree on any fact.

        Facts are things that must match (the rank k, n, the dtype, the solver,
        hyperparameters); each is compared with rank 0's.
        """
        if not self.distributed:
            return
        everyone: List[Dict[str, Any]] = self.all_gather_objects(
            {k: _plain(v) for k, v in facts.items()}, "start-up consistency check"
        )
        for rank, theirs in enumerate(everyone):
            for key, value in everyone[0].items():
                if theirs.get(key) != value:
                    raise DistributedTrainingError(
                        f"mfext.distributed: ranks disagree at start-up: {key} is {value!r} on "
                        f"rank 0 but {theirs.get(key)!r} on rank {rank}"
                    )


def _plain(value: Any) -> Any:
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, torch.Size):
        return tuple(value)
    try:
        pickle.dumps(value)
        return value
    except Exception:
        return repr(value)


def save_checkpoint(path: "os.PathLike[str] | str", W: Tensor, H: Tensor,
                    comm: Optional[Communicator] = None, **extra: Any) -> None:
    """Write the factors of a data-parallel run to one file, from rank 0.

    Every rank passes its rows of W (m_local, k) and the replicated H (k, n); rank 0
    writes ``{"W": all rows, "H": H, **extra}`` atomically (a temporary file, then
    a rename) with ``torch.save``, loadable with ``weights_only=True``. The file
    does not depend on the world size that wrote it.
    """
    comm = comm if comm is not None else get_communicator()
    W_all = comm.gather_rows(W.detach().cpu(), "checkpoint gather")
    if comm.rank == 0:
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        torch.save({"W": W_all, "H": H.detach().cpu().contiguous(), **extra}, tmp)
        os.replace(tmp, path)
    if comm.distributed:
        comm.all_gather_objects(None, "checkpoint barrier")


def load_checkpoint(path: "os.PathLike[str] | str", local_rows: Optional[int] = None,
                    comm: Optional[Communicator] = None) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, on any world size.

    Parameters
    ----------
    path : the file.
    local_rows : this rank's row count; with it, ``W`` is cut to this rank's rows
        (row blocks in rank order), else the full W is returned (pass it as
        ``init=(W, H)`` to :func:`mfext.factorize`, which keeps each rank's rows).

    Returns
    -------
    dict with ``W`` (m_local or m, k), ``H`` (k, n) and the extra entries.
    """
    try:
        state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"mfext.distributed: {path} is not a readable mfext checkpoint ({exc})") from exc
    if not isinstance(state, dict) or not {"W", "H"} <= set(state):
        raise ValueError(f"mfext.distributed: {path} holds no factors W and H")
    if local_rows is not None:
        comm = comm if comm is not None else get_communicator()
        row0, m_total = comm.row_offset(local_rows)
        if m_total != state["W"].shape[0]:
            raise ValueError(
                f"mfext.distributed: the ranks hold {m_total} rows but the checkpoint has "
                f"{state['W'].shape[0]}"
            )
        state["W"] = state["W"][row0:row0 + local_rows].clone()
    return state


def load_ratings_shard(path: "os.PathLike[str] | str", comm: Optional[Communicator] = None,
                       *, test_size: float = 0.0, seed: int = 0):
    """This rank's users' ratings from a MovieLens-format file, ready for ``fit``.

    Users are split into contiguous blocks of the global user index (as
    :func:`row_block`), items keep their global index, so every rank can pass its
    shard straight to ``MatrixFactorization.fit(..., distributed=True)``. Each rank
    parses the file and keeps only its block: the training memory is sharded, the
    parsing is not.

    Returns
    -------
    (train, test, row0) : scipy.sparse.coo_matrix (m_local, n) twice (test is None
    when ``test_size`` is 0), and this rank's first global user index.
    """
    import scipy.sparse as sp

    from .datasets import load_movielens, train_test_split

    comm = comm if comm is not None else get_communicator()
    ratings = load_movielens(path)
    parts = (train_test_split(ratings, test_size=test_size, seed=seed) if test_size
             else (ratings, None))
    r0, r1 = row_block(ratings.n_users, comm.world_size, comm.rank)

    def local(part):
        if part is None:
            return None
        mine = (part.rows >= r0) & (part.rows < r1)
        return sp.coo_matrix(
            (part.vals[mine].numpy(), ((part.rows[mine] - r0).numpy(), part.cols[mine].numpy())),
            shape=(r1 - r0, ratings.n_items))

    return local(parts[0]), local(parts[1]), r0


def get_communicator(distributed: Optional[bool] = None) -> Communicator:
    """The communicator for a training call.

    ``distributed=True`` requires (or initializes from torchrun's environment)
    a process group; ``None`` uses one when it is initialized; ``False`` never does.
    """
    if distributed is False:
        return Communicator(None)
    if distributed is True and not dist.is_initialized():
        if "RANK" not in os.environ:
            raise ValueError(
                "distributed=True needs an initialized torch.distributed process group "
                "(call mfext.distributed.init() or launch with torchrun)"
            )
        init()
    if dist.is_available() and dist.is_initialized():
        return Communicator(dist.group.WORLD)
    return Communicator(None)
