"""``RecommenderBase``: what every collaborative-filtering model of mfext shares.

In the manner of implicit's ``RecommenderBase``, a model is a small class on
this base that states its parameters and how it trains; the base owns the rest:

* the fit template: parameters, data and validation set are checked and the
  new model is built apart from this one, then adopted whole at the end (a
  failure leaves the model as it was; a divergence adopts the last finite
  epoch);
* the input forms (:mod:`~mfext.recommenders.inputs`), the model-size and
  dtype checks (:mod:`~mfext.recommenders.limits`) and the device choice;
* the raw-id maps (:mod:`~mfext.recommenders.ids`), ``predict``, ``score`` and
  the scikit-learn protocol (:mod:`~mfext.recommenders.predict`, parameters in
  :mod:`~mfext.recommenders.params`);
* ``recommend``, ``similar_items``, ``similar_users``
  (:mod:`~mfext.recommenders.serving`), ``fold_in`` and
  ``partial_fit_users``/``partial_fit_items``
  (:mod:`~mfext.recommenders.fold_in`), ``save``/``load``
  (:mod:`~mfext.recommenders.persistence`) and ``to(device)``.

A model defines ``__init__`` (its parameters, among them ``rank``, ``dtype``,
``device`` and ``random_state``), ``_resolved`` (their checks and
defaults; a dict with at least ``rank``, ``seed`` and ``n_threads``),
``_train`` (the solvers and the epochs) and ``_solve_rows`` (fold-in), and
may refine the ``_check_device``, ``_fit_systems``, ``_has_biases`` and
``_consistent_params`` hooks.

Fitted state (the same for every model): ``user_factors_`` (n_users_, rank),
``item_factors_`` (n_items_, rank), ``user_bias_`` (n_users_,),
``item_bias_`` (n_items_,) (zeros for a model without biases),
``global_mean_``, ``rating_mean_``, ``user_counts_``/``item_counts_`` (int64),
the seen-items index (``_seen_indptr`` (n_users_ + 1,), ``_seen_items``),
``user_ids_``/``item_ids_``, ``history_``, ``n_iter_``, ``best_epoch_``.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .._library import build_info
from ..distributed import get_communicator
from . import solvers
from .fold_in import FoldInMixin
from .ids import IdMapsMixin
from .inputs import Triple, canonical_order, pairs_to_triple, to_triple
from .limits import (check_fit_memory, check_fits_dtype, check_model_size, device_problem,
                     sum_float64)
from .params import ParamsMixin
from .persistence import PersistenceMixin
from .predict import PredictMixin
from .serving import ServingMixin

__all__ = ["RecommenderBase"]

# The fitted tensors, moved together by ``to``.
_FITTED_TENSORS = ("user_factors_", "item_factors_", "user_bias_", "item_bias_", "user_counts_",
                   "item_counts_", "_seen_indptr", "_seen_items")


class RecommenderBase(ParamsMixin, IdMapsMixin, PredictMixin, ServingMixin, FoldInMixin,
                      PersistenceMixin):
    """Base of the collaborative-filtering models (see the module docstring)."""

    # Private attributes a fit sets (with the public ones, which end with "_").
    _FIT_STATE = frozenset({"_comm", "_device", "_lookups", "_seen_indptr", "_seen_items"})

    # ------------------------------------------------------------------ model hooks

    def _resolved(self) -> Dict[str, Any]:
        """Checked parameters with the defaults filled in (each model defines it)."""
        raise NotImplementedError(f"{type(self).__name__} does not define _resolved")

    def _train(self, rows: Tensor, cols: Tensor, vals: Tensor, prm: Dict[str, Any],
               val: Optional[Tuple[Tensor, Tensor, Tensor]], patience: Optional[int],
               start: float) -> None:
        """Train on the prepared ratings and set the factors (each model defines it).

        rows, cols (nnz,) int64 and vals (nnz,) model dtype, in canonical
        order on the model device; ``val`` the validation (rows, cols,
        float64 ratings) in the model's index space; the base has set the
        sizes, counts, means, id maps and the seen-items index.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define _train")

    def _check_device(self, device: torch.device) -> None:
        """Refuse a device the model cannot train on (default: any device)."""

    def _fit_systems(self, m: int, n: int, distributed: bool, device: torch.device) -> int:
        """Rows of normal equations a fit holds at once (for the memory check; default 0)."""
        return 0

    def _fit_label(self) -> str:
        """The fit's kind in the memory error (default: the class name)."""
        return type(self).__name__

    def _fit_working_memory(self, nnz: int, m: int, n: int, rank: int) -> int:
        """Bytes a fit holds besides its input, estimated from above, for check_fit_memory.

        48 bytes a rating (the fit's canonical copy in int32 ids, a solver's
        own layout or CSR orders, the counting sorts' scratch) and 8 copies of
        the factors (initial draws in float64, gradients or CG vectors,
        snapshots). Measured with ``benchmarks/scale.py`` at 10M ratings and
        k = 128, the fits hold 0.45 to 0.9 of this.
        """
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        factors = (m + n) * (rank + 1) * itemsize
        return 48 * nnz + 8 * factors

    def _has_biases(self) -> bool:
        """Whether the model fits a global mean and user/item biases (default: no)."""
        return False

    def _consistent_params(self, prm: Dict[str, Any]) -> Dict[str, Any]:
        """Values every rank of a distributed fit must agree on."""
        return dict(rank=prm["rank"], dtype=self.dtype, seed=prm["seed"])

    # ------------------------------------------------------------------ fit

    def fit(self, X: Any, y: Any = None, *, validation: Any = None,
            early_stopping_rounds: Optional[int] = None,
            distributed: Optional[bool] = None) -> Any:
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
            False never.

        Returns
        -------
        self

        Raises
        ------
        TypeError, ValueError
            Bad input (see :mod:`mfext.recommenders.inputs`) or parameters,
            ratings that overflow the model dtype.
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

    def _blank(self) -> Any:
        """An unfitted model with this one's constructor parameters (the same objects)."""
        work = object.__new__(type(self))
        for name in self._param_names():
            setattr(work, name, getattr(self, name))
        return work

    def _adopt(self, work: "RecommenderBase") -> None:
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
        check_fits_dtype(data.vals, self.dtype, "X" if y is None else "y")
        device = self._resolve_device(data)
        m, n = data.shape if data.shape is not None else (
            int(data.rows.max()) + 1, int(data.cols.max()) + 1)
        comm = self._comm = get_communicator(distributed)
        check_model_size(m, n, prm["rank"], self.dtype, device, "X",
                         systems=self._fit_systems(m, n, comm.distributed, device))
        nnz = data.vals.numel()
        check_fit_memory(self._fit_working_memory(nnz, m, n, prm["rank"]), device,
                         f"fitting {nnz:,} ratings ({m:,} users x {n:,} items, rank "
                         f"{prm['rank']}, {self._fit_label()})")
        # The id maps first: the validation set is matched through them, and
        # checked before anything expensive happens.
        self.user_ids_, self.item_ids_ = data.user_ids, data.item_ids
        self._lookups: Dict[str, Any] = {}
        val = None
        if validation is not None:
            vt = to_triple(validation, "validation")
            vr, vc = self._map_triple(vt, "validation")
            val = (vr.to(device), vc.to(device), vt.vals.to(device=device, dtype=torch.float64))
        if comm.distributed:
            n = max(comm.all_gather_objects(n, "item count"))
            comm.check_consistent(**self._consistent_params(prm),
                                  validation=validation is not None)
        perm = canonical_order(data.rows, data.cols, m, n)
        rows, cols, vals = data.rows, data.cols, data.vals
        if max(m, n) < 2**31:  # the fit's own ids in int32: 8 bytes a rating less
            rows, cols = rows.to(torch.int32), cols.to(torch.int32)
        if perm is not None:
            rows, cols, vals = rows[perm], cols[perm], vals[perm]
            del perm
        rows, cols = rows.to(device), cols.to(device)
        vals = vals.to(device=device, dtype=self.dtype)

        self.n_users_, self.n_items_ = m, n
        self._device = device
        self.rating_mean_ = (comm.sum_scalar(sum_float64(vals), "rating sum")
                             / comm.sum_scalar(float(vals.numel()), "rating count"))
        self.global_mean_ = self.rating_mean_ if self._has_biases() else 0.0
        self.user_counts_ = torch.bincount(rows, minlength=m)
        self.item_counts_ = torch.bincount(cols, minlength=n)
        # The canonical order is by user, then item: the user CSR of the
        # training items is its counts and cols itself (no sort, no copy).
        self._seen_indptr = torch.zeros(m + 1, dtype=torch.int64, device=device)
        torch.cumsum(self.user_counts_, 0, out=self._seen_indptr[1:])
        self._seen_items = cols
        self._train(rows, cols, vals, prm, val, early_stopping_rounds, start)

    def _resolve_device(self, data: Optional[Triple]) -> torch.device:
        """The device of the fit: ``device``, else the data's, else the CPU; checked."""
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
        self._check_device(device)
        return device

    def _set_factors(self, f: solvers.Factors, copy: bool = True) -> None:
        """Publish factors as the fitted attributes (copies unless ``copy=False``)."""
        W, Ht, bu, bi = ((t.clone() if copy else t) for t in (f.W, f.Ht, f.bu, f.bi))
        self.user_factors_, self.item_factors_ = W, Ht
        self.user_bias_, self.item_bias_ = bu, bi

    def _seen_interactions(self) -> Tuple[Tensor, Tensor, Tensor]:
        """The training (user, item) pairs the model excludes from ``recommend``.

        Reads the seen-items index only, so it also serves during a fit, once
        the base has built that index.

        Returns
        -------
        rows, cols : Tensor, (s,), int64, model device, in (user, item) order
        vals : Tensor, (s,), ones in the model dtype (a form every input accepts)
        """
        counts = self._seen_indptr[1:] - self._seen_indptr[:-1]
        rows = torch.repeat_interleave(torch.arange(self.n_users_, device=counts.device), counts)
        ones = torch.ones(self._seen_items.numel(), dtype=self.dtype, device=counts.device)
        return rows, self._seen_items, ones

    def _check_fitted(self) -> None:
        if not hasattr(self, "user_factors_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit first")

    # ------------------------------------------------------------------ devices

    def to(self, device: Any) -> Any:
        """Move the fitted model to ``device`` (e.g. ``"cpu"``, ``"cuda:0"``); returns self.

        Every fitted tensor moves at once (a refused move changes nothing);
        predictions, recommendations and ``save`` then work there. The
        ``device`` parameter, which a refit uses, is left as it is.

        Raises
        ------
        RuntimeError
            The model is not fitted.
        ValueError
            ``device`` is not a device, or cannot hold tensors here (no CUDA,
            a missing GPU index, a build without CUDA kernels, ``meta``).
        """
        self._check_fitted()
        try:
            target = torch.device(device)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ValueError(f"device must be a device such as 'cpu' or 'cuda:0', got "
                             f"{device!r} ({exc})") from None
        problem = device_problem(target)
        if problem is not None:
            raise ValueError(f"device={str(target)!r} cannot hold the model: {problem}")
        moved = {name: getattr(self, name).to(target) for name in _FITTED_TENSORS}
        for name, t in moved.items():
            setattr(self, name, t)
        self._device = target
        return self
