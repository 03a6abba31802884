"""Updating a fitted recommender for new or changed users and items, the other side fixed.

This module owns :class:`FoldInMixin`: ``fold_in`` (factors of new users from
their ratings, optionally appended), ``partial_fit_users`` and
``partial_fit_items`` (recompute the given users' or items' factors from their
complete new ratings, appending the ones unknown to the model), and the
rebuilding of the seen-items index and the counts that goes with them. The
row solve itself is the model's (``_solve_rows``: for matrix factorization
the closed-form ALS step of :mod:`mfext.recommenders.solvers`); ids come from
:class:`~mfext.recommenders.ids.IdMapsMixin`, input forms from
:mod:`mfext.recommenders.inputs`. Every update computes the new state first
and assigns it at the end, so a rejected call changes nothing.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .inputs import Triple, as_ids, csr_by, to_triple
from .limits import check_fits_dtype, check_model_size

__all__ = ["FoldInMixin"]


class FoldInMixin:
    """``fold_in``, ``partial_fit_users`` and ``partial_fit_items``."""

    def _solve_rows(self, side: str, rows: Tensor, cols: Tensor, vals: Tensor,
                    n_rows: int) -> Tuple[Tensor, Optional[Tensor]]:
        """Factors (n_rows, rank) and biases (n_rows,) or None of ``side`` rows, the other fixed.

        rows (s,) in ``[0, n_rows)``, cols (s,) indices of the other side,
        vals (s,) in the model dtype, all on the model device. Each model
        defines it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define _solve_rows")

    def _other_side(self, t: Triple, side: str) -> Tensor:
        """The column ids (s,) of ``t`` in the model's index space of the side other than ``side``.

        A Ratings input's column raw ids are matched against the model's raw
        ids of that side; every id must be known (a ValueError naming X).
        """
        other = "item" if side == "user" else "user"
        model_ids = self.item_ids_ if other == "item" else self.user_ids_
        bound = self.n_items_ if other == "item" else self.n_users_
        cols = t.cols
        if t.item_ids is not None and model_ids is not None:
            same = t.item_ids.shape == model_ids.shape and np.array_equal(t.item_ids, model_ids)
            if not same:
                cols = self._raw_to_index(other, t.item_ids[cols.cpu().numpy()])
        if cols.numel() and int(cols.max()) >= bound:
            bad = int((cols >= bound).nonzero()[0, 0])
            raise ValueError(f"X: the {other} of rating {bad} is unknown to the model "
                             f"({bound} {other}s); fold_in needs known {other}s")
        return cols

    def _solve_new_rows(self, side: str, t: Triple, cols: Tensor,
                        n_rows: int) -> Tuple[Tensor, Tensor]:
        """Checked solve: factors (n_rows, rank) and biases (n_rows,) (zeros without biases)."""
        check_model_size(n_rows, 0, int(self.rank), self.dtype, self._device, "X", systems=n_rows)
        dev = self._device
        vals = t.vals.to(device=dev, dtype=self.dtype)
        factors, bias = self._solve_rows(side, t.rows.to(dev), cols.to(dev), vals, n_rows)
        if bias is None:
            bias = torch.zeros(n_rows, dtype=self.dtype, device=dev)
        return factors.contiguous(), bias.contiguous()

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
        factors : Tensor, (B, rank), model dtype and device
        biases : Tensor, (B,)  (zeros without biases)
        """
        self._check_fitted()
        t = to_triple(X, "X")
        check_fits_dtype(t.vals, self.dtype, "X")
        cols = self._other_side(t, "user")
        B = t.shape[0] if t.shape is not None else int(t.rows.max()) + 1
        factors, bias = self._solve_new_rows("user", t, cols, B)
        if append:
            self._append_users(factors, bias, t.rows.to(self._device), cols.to(self._device), B,
                               t.user_ids if user_ids is None else user_ids)
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

    # ------------------------------------------------------------------ partial fit

    def partial_fit_users(self, user_ids: Any, X: Any, *, raw_ids: Optional[bool] = None) -> Any:
        """Recompute the factors of the given users from their ratings, the items fixed.

        Each given user's factors and bias become the closed-form solution of
        :meth:`fold_in` on its row of ``X``, which replaces everything the
        model knew of that user: its ratings in ``X`` become its seen items
        (``exclude_seen``) and its count. Users unknown to the model are
        appended; other users and every item factor stay as they are.
        ``user_counts_`` and ``item_counts_`` are recounted from the updated
        seen ratings.

        Parameters
        ----------
        user_ids : array-like or Tensor, (B,)
            Distinct users. Raw ids (``raw_ids=True``): unknown ones are
            appended in the order given, as indices ``n_users_, n_users_ + 1,
            ...``. Indices (``raw_ids=False``, only for a model without raw
            user ids): an index ``>= n_users_`` grows the model to that index
            + 1, and the users in between get zero factors and no ratings.
        X : any fit input form, B rows
            Row ``r`` holds all the ratings of ``user_ids[r]`` (a user without
            ratings gets zero factors); items in the model's index space (a
            Ratings object is matched by raw item id), every one known.
        raw_ids : bool, optional
            Default: whether the model has raw user ids.

        Returns
        -------
        self
        """
        return self._partial_fit("user", user_ids, X, raw_ids)

    def partial_fit_items(self, item_ids: Any, X: Any, *, raw_ids: Optional[bool] = None) -> Any:
        """Recompute the factors of the given items from their ratings, the users fixed.

        The mirror of :meth:`partial_fit_users`: row ``r`` of ``X`` holds all
        the ratings of item ``item_ids[r]``, its columns are users in the
        model's index space (a Ratings object's column raw ids are matched
        against the model's raw user ids). Each given item's factors and bias
        are solved in closed form with the user factors fixed; its ratings in
        ``X`` replace the ones the model knew (the users' seen items follow);
        unknown items are appended as for users. ``user_counts_`` and
        ``item_counts_`` are recounted from the updated seen ratings.

        Parameters
        ----------
        item_ids : array-like or Tensor, (B,)
            Distinct items: raw ids (``raw_ids=True``) or indices.
        X : any fit input form, B rows (items) x users
        raw_ids : bool, optional
            Default: whether the model has raw item ids.

        Returns
        -------
        self
        """
        return self._partial_fit("item", item_ids, X, raw_ids)

    def _partial_targets(self, side: str, ids: Any,
                         raw_ids: bool) -> Tuple[Tensor, int, Optional[np.ndarray]]:
        """(indices (B,) int64 on the CPU, the side's new size, its new raw-id map or None)."""
        name = f"{side}_ids"
        n_now = self.n_users_ if side == "user" else self.n_items_
        model_ids = self.user_ids_ if side == "user" else self.item_ids_
        if raw_ids:
            raw = ids.cpu().numpy() if isinstance(ids, Tensor) else np.asarray(ids)
            idx = self._raw_to_index(side, raw, name)
            raw = raw.reshape(-1)
            if np.unique(raw).size != raw.size:
                raise ValueError(f"{name} must be distinct")
            new = idx >= n_now
            idx[new] = n_now + torch.arange(int(new.sum()))
            new_map = np.concatenate([model_ids, raw[new.numpy()]]) if bool(new.any()) else None
            return idx, n_now + int(new.sum()), new_map
        if isinstance(ids, Tensor) and ids.device != self._device:
            raise ValueError(f"{name} is on {ids.device} but the model is on {self._device}")
        idx = as_ids(ids, name).cpu()
        if torch.unique(idx).numel() != idx.numel():
            raise ValueError(f"{name} must be distinct")
        grow = int(idx.max()) + 1 if idx.numel() else 0
        if grow > n_now and model_ids is not None:
            raise ValueError(f"{name}: a model with raw {side} ids needs raw ids for new "
                             f"{side}s (raw_ids=True); indices must be below {n_now}")
        return idx, max(n_now, grow), None

    def _partial_fit(self, side: str, ids: Any, X: Any, raw_ids: Optional[bool]) -> Any:
        self._check_fitted()
        model_ids = self.user_ids_ if side == "user" else self.item_ids_
        if raw_ids is None:
            raw_ids = model_ids is not None
        elif not isinstance(raw_ids, (bool, np.bool_)):
            raise TypeError(f"raw_ids must be a bool, got {raw_ids!r}")
        idx, n_new, new_map = self._partial_targets(side, ids, bool(raw_ids))
        B = idx.numel()
        t = to_triple(X, "X", allow_empty=True)
        check_fits_dtype(t.vals, self.dtype, "X")
        if t.shape is not None and t.shape[0] != B:
            raise ValueError(f"X must have one row per entry of {side}_ids ({B}), got shape "
                             f"{t.shape}")
        if t.rows.numel() and int(t.rows.max()) >= B:
            raise ValueError(f"X: row {int(t.rows.max())} has no entry in {side}_ids ({B} ids)")
        cols = self._other_side(t, side)
        factors, bias = self._solve_new_rows(side, t, cols, B)
        dev = self._device
        idx_d = idx.to(dev)
        # The new state, built apart: grown copies, the given rows overwritten.
        F = self.user_factors_ if side == "user" else self.item_factors_
        b = self.user_bias_ if side == "user" else self.item_bias_
        F_new = torch.zeros(n_new, F.shape[1], dtype=F.dtype, device=dev)
        b_new = torch.zeros(n_new, dtype=b.dtype, device=dev)
        F_new[:F.shape[0]], b_new[:b.shape[0]] = F, b
        F_new[idx_d], b_new[idx_d] = factors, bias
        # The seen (user, item) pairs: the given rows' old ones out, their new ones in.
        seen_u, seen_i, _ = self._seen_interactions()
        replaced = torch.zeros(n_new, dtype=torch.bool, device=dev)
        replaced[idx_d] = True
        keep = ~replaced[seen_u if side == "user" else seen_i]
        mine, others = idx_d[t.rows.to(dev)], cols.to(dev)
        new_u, new_i = (mine, others) if side == "user" else (others, mine)
        n_users = n_new if side == "user" else self.n_users_
        n_items = n_new if side == "item" else self.n_items_
        all_u = torch.cat([seen_u[keep], new_u])
        all_i = torch.cat([seen_i[keep], new_i])
        indptr, order = csr_by(all_u, n_users)
        seen_items = all_i[order]
        user_counts = indptr[1:] - indptr[:-1]
        item_counts = torch.bincount(seen_items, minlength=n_items)
        # Adopt: plain assignments only.
        if side == "user":
            self.user_factors_, self.user_bias_, self.n_users_ = F_new, b_new, n_new
            if new_map is not None:
                self.user_ids_ = new_map
        else:
            self.item_factors_, self.item_bias_, self.n_items_ = F_new, b_new, n_new
            if new_map is not None:
                self.item_ids_ = new_map
        if new_map is not None:
            self._lookups.pop(side, None)
        self._seen_indptr, self._seen_items = indptr, seen_items
        self.user_counts_, self.item_counts_ = user_counts, item_counts
        return self
