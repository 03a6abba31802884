"""Ranking metrics at k of a recommender on held-out interactions.

This module owns the top-k evaluation: :func:`ranking_metrics` computes
precision@k, recall@k, nDCG@k, MAP@k, AUC@k and the hit rate in one pass over
the users, in bounded blocks; the single-metric functions call it. It scores
items with :func:`mfext.recommenders.serving.score_block` and masks each
user's training items with :func:`~mfext.recommenders.serving.mask_rated`, so a
model's ranking is the one ``recommend`` serves; it reads the inputs with
:mod:`mfext.recommenders.inputs` and leaves the splits to :mod:`mfext.splits`
(``mfext.datasets.train_test_split``).

Definitions (k the requested cut-off, T_u the set of user u's test items,
n_u = |T_u|, hit_i = 1 when the item at rank i (0-based) is in T_u, H_u the hits
in the top k, n the number of items). Where implicit 0.7.3 defines a metric
(``implicit.evaluation.ranking_metrics_at_k``) this is its definition exactly:

* precision = sum_u H_u / sum_u min(k, n_u): pooled over users (implicit).
* recall = mean_u H_u / n_u (implicit has no recall).
* ndcg = mean_u (sum_i hit_i / log2(i + 2)) / (sum_{i < min(k, n_u)} 1 / log2(i + 2))
  (implicit).
* map = mean_u (sum_i hit_i * (hits in ranks 0..i) / (i + 1)) / min(k, n_u) (implicit).
* auc = mean_u of implicit's AUC@k: with neg_u = n - n_u and miss_u = (items
  ranked) - H_u, (sum over the missed ranks i of the hits above i
  + (H_u + n_u) / 2 * (neg_u - miss_u)) / (n_u * neg_u). Users with neg_u = 0
  (every item a test item) have no AUC and are left out of its mean (implicit
  raises ZeroDivisionError); when no evaluated user has one, auc is NaN.
* hit_rate = mean_u [H_u > 0] (implicit has none).

The means run over the users with at least one test entry; the others are
skipped. Every stored entry is an interaction, an explicit 0 included (as in
implicit's evaluation, which reads only the matrices' patterns); a negative
value is an error; a repeated test entry counts once. Each user's training
items are left out of their ranking (a test item the user also has in training
can never be hit, yet counts in n_u, as in implicit). When fewer than k items
are left to rank, the list is shorter: nothing fills the rest (implicit fills
it with the excluded training items, then item 0 once k > n: only there, and
for the AUC above, do the two differ). Ties in score are broken by the lower
item index, so the result does not depend on the order of the top-k search
(implicit's order among ties is its heap's). An empty test set is a ValueError.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import numpy as np
import torch
from torch import Tensor

from .recommenders import serving
from .recommenders.inputs import csr_by, to_triple

__all__ = ["ranking_metrics", "precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "auc",
           "hit_rate", "METRICS"]

METRICS = ("precision", "recall", "ndcg", "map", "auc", "hit_rate")

_MODEL_FORMS = ("a fitted mfext recommender (user_factors_, item_factors_) or a "
                "(user_factors (m, k), item_factors (n, k)) pair")


def ranking_metrics(model: Any, train: Any, test: Any, k: int = 10) -> Dict[str, float]:
    """All the ranking metrics at k, in one pass over the users (see the module docstring).

    Parameters
    ----------
    model : recommender or (Tensor, Tensor)
        A fitted mfext recommender (its ``user_factors_`` (m, r), ``item_factors_``
        (n, r) and, where it has them, ``user_bias_`` (m,), ``item_bias_`` (n,)
        and ``global_mean_``: items are ranked by the predicted rating, as
        ``recommend`` ranks them), or a pair ``(user_factors (m, r),
        item_factors (n, r))`` of floating tensors or arrays, ranked by w_u . h_i.
    train : any input form of a recommender (Ratings, scipy.sparse, torch sparse,
        (rows, cols, vals) triple, dense with NaN)
        The training interactions (m, n); each user's are left out of their
        ranking. May be empty.
    test : same forms as ``train``
        The held-out interactions (m, n); users without one are skipped.
    k : int
        The cut-off, >= 1; above n the whole ranking counts.

    Returns
    -------
    dict
        ``{"precision", "recall", "ndcg", "map", "auc", "hit_rate"}`` -> float.

    Raises
    ------
    TypeError
        ``model`` of neither form, non-floating factors, ``k`` not an integer,
        an unsupported input form (the message names ``train`` or ``test``).
    ValueError
        ``k`` < 1, factor shapes that disagree, non-finite factors; ``train`` or
        ``test`` with a shape other than the model's (m, n), ids out of range,
        raw ids unknown to the model, a negative value, or (``test``) no entry.
    RuntimeError
        An unfitted model.

    Notes
    -----
    Users are scored in blocks of at most ``serving.SCORE_BUDGET`` (user, item)
    scores, on the device of the factors, so the m x n score matrix is never
    held; sums are accumulated in float64.
    """
    _check_k(k)
    W, Ht, bu, bi, mu = _factors(model)
    m, n = W.shape[0], Ht.shape[0]
    device = W.device
    tr_rows, tr_cols = _interactions(train, "train", model, m, n, device, allow_empty=True)
    te_rows, te_cols = _interactions(test, "test", model, m, n, device, allow_empty=True)
    if te_rows.numel() == 0:
        raise ValueError("test holds no interactions: no user to evaluate (the metrics would "
                         "be 0/0)")
    indptr, order = csr_by(tr_rows, m)
    tr_items = tr_cols[order]
    test_keys = torch.unique(te_rows * n + te_cols)           # (T,) sorted, duplicates once
    n_pos = torch.bincount(test_keys // n, minlength=m)       # (m,) test items per user
    users = (n_pos > 0).nonzero().reshape(-1)                 # (U,) users evaluated

    kk = min(int(k), n)
    rank = torch.arange(kk, device=device, dtype=torch.float64)
    discount = 1.0 / torch.log2(rank + 2.0)                   # (kk,)
    ideal = torch.cumsum(discount, 0)                         # (kk,) idcg by min(k, n_u)
    sums = dict(hits=0.0, pr_div=0.0, recall=0.0, ndcg=0.0, map=0.0, auc=0.0, auc_users=0.0,
                hit_rate=0.0)
    chunk = max(1, serving.SCORE_BUDGET // max(1, n))
    for s in range(0, users.numel(), chunk):
        uc = users[s:s + chunk]                               # (B,)
        known = torch.ones_like(uc, dtype=torch.bool)
        scores = serving.score_block(W, Ht, bu, bi, mu, uc, known)   # (B, n)
        serving.mask_rated(scores, indptr, tr_items, uc, known)
        top, ranked = _top_k(scores, kk)                      # (B, kk), (B, kk) bool
        keys = uc[:, None] * n + top
        at = torch.searchsorted(test_keys, keys).clamp_max(test_keys.numel() - 1)
        hit = ((test_keys[at] == keys) & ranked).double()     # (B, kk)
        npos = n_pos[uc].double()                             # (B,)
        _accumulate(sums, hit, ranked, npos, k, n, discount, ideal)
    n_eval = float(users.numel())
    return {
        "precision": sums["hits"] / sums["pr_div"],
        "recall": sums["recall"] / n_eval,
        "ndcg": sums["ndcg"] / n_eval,
        "map": sums["map"] / n_eval,
        "auc": sums["auc"] / sums["auc_users"] if sums["auc_users"] else math.nan,
        "hit_rate": sums["hit_rate"] / n_eval,
    }


def _accumulate(sums: Dict[str, float], hit: Tensor, ranked: Tensor, npos: Tensor, k: int,
                n: int, discount: Tensor, ideal: Tensor) -> None:
    """Add one block's per-user terms to ``sums``.

    hit (B, kk) float64 0/1, ranked (B, kk) bool (a real item at that rank),
    npos (B,) float64 test items per user, discount and ideal (kk,).
    """
    cum = torch.cumsum(hit, 1)                                # (B, kk) hits in ranks 0..i
    n_hit = cum[:, -1]                                        # (B,)
    denom = npos.clamp(max=float(k))                          # (B,) min(k, n_u)
    sums["hits"] += float(n_hit.sum())
    sums["pr_div"] += float(denom.sum())
    sums["recall"] += float((n_hit / npos).sum())
    sums["hit_rate"] += float((n_hit > 0).sum())
    # min(k, n_u) <= min(k, n) = kk, so ideal covers every user's ideal DCG.
    idcg = ideal[(denom.long() - 1).clamp(max=ideal.numel() - 1)]
    sums["ndcg"] += float(((hit * discount).sum(1) / idcg).sum())
    precision_at_i = cum / torch.arange(1, hit.shape[1] + 1, device=hit.device)
    sums["map"] += float(((hit * precision_at_i).sum(1) / denom).sum())
    # implicit's AUC@k: each missed rank scores the hits above it; the negatives
    # below the list score the midpoint (hits + positives) / 2.
    neg = n - npos
    miss = ranked.sum(1).double() - n_hit
    missed = ranked.double() - hit
    auc = ((missed * cum).sum(1) + (n_hit + npos) / 2.0 * (neg - miss)) / (npos * neg)
    has_neg = neg > 0
    sums["auc"] += float(auc[has_neg].sum())
    sums["auc_users"] += float(has_neg.sum())


def _top_k(scores: Tensor, kk: int) -> Tuple[Tensor, Tensor]:
    """Best kk items of each row of scores (B, n): indices (B, kk) and a mask of real ones.

    Ties are broken by the lower item index. ``topk`` leaves the order of equal
    scores open, so rows with a tie among their best kk + 1 scores (the only
    ones where the result could depend on it) are ranked again by a stable sort.
    Items masked to -inf are no ranking: their slots come back False.
    """
    take = min(kk + 1, scores.shape[1])
    vals, idx = scores.topk(take, dim=1)
    tie = ((vals[:, 1:] == vals[:, :-1]) & (vals[:, 1:] > -math.inf)).any(1)
    rows = tie.nonzero().reshape(-1)
    if rows.numel():
        resort = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        vals[rows], idx[rows] = resort.values[:, :take], resort.indices[:, :take]
    return idx[:, :kk], vals[:, :kk] > -math.inf


def _check_k(k: Any) -> None:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer >= 1, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


def _as_factor(x: Any, name: str) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (rows, rank), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} holds NaN or Inf")
    return t.detach()


def _factors(model: Any) -> Tuple[Tensor, Tensor, Tensor, Tensor, float]:
    """(W (m, r), Ht (n, r), user bias (m,), item bias (n,), global mean) of either model form."""
    if isinstance(model, (tuple, list)):
        if len(model) != 2:
            raise TypeError(f"model must be {_MODEL_FORMS}; got a sequence of {len(model)}")
        W = _as_factor(model[0], "user_factors")
        Ht = _as_factor(model[1], "item_factors")
        bu = bi = None
        mu = 0.0
    elif hasattr(model, "user_factors_") or hasattr(model, "_check_fitted"):
        if hasattr(model, "_check_fitted"):
            model._check_fitted()
        W = _as_factor(model.user_factors_, "user_factors_")
        Ht = _as_factor(model.item_factors_, "item_factors_")
        bu, bi = getattr(model, "user_bias_", None), getattr(model, "item_bias_", None)
        mu = float(getattr(model, "global_mean_", 0.0))
    else:
        raise TypeError(f"model must be {_MODEL_FORMS}, got {type(model).__name__}")
    if W.shape[1] != Ht.shape[1]:
        raise ValueError(f"user factors {tuple(W.shape)} and item factors {tuple(Ht.shape)} "
                         "must have the same rank (second dimension)")
    if W.device != Ht.device:
        raise ValueError(f"user factors are on {W.device} but item factors on {Ht.device}")
    dtype = torch.promote_types(W.dtype, Ht.dtype)
    W, Ht = W.to(dtype), Ht.to(dtype)
    zeros = torch.zeros((), dtype=dtype, device=W.device)
    bu = zeros.expand(W.shape[0]) if bu is None else bu.detach().to(dtype)
    bi = zeros.expand(Ht.shape[0]) if bi is None else bi.detach().to(dtype)
    return W, Ht, bu, bi, mu


def _interactions(X: Any, name: str, model: Any, m: int, n: int, device: torch.device,
                  allow_empty: bool) -> Tuple[Tensor, Tensor]:
    """Rows and cols (s,) int64 on ``device`` of one input, checked against the model (m, n).

    A Ratings input with raw-id maps other than a fitted model's is matched by
    raw id (as ``fit`` matches a validation set); any other input must state
    the model's shape, or (a bare triple) keep its ids below it.
    """
    t = to_triple(X, name, allow_empty=allow_empty)
    if t.nnz and bool((t.vals < 0).any()):
        pos = int((t.vals < 0).nonzero()[0, 0])
        raise ValueError(f"{name}: entry {pos} has value {t.vals[pos].item()}; interactions must "
                         "be >= 0 (every stored entry, an explicit 0 included, is one)")
    model_ids = getattr(model, "user_ids_", None) if not isinstance(model, (tuple, list)) else None
    if t.user_ids is not None and model_ids is not None and hasattr(model, "_map_triple"):
        rows, cols = model._map_triple(t, name)
        unknown = (rows >= m) | (cols >= n)
        if bool(unknown.any()):
            raise ValueError(f"{name}: {int(unknown.sum())} entries have a user or item raw id "
                             "unknown to the model; drop them first (a model cannot rank an "
                             "item or user it has never seen)")
    else:
        rows, cols = t.rows, t.cols
        if t.shape is not None and tuple(t.shape) != (m, n):
            raise ValueError(f"{name} has shape {tuple(t.shape)} but the model has {m} users and "
                             f"{n} items ({m}, {n})")
        if t.nnz and (int(rows.max()) >= m or int(cols.max()) >= n):
            raise ValueError(f"{name}: ids up to ({int(rows.max())}, {int(cols.max())}) are out "
                             f"of range for the model's {m} users and {n} items")
    return rows.to(device), cols.to(device)


def _one(metric: str, model: Any, train: Any, test: Any, k: int) -> float:
    return ranking_metrics(model, train, test, k)[metric]


def precision_at_k(model: Any, train: Any, test: Any, k: int = 10) -> float:
    """Precision at k, pooled: sum_u hits_u / sum_u min(k, n_u) (implicit's definition).

    Arguments as :func:`ranking_metrics`; computing several metrics, call it once instead.
    """
    return _one("precision", model, train, test, k)


def recall_at_k(model: Any, train: Any, test: Any, k: int = 10) -> float:
    """Recall at k: mean over users of hits_u / n_u (arguments as :func:`ranking_metrics`)."""
    return _one("recall", model, train, test, k)


def ndcg_at_k(model: Any, train: Any, test: Any, k: int = 10) -> float:
    """nDCG at k with binary gains (implicit's definition; arguments as :func:`ranking_metrics`)."""
    return _one("ndcg", model, train, test, k)


def map_at_k(model: Any, train: Any, test: Any, k: int = 10) -> float:
    """Mean average precision at k, each user's AP over min(k, n_u) (implicit's definition)."""
    return _one("map", model, train, test, k)


def auc(model: Any, train: Any, test: Any, k: int = 10) -> float:
    """implicit's AUC at k (see the module docstring; arguments as :func:`ranking_metrics`)."""
    return _one("auc", model, train, test, k)


def hit_rate(model: Any, train: Any, test: Any, k: int = 10) -> float:
    """Fraction of the evaluated users with at least one test item in their top k."""
    return _one("hit_rate", model, train, test, k)
