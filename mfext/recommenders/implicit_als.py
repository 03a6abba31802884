"""``ImplicitALS``: implicit-feedback matrix factorization on the recommender base.

Hu, Koren and Volinsky (2008), weighted regularized matrix factorization: every
user-item pair counts, the interactions (plays, clicks, purchases) with a
confidence that grows with their strength, the other pairs as weak negatives
(see :mod:`mfext.recommenders.implicit_solvers` for the objective). Two
solvers: ``"cg"``, a few conjugate-gradient steps per half-step warm-started
from the current factors (as implicit's ALS does), and ``"cholesky"``, the
exact solve of every row's normal equations.

This module owns what is particular to the model: its parameters and their
checks, how a fit turns the input into interactions (values >= 0; duplicates
add up; a stored 0 is no interaction) and builds its solver, the validation
metrics, and the exact row solve behind ``fold_in`` and the partial fits
(implicit's ``recalculate_user``). Input forms, id maps, serving, save/load
and devices are the :class:`~mfext.recommenders.base.RecommenderBase`'s; the
epochs run on the shared loop of :mod:`mfext.training`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from . import implicit_solvers as isolvers
from .base import RecommenderBase
from .fitting import fit_solver
from .limits import num_threads, sum_float64
from .params import check_integer, check_number
from .solvers import Factors

__all__ = ["ImplicitALS"]

_SOLVERS = ("cg", "cholesky")
_CONFIDENCES = ("linear", "log")


class ImplicitALS(RecommenderBase):
    """Implicit-feedback ALS (Hu, Koren and Volinsky 2008).

    Parameters
    ----------
    rank : int
        Number of latent factors k.
    reg : float
        L2 weight of every factor, >= 0 (not scaled by counts, as in implicit).
    alpha : float
        Confidence scale, >= 0: ``c = 1 + alpha * r`` (``"linear"``) or
        ``1 + alpha * log(1 + r / epsilon)`` (``"log"``).
    max_iter : int
        ALS iterations (each: all users, then all items).
    solver : {"cg", "cholesky"}
    cg_steps : int
        Conjugate-gradient steps per half-step (``solver="cg"``), >= 1.
    confidence : {"linear", "log"}
    random_state : int or None
        Seed of the initial factors. None: a fresh seed.
    device : str, torch.device or None
        Where the model lives. None: the device of a tensor input, else CPU.
    dtype : torch.dtype
        float32 or float64.
    n_threads : int or None
        CPU threads during fit (None: torch's current setting).
    epsilon : float
        The ``"log"`` confidence's scale, > 0.
    calculate_training_loss : bool
        Record the full objective after every iteration in ``history_``
        (``train_loss``; one extra pass over the interactions).
    verbose : bool
        Print one line per iteration.

    Attributes
    ----------
    user_factors_ : Tensor, (n_users_, rank)
    item_factors_ : Tensor, (n_items_, rank)
    user_bias_, item_bias_ : Tensor, zeros (the model has no biases)
    user_counts_, item_counts_ : Tensor, int64  interactions per user / item
    n_users_, n_items_ : int
    user_ids_, item_ids_ : np.ndarray or None
    history_ : list of dict
        Per iteration: ``epoch``, ``train_loss`` (with
        ``calculate_training_loss``), the validation metrics, ``seconds``.
    setup_seconds_ : float
        Seconds ``fit`` spent before the first epoch (checks, ids, canonical
        order, CSR orders, blocks, initial factors).
    n_iter_ : int
    best_epoch_ : int or None
        The iteration with the best validation nDCG@10 (with ``validation``).

    Notes
    -----
    Input values are interaction strengths >= 0 (a ValueError names ``X``
    otherwise). Duplicate (user, item) entries add up; an entry whose value is
    0 is no interaction (neither trained on nor excluded by ``recommend``).
    Users or items without interactions get zero factors.
    ``fit(X, validation=V)`` scores P@10 and nDCG@10 of ``V`` after every
    iteration (:mod:`mfext.metrics`); ``early_stopping_rounds`` stops on nDCG@10.
    ``fold_in`` and ``partial_fit_users``/``partial_fit_items`` give each row
    the exact solve with the other side fixed (implicit's ``recalculate_user``).
    """

    def __init__(
        self,
        rank: int = 64,
        reg: float = 0.01,
        alpha: float = 1.0,
        max_iter: int = 15,
        solver: str = "cg",
        cg_steps: int = 3,
        confidence: str = "linear",
        random_state: Optional[int] = None,
        device: Optional[Any] = None,
        dtype: torch.dtype = torch.float32,
        n_threads: Optional[int] = None,
        epsilon: float = 1.0,
        calculate_training_loss: bool = False,
        verbose: bool = False,
    ) -> None:
        self.rank = rank
        self.reg = reg
        self.alpha = alpha
        self.max_iter = max_iter
        self.solver = solver
        self.cg_steps = cg_steps
        self.confidence = confidence
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.n_threads = n_threads
        self.epsilon = epsilon
        self.calculate_training_loss = calculate_training_loss
        self.verbose = verbose

    _FORMAT = "mfext.ImplicitALS"

    # ------------------------------------------------------------------ parameters

    def _resolved(self) -> Dict[str, Any]:
        """Checked parameters."""
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {list(_SOLVERS)}, got {self.solver!r}")
        if self.confidence not in _CONFIDENCES:
            raise ValueError(f"confidence must be one of {list(_CONFIDENCES)}, got "
                             f"{self.confidence!r}")
        out: Dict[str, Any] = {}
        out["rank"] = check_integer("rank", self.rank, 1)
        out["reg"] = check_number("reg", self.reg, 0.0, False)
        out["alpha"] = check_number("alpha", self.alpha, 0.0, False)
        out["max_iter"] = check_integer("max_iter", self.max_iter, 1)
        out["cg_steps"] = check_integer("cg_steps", self.cg_steps, 1)
        out["epsilon"] = check_number("epsilon", self.epsilon, 0.0, True)
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {self.dtype!r}")
        out["n_threads"] = (None if self.n_threads is None
                            else check_integer("n_threads", self.n_threads, 1))
        if self.random_state is not None:
            out["seed"] = check_integer("random_state", self.random_state, 0)
            if out["seed"] >= 2**64:
                raise ValueError(f"random_state must be below 2**64, got {self.random_state!r}")
        else:
            out["seed"] = int(np.random.SeedSequence().entropy % (2**63))
        for name in ("calculate_training_loss", "verbose"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        return out

    # ------------------------------------------------------------------ base hooks

    def _check_device(self, device: torch.device) -> None:
        if device.type not in ("cpu", "cuda"):
            raise NotImplementedError(
                f"device={str(device)!r} is not supported by ImplicitALS, which has CPU and "
                "CUDA kernels only; use device='cpu' or a CUDA device")

    def _consistent_params(self, prm: Dict[str, Any]) -> Dict[str, Any]:
        return dict(solver=self.solver, rank=prm["rank"], dtype=self.dtype,
                    max_iter=prm["max_iter"], seed=prm["seed"])

    # ------------------------------------------------------------------ training

    def _interactions(self, rows: Tensor, cols: Tensor, vals: Tensor, n_cols: int,
                      name: str = "X") -> Tuple[Tensor, Tensor, Tensor]:
        """One entry per interacting pair (duplicates summed, zeros dropped); values >= 0."""
        if vals.numel() and bool((vals < 0).any()):
            bad = int((vals < 0).nonzero()[0, 0])
            raise ValueError(f"{name}: interaction strengths must be >= 0, got "
                             f"{float(vals[bad])} at entry {bad}")
        return isolvers.interactions(rows, cols, vals, n_cols)

    def _train(self, rows: Tensor, cols: Tensor, vals: Tensor, prm: Dict[str, Any],
               val: Optional[Tuple[Tensor, Tensor, Tensor]], patience: Optional[int],
               start: float) -> None:
        if self._comm.distributed:
            raise NotImplementedError("ImplicitALS does not train data-parallel yet; "
                                      "pass distributed=False")
        m, n, device = self.n_users_, self.n_items_, self._device
        rows, cols, vals = self._interactions(rows, cols, vals, n)
        # The seen-items index and the counts hold interactions only.
        self.user_counts_ = torch.bincount(rows, minlength=m)
        self.item_counts_ = torch.bincount(cols, minlength=n)
        # Still in canonical order: the seen-items CSR is the counts and cols itself.
        self._seen_indptr = torch.zeros(m + 1, dtype=torch.int64, device=rows.device)
        torch.cumsum(self.user_counts_, 0, out=self._seen_indptr[1:])
        self._seen_items = cols
        self.rating_mean_ = sum_float64(vals) / vals.numel() if vals.numel() else 0.0
        weight = isolvers.confidence(vals, prm["alpha"], self.confidence, prm["epsilon"])
        problem = isolvers.ImplicitProblem(rows, cols, weight.contiguous(), m, n)
        W, Ht = self._init_factors(prm, m, n, rows, cols, device)
        f = Factors(W, Ht, W.new_zeros(m), Ht.new_zeros(n))
        solver = isolvers.ImplicitAlsSolver(problem, f, reg=prm["reg"], method=self.solver,
                                            cg_steps=prm["cg_steps"],
                                            measure_loss=bool(self.calculate_training_loss))
        evaluate = None
        if val is not None:
            evaluate = self._validation(solver, val)
        with num_threads(prm["n_threads"]):
            fit_solver(self, solver, max_iter=prm["max_iter"], evaluate=evaluate,
                       patience=patience, describe_divergence=self._divergence_message(prm),
                       start=start, loss_name="train_loss",
                       select="val_ndcg@10" if evaluate is not None else None, maximize=True)

    def _init_factors(self, prm: Dict[str, Any], m: int, n: int, rows: Tensor, cols: Tensor,
                      device: torch.device) -> Tuple[Tensor, Tensor]:
        """Uniform [0, 0.01) factors drawn on the CPU (as implicit); zero without interactions."""
        gen = torch.Generator().manual_seed(prm["seed"])
        k = prm["rank"]
        W = torch.rand(m, k, generator=gen, dtype=torch.float64) * 0.01
        Ht = torch.rand(n, k, generator=gen, dtype=torch.float64) * 0.01
        W[torch.bincount(rows.cpu(), minlength=m) == 0] = 0
        Ht[torch.bincount(cols.cpu(), minlength=n) == 0] = 0
        return (W.to(device=device, dtype=self.dtype).contiguous(),
                Ht.to(device=device, dtype=self.dtype).contiguous())

    def _validation(self, solver: "isolvers.ImplicitAlsSolver",
                    val: Tuple[Tensor, Tensor, Tensor]) -> Callable[[], Dict[str, float]]:
        """``evaluate()``: P@10 and nDCG@10 of the validation interactions, train items excluded."""
        from .. import metrics

        vr, vc, vv = val
        keep = vv > 0
        if not bool(keep.any()):
            raise ValueError("validation holds no interaction (no value > 0)")
        if bool((vv < 0).any()):
            raise ValueError("validation: interaction strengths must be >= 0")
        test = (vr[keep], vc[keep], vv[keep])
        train = self._seen_interactions()

        def evaluate() -> Dict[str, float]:
            res = metrics.ranking_metrics((solver.f.W, solver.f.Ht), train, test, k=10)
            return {"val_precision@10": res["precision"], "val_ndcg@10": res["ndcg"]}

        return evaluate

    def _divergence_message(self, prm: Dict[str, Any]
                            ) -> Callable[[int, float, Optional[int]], str]:
        def describe(epoch: int, value: float, last_finite: Optional[int]) -> str:
            return (f"ImplicitALS(solver={self.solver!r}) diverged in iteration {epoch}: a "
                    f"factor or the loss became NaN/Inf (alpha={prm['alpha']}, "
                    f"reg={prm['reg']}). The model keeps the factors of iteration "
                    f"{epoch - 1}; raise reg or lower alpha.")
        return describe

    # ------------------------------------------------------------------ fold-in

    def _solve_rows(self, side: str, rows: Tensor, cols: Tensor, vals: Tensor,
                    n_rows: int) -> Tuple[Tensor, Optional[Tensor]]:
        """The exact solve (Cholesky) of ``n_rows`` rows of ``side``, the other side fixed."""
        prm = self._resolved()
        Y = self.item_factors_ if side == "user" else self.user_factors_
        n_other = Y.shape[0]
        perm = torch.argsort(rows * n_other + cols, stable=True)
        rows, cols, vals = self._interactions(rows[perm], cols[perm], vals[perm], n_other)
        weight = isolvers.confidence(vals, prm["alpha"], self.confidence, prm["epsilon"])
        p_side = isolvers.csr_side(rows, cols, weight, n_rows, n_other)
        X = torch.zeros(n_rows, Y.shape[1], dtype=Y.dtype, device=Y.device)
        isolvers.implicit_half_step(p_side, Y, X, prm["reg"], "cholesky", 1)
        return X, None
