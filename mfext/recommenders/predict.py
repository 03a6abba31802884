"""Rating predictions of a fitted recommender and the scikit-learn regressor protocol.

This module owns :class:`PredictMixin`: ``predict`` of (user, item) pairs with
the fallback for users and items unknown to the model, ``score`` (RMSE on
ratings, or the R² of scikit-learn pairs) and the scikit-learn tags. It relies
on the fitted state the base sets and on
:class:`~mfext.recommenders.ids.IdMapsMixin` for ids; scikit-learn itself stays
optional (imported only by ``__sklearn_tags__``, which scikit-learn calls).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import Tensor

from . import solvers
from .inputs import pair_columns, pairs_to_triple, to_triple

__all__ = ["PredictMixin"]


class PredictMixin:
    """``predict``, ``score`` and the scikit-learn protocol of a rating model."""

    # scikit-learn before 1.6 reads the estimator type from this attribute.
    _estimator_type = "regressor"

    def _predict_index(self, users: Tensor, items: Tensor) -> Tensor:
        """Predictions (s,) for index tensors (s,) on the model device; unknown ids fall back."""
        f = solvers.Factors(self.user_factors_, self.item_factors_, self.user_bias_,
                            self.item_bias_)
        biases = self._has_biases()
        ku, ki = users < self.n_users_, items < self.n_items_
        if bool(ku.all()) and bool(ki.all()):
            return solvers.predict_entries(f, self.global_mean_, biases, users, items)
        uu, ii = torch.where(ku, users, 0), torch.where(ki, items, 0)
        both = ku & ki
        dot = solvers.entry_dots(f.W, f.Ht, uu, ii)
        if biases:
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
