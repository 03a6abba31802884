"""The input forms every recommender accepts, turned into checked COO triples.

This module owns the accepted forms and their checks (a clear error naming the
argument), the scikit-learn pairs form, and the canonical entry order; it
leaves the raw-id maps of a fitted model to :mod:`mfext.recommenders.ids` and
the model-size checks to :mod:`mfext.recommenders.limits`.

Accepted forms: a :class:`~mfext.datasets.Ratings` object, a scipy.sparse
matrix or array (COO, CSR, CSC, ...), a torch sparse tensor (COO, CSR, CSC), a
``(rows, cols, vals)`` tuple or list of arrays/tensors/sequences, or a dense 2-D
numpy array or tensor whose NaN entries are missing. Stored entries are data:
an explicit 0 is a rating of 0, and duplicates count each time.

The scikit-learn form (:func:`pairs_to_triple`): X an (n, 2) array of (user,
item) raw ids, y the (n,) ratings.
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .. import cf_ops
from ..datasets import Ratings

FORMS = ("a Ratings object, a scipy.sparse matrix, a torch sparse tensor, a (rows, cols, vals) "
         "triple, or a dense 2-D array/tensor with NaN for missing entries")


@dataclass
class Triple:
    """Checked ratings: rows/cols (nnz,) int64, vals (nnz,) float, all on one device.

    ``shape`` is the matrix shape when the input states one (None for a bare
    triple); ``user_ids``/``item_ids`` are the raw-id maps of a Ratings input.
    """

    rows: Tensor
    cols: Tensor
    vals: Tensor
    shape: Optional[Tuple[int, int]] = None
    user_ids: Optional[np.ndarray] = None
    item_ids: Optional[np.ndarray] = None

    @property
    def nnz(self) -> int:
        return int(self.vals.numel())


_INT64_LIMIT = float(2**63)  # exactly representable in every float dtype that reaches it

_WIDE_UNSIGNED = tuple(getattr(torch, n) for n in ("uint16", "uint32", "uint64")
                       if hasattr(torch, n))


def _is_scipy_sparse(X: Any) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is optional
        return False
    return sp.issparse(X)


def _to_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"{name} must hold numbers, got an object array")
    if arr.dtype.kind in "US":
        raise TypeError(f"{name} must hold numbers, got strings ({arr.dtype})")
    return torch.from_numpy(np.ascontiguousarray(arr))


def as_ids(x: Any, name: str) -> Tensor:
    """1-D int64 ids from a tensor/array/sequence; non-integers and negatives are errors."""
    t = _to_tensor(x, name)
    if t.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (no data); pass ids on a real device")
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold integer ids, got dtype {t.dtype}")
    if t.is_floating_point():
        bad = ~torch.isfinite(t) | (t != torch.round(t))
        if bool(bad.any()):
            pos = int(bad.nonzero()[0, 0])
            raise ValueError(f"{name} must hold integer ids; {name}[{pos}] = {t[pos].item()} is not "
                             "an integer")
        # The cast to int64 wraps values of 2**63 or more to negative ids (and
        # below -2**63 to anything): check the range on the floats first.
        if t.numel() and bool((t < 0).any()):
            pos = int((t < 0).nonzero()[0, 0])
            raise ValueError(f"{name} must hold non-negative ids; {name}[{pos}] = {t[pos].item()}")
        big = t >= _INT64_LIMIT
        if bool(big.any()):
            pos = int(big.nonzero()[0, 0])
            raise ValueError(f"{name}[{pos}] = {t[pos].item()} does not fit in int64 (ids must be "
                             "below 2**63)")
    if t.dtype in _WIDE_UNSIGNED:
        # torch has few kernels for uint16/32/64: compare on an int64 copy (uint64
        # ids of 2**63 or more wrap to negative in the bit view, so catch them first)
        if t.dtype == torch.uint64:
            big = t.view(torch.int64) < 0
            if bool(big.any()):
                pos = int(big.nonzero()[0, 0])
                raise ValueError(f"{name}[{pos}] = {int(t[pos].item())} does not fit in int64")
            t = t.view(torch.int64)
        else:
            t = t.to(torch.int64)
    if t.numel() and int(t.min()) < 0:  # a mask only on failure: no (nnz,) temporary
        pos = int((t < 0).nonzero()[0, 0])
        raise ValueError(f"{name} must hold non-negative ids; {name}[{pos}] = {int(t[pos])}")
    return t.to(torch.int64)


def _check_vals(vals: Tensor, name: str) -> Tensor:
    if vals.dim() != 1:
        raise ValueError(f"{name}: ratings must be 1-D, got shape {tuple(vals.shape)}")
    if vals.dtype == torch.bool or vals.is_complex():
        raise TypeError(f"{name}: ratings must be real numbers, got dtype {vals.dtype}")
    if vals.device.type == "meta":
        raise ValueError(f"{name}: the ratings are a meta tensor (no data); pass them on a "
                         "real device")
    if vals.dtype in _WIDE_UNSIGNED:
        vals = vals.to(torch.float64)
    if not vals.is_floating_point():
        vals = vals.to(torch.float64)
    lo, hi = torch.aminmax(vals) if vals.numel() else (vals.new_zeros(()), vals.new_zeros(()))
    if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):  # NaN and Inf show here
        pos = int((~torch.isfinite(vals)).nonzero()[0, 0])
        raise ValueError(f"{name}: rating {pos} is {vals[pos].item()}; ratings must be finite "
                         "(NaN marks a missing entry only in a dense input)")
    return vals


def to_triple(X: Any, name: str = "X", *, allow_empty: bool = False) -> Triple:
    """Convert any accepted form (see the module docstring) into a checked :class:`Triple`.

    Raises
    ------
    TypeError
        An unsupported form or dtype.
    ValueError
        Mismatched lengths, negative or non-integer ids, ids outside a stated
        shape, non-finite ratings, or (unless ``allow_empty``) no ratings.
    """
    shape: Optional[Tuple[int, int]] = None
    user_ids = item_ids = None
    if isinstance(X, Tensor) and X.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (no data); pass ratings on a real device")
    if isinstance(X, Ratings):
        rows, cols, vals = X.rows, X.cols, X.vals
        shape = (X.n_users, X.n_items)
        user_ids, item_ids = X.user_ids, X.item_ids
    elif _is_scipy_sparse(X):
        if len(X.shape) != 2:
            raise ValueError(f"{name}: a sparse rating matrix must be 2-D, got shape {X.shape}")
        coo = X.tocoo()  # keeps explicit zeros and duplicates as stored
        rows, cols, vals = (torch.from_numpy(np.asarray(a)) for a in (coo.row, coo.col, coo.data))
        shape = (int(X.shape[0]), int(X.shape[1]))
    elif isinstance(X, Tensor) and X.layout != torch.strided:
        if X.dim() != 2 or X.dense_dim() != 0:
            raise ValueError(f"{name}: a sparse rating tensor must be 2-D with scalar values, "
                             f"got shape {tuple(X.shape)}")
        coo = X if X.layout == torch.sparse_coo else X.to_sparse_coo()
        idx = coo._indices()
        rows, cols, vals = idx[0], idx[1], coo._values()
        shape = (int(X.shape[0]), int(X.shape[1]))
    elif isinstance(X, (tuple, list)):
        if len(X) != 3:
            raise TypeError(f"{name}: a tuple or list input must be (rows, cols, vals), got "
                            f"{len(X)} elements; accepted forms: {FORMS}")
        rows, cols, vals = (_to_tensor(a, f"{name}[{i}]") for i, a in enumerate(X))
    elif isinstance(X, (np.ndarray, Tensor)):
        dense = X if isinstance(X, Tensor) else _to_tensor(X, name)
        if dense.dim() != 2:
            raise ValueError(f"{name}: a dense rating matrix must be 2-D, got shape "
                             f"{tuple(dense.shape)}")
        if not dense.is_floating_point():
            dense = dense.to(torch.float64)
        if bool(torch.isinf(dense).any()):
            raise ValueError(f"{name}: the dense rating matrix holds Inf; only NaN (missing) and "
                             "finite ratings are allowed")
        mask = ~torch.isnan(dense)
        idx = mask.nonzero()
        rows, cols = idx[:, 0], idx[:, 1]
        vals = dense[mask]
        shape = (int(dense.shape[0]), int(dense.shape[1]))
    else:
        raise TypeError(f"{name}: unsupported input of type {type(X).__name__}; accepted forms: "
                        f"{FORMS}")
    devices = {t.device for t in (rows, cols, vals) if isinstance(t, Tensor)}
    if len(devices) > 1:
        raise ValueError(f"{name}: rows, cols and vals are on different devices "
                         f"({', '.join(map(str, sorted(devices, key=str)))})")
    rows = as_ids(rows, f"{name} rows")
    cols = as_ids(cols, f"{name} cols")
    vals = _check_vals(_to_tensor(vals, f"{name} vals"), name)
    if not (rows.numel() == cols.numel() == vals.numel()):
        raise ValueError(f"{name}: rows, cols and vals must have the same length, got "
                         f"{rows.numel()}, {cols.numel()} and {vals.numel()}")
    if vals.numel() == 0 and not allow_empty:
        raise ValueError(f"{name} holds no ratings")
    if shape is not None and vals.numel():
        for what, ids, bound in (("rows", rows, shape[0]), ("cols", cols, shape[1])):
            top = int(ids.max())
            if top >= bound:
                raise ValueError(f"{name}: {what} id {top} is out of range for shape {shape}")
    return Triple(rows, cols, vals, shape, user_ids, item_ids)


PAIRS_FORM = ("an (n, 2) array, tensor or DataFrame of (user, item) pairs, with the ratings "
              "in y")


def _id_column(col: Any, name: str) -> np.ndarray:
    """One column of raw ids as int64 (integers, integral floats) or str (text); checked."""
    arr = np.asarray(col)
    if arr.dtype == object:  # a DataFrame with mixed column dtypes: infer each column again
        try:
            arr = np.asarray(arr.tolist())
        except (ValueError, TypeError, OverflowError) as exc:
            raise TypeError(f"{name} must hold integer or string ids, got {exc}") from None
        if arr.dtype == object:
            raise TypeError(f"{name} must hold integer or string ids, got an object array")
    if arr.dtype.kind in "US":
        return arr.astype(str)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold integer or string ids, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            pos = int(np.argmax(bad))
            raise ValueError(f"{name} must hold integer ids; {name}[{pos}] = {arr[pos]} is not an "
                             "integer")
        out_of_range = (arr >= _INT64_LIMIT) | (arr < -_INT64_LIMIT)
        if out_of_range.any():
            pos = int(np.argmax(out_of_range))
            raise ValueError(f"{name}[{pos}] = {arr[pos]} does not fit in int64")
    elif arr.dtype == np.uint64 and arr.size and int(arr.max()) >= 2**63:
        pos = int(np.argmax(arr >= np.uint64(2**63)))
        raise ValueError(f"{name}[{pos}] = {int(arr[pos])} does not fit in int64")
    return arr.astype(np.int64)


def pair_columns(X: Any, name: str = "X") -> Tuple[np.ndarray, np.ndarray]:
    """Users (n,) and items (n,) of an (n, 2) array of (user, item) pairs, as raw ids.

    Each column comes back as int64 (integer or integral float ids) or str,
    each on its own: a DataFrame of int users and str items works.
    """
    if isinstance(X, Ratings) or _is_scipy_sparse(X) or (
            isinstance(X, Tensor) and X.layout != torch.strided):
        raise TypeError(f"{name}: with y, {name} must be {PAIRS_FORM}; got "
                        f"{type(X).__name__} (pass a ratings form of {name} without y)")
    if isinstance(X, Tensor):
        if X.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor (no data); pass ids on a real device")
        arr: Any = X.detach().cpu().numpy()
    else:  # a DataFrame with columns of two types becomes an object array: see _id_column
        arr = np.asarray(X)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2) (user, item pairs), got shape "
                         f"{tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} holds no pairs")
    return _id_column(arr[:, 0], f"{name}[:, 0]"), _id_column(arr[:, 1], f"{name}[:, 1]")


def pairs_to_triple(X: Any, y: Any, name: str = "X") -> Triple:
    """The ratings ``y`` (n,) of the (user, item) pairs ``X`` (n, 2), as a checked Triple.

    The ids are raw ids: each side is mapped to ``0..u-1`` in ascending raw-id
    order and the maps come back as ``user_ids``/``item_ids`` (ids that are
    already ``0..u-1`` map to themselves).
    """
    users, items = pair_columns(X, name)
    vals = _to_tensor(y, "y")
    if vals.dim() == 2 and vals.shape[1] == 1:  # a one-column target, as sklearn allows
        vals = vals.reshape(-1)
    vals = _check_vals(vals, "y")
    if vals.numel() != users.size:
        raise ValueError(f"y must have one rating per row of {name}: got {vals.numel()} ratings "
                         f"for {users.size} pairs")
    user_ids, rows = np.unique(users, return_inverse=True)
    item_ids, cols = np.unique(items, return_inverse=True)
    rows_t = torch.from_numpy(rows.astype(np.int64).reshape(-1)).to(vals.device)
    cols_t = torch.from_numpy(cols.astype(np.int64).reshape(-1)).to(vals.device)
    return Triple(rows_t, cols_t, vals, (int(user_ids.size), int(item_ids.size)), user_ids,
                  item_ids)


def canonical_order(rows: Tensor, cols: Tensor, n_rows: int, n_cols: int) -> Optional[Tensor]:
    """Permutation sorting entries by (row, col), stable; None when already sorted.

    Fitting on a canonical order makes the result independent of the input
    form (CSR, CSC, COO, a shuffled triple ...). Two stable counting sorts
    (by column, then by row) on the CPU.
    """
    if rows.numel() < 2:
        return None
    key = rows * n_cols + cols
    if bool((key[1:] >= key[:-1]).all()):
        return None
    if rows.device.type != "cpu":
        return torch.sort(key, stable=True).indices
    del key  # 8 bytes an entry: gone before the sorts allocate theirs
    by_col, _ = cf_ops.bucket_sort(cols, n_cols)
    # The row keys in column order, in int32 where they fit (half the bytes).
    keys = rows.to(torch.int32) if n_rows < 2**31 else rows
    by_row, _ = cf_ops.bucket_sort(keys[by_col], n_rows)
    return by_col[by_row]


def csr_by(keys: Tensor, n_keys: int) -> Tuple[Tensor, Tensor]:
    """(indptr (n_keys + 1,), order (nnz,)): entries grouped by key, stable."""
    if keys.device.type == "cpu":
        order, indptr = cf_ops.bucket_sort(keys, n_keys)
        return indptr, order
    order = torch.sort(keys, stable=True).indices
    indptr = torch.zeros(n_keys + 1, dtype=torch.int64, device=keys.device)
    indptr[1:] = torch.bincount(keys, minlength=n_keys).cumsum(0)
    return indptr, order
