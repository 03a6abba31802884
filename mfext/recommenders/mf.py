"""``MatrixFactorization``: explicit-ratings matrix factorization on the recommender base.

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

This module owns what is particular to the model: its parameters and their
checks, the solver defaults, and how a fit builds its solvers (single-process
or data-parallel) and its fold-in solve. Everything else (input forms, id
maps, predict, recommend, fold_in, save/load, devices) is the
:class:`~mfext.recommenders.base.RecommenderBase`'s; the epoch math is in
:mod:`mfext.recommenders.solvers`, and the epochs run on the shared loop of
:mod:`mfext.training` (through :mod:`mfext.recommenders.fitting`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from . import distributed_solvers as dist_solvers
from . import solvers
from .base import RecommenderBase
from .fitting import fit_solver, rating_validation
from .limits import num_threads
from .params import check_integer, check_number

__all__ = ["MatrixFactorization"]

_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "sgd": dict(reg=0.065, bias_reg=0.01, lr=0.03, lr_decay=0.92, max_iter=40),
    "als": dict(reg=0.3, bias_reg=None, lr=None, lr_decay=None, max_iter=10),  # bias_reg: reg
    "adam": dict(reg=0.08, bias_reg=0.01, lr=0.01, lr_decay=None, max_iter=300),
}


class MatrixFactorization(RecommenderBase):
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
    als_solver : {"cholesky", "cg"}
        How ALS solves each half-step: ``"cholesky"`` (default) exactly, in
        O(nnz k^2 + rows k^3); ``"cg"`` with ``als_cg_steps`` conjugate-gradient
        steps warm-started from the current factors, in O(nnz k) a step, on the
        implicit-feedback CG kernel (weight 1, the ratings as targets, the
        ridge as a diagonal scaled per row). Single-process fits only.
    als_cg_steps : int
        CG steps per half-step with ``als_solver="cg"``, >= 1 (default 3).

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
    setup_seconds_ : float
        Seconds ``fit`` spent before the first epoch (checks, ids, canonical
        order, CSR orders, blocks, initial factors).
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

    The methods come from :class:`~mfext.recommenders.base.RecommenderBase`:
    ``fit``, ``predict``, ``score``, ``recommend`` (with ``items`` and
    ``filter_items``), ``similar_items``, ``similar_users``, ``fold_in``,
    ``partial_fit_users``, ``partial_fit_items``, ``save``, ``load``, ``to``,
    ``user_index``, ``item_index``. Fold-in and the partial fits solve each
    row in closed form (one ALS step) with this model's ``reg``, ``bias_reg``
    and, for ``solver="als"``, ``als_reg_exponent`` (else exponent 1).
    A data-parallel fit (``fit(..., distributed=True)``, see
    :meth:`~mfext.recommenders.base.RecommenderBase.fit`): ``sgd`` runs DSGD,
    ``als`` sums the items' normal equations, ``adam`` the item gradients.
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
        als_solver: str = "cholesky",
        als_cg_steps: int = 3,
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
        self.als_solver = als_solver
        self.als_cg_steps = als_cg_steps

    # The "format" field of saved files (unchanged since the first release).
    _FORMAT = "mfext.MatrixFactorization"

    # ------------------------------------------------------------------ parameters

    def _resolved(self) -> Dict[str, Any]:
        """Checked parameters with the solver defaults filled in."""
        if self.solver not in _DEFAULTS:
            raise ValueError(f"solver must be one of {sorted(_DEFAULTS)}, got {self.solver!r}")
        d = dict(_DEFAULTS[self.solver])
        out: Dict[str, Any] = {}
        number, integer = check_number, check_integer
        out["rank"] = integer("rank", self.rank, 1)
        out["reg"] = number("reg", d["reg"] if self.reg is None else self.reg, 0.0, False)
        bias_reg = self.bias_reg if self.bias_reg is not None else d["bias_reg"]
        out["bias_reg"] = number("bias_reg", out["reg"] if bias_reg is None else bias_reg, 0.0,
                                 False)
        out["max_iter"] = integer("max_iter",
                                  d["max_iter"] if self.max_iter is None else self.max_iter, 1)
        lr = self.lr if self.lr is not None else d["lr"]
        out["lr"] = None if lr is None else number("lr", lr, 0.0, True)
        decay = self.lr_decay if self.lr_decay is not None else d["lr_decay"]
        out["lr_decay"] = None if decay is None else number("lr_decay", decay, 0.0, True, 1.0)
        # init_std = 0 would start every factor at 0, where the gradients of the
        # factors vanish too: every solver would fit the biases only, silently.
        out["init_std"] = number("init_std", self.init_std, 0.0, True)
        out["als_reg_exponent"] = number("als_reg_exponent", self.als_reg_exponent, -math.inf,
                                         False)
        if self.als_solver not in ("cholesky", "cg"):
            raise ValueError(f"als_solver must be 'cholesky' or 'cg', got {self.als_solver!r}")
        out["als_cg_steps"] = integer("als_cg_steps", self.als_cg_steps, 1)
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

    # ------------------------------------------------------------------ base hooks

    def _check_device(self, device: torch.device) -> None:
        if device.type not in ("cpu", "cuda") and self.solver in ("sgd", "als"):
            raise NotImplementedError(
                f"device={str(device)!r} is not supported by solver={self.solver!r}, which has "
                f"CPU and CUDA kernels only; use device='cpu', a CUDA device, or solver='adam' "
                f"on {device}")

    def _fit_systems(self, m: int, n: int, distributed: bool, device: torch.device) -> int:
        # The local ALS on the CPU solves each row in a thread's own scratch
        # (als_solve): one system a thread. The data-parallel one holds every
        # item's normal equations, to sum them; CUDA is counted as if all rows.
        if self.solver != "als":
            return 0
        if distributed:
            return max(m, n)
        if device.type == "cpu":
            return min(max(m, n), int(self.n_threads or torch.get_num_threads()))
        return max(m, n)

    def _fit_label(self) -> str:
        return f"solver {self.solver!r}"

    def _fit_working_memory(self, nnz: int, m: int, n: int, rank: int) -> int:
        need = super()._fit_working_memory(nnz, m, n, rank)
        if self.solver == "adam":  # Adam's two moments, the gradients, the augmented copies
            itemsize = torch.empty((), dtype=self.dtype).element_size()
            need += 4 * (m + n) * (rank + 2) * itemsize
        return need

    def _has_biases(self) -> bool:
        return bool(self.biases)

    def _consistent_params(self, prm: Dict[str, Any]) -> Dict[str, Any]:
        return dict(solver=self.solver, rank=prm["rank"], dtype=self.dtype,
                    max_iter=prm["max_iter"], seed=prm["seed"], biases=bool(self.biases))

    # ------------------------------------------------------------------ training

    def _train(self, rows: Tensor, cols: Tensor, vals: Tensor, prm: Dict[str, Any],
               val: Optional[Tuple[Tensor, Tensor, Tensor]], patience: Optional[int],
               start: float) -> None:
        comm = self._comm
        m, n, device = self.n_users_, self.n_items_, self._device
        gen = torch.Generator().manual_seed(prm["seed"])
        problem = solvers.RatingsProblem(rows, cols, vals, m, n, self.global_mean_,
                                         bool(self.biases), bool(self.nonnegative))
        with num_threads(prm["n_threads"]):
            if comm.distributed:
                counts = dist_solvers.global_item_counts(problem, comm)
                f = self._init_distributed(problem, prm, gen, device, counts)
                solver = self._make_distributed_solver(problem, f, prm, gen, counts)
            else:
                f = solvers.init_factors(problem, prm["rank"], prm["init_std"], gen, self.dtype,
                                         device)
                solver = self._make_solver(problem, f, prm, gen)
            fit_solver(self, solver, max_iter=prm["max_iter"],
                       evaluate=None if val is None else rating_validation(self, solver, val),
                       patience=patience, describe_divergence=self._divergence_message(prm),
                       start=start)

    def _divergence_message(self, prm: Dict[str, Any]
                            ) -> Callable[[int, float, Optional[int]], str]:
        """The message of a fit that diverged in ``epoch`` (the loop's hook)."""
        def describe(epoch: int, value: float, last_finite: Optional[int]) -> str:
            return (f"MatrixFactorization(solver={self.solver!r}) diverged in epoch {epoch}: a "
                    f"factor or the training error became NaN/Inf (lr={prm['lr']}, "
                    f"reg={prm['reg']}). The model keeps the factors of epoch {epoch - 1}; "
                    "lower lr or raise reg.")
        return describe

    def _make_solver(self, p: solvers.RatingsProblem, f: solvers.Factors, prm: Dict[str, Any],
                     gen: torch.Generator) -> solvers.RatingsSolver:
        if self.solver == "sgd":
            return solvers.SgdSolver(p, f, lr=prm["lr"], lr_decay=prm["lr_decay"],
                                     reg=prm["reg"], bias_reg=prm["bias_reg"], gen=gen,
                                     n_threads=torch.get_num_threads())
        if self.solver == "als":
            return solvers.AlsSolver(p, f, reg=prm["reg"], bias_reg=prm["bias_reg"],
                                     exponent=prm["als_reg_exponent"],
                                     cg_steps=prm["als_cg_steps"] if self.als_solver == "cg"
                                     else None)
        return solvers.AdamSolver(p, f, lr=prm["lr"], reg=prm["reg"], bias_reg=prm["bias_reg"])

    def _init_distributed(self, p: solvers.RatingsProblem, prm: Dict[str, Any],
                          gen: torch.Generator, device: torch.device,
                          item_counts: Tensor) -> solvers.Factors:
        """This rank's rows of the factors one process would draw for all users."""
        comm = self._comm
        row0, m_total = comm.row_offset(p.m)
        rated_items = torch.nonzero(item_counts).flatten()
        proxy = solvers.RatingsProblem(p.rows.cpu() + row0, rated_items, p.vals, m_total, p.n,
                                       p.mu, p.biases, p.nonnegative)
        full = solvers.init_factors(proxy, prm["rank"], prm["init_std"], gen, self.dtype, device)
        W = full.W[row0:row0 + p.m].contiguous()
        return solvers.Factors(W, full.Ht, full.bu[row0:row0 + p.m].contiguous(), full.bi)

    def _make_distributed_solver(self, p: solvers.RatingsProblem, f: solvers.Factors,
                                 prm: Dict[str, Any], gen: torch.Generator,
                                 counts: Tensor) -> solvers.RatingsSolver:
        comm = self._comm
        if self.solver == "sgd":
            return dist_solvers.DsgdSolver(p, f, comm, gen=gen, lr=prm["lr"],
                                           lr_decay=prm["lr_decay"], reg=prm["reg"],
                                           bias_reg=prm["bias_reg"],
                                           n_threads=torch.get_num_threads())
        if self.solver == "als":
            if self.als_solver == "cg":
                raise NotImplementedError("als_solver='cg' does not train data-parallel yet; "
                                          "use als_solver='cholesky' or distributed=False")
            return dist_solvers.DistributedAlsSolver(p, f, comm, item_counts=counts,
                                                     reg=prm["reg"], bias_reg=prm["bias_reg"],
                                                     exponent=prm["als_reg_exponent"])
        nnz_total = int(comm.sum_scalar(float(p.rows.numel()), "rating count"))
        return dist_solvers.DistributedAdamSolver(p, f, comm, nnz_total=nnz_total,
                                                  item_counts=counts, lr=prm["lr"],
                                                  reg=prm["reg"], bias_reg=prm["bias_reg"])

    # ------------------------------------------------------------------ fold-in

    def _fold_in_reg(self) -> Tuple[float, float, float]:
        prm = self._resolved()
        exponent = prm["als_reg_exponent"] if self.solver == "als" else 1.0
        return prm["reg"], prm["bias_reg"], exponent

    def _solve_rows(self, side: str, rows: Tensor, cols: Tensor, vals: Tensor,
                    n_rows: int) -> Tuple[Tensor, Optional[Tensor]]:
        """One closed-form ALS step for ``n_rows`` rows of ``side``, the other side fixed."""
        reg, bias_reg, exponent = self._fold_in_reg()
        if side == "user":
            f = solvers.Factors(self.user_factors_, self.item_factors_, self.user_bias_,
                                self.item_bias_)
        else:  # the same solve with the roles of users and items swapped
            f = solvers.Factors(self.item_factors_, self.user_factors_, self.item_bias_,
                                self.user_bias_)
        return solvers.fold_in_users(f, self.global_mean_, bool(self.biases),
                                     bool(self.nonnegative), rows, cols, vals, n_rows, reg=reg,
                                     bias_reg=bias_reg, exponent=exponent)
