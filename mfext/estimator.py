"""``MatrixFactorization``: a scikit-learn style estimator for sparse ratings.

The model is ``r ~ mu + b_u + b_i + w_u . h_i`` (``biases=True``) or
``w_u . h_i``, fit to the observed ratings only, with L2 regularization on the
factors and the biases. Three solvers:

* ``"sgd"``: parallel SGD on the in-place kernel ``mfext::sgd_epoch_``,
  learning rate ``lr * lr_decay ** epoch``: blocked (LIBMF/DSGD) on the CPU,
  Hogwild warps on a GPU (blocked there too under
  ``torch.use_deterministic_algorithms(True)``);
* ``"als"``: alternating least squares on ``mfext::als_solve`` (per-row normal
  equations and Cholesky, CPU and CUDA);
* ``"adam"``: full-batch Adam on the fused ``mfext::sparse_loss_grad``.

Defaults (``None``) depend on the solver and were tuned on MovieLens (random
90/10 split, seed 0, rank 64; see the README):

=========  =====  ========  =====  ========  ========
solver     reg    bias_reg  lr     lr_decay  max_iter
=========  =====  ========  =====  ========  ========
``sgd``    0.065  0.01      0.03   0.92      40
``als``    0.3    0.3       --     --        10
``adam``   0.08   0.01      0.01   --        300
=========  =====  ========  =====  ========  ========

Regularization: SGD and Adam weight the L2 penalty of a user (item) by its
number of training ratings n (per-rating regularization, as in Funk/Koren
SGD); ALS by ``n ** als_reg_exponent`` (default 0.75; 1 gives ALS-WR).
"""
from __future__ import annotations

import contextlib
import inspect
import math
import os
import pickle
import stat
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from . import _cf_distributed as dist_solvers
from . import _cf_solvers as solvers
from .distributed import get_communicator
from ._cf_input import (Triple, as_ids, canonical_order, csr_by, pair_columns, pairs_to_triple,
                        to_triple)
from ._library import build_info

__all__ = ["MatrixFactorization"]

_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "sgd": dict(reg=0.065, bias_reg=0.01, lr=0.03, lr_decay=0.92, max_iter=40),
    "als": dict(reg=0.3, bias_reg=None, lr=None, lr_decay=None, max_iter=10),  # bias_reg: reg
    "adam": dict(reg=0.08, bias_reg=0.01, lr=0.01, lr_decay=None, max_iter=300),
}
_FORMAT = "mfext.MatrixFactorization"
_FORMAT_VERSION = 1
_SCORE_BUDGET = 1 << 22        # users x items scores per recommend chunk


@contextlib.contextmanager
def _num_threads(n: Optional[int]) -> Iterator[None]:
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device_memory(device: torch.device) -> Optional[int]:
    """Total memory (bytes) of ``device``, or None when unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        if device.type == "cpu":
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None
    return None


def _check_model_size(n_users: int, n_items: int, rank: int, dtype: torch.dtype,
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
    total = _device_memory(device)
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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check_fits_dtype(vals: Tensor, dtype: torch.dtype, name: str) -> None:
    """A clear error when ratings ``vals`` (s,) overflow the model dtype.

    Without it a float32 model fed ratings of 1e300 (or ratings whose squared
    errors overflow, such as 1e20) fails in the first epoch with a message
    about the global mean or about divergence and a lower learning rate,
    neither of which is the cause.
    """
    if vals.numel() == 0:
        return
    big = float(torch.finfo(dtype).max)
    v = vals.detach().to(torch.float64)
    over = v.abs() > big
    if bool(over.any()):
        pos = int(over.nonzero()[0, 0])
        raise ValueError(
            f"{name}: rating {pos} = {v[pos].item():.6g} overflows {_dtype_name(dtype)} (largest "
            f"finite value {big:.6g}); rescale the ratings"
            + (" or use dtype=torch.float64" if dtype != torch.float64 else ""))
    # The training error sums squared residuals in the model dtype: starting
    # from a zero prediction that sum is at most sum(v**2), so it must fit too.
    squares = float(v.square().sum())
    if not squares <= big:
        raise ValueError(
            f"{name}: the ratings are too large for a {_dtype_name(dtype)} model: their sum of "
            f"squares ({squares:.3g}) overflows {_dtype_name(dtype)} (largest finite value "
            f"{big:.6g}), so the training error cannot be represented; rescale the ratings"
            + (" or use dtype=torch.float64" if dtype != torch.float64 else ""))


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


def _device_problem(device: torch.device) -> Optional[str]:
    """Why the fitted tensors cannot live on ``device`` here, or None when they can."""
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


class MatrixFactorization:
    """Matrix factorization of sparse explicit ratings (collaborative filtering).

    Parameters
    ----------
    rank : int
        Number of latent factors k.
    solver : {"sgd", "als", "adam"}
    reg : float or None
        L2 weight of the factors (see the module docstring for its scaling).
        None: the solver's default.
    lr : float or None
        Learning rate (sgd, adam). None: the solver's default.
    max_iter : int or None
        Epochs (sgd, als) or full-batch steps (adam). None: the solver's default.
    biases : bool
        Fit a global mean and user/item biases.
    nonnegative : bool
        Keep the factors >= 0: projected SGD/Adam steps; for ALS the clamped
        least-squares solution (a heuristic).
    random_state : int or None
        Seed of the initialization and of the SGD shuffles. None: a fresh seed.
    device : str, torch.device or None
        Where the model lives. None: the device of a tensor input, else CPU.
        The sgd and als solvers run on the CPU.
    dtype : torch.dtype
        float32 or float64.
    n_threads : int or None
        CPU threads during fit (None: torch's current setting).
    verbose : bool
        Print one line per epoch.
    bias_reg : float or None
        L2 weight of the biases. None: the solver's default.
    lr_decay : float or None
        SGD learning-rate decay per epoch, in (0, 1]. None: the default.
    init_std : float
        Standard deviation of the initial factors, > 0 (at 0 the factors
        would never move from 0: a ValueError).
    als_reg_exponent : float
        ALS scales the ridge of a row with n ratings by ``n ** als_reg_exponent``.

    Attributes
    ----------
    user_factors_ : Tensor, (n_users_, rank)
    item_factors_ : Tensor, (n_items_, rank)
    user_bias_ : Tensor, (n_users_,)  (zeros without biases)
    item_bias_ : Tensor, (n_items_,)
    global_mean_ : float  (0 without biases)
    rating_mean_ : float  mean training rating (the fallback of a bias-free model)
    user_counts_, item_counts_ : Tensor, int64  training ratings per user / item
    n_users_, n_items_ : int
    user_ids_, item_ids_ : np.ndarray or None
        Raw ids of a :class:`~mfext.datasets.Ratings` input (index -> raw id).
    history_ : list of dict
        Per epoch: ``epoch``, ``train_rmse`` (sgd: measured during the epoch,
        before each update), ``val_rmse`` and ``val_mae`` with validation,
        ``seconds`` since fit started.
    n_iter_ : int
        Epochs run. ``best_epoch_``: epoch of the lowest validation RMSE (or None).

    Notes
    -----
    Users and items without training ratings get zero factors and bias, so
    they predict from the other side's bias. Unknown users or items in
    :meth:`predict` (an index >= ``n_users_``/``n_items_`` or a raw id not seen
    in fit) fall back to the biases: ``mu + b_i`` for an unknown user, ``mu +
    b_u`` for an unknown item, ``mu`` for both (``rating_mean_`` without
    biases); pass ``unknown="raise"`` for an error instead.

    scikit-learn: the estimator is a regressor on (user, item) pairs.
    ``fit(X, y)`` takes X (n, 2) raw ids and y (n,) ratings, ``predict(X)``
    returns a numpy array and ``score(X, y)`` the R², so ``clone``,
    ``GridSearchCV``, ``cross_val_score`` and scorers such as
    ``"neg_root_mean_squared_error"`` work. scikit-learn is imported only by
    ``__sklearn_tags__``, which scikit-learn itself calls.
    """

    def __init__(
        self,
        rank: int = 64,
        solver: str = "sgd",
        reg: Optional[float] = None,
        lr: Optional[float] = None,
        max_iter: Optional[int] = None,
        biases: bool = True,
        nonnegative: bool = False,
        random_state: Optional[int] = None,
        device: Optional[Any] = None,
        dtype: torch.dtype = torch.float32,
        n_threads: Optional[int] = None,
        verbose: bool = False,
        bias_reg: Optional[float] = None,
        lr_decay: Optional[float] = None,
        init_std: float = 0.05,
        als_reg_exponent: float = 0.75,
    ) -> None:
        self.rank = rank
        self.solver = solver
        self.reg = reg
        self.lr = lr
        self.max_iter = max_iter
        self.biases = biases
        self.nonnegative = nonnegative
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.n_threads = n_threads
        self.verbose = verbose
        self.bias_reg = bias_reg
        self.lr_decay = lr_decay
        self.init_std = init_std
        self.als_reg_exponent = als_reg_exponent

    # ------------------------------------------------------------------ params

    @classmethod
    def _param_names(cls) -> List[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        """The constructor parameters, as in scikit-learn."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "MatrixFactorization":
        """Set constructor parameters; returns self."""
        valid = self._param_names()
        for key in params:  # all names first: a bad one sets nothing
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for MatrixFactorization; valid "
                                 f"parameters are: {', '.join(valid)}")
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = MatrixFactorization().get_params()
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults[k]]
        return f"MatrixFactorization({', '.join(changed)})"

    def _resolved(self) -> Dict[str, Any]:
        """Checked parameters with the solver defaults filled in."""
        if self.solver not in _DEFAULTS:
            raise ValueError(f"solver must be one of {sorted(_DEFAULTS)}, got {self.solver!r}")
        d = dict(_DEFAULTS[self.solver])
        out: Dict[str, Any] = {}

        def number(name, value, lo, lo_open, hi=math.inf):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number, got {value!r}")
            v = float(value)
            if not (math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi):
                raise ValueError(f"{name} must be finite and {'>' if lo_open else '>='} {lo}"
                                 + (f" and <= {hi}" if hi < math.inf else "") + f", got {value!r}")
            return v

        def integer(name, value, lo):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an integer >= {lo}, got {value!r}")
            if value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
            return int(value)

        out["rank"] = integer("rank", self.rank, 1)
        out["reg"] = number("reg", d["reg"] if self.reg is None else self.reg, 0.0, False)
        bias_reg = self.bias_reg if self.bias_reg is not None else d["bias_reg"]
        out["bias_reg"] = number("bias_reg", out["reg"] if bias_reg is None else bias_reg, 0.0, False)
        out["max_iter"] = integer("max_iter", d["max_iter"] if self.max_iter is None else self.max_iter, 1)
        lr = self.lr if self.lr is not None else d["lr"]
        out["lr"] = None if lr is None else number("lr", lr, 0.0, True)
        decay = self.lr_decay if self.lr_decay is not None else d["lr_decay"]
        out["lr_decay"] = None if decay is None else number("lr_decay", decay, 0.0, True, 1.0)
        # init_std = 0 would start every factor at 0, where the gradients of the
        # factors vanish too: every solver would fit the biases only, silently.
        out["init_std"] = number("init_std", self.init_std, 0.0, True)
        out["als_reg_exponent"] = number("als_reg_exponent", self.als_reg_exponent, -math.inf, False)
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {self.dtype!r}")
        if self.n_threads is not None:
            out["n_threads"] = integer("n_threads", self.n_threads, 1)
        else:
            out["n_threads"] = None
        if self.random_state is not None:
            out["seed"] = integer("random_state", self.random_state, 0)
            if out["seed"] >= 2**64:
                raise ValueError(f"random_state must be below 2**64, got {self.random_state!r}")
        else:
            out["seed"] = int(np.random.SeedSequence().entropy % (2**63))
        for name in ("biases", "nonnegative", "verbose"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        return out

    def _resolve_device(self, data: Optional[Triple]) -> torch.device:
        if self.device is not None:
            try:
                device = torch.device(self.device)
            except (RuntimeError, TypeError) as exc:
                raise ValueError(f"device must be a device such as 'cpu' or 'cuda:0', got "
                                 f"{self.device!r} ({exc})") from exc
        elif data is not None:
            device = data.vals.device
        else:
            device = torch.device("cpu")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device} was requested but CUDA is not available")
        if device.type == "cuda" and not build_info()["cuda"]:
            raise ValueError(
                f"device {device} was requested but this mfext build has no CUDA kernels "
                "(mfext.build_info()['cuda'] is False); rebuild on a machine with nvcc and a "
                "CUDA build of torch: FORCE_CUDA=1 pip install --no-build-isolation --no-deps -e .")
        if device.type not in ("cpu", "cuda") and self.solver in ("sgd", "als"):
            raise NotImplementedError(
                f"device={str(device)!r} is not supported by solver={self.solver!r}, which has "
                f"CPU and CUDA kernels only; use device='cpu', a CUDA device, or solver='adam' "
                f"on {device}")
        return device

    # ------------------------------------------------------------------ fit

    def fit(self, X: Any, y: Any = None, *, validation: Any = None,
            early_stopping_rounds: Optional[int] = None,
            distributed: Optional[bool] = None) -> "MatrixFactorization":
        """Fit the model to observed ratings.

        Parameters
        ----------
        X : Ratings, scipy.sparse matrix, torch sparse tensor, (rows, cols, vals)
            triple, or dense 2-D array/tensor with NaN for missing entries.
            Ids are non-negative integers; every stored entry (an explicit 0
            included) is a rating; duplicates count each time.
            With ``y`` (the scikit-learn regressor convention): an (n, 2) array,
            tensor or DataFrame of (user, item) pairs. These are raw ids
            (integers or strings), mapped to indices in ascending order and
            kept in ``user_ids_``/``item_ids_`` as for a Ratings input (ids
            that are already ``0..u-1`` map to themselves).
        y : array-like or Tensor, (n,), optional
            The ratings of the pairs ``X``; None for the other forms of ``X``.
        validation : any form of ``X`` without ``y``, optional
            Scored after every epoch into ``history_`` (``val_rmse``, ``val_mae``).
            A Ratings object with other id maps is matched by raw id.
        early_stopping_rounds : int, optional
            Stop when the validation RMSE has not improved for this many epochs
            and restore the best epoch (needs ``validation``).
        distributed : bool, optional
            Data-parallel training on torch.distributed (:mod:`mfext.distributed`):
            ``X`` (and ``validation``) then hold this rank's users, indexed from 0
            on each rank, and every rank uses the same item ids; the fitted user
            factors are this rank's, the item factors are replicated. None (the
            default) trains data-parallel whenever a process group is initialized;
            False never. ``sgd`` runs DSGD, ``als`` sums the items' normal
            equations, ``adam`` the item gradients.

        Returns
        -------
        self

        Raises
        ------
        TypeError, ValueError
            Bad input (see :mod:`mfext._cf_input`) or parameters, ratings that
            overflow the model dtype.
        FloatingPointError
            The fit diverged (a NaN or Inf appeared): the model becomes the fit
            as of the last finite epoch (``n_iter_`` epochs, its ``history_``),
            complete and consistent (``save`` and ``load`` work), and the error
            says which epoch failed.

        Notes
        -----
        Everything (parameters, data, validation set) is checked and the new
        model is built apart from this one; the fitted attributes are replaced
        together at the end. Any failure other than divergence (bad input, an
        error or an interrupt during training) leaves the model exactly as it
        was, a previous fit included.
        """
        work = self._blank()
        try:
            work._fit(X, y, validation, early_stopping_rounds, distributed)
        except FloatingPointError:
            if hasattr(work, "n_iter_"):  # divergence: work holds the last finite epoch
                self._adopt(work)
            raise
        self._adopt(work)
        return self

    def _blank(self) -> "MatrixFactorization":
        """An unfitted model with this one's constructor parameters (the same objects)."""
        work = object.__new__(type(self))
        for name in self._param_names():
            setattr(work, name, getattr(self, name))
        return work

    # Private attributes a fit sets (with the public ones, which end with "_").
    _FIT_STATE = frozenset({"_comm", "_device", "_lookups", "_seen_indptr", "_seen_items"})

    def _adopt(self, work: "MatrixFactorization") -> None:
        """Replace the fitted state of self by that of ``work`` (plain assignments only).

        Attributes that are not fit state (set on the object by someone else,
        such as scikit-learn's callback context) stay.
        """
        params = set(self._param_names())
        state = {k: v for k, v in vars(work).items() if k not in params}
        for name in [k for k in vars(self) if k not in params and k not in state
                     and (k.endswith("_") or k in self._FIT_STATE)]:
            delattr(self, name)
        for name, value in state.items():
            setattr(self, name, value)

    def _fit(self, X: Any, y: Any, validation: Any, early_stopping_rounds: Optional[int],
             distributed: Optional[bool]) -> None:
        """The fit itself, on a model from :meth:`_blank` (it sets attributes as it goes)."""
        start = time.perf_counter()
        prm = self._resolved()
        rounds = early_stopping_rounds
        if rounds is not None:
            if validation is None:
                raise ValueError("early_stopping_rounds needs a validation set")
            if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)):
                raise TypeError(f"early_stopping_rounds must be an integer >= 1, got {rounds!r}")
            if rounds < 1:
                raise ValueError(f"early_stopping_rounds must be an integer >= 1, got {rounds!r}")
        if distributed is not None and not isinstance(distributed, (bool, np.bool_)):
            raise TypeError(f"distributed must be None, True or False, got {distributed!r}")
        data = to_triple(X, "X") if y is None else pairs_to_triple(X, y, "X")
        _check_fits_dtype(data.vals, self.dtype, "X" if y is None else "y")
        device = self._resolve_device(data)
        m, n = data.shape if data.shape is not None else (
            int(data.rows.max()) + 1, int(data.cols.max()) + 1)
        _check_model_size(m, n, prm["rank"], self.dtype, device, "X",
                          systems=max(m, n) if self.solver == "als" else 0)
        # The id maps first: the validation set is matched through them, and
        # checked before anything expensive happens.
        self.user_ids_, self.item_ids_ = data.user_ids, data.item_ids
        self._lookups: Dict[str, Any] = {}
        val = None
        if validation is not None:
            vt = to_triple(validation, "validation")
            vr, vc = self._map_triple(vt, "validation")
            val = (vr.to(device), vc.to(device), vt.vals.to(device=device, dtype=torch.float64))
        comm = self._comm = get_communicator(distributed)
        if comm.distributed:
            n = max(comm.all_gather_objects(n, "item count"))
            comm.check_consistent(solver=self.solver, rank=prm["rank"], dtype=self.dtype,
                                  max_iter=prm["max_iter"], seed=prm["seed"],
                                  biases=bool(self.biases), validation=validation is not None)
        perm = canonical_order(data.rows, data.cols, m, n)
        rows, cols, vals = data.rows, data.cols, data.vals
        if perm is not None:
            rows, cols, vals = rows[perm], cols[perm], vals[perm]
        rows, cols = rows.to(device), cols.to(device)
        vals = vals.to(device=device, dtype=self.dtype)

        self.n_users_, self.n_items_ = m, n
        self._device = device
        self.rating_mean_ = (comm.sum_scalar(float(vals.double().sum()), "rating sum")
                             / comm.sum_scalar(float(vals.numel()), "rating count"))
        mu = self.rating_mean_ if self.biases else 0.0
        self.global_mean_ = mu
        self.user_counts_ = torch.bincount(rows, minlength=m)
        self.item_counts_ = torch.bincount(cols, minlength=n)
        self._seen_indptr, order = csr_by(rows, m)
        self._seen_items = cols[order]

        gen = torch.Generator().manual_seed(prm["seed"])
        problem = solvers.Problem(rows, cols, vals, m, n, mu, bool(self.biases),
                                  bool(self.nonnegative))
        with _num_threads(prm["n_threads"]):
            if comm.distributed:
                counts = dist_solvers.global_item_counts(problem, comm)
                f = self._init_distributed(problem, prm, gen, device, counts)
                solver = self._make_distributed_solver(problem, f, prm, gen, counts)
            else:
                f = solvers.init_factors(problem, prm["rank"], prm["init_std"], gen, self.dtype, device)
                solver = self._make_solver(problem, f, prm, gen)
            self._run(solver, problem, f, prm, val, early_stopping_rounds, start)

    def _make_solver(self, p: solvers.Problem, f: solvers.Factors, prm: Dict[str, Any],
                     gen: torch.Generator):
        if self.solver == "sgd":
            return solvers.SgdSolver(p, f, lr=prm["lr"], lr_decay=prm["lr_decay"], reg=prm["reg"],
                                     bias_reg=prm["bias_reg"], gen=gen,
                                     n_threads=torch.get_num_threads())
        if self.solver == "als":
            return solvers.AlsSolver(p, f, reg=prm["reg"], bias_reg=prm["bias_reg"],
                                     exponent=prm["als_reg_exponent"])
        return solvers.AdamSolver(p, f, lr=prm["lr"], reg=prm["reg"], bias_reg=prm["bias_reg"])

    def _init_distributed(self, p: solvers.Problem, prm: Dict[str, Any], gen: torch.Generator,
                          device: torch.device, item_counts: Tensor) -> solvers.Factors:
        """This rank's rows of the factors one process would draw for all users."""
        comm = self._comm
        row0, m_total = comm.row_offset(p.m)
        rated_items = torch.nonzero(item_counts).flatten()
        proxy = solvers.Problem(p.rows.cpu() + row0, rated_items, p.vals, m_total, p.n, p.mu,
                                p.biases, p.nonnegative)
        full = solvers.init_factors(proxy, prm["rank"], prm["init_std"], gen, self.dtype, device)
        W = full.W[row0:row0 + p.m].contiguous()
        return solvers.Factors(W, full.Ht, full.bu[row0:row0 + p.m].contiguous(), full.bi)

    def _make_distributed_solver(self, p: solvers.Problem, f: solvers.Factors,
                                 prm: Dict[str, Any], gen: torch.Generator, counts: Tensor):
        comm = self._comm
        if self.solver == "sgd":
            return dist_solvers.DsgdSolver(p, f, comm, gen=gen, lr=prm["lr"],
                                           lr_decay=prm["lr_decay"], reg=prm["reg"],
                                           bias_reg=prm["bias_reg"],
                                           n_threads=torch.get_num_threads())
        if self.solver == "als":
            return dist_solvers.DistributedAlsSolver(p, f, comm, item_counts=counts,
                                                     reg=prm["reg"], bias_reg=prm["bias_reg"],
                                                     exponent=prm["als_reg_exponent"])
        nnz_total = int(comm.sum_scalar(float(p.rows.numel()), "rating count"))
        return dist_solvers.DistributedAdamSolver(p, f, comm, nnz_total=nnz_total,
                                                  item_counts=counts, lr=prm["lr"],
                                                  reg=prm["reg"], bias_reg=prm["bias_reg"])

    def _run(self, solver, p: solvers.Problem, f: solvers.Factors, prm: Dict[str, Any],
             val: Optional[Tuple[Tensor, Tensor, Tensor]], patience: Optional[int],
             start: float) -> None:
        history: List[Dict[str, float]] = []
        self.history_ = history
        self.best_epoch_ = None
        best_rmse, best = math.inf, None
        last_good = f.clone()
        comm = self._comm
        nnz = comm.sum_scalar(float(p.rows.numel()), "rating count")
        for epoch in range(1, prm["max_iter"] + 1):
            sse = solver.epoch(epoch - 1)
            finite = f.is_finite() and (sse is None or math.isfinite(sse))
            finite = not comm.any(not finite, "divergence check")
            if not finite:
                self._set_factors(last_good)
                self.n_iter_ = epoch - 1
                raise FloatingPointError(
                    f"MatrixFactorization(solver={self.solver!r}) diverged in epoch {epoch}: a "
                    f"factor or the training error became NaN/Inf (lr={prm['lr']}, "
                    f"reg={prm['reg']}). The model keeps the factors of epoch {epoch - 1}; "
                    "lower lr or raise reg.")
            last_good = f.clone()
            rec: Dict[str, float] = {"epoch": epoch}
            if sse is None:  # ALS: measure the training error exactly
                pred = solvers.predict_entries(f, p.mu, p.biases, p.rows, p.cols)
                sse = comm.sum_scalar(float((pred.double() - p.vals.double()).square().sum()),
                                      "training error")
            rec["train_rmse"] = math.sqrt(sse / nnz)
            if val is not None:
                self._set_factors(f, copy=False)
                err = self._predict_index(val[0], val[1]).double() - val[2]
                sums = torch.stack([err.square().sum(), err.abs().sum(),
                                    torch.tensor(float(err.numel()), dtype=torch.float64)])
                comm.all_reduce_sum_([sums], "validation error")
                rec["val_rmse"] = float((sums[0] / sums[2]).sqrt())
                rec["val_mae"] = float(sums[1] / sums[2])
                if rec["val_rmse"] < best_rmse:
                    best_rmse, self.best_epoch_ = rec["val_rmse"], epoch
                    if patience is not None:
                        best = f.clone()
            rec["seconds"] = time.perf_counter() - start
            history.append(rec)
            if self.verbose:
                print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in rec.items()), flush=True)
            if patience is not None and epoch - self.best_epoch_ >= patience:
                break
        self.n_iter_ = len(history)
        if best is not None:
            f = best
        self._set_factors(f)

    def _set_factors(self, f: solvers.Factors, copy: bool = True) -> None:
        """Publish factors as the fitted attributes (copies unless ``copy=False``)."""
        W, Ht, bu, bi = ((t.clone() if copy else t) for t in (f.W, f.Ht, f.bu, f.bi))
        self.user_factors_, self.item_factors_ = W, Ht
        self.user_bias_, self.item_bias_ = bu, bi

    # ------------------------------------------------------------------ ids

    def _check_fitted(self) -> None:
        if not hasattr(self, "user_factors_"):
            raise RuntimeError("this MatrixFactorization is not fitted yet; call fit first")

    def _lookup(self, side: str) -> Tuple[np.ndarray, np.ndarray]:
        """(sorted raw ids, their indices) of one side, built once."""
        if side not in self._lookups:
            ids = self.user_ids_ if side == "user" else self.item_ids_
            order = np.argsort(ids, kind="stable")
            self._lookups[side] = (ids[order], order)
        return self._lookups[side]

    def _raw_to_index(self, side: str, raw: np.ndarray, name: Optional[str] = None) -> Tensor:
        """Raw ids (s,) -> indices (s,) int64; unknown raw ids -> the out-of-range n."""
        ids = self.user_ids_ if side == "user" else self.item_ids_
        bound = self.n_users_ if side == "user" else self.n_items_
        if ids is None:
            raise ValueError(f"raw {side} ids need a model fit on a Ratings object or on (user, "
                             "item) pairs (they keep the id maps); pass indices instead")
        sorted_ids, order = self._lookup(side)
        raw = np.asarray(raw)
        if raw.ndim == 0:
            raw = raw.reshape(1)
        if raw.ndim != 1:
            raise ValueError(f"{name or side + ' ids'} must be 1-D, got shape {raw.shape}")
        try:
            pos = np.searchsorted(sorted_ids, raw)
        except TypeError as exc:
            raise TypeError(f"{side} ids of type {raw.dtype} cannot be compared with the model's "
                            f"raw ids of type {sorted_ids.dtype}") from exc
        pos = np.minimum(pos, max(0, sorted_ids.size - 1))
        found = sorted_ids.size > 0
        hit = (sorted_ids[pos] == raw) if found else np.zeros(raw.shape, bool)
        index = np.where(hit, order[pos] if found else 0, bound)
        return torch.from_numpy(np.asarray(index, dtype=np.int64))

    def _ids(self, x: Any, side: str, raw_ids: bool, name: str) -> Tensor:
        """User/item ids of any array form -> int64 indices on the model device."""
        if isinstance(x, Tensor) and x.device != self._device:
            raise ValueError(f"{name} is on {x.device} but the model is on {self._device}")
        if raw_ids:
            raw = x.cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
            return self._raw_to_index(side, raw, name).to(self._device)
        return as_ids(x, name).to(self._device)

    def _map_triple(self, t: Triple, name: str) -> Tuple[Tensor, Tensor]:
        """Rows/cols of an input in this model's index space (raw-id matched when both have maps)."""
        rows, cols = t.rows, t.cols
        for side, ids, model_ids in (("user", t.user_ids, self.user_ids_),
                                     ("item", t.item_ids, self.item_ids_)):
            if ids is None or model_ids is None:
                continue
            if ids.shape == model_ids.shape and np.array_equal(ids, model_ids):
                continue
            which = rows if side == "user" else cols
            mapped = self._raw_to_index(side, ids[which.cpu().numpy()])
            if side == "user":
                rows = mapped
            else:
                cols = mapped
        return rows, cols

    def user_index(self, raw_ids: Any) -> Tensor:
        """Indices (s,) of raw user ids; unknown ids map to ``n_users_``."""
        self._check_fitted()
        return self._raw_to_index("user", np.asarray(raw_ids), "raw_ids")

    def item_index(self, raw_ids: Any) -> Tensor:
        """Indices (s,) of raw item ids; unknown ids map to ``n_items_``."""
        self._check_fitted()
        return self._raw_to_index("item", np.asarray(raw_ids), "raw_ids")

    # ------------------------------------------------------------------ predict

    def _predict_index(self, users: Tensor, items: Tensor) -> Tensor:
        """Predictions (s,) for index tensors on the model device, with the unknown fallback."""
        f = solvers.Factors(self.user_factors_, self.item_factors_, self.user_bias_,
                            self.item_bias_)
        ku, ki = users < self.n_users_, items < self.n_items_
        if bool(ku.all()) and bool(ki.all()):
            return solvers.predict_entries(f, self.global_mean_, self.biases, users, items)
        uu, ii = torch.where(ku, users, 0), torch.where(ki, items, 0)
        both = ku & ki
        dot = solvers.entry_dots(f.W, f.Ht, uu, ii)
        if self.biases:
            return (self.global_mean_ + torch.where(ku, f.bu[uu], 0)
                    + torch.where(ki, f.bi[ii], 0) + torch.where(both, dot, 0))
        return torch.where(both, dot, torch.full_like(dot, self.rating_mean_))

    def predict(self, users: Any, items: Any = None, *, raw_ids: Optional[bool] = None,
                unknown: str = "fallback") -> Any:
        """Predicted ratings of (user, item) pairs.

        Parameters
        ----------
        users, items : array-like or Tensor, (s,)
            Indices in ``[0, n_users_)`` / ``[0, n_items_)``, or raw ids with
            ``raw_ids=True`` (models fit on a Ratings object or on pairs).
        items=None : then ``users`` is an (s, 2) array, tensor or DataFrame of
            (user, item) pairs, the scikit-learn form (see :meth:`fit`): raw ids
            when the model has id maps, else indices (``raw_ids`` overrides).
        raw_ids : bool, optional
            Default: False with ``items``; with pairs, whether the model has id maps.
        unknown : {"fallback", "raise"}
            What an unknown user or item gets: the bias fallback (see the class
            notes) or a ValueError.

        Returns
        -------
        Tensor, (s,), the model's dtype and device; with pairs (``items=None``)
        a numpy array (s,) of the model's dtype, as scikit-learn expects.
        """
        self._check_fitted()
        if unknown not in ("fallback", "raise"):
            raise ValueError(f"unknown must be 'fallback' or 'raise', got {unknown!r}")
        if raw_ids is not None and not isinstance(raw_ids, (bool, np.bool_)):
            raise TypeError(f"raw_ids must be a bool, got {raw_ids!r}")
        pairs = items is None
        if pairs:
            users, items = pair_columns(users, "X")
            if raw_ids is None:
                raw_ids = self.user_ids_ is not None and self.item_ids_ is not None
        raw_ids = bool(raw_ids)
        u = self._ids(users, "user", raw_ids, "X[:, 0]" if pairs else "users")
        i = self._ids(items, "item", raw_ids, "X[:, 1]" if pairs else "items")
        if u.numel() != i.numel():
            raise ValueError(f"users and items must have the same length, got {u.numel()} and "
                             f"{i.numel()}")
        if unknown == "raise":
            for what, x, bound in (("user", u, self.n_users_), ("item", i, self.n_items_)):
                bad = x >= bound
                if bool(bad.any()):
                    pos = int(bad.nonzero()[0, 0])
                    arg = f"X[{pos}, {0 if what == 'user' else 1}]" if pairs else f"{what}s[{pos}]"
                    raise ValueError(f"{arg} is unknown to the model (it has {bound} "
                                     f"{what}s{'' if raw_ids else '; indices must be smaller'})")
        pred = self._predict_index(u, i)
        return pred.cpu().numpy() if pairs else pred

    def score(self, X: Any, y: Any = None) -> float:
        """RMSE on the ratings ``X``; with ``y``, the R² of the pairs ``X`` (scikit-learn).

        Parameters
        ----------
        X : any fit input form, or with ``y`` an (n, 2) array of (user, item) pairs
        y : array-like, (n,), optional
            The true ratings of the pairs ``X``.

        Returns
        -------
        float
            Without ``y``: the root mean squared error (lower is better). With
            ``y``: the coefficient of determination ``1 - SS_res / SS_tot``
            (higher is better), the score of every scikit-learn regressor, so
            that model selection without a ``scoring`` maximizes it; 1.0 for a
            perfect fit of constant ``y``, 0.0 for an imperfect one.
        """
        self._check_fitted()
        if y is None:
            t = to_triple(X, "X")
            rows, cols = self._map_triple(t, "X")
            pred = self._predict_index(rows.to(self._device), cols.to(self._device))
            err = pred.double() - t.vals.to(device=self._device, dtype=torch.float64)
            return float(err.square().mean().sqrt())
        t = pairs_to_triple(X, y, "X")  # checks y against X
        truth = t.vals.detach().cpu().to(torch.float64)
        pred = torch.from_numpy(np.asarray(self.predict(X), dtype=np.float64))
        ss_res = float((truth - pred).square().sum())
        ss_tot = float((truth - truth.mean()).square().sum())
        if ss_tot == 0.0:
            return 1.0 if ss_res == 0.0 else 0.0
        return 1.0 - ss_res / ss_tot

    # ------------------------------------------------------------------ scikit-learn

    # scikit-learn before 1.6 reads the estimator type from this attribute.
    _estimator_type = "regressor"

    def __sklearn_tags__(self) -> Any:
        """Estimator tags for scikit-learn >= 1.6 (imported here: sklearn stays optional).

        A regressor: ``fit(X, y)`` with X the (user, item) pairs, so that
        splitters split by rating and regression scorers apply. ``y`` is not
        required, since the other input forms carry their ratings.
        """
        from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags

        return Tags(estimator_type="regressor", target_tags=TargetTags(required=False),
                    regressor_tags=RegressorTags(), input_tags=InputTags(string=True),
                    non_deterministic=self.random_state is None)

    def _more_tags(self) -> Dict[str, Any]:
        """Estimator tags for scikit-learn before 1.6."""
        return {"requires_y": False, "non_deterministic": self.random_state is None}

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "user_factors_")

    # ------------------------------------------------------------------ top-k

    def _index_to_raw(self, side: str, index: Tensor) -> Any:
        ids = self.user_ids_ if side == "user" else self.item_ids_
        if ids is None:
            return index
        idx = index.cpu().numpy()
        out = ids[np.clip(idx, 0, None)]
        if np.issubdtype(out.dtype, np.integer):
            res = torch.from_numpy(out.astype(np.int64))
            res[index.cpu() < 0] = -1
            return res
        out = out.astype(object)
        out[idx < 0] = None
        return out

    def recommend(self, users: Any, n: int = 10, exclude_seen: bool = True,
                  items: Any = None, *, raw_ids: bool = False) -> Tuple[Any, Tensor]:
        """Top-n items for each user, scored by the predicted rating.

        Users are scored in chunks of at most ~4M (user, item) scores, so the
        full users x items matrix is never materialized.

        Parameters
        ----------
        users : array-like or Tensor, (B,)
            User indices (raw ids with ``raw_ids``). Unknown users get the
            item-bias ranking.
        n : int
            Items per user; at most the number of candidates.
        exclude_seen : bool
            Leave out the items each user rated in fit.
        items : array-like or Tensor, (I,), optional
            Candidate items (default: all); a repeated candidate counts once.
        raw_ids : bool
            Users given and items returned as raw ids.

        Returns
        -------
        items : Tensor, (B, n'), int64
            Item indices (raw ids with ``raw_ids``), best first; -1 where fewer
            than n' candidates are left.
        scores : Tensor, (B, n'), model dtype; -inf where items is -1
        """
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        u = self._ids(users, "user", raw_ids, "users")
        if items is None:
            cand = torch.arange(self.n_items_, device=self._device)
        else:
            cand = self._ids(items, "item", raw_ids, "items")
            if cand.numel() and int(cand.max()) >= self.n_items_:
                raise ValueError(f"items holds an id unknown to the model ({self.n_items_} items)")
            # A repeated candidate would be ranked twice, and the seen-item mask
            # (one slot per item) would catch only one of its copies.
            cand = torch.unique(cand)
        n_out = min(int(n), cand.numel())
        W, Ht, bu, bi = self.user_factors_, self.item_factors_, self.user_bias_, self.item_bias_
        Hc, bic = Ht[cand], bi[cand]
        pos = None
        if exclude_seen:
            pos = torch.full((self.n_items_,), -1, dtype=torch.int64, device=self._device)
            pos[cand] = torch.arange(cand.numel(), device=self._device)
        out_items = torch.empty(u.numel(), n_out, dtype=torch.int64, device=self._device)
        out_scores = torch.empty(u.numel(), n_out, dtype=W.dtype, device=self._device)
        chunk = max(1, _SCORE_BUDGET // max(1, cand.numel()))
        for s in range(0, u.numel(), chunk):
            uc = u[s:s + chunk]
            known = uc < self.n_users_
            ui = torch.where(known, uc, 0)
            scores = (W[ui] * known[:, None]) @ Hc.t() + bic[None, :]
            scores += (self.global_mean_ + torch.where(known, bu[ui], 0))[:, None]
            if exclude_seen:
                self._mask_seen(scores, ui, known, pos)
            top, idx = scores.topk(n_out, dim=1)
            chosen = cand[idx]
            chosen[torch.isneginf(top)] = -1
            out_items[s:s + chunk], out_scores[s:s + chunk] = chosen, top
        if raw_ids:
            return self._index_to_raw("item", out_items), out_scores
        return out_items, out_scores

    def _mask_seen(self, scores: Tensor, users: Tensor, known: Tensor, pos: Tensor) -> None:
        """Set scores (B, I) of the items each user rated in fit to -inf."""
        starts = self._seen_indptr[users]
        counts = torch.where(known, self._seen_indptr[users + 1] - starts, 0)
        total = int(counts.sum())
        if total == 0:
            return
        row = torch.repeat_interleave(torch.arange(users.numel(), device=scores.device), counts)
        first = torch.cumsum(counts, 0) - counts
        offset = torch.arange(total, device=scores.device) - torch.repeat_interleave(first, counts)
        col = pos[self._seen_items[torch.repeat_interleave(starts, counts) + offset]]
        keep = col >= 0
        scores[row[keep], col[keep]] = -math.inf

    def similar_items(self, items: Any, n: int = 10, *,
                      raw_ids: bool = False) -> Tuple[Any, Tensor]:
        """The n items with the most similar factors (cosine), the item itself excluded.

        Parameters
        ----------
        items : array-like or Tensor, (B,)
            Item indices (raw ids with ``raw_ids``).
        n : int

        Returns
        -------
        items : Tensor, (B, n'), int64, most similar first (raw ids with ``raw_ids``)
        similarities : Tensor, (B, n') in [-1, 1]
        """
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        it = self._ids(items, "item", raw_ids, "items")
        if it.numel() and int(it.max()) >= self.n_items_:
            raise ValueError(f"items holds an id unknown to the model ({self.n_items_} items)")
        Ht = self.item_factors_
        unit = Ht / Ht.norm(dim=1, keepdim=True).clamp_min(torch.finfo(Ht.dtype).tiny)
        n_out = min(int(n), self.n_items_ - 1)
        out_items = torch.empty(it.numel(), n_out, dtype=torch.int64, device=self._device)
        out_sims = torch.empty(it.numel(), n_out, dtype=Ht.dtype, device=self._device)
        chunk = max(1, _SCORE_BUDGET // max(1, self.n_items_))
        for s in range(0, it.numel(), chunk):
            ic = it[s:s + chunk]
            sims = unit[ic] @ unit.t()
            sims[torch.arange(ic.numel(), device=sims.device), ic] = -math.inf
            top, idx = sims.topk(n_out, dim=1)
            out_items[s:s + chunk], out_sims[s:s + chunk] = idx, top
        if raw_ids:
            return self._index_to_raw("item", out_items), out_sims
        return out_items, out_sims

    # ------------------------------------------------------------------ fold-in

    def _fold_in_reg(self) -> Tuple[float, float, float]:
        prm = self._resolved()
        exponent = prm["als_reg_exponent"] if self.solver == "als" else 1.0
        return prm["reg"], prm["bias_reg"], exponent

    def fold_in(self, X: Any, *, append: bool = False,
                user_ids: Any = None) -> Tuple[Tensor, Tensor]:
        """Factors of new users from their ratings, with the item factors fixed.

        Each new user's factors (and bias) are the closed-form minimizer of the
        training objective restricted to that user (one ALS user step), with
        the regularization of the fit solver.

        Parameters
        ----------
        X : any fit input form
            Ratings of B new users: row ids in ``[0, B)`` (B is the stated
            shape's first dimension, else the largest row id + 1), items in the
            model's index space (a Ratings object is matched by raw item id).
            A new user without ratings gets zero factors.
        append : bool
            Also add the users to the model, as indices ``n_users_ .. n_users_
            + B - 1`` (predict, recommend and exclude_seen then know them).
        user_ids : array-like, (B,), optional
            Raw ids of the new users, needed with ``append`` when the model
            has raw-id maps (a Ratings input brings its own).

        Returns
        -------
        factors : Tensor, (B, rank)
        biases : Tensor, (B,)  (zeros without biases)
        """
        self._check_fitted()
        t = to_triple(X, "X")
        _check_fits_dtype(t.vals, self.dtype, "X")
        rows = t.rows
        cols = t.cols
        if t.item_ids is not None and self.item_ids_ is not None:
            _, cols = self._map_triple(Triple(rows, cols, t.vals, None, None, t.item_ids), "X")
        if int(cols.max()) >= self.n_items_:
            bad = int((cols >= self.n_items_).nonzero()[0, 0])
            raise ValueError(f"X: the item of rating {bad} is unknown to the model "
                             f"({self.n_items_} items); fold_in needs known items")
        B = t.shape[0] if t.shape is not None else int(rows.max()) + 1
        _check_model_size(B, 0, int(self.rank), self.dtype, self._device, "X", systems=B)
        reg, bias_reg, exponent = self._fold_in_reg()
        f = solvers.Factors(self.user_factors_, self.item_factors_, self.user_bias_,
                            self.item_bias_)
        dev = self._device
        vals = t.vals.to(device=dev, dtype=self.dtype)
        rows, cols = rows.to(dev), cols.to(dev)
        factors, bias = solvers.fold_in_users(
            f, self.global_mean_, bool(self.biases), bool(self.nonnegative), rows, cols, vals, B,
            reg=reg, bias_reg=bias_reg, exponent=exponent)
        if bias is None:
            bias = torch.zeros(B, dtype=self.dtype, device=dev)
        factors, bias = factors.contiguous(), bias.contiguous()
        if append:
            self._append_users(factors, bias, rows, cols, B, t.user_ids if user_ids is None else user_ids)
        return factors, bias

    def _append_users(self, factors: Tensor, bias: Tensor, rows: Tensor, cols: Tensor, B: int,
                      user_ids: Any) -> None:
        # Everything is computed first, then assigned: a rejected append changes nothing.
        user_ids_ = self.user_ids_
        if self.user_ids_ is not None:
            if user_ids is None:
                raise ValueError("append=True on a model with raw user ids needs user_ids for "
                                 "the new users (or a Ratings input)")
            new_ids = np.asarray(user_ids).reshape(-1)
            if new_ids.size != B:
                raise ValueError(f"user_ids must have {B} entries, got {new_ids.size}")
            if np.isin(new_ids, self.user_ids_).any() or np.unique(new_ids).size != B:
                raise ValueError("user_ids of new users must be distinct and not already known")
            user_ids_ = np.concatenate([self.user_ids_, new_ids])
        counts = torch.bincount(rows, minlength=B)
        order = torch.sort(rows, stable=True).indices
        seen_items = torch.cat([self._seen_items, cols[order]])
        seen_indptr = torch.cat([self._seen_indptr, self._seen_indptr[-1] + counts.cumsum(0)])
        user_counts = torch.cat([self.user_counts_, counts])
        user_factors = torch.cat([self.user_factors_, factors])
        user_bias = torch.cat([self.user_bias_, bias])
        if user_ids_ is not self.user_ids_:
            self.user_ids_ = user_ids_
            self._lookups.pop("user", None)
        self._seen_items, self._seen_indptr = seen_items, seen_indptr
        self.user_counts_, self.user_factors_ = user_counts, user_factors
        self.user_bias_ = user_bias
        self.n_users_ = self.n_users_ + B

    # ------------------------------------------------------------------ persistence

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
        params["dtype"] = _dtype_name(self.dtype)
        params["device"] = None if self.device is None else str(self.device)

        def ids_out(ids):
            if ids is None:
                return None
            if np.issubdtype(ids.dtype, np.integer):
                return torch.from_numpy(ids.astype(np.int64))
            if ids.dtype.kind in "US":
                return [str(x) for x in ids]
            raise TypeError(f"raw ids of dtype {ids.dtype} cannot be saved; use integers or strings")

        state = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
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
            "user_ids": ids_out(self.user_ids_),
            "item_ids": ids_out(self.item_ids_),
        }
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"MatrixFactorization.save: no such directory: {folder}")
        if os.path.isdir(path):
            raise IsADirectoryError(f"MatrixFactorization.save: {path} is a directory")
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

    @classmethod
    def load(cls, path: "os.PathLike[str] | str",
             map_location: Optional[Any] = None) -> "MatrixFactorization":
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
        path = os.fspath(path)
        target = None
        if map_location is not None:
            try:
                target = torch.device(map_location)
            except (RuntimeError, TypeError, ValueError) as exc:
                raise ValueError(f"map_location must be a device such as 'cpu' or 'cuda:0', got "
                                 f"{map_location!r} ({exc})") from None
            problem = _device_problem(target)
            if problem is not None:
                raise ValueError(f"map_location={str(target)!r} cannot hold the model: {problem}")
        if not os.path.exists(path):
            raise FileNotFoundError(f"MatrixFactorization.load: no such file: {path}")
        try:
            # weights_only: a foreign or malicious pickle is refused, never executed
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError,
                AttributeError, ImportError, IndexError, KeyError, OSError,
                UnicodeDecodeError) as exc:
            if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            if "weights_only" in first:
                # torch's own advice (weights_only=False) would run arbitrary code from the file.
                first = "not a safe torch.save file of tensors and plain values"
            raise ValueError(f"{path} is not a readable MatrixFactorization file (corrupt, "
                             f"truncated or not written by save): {type(exc).__name__}: "
                             f"{first[:200]}") from None
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a saved MatrixFactorization")
        if state.get("version") != _FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported format version {state.get('version')!r}")
        if target is None:
            try:
                target = torch.device(state.get("device"))
            except (RuntimeError, TypeError, ValueError) as exc:
                raise ValueError(f"{path} holds a malformed MatrixFactorization: device "
                                 f"{state.get('device')!r}: {exc}") from None
            problem = _device_problem(target)
            if problem is not None:
                raise ValueError(f"{path} was saved on {target}, which is unavailable here: "
                                 f"{problem}; load it with map_location='cpu' (or another "
                                 "available device)")
        try:
            model = cls._from_state(state, target)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise ValueError(f"{path} holds a malformed MatrixFactorization: "
                             f"{type(exc).__name__}: {exc}") from None
        return model

    @classmethod
    def _from_state(cls, state: Dict[str, Any], device: torch.device) -> "MatrixFactorization":
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
        for name, v in (("n_users", n_users), ("n_items", n_items)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        tensors = state["tensors"]
        rank = int(params["rank"])
        expected = {"user_factors": (params["dtype"], (n_users, rank)),
                    "item_factors": (params["dtype"], (n_items, rank)),
                    "user_bias": (params["dtype"], (n_users,)),
                    "item_bias": (params["dtype"], (n_items,)),
                    "user_counts": (torch.int64, (n_users,)),
                    "item_counts": (torch.int64, (n_items,)),
                    "seen_indptr": (torch.int64, (n_users + 1,)),
                    "seen_items": (torch.int64, None)}
        for name, (dtype, shape) in expected.items():
            t = tensors[name]
            if not isinstance(t, Tensor) or t.dtype != dtype or (
                    shape is not None and tuple(t.shape) != shape) or (
                    shape is None and t.dim() != 1):
                got = (f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor)
                       else type(t).__name__)
                raise ValueError(f"tensor {name!r} must be {dtype} of shape "
                                 f"{shape if shape is not None else '(nnz,)'}, got {got}")
        indptr, seen = tensors["seen_indptr"], tensors["seen_items"]
        if (int(indptr[0]) != 0 or int(indptr[-1]) != seen.numel()
                or bool((indptr[1:] < indptr[:-1]).any())
                or (seen.numel() and (int(seen.min()) < 0 or int(seen.max()) >= n_items))):
            raise ValueError("the seen-items index is inconsistent")
        for name in ("user_factors", "item_factors", "user_bias", "item_bias"):
            if not bool(torch.isfinite(tensors[name]).all()):
                raise ValueError(f"tensor {name!r} holds NaN or Inf")
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

        def ids_in(ids, n, side):
            if ids is None:
                return None
            out = ids.numpy() if isinstance(ids, Tensor) else np.asarray(ids)
            if out.shape != (n,):
                raise ValueError(f"{side}_ids must have {n} entries, got shape {out.shape}")
            return out

        model.user_ids_ = ids_in(state["user_ids"], n_users, "user")
        model.item_ids_ = ids_in(state["item_ids"], n_items, "item")
        model._lookups = {}
        return model
