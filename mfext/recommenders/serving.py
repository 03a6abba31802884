"""Top-k serving of a fitted recommender: ``recommend``, ``similar_items``, ``similar_users``.

This module owns :class:`ServingMixin`: batched top-n over candidate items
(include lists, filters, the items each user rated in fit left out) and the
cosine neighbours of items and users. Scores are computed in chunks of at most
``SCORE_BUDGET`` entries, so the users x items matrix is never materialized.
It relies on the fitted state the base sets (factors, biases, the seen-items
index) and on :class:`~mfext.recommenders.ids.IdMapsMixin` for ids. The score
formula and the masking of rated items are module functions
(:func:`score_block`, :func:`mask_rated`) so that :mod:`mfext.metrics` ranks
items exactly as ``recommend`` does.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["ServingMixin", "SCORE_BUDGET", "score_block", "mask_rated"]

SCORE_BUDGET = 1 << 22        # users x items scores per chunk


def score_block(W: Tensor, Ht: Tensor, user_bias: Tensor, item_bias: Tensor,
                global_mean: float, users: Tensor, known: Tensor) -> Tensor:
    """Predicted ratings of a block of users for the candidate items: what ``recommend`` ranks.

    Parameters
    ----------
    W : Tensor, (m, k)
        User factors.
    Ht : Tensor, (I, k)
        Factors of the candidate items.
    user_bias : Tensor, (m,)
    item_bias : Tensor, (I,)
        Biases of the users and of the candidate items (zeros for a model without biases).
    global_mean : float
    users : Tensor, (B,), int64
        Valid user indices (an unknown user stands as any valid index, masked by ``known``).
    known : Tensor, (B,), bool
        False for an unknown user: its factors and bias count as zero.

    Returns
    -------
    Tensor, (B, I), dtype of ``W``
        ``mu + b_u + b_i + w_u . h_i``.
    """
    scores = (W[users] * known[:, None]) @ Ht.t() + item_bias[None, :]
    scores += (global_mean + torch.where(known, user_bias[users], 0))[:, None]
    return scores


def mask_rated(scores: Tensor, indptr: Tensor, items: Tensor, users: Tensor, known: Tensor,
               pos: Optional[Tensor] = None) -> None:
    """Set the scores (B, I) of the items each user rated to -inf, in place.

    Parameters
    ----------
    scores : Tensor, (B, I)
    indptr : Tensor, (m + 1,), int64
    items : Tensor, (nnz,), int64
        The rated items as CSR by user: user u rated ``items[indptr[u]:indptr[u + 1]]``.
    users : Tensor, (B,), int64
        Valid user indices, one per row of ``scores``.
    known : Tensor, (B,), bool
        Rows to mask (an unknown user rated nothing).
    pos : Tensor, (n_items,), int64, optional
        Each item's column in ``scores`` (-1: not a candidate); None when column = item.
    """
    starts = indptr[users]
    counts = torch.where(known, indptr[users + 1] - starts, 0)
    total = int(counts.sum())
    if total == 0:
        return
    row = torch.repeat_interleave(torch.arange(users.numel(), device=scores.device), counts)
    first = torch.cumsum(counts, 0) - counts
    offset = torch.arange(total, device=scores.device) - torch.repeat_interleave(first, counts)
    col = items[torch.repeat_interleave(starts, counts) + offset]
    if pos is None:
        scores[row, col] = -math.inf
        return
    col = pos[col]
    keep = col >= 0
    scores[row[keep], col[keep]] = -math.inf


def _check_n(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")


class ServingMixin:
    """``recommend``, ``similar_items`` and ``similar_users`` on the fitted factors."""

    def _known_ids(self, x: Any, side: str, raw_ids: bool, name: str) -> Tensor:
        """Ids (s,) int64 on the model device, each known to the model (else a ValueError)."""
        bound = self.n_users_ if side == "user" else self.n_items_
        idx = self._ids(x, side, raw_ids, name)
        if idx.numel() and int(idx.max()) >= bound:
            raise ValueError(f"{name} holds an id unknown to the model ({bound} {side}s)")
        return idx

    def recommend(self, users: Any, n: int = 10, exclude_seen: bool = True,
                  items: Any = None, *, filter_items: Any = None,
                  raw_ids: bool = False) -> Tuple[Any, Tensor]:
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
            Every id must be known to the model.
        filter_items : array-like or Tensor, (F,), optional
            Items never to recommend to anyone, removed from the candidates.
            Every id must be known to the model.
        raw_ids : bool
            Users, ``items`` and ``filter_items`` given, and items returned, as raw ids.

        Returns
        -------
        items : Tensor, (B, n'), int64
            Item indices (raw ids with ``raw_ids``), best first; -1 where fewer
            than n' candidates are left. n' = min(n, number of candidates).
        scores : Tensor, (B, n'), model dtype; -inf where items is -1
        """
        self._check_fitted()
        _check_n(n)
        u = self._ids(users, "user", raw_ids, "users")
        if items is None:
            cand = torch.arange(self.n_items_, device=self._device)
        else:
            # A repeated candidate would be ranked twice, and the seen-item mask
            # (one slot per item) would catch only one of its copies.
            cand = torch.unique(self._known_ids(items, "item", raw_ids, "items"))
        if filter_items is not None:
            banned = self._known_ids(filter_items, "item", raw_ids, "filter_items")
            cand = cand[~torch.isin(cand, banned)]
        n_out = min(int(n), cand.numel())
        W, Ht, bu, bi = self.user_factors_, self.item_factors_, self.user_bias_, self.item_bias_
        Hc, bic = Ht[cand], bi[cand]
        pos = None
        if exclude_seen:
            pos = torch.full((self.n_items_,), -1, dtype=torch.int64, device=self._device)
            pos[cand] = torch.arange(cand.numel(), device=self._device)
        out_items = torch.empty(u.numel(), n_out, dtype=torch.int64, device=self._device)
        out_scores = torch.empty(u.numel(), n_out, dtype=W.dtype, device=self._device)
        chunk = max(1, SCORE_BUDGET // max(1, cand.numel()))
        for s in range(0, u.numel(), chunk):
            uc = u[s:s + chunk]
            known = uc < self.n_users_
            ui = torch.where(known, uc, 0)
            scores = score_block(W, Hc, bu, bic, self.global_mean_, ui, known)
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
        """Set scores (B, I) of the items each user rated in fit to -inf (:func:`mask_rated`)."""
        mask_rated(scores, self._seen_indptr, self._seen_items, users, known, pos)

    def _similar(self, side: str, x: Any, n: int, raw_ids: bool) -> Tuple[Any, Tensor]:
        """The n rows of one side's factors most similar (cosine) to each of ``x`` (B,)."""
        self._check_fitted()
        _check_n(n)
        name = side + "s"
        idx = self._known_ids(x, side, raw_ids, name)
        F = self.item_factors_ if side == "item" else self.user_factors_
        total = F.shape[0]
        unit = F / F.norm(dim=1, keepdim=True).clamp_min(torch.finfo(F.dtype).tiny)
        n_out = min(int(n), total - 1)
        out_ids = torch.empty(idx.numel(), n_out, dtype=torch.int64, device=self._device)
        out_sims = torch.empty(idx.numel(), n_out, dtype=F.dtype, device=self._device)
        chunk = max(1, SCORE_BUDGET // max(1, total))
        for s in range(0, idx.numel(), chunk):
            ic = idx[s:s + chunk]
            sims = unit[ic] @ unit.t()
            sims[torch.arange(ic.numel(), device=sims.device), ic] = -math.inf
            top, best = sims.topk(n_out, dim=1)
            out_ids[s:s + chunk], out_sims[s:s + chunk] = best, top
        if raw_ids:
            return self._index_to_raw(side, out_ids), out_sims
        return out_ids, out_sims

    def similar_items(self, items: Any, n: int = 10, *,
                      raw_ids: bool = False) -> Tuple[Any, Tensor]:
        """The n items with the most similar factors (cosine), the item itself excluded.

        Parameters
        ----------
        items : array-like or Tensor, (B,)
            Item indices (raw ids with ``raw_ids``), each known to the model.
        n : int
            Neighbours per item; at most ``n_items_ - 1``.

        Returns
        -------
        items : Tensor, (B, n'), int64, most similar first (raw ids with ``raw_ids``)
        similarities : Tensor, (B, n') in [-1, 1], model dtype
        """
        return self._similar("item", items, n, raw_ids)

    def similar_users(self, users: Any, n: int = 10, *,
                      raw_ids: bool = False) -> Tuple[Any, Tensor]:
        """The n users with the most similar factors (cosine), the user itself excluded.

        Parameters
        ----------
        users : array-like or Tensor, (B,)
            User indices (raw ids with ``raw_ids``), each known to the model.
        n : int
            Neighbours per user; at most ``n_users_ - 1``.

        Returns
        -------
        users : Tensor, (B, n'), int64, most similar first (raw ids with ``raw_ids``)
        similarities : Tensor, (B, n') in [-1, 1], model dtype
        """
        return self._similar("user", users, n, raw_ids)
