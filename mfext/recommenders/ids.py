"""Raw-id maps of a fitted recommender: raw ids <-> indices, both sides.

This module owns :class:`IdMapsMixin`: the lookups from raw user/item ids (a
:class:`~mfext.datasets.Ratings` input or scikit-learn pairs bring them) to the
model's indices and back, the checks of id arguments, and the matching of
another input's id maps against the model's. It relies on the fitted state the
base sets (``user_ids_``, ``item_ids_``, ``n_users_``, ``n_items_``,
``_device``, ``_lookups``) and leaves input forms to
:mod:`mfext.recommenders.inputs`.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .inputs import Triple, as_ids

__all__ = ["IdMapsMixin"]


class IdMapsMixin:
    """Raw ids <-> indices of a fitted recommender (``user_ids_``/``item_ids_``: index -> raw)."""

    user_ids_: Optional[np.ndarray]
    item_ids_: Optional[np.ndarray]
    n_users_: int
    n_items_: int

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
        """User/item ids of any array form -> int64 indices (s,) on the model device."""
        if isinstance(x, Tensor) and x.device != self._device:
            raise ValueError(f"{name} is on {x.device} but the model is on {self._device}")
        if raw_ids:
            raw = x.cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
            return self._raw_to_index(side, raw, name).to(self._device)
        return as_ids(x, name).to(self._device)

    def _map_triple(self, t: Triple, name: str) -> Tuple[Tensor, Tensor]:
        """Rows/cols (s,) of an input in the model's index space (matched by raw id)."""
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

    def _index_to_raw(self, side: str, index: Tensor) -> Any:
        """Indices (B, n) -> raw ids: an int64 tensor (-1 stays -1) or an object array (None)."""
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

    def user_index(self, raw_ids: Any) -> Tensor:
        """Indices (s,) int64 of raw user ids; unknown ids map to ``n_users_``."""
        self._check_fitted()
        return self._raw_to_index("user", np.asarray(raw_ids), "raw_ids")

    def item_index(self, raw_ids: Any) -> Tensor:
        """Indices (s,) int64 of raw item ids; unknown ids map to ``n_items_``."""
        self._check_fitted()
        return self._raw_to_index("item", np.asarray(raw_ids), "raw_ids")
