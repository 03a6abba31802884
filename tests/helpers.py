"""Helpers the test files share (not fixtures: those are in conftest.py).

Import them with ``from helpers import ...``: ``tests/`` is on ``sys.path`` once
pytest has loaded ``tests/conftest.py`` (the default ``prepend`` import mode).

* tolerances, ``rel_err``, ``deterministic_algorithms``, ``assert_no_device_sync``,
  the MovieLens data path;
* ``import_test_module``: another folder's test module, as pytest imports it;
* small recommender problems (``_small``, ``_triples``, ``_fitted``) and corrupt
  saved-model files (``_write_corrupt``), for the bad-input tests;
* the problems, sequential references and bad-input tables of the
  collaborative-filtering ops, shared by ``tests/ops`` and ``tests/cuda``.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import mfext
from mfext import MatrixFactorization

TESTS = Path(__file__).resolve().parent

HAS_CUDA = torch.cuda.is_available() and mfext.build_info()["cuda"]

# MFEXT_TEST_SEED=N draws other inputs for every test (the default is 0).
TEST_SEED = int(os.environ.get("MFEXT_TEST_SEED", "0"))

# Relative tolerances against the autograd reference.
RTOL = {torch.float64: 1e-10, torch.float32: 1e-4}

SHARED_DATA = Path(
    os.environ.get("MFEXT_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref|| in float64 (absolute when ref is 0)."""
    x = x.detach().double().cpu()
    ref = ref.detach().double().cpu()
    denom = ref.norm().item()
    diff = (x - ref).norm().item()
    return diff / denom if denom > 0 else diff


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True):
    """torch.use_deterministic_algorithms(enabled) inside the block only."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def assert_no_device_sync(run) -> None:
    """Call ``run()`` once to warm up, then again with CUDA syncs turned into errors."""
    run()  # module loading, first allocations, the error mailbox, library handles
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def movielens_path(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"MovieLens data {path} is absent")
    return path


def import_test_module(relative: str) -> types.ModuleType:
    """The test module ``tests/<relative>``, imported as pytest imports it (prepend mode).

    pytest imports ``tests/a/test_x.py`` as the top-level module ``test_x`` with
    ``tests/a`` first on ``sys.path``; doing the same here gives the very module
    pytest collected (or the one it will collect), never a second copy.
    """
    path = (TESTS / relative).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no test module {path}")
    loaded = sys.modules.get(path.stem)
    if loaded is not None:
        if Path(loaded.__file__).resolve() != path:
            raise ImportError(f"module {path.stem!r} is {loaded.__file__}, not {path}")
        return loaded
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(path.stem)


# ---------------------------------------------------------------- small problems
#
# For the bad-input tests of factorize (a dense matrix), MatrixFactorization (rating
# triples, a fitted model) and datasets.


def _small(m: int = 6, n: int = 5, seed: int = 0) -> torch.Tensor:
    """An (m, n) float64 matrix of uniform entries."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, n, generator=g, dtype=torch.float64)


def _triples(seed: int = 0, m: int = 12, n: int = 9, nnz: int = 60):
    """(rows, cols, vals) of nnz ratings in [1, 5] (float64), every user and item rated."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, m, (nnz,), generator=g)
    cols = torch.randint(0, n, (nnz,), generator=g)
    rows[:m], cols[:n] = torch.arange(m), torch.arange(n)  # every user and item rated
    vals = 1 + 4 * torch.rand(nnz, generator=g, dtype=torch.float64)
    return rows, cols, vals


def _fitted(**kw) -> MatrixFactorization:
    """A small ALS MatrixFactorization fit on _triples() (``kw`` overrides its parameters)."""
    params = dict(rank=3, solver="als", max_iter=2, random_state=0)
    params.update(kw)
    return MatrixFactorization(**params).fit(_triples())


# ---------------------------------------------------------------- corrupt saved models


class _Evil:
    def __reduce__(self):  # would run code if unpickled
        return (os.system, ("echo pwned > /dev/null",))


def _write_corrupt(path: Path, kind: str, good: Path) -> None:
    if kind == "text":
        path.write_text("not a model\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "flipped":
        data = bytearray(good.read_bytes())
        for i in range(0, len(data), 97):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "foreign_dict":
        torch.save({"weights": torch.ones(3)}, path)
    elif kind == "foreign_tensor":
        torch.save(torch.ones(3), path)
    elif kind == "pickled_class":
        with open(path, "wb") as fh:
            pickle.dump(_Evil(), fh)
    elif kind == "torch_saved_class":
        torch.save({"format": "mfext.MatrixFactorization", "x": _Evil()}, path)
    elif kind == "wrong_version":
        state = torch.load(good, weights_only=True)
        state["version"] = 99
        torch.save(state, path)
    elif kind == "missing_keys":
        torch.save({"format": "mfext.MatrixFactorization", "version": 1}, path)
    elif kind == "bad_params":
        state = torch.load(good, weights_only=True)
        state["params"]["dtype"] = "os"
        torch.save(state, path)
    elif kind == "bad_tensors":
        state = torch.load(good, weights_only=True)
        state["tensors"]["user_factors"] = "abc"
        torch.save(state, path)
    elif kind == "shape_mismatch":
        state = torch.load(good, weights_only=True)
        state["tensors"]["user_factors"] = torch.ones(2, 2)
        torch.save(state, path)
    else:  # pragma: no cover
        raise AssertionError(kind)


# ---------------------------------------------------------------- collaborative-filtering ops
#
# sgd_epoch_ and the ALS ops: random problems, float64 sequential references and the
# bad-argument tables, used by tests/ops (the CPU op) and tests/cuda (the same cases on
# the GPU, whose messages must match the CPU's).


def _sgd_problem(gen, m, n, k, nnz, dtype, index_dtype=torch.int64):
    rows = torch.randint(0, m, (nnz,), generator=gen).to(index_dtype)
    cols = torch.randint(0, n, (nnz,), generator=gen).to(index_dtype)
    vals = (torch.rand(nnz, generator=gen, dtype=torch.float64) * 4 + 1).to(dtype)
    W = (torch.randn(m, k, generator=gen, dtype=torch.float64) * 0.3).to(dtype)
    Ht = (torch.randn(n, k, generator=gen, dtype=torch.float64) * 0.3).to(dtype)
    bu = (torch.randn(m, generator=gen, dtype=torch.float64) * 0.1).to(dtype)
    bi = (torch.randn(n, generator=gen, dtype=torch.float64) * 0.1).to(dtype)
    return rows, cols, vals, W, Ht, bu, bi


def _sgd_reference(W, Ht, bu, bi, rows, cols, vals, sequence, lr, reg, bias_reg, mu, biases,
                   nonnegative):
    """Sequential SGD in float64 numpy over the entry ids in `sequence`."""
    W, Ht = W.double().numpy().copy(), Ht.double().numpy().copy()
    bu, bi = bu.double().numpy().copy(), bi.double().numpy().copy()
    rows, cols, vals = rows.long().numpy(), cols.long().numpy(), vals.double().numpy()
    sse = 0.0
    for e in sequence:
        u, i = rows[e], cols[e]
        pred = W[u] @ Ht[i] + ((mu + bu[u] + bi[i]) if biases else 0.0)
        err = vals[e] - pred
        sse += err * err
        if biases:
            bu[u] += lr * (err - bias_reg * bu[u])
            bi[i] += lr * (err - bias_reg * bi[i])
        w_old = W[u].copy()
        W[u] += lr * (err * Ht[i] - reg * W[u])
        Ht[i] += lr * (err * w_old - reg * Ht[i])
        if nonnegative:
            W[u] = np.maximum(W[u], 0)
            Ht[i] = np.maximum(Ht[i], 0)
    return [torch.from_numpy(x) for x in (W, Ht, bu, bi)], sse


def _grid(gen, rows, cols, m, n, P):
    """The estimator's blocked layout: (order, block_ptr, schedule) on a P x P grid."""
    ug = torch.randperm(m, generator=gen) % P
    ig = torch.randperm(n, generator=gen) % P
    block = ug[rows.long()] * P + ig[cols.long()]
    perm = torch.randperm(rows.numel(), generator=gen)
    order = perm[torch.sort(block[perm], stable=True).indices]
    block_ptr = torch.zeros(P * P + 1, dtype=torch.int64)
    block_ptr[1:] = torch.bincount(block, minlength=P * P).cumsum(0)
    t = torch.arange(P)
    col_perm = torch.randperm(P, generator=gen)
    schedule = torch.stack([t * P + col_perm[(t + s) % P] for s in range(P)])
    return order, block_ptr, schedule


def _blocked_sequence(order, block_ptr, schedule):
    seq = []
    for b in schedule.reshape(-1).tolist():
        if b >= 0:
            seq += order[block_ptr[b]:block_ptr[b + 1]].tolist()
    return seq


def _sgd_args(gen, **over):
    rows, cols, vals, W, Ht, bu, bi = _sgd_problem(gen, 5, 4, 3, 12, torch.float32)
    args = dict(W=W, H_t=Ht, user_bias=bu, item_bias=bi, rows=rows, cols=cols, vals=vals,
                order=None, block_ptr=None, schedule=None, lr=0.01, reg=0.1, bias_reg=0.1,
                global_mean=3.0, use_biases=True, nonnegative=False)
    args.update(over)
    return args


SGD_BAD = {
    "row out of range": (lambda a: {"rows": a["rows"].clone().index_fill_(0, torch.tensor([3]), 5)},
                         IndexError, r"rows\[3\] = 5 is out of range for W with 5 rows"),
    "negative col": (lambda a: {"cols": a["cols"].clone().index_fill_(0, torch.tensor([0]), -1)},
                     IndexError, r"cols\[0\] = -1 is out of range"),
    "order out of range": (lambda a: {"order": torch.tensor([0, 12])}, IndexError,
                           r"order\[1\] = 12 is out of range for 12 entries"),
    "order int32": (lambda a: {"order": torch.tensor([0, 1], dtype=torch.int32)}, RuntimeError,
                    r"'order' must be a 1-D int64 tensor"),
    "block_ptr without schedule": (lambda a: {"block_ptr": torch.tensor([0, 12])}, RuntimeError,
                                   r"give both 'block_ptr' and 'schedule'"),
    "decreasing block_ptr": (lambda a: {"block_ptr": torch.tensor([0, 8, 4]),
                                        "schedule": torch.tensor([[0, 1]])}, IndexError,
                             r"block_ptr must be non-decreasing"),
    "block_ptr past the end": (lambda a: {"block_ptr": torch.tensor([0, 13]),
                                          "schedule": torch.tensor([[0]])}, IndexError,
                               r"block_ptr\[1\] = 13"),
    "schedule block out of range": (lambda a: {"block_ptr": torch.tensor([0, 12]),
                                               "schedule": torch.tensor([[0, 1]])}, IndexError,
                                    r"schedule holds block id 1"),
    "non-contiguous W": (lambda a: {"W": torch.randn(3, 5).t()}, RuntimeError,
                         r"'W' is updated in place and must be contiguous"),
    "rank mismatch": (lambda a: {"H_t": torch.randn(4, 2)}, RuntimeError, r"disagree on the rank k"),
    "mixed dtypes": (lambda a: {"vals": a["vals"].double()}, RuntimeError,
                     r"argument 'vals' has dtype Double but 'W' has dtype Float"),
    "bias shape": (lambda a: {"user_bias": torch.zeros(4)}, RuntimeError,
                   r"user_bias must have shape \(m,\) = \(5,\)"),
    "length mismatch": (lambda a: {"cols": a["cols"][:-1]}, RuntimeError,
                        r"rows, cols and vals must have the same length"),
    "index dtypes differ": (lambda a: {"cols": a["cols"].int()}, RuntimeError,
                            r"must have the same index dtype"),
    "float rows": (lambda a: {"rows": a["rows"].float()}, RuntimeError,
                   r"'rows' must hold int32 or int64 indices"),
    "zero lr": (lambda a: {"lr": 0.0}, RuntimeError, r"lr must be finite and positive"),
    "nan reg": (lambda a: {"reg": float("nan")}, RuntimeError, r"reg must be finite"),
    "W aliases H_t": (lambda a: {"H_t": a["W"], "item_bias": torch.zeros(5)}, RuntimeError, r"'W' and 'H_t' share memory"),
    # A tensor autograd tracks may not be changed in place by a non-differentiable op
    # (torch's own in-place ops refuse a leaf that requires grad).
    "W requires grad": (lambda a: {"W": a["W"].clone().requires_grad_()}, RuntimeError,
                        r"argument 'W' requires grad and would be updated in place"),
    "H_t requires grad": (lambda a: {"H_t": a["H_t"].clone().requires_grad_()}, RuntimeError,
                          r"argument 'H_t' requires grad and would be updated in place"),
    "user_bias requires grad": (lambda a: {"user_bias": a["user_bias"].clone().requires_grad_()},
                                RuntimeError, r"argument 'user_bias' requires grad"),
    "item_bias requires grad": (lambda a: {"item_bias": a["item_bias"].clone().requires_grad_()},
                                RuntimeError, r"argument 'item_bias' requires grad"),
    "W in a graph": (lambda a: {"W": a["W"].clone().requires_grad_() * 1.0}, RuntimeError,
                     r"argument 'W' requires grad and would be updated in place"),
}


def _csr_problem(gen, R, n, d, counts_max, dtype, index_dtype=torch.int64):
    counts = torch.randint(0, counts_max + 1, (R,), generator=gen)
    counts[0] = 0  # an empty row
    indptr = torch.zeros(R + 1, dtype=torch.int64)
    indptr[1:] = counts.cumsum(0)
    nnz = int(indptr[-1])
    indices = torch.randint(0, n, (nnz,), generator=gen).to(index_dtype)
    vals = torch.randn(nnz, generator=gen, dtype=torch.float64).to(dtype)
    F = torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype)
    offset = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
    reg = (torch.rand(d, generator=gen, dtype=torch.float64) + 0.1).to(dtype)
    return indptr, indices, vals, F, offset, reg


def _normal_reference(indptr, indices, vals, F, offset, reg, exponent):
    """einsum-built gram (R, d, d) and rhs (R, d) in float64."""
    F, vals, reg = F.double(), vals.double(), reg.double()
    R, d = indptr.numel() - 1, F.shape[1]
    lo = int(indptr[0])
    counts = indptr[1:] - indptr[:-1]
    row_of = torch.repeat_interleave(torch.arange(R), counts)
    idx = indices[lo:int(indptr[-1])].long()
    f = F[idx]
    t = vals[lo:int(indptr[-1])] - (offset.double()[idx] if offset is not None else 0.0)
    gram = torch.zeros(R, d, d, dtype=torch.float64).index_add_(0, row_of, torch.einsum("ep,eq->epq", f, f))
    rhs = torch.zeros(R, d, dtype=torch.float64).index_add_(0, row_of, t[:, None] * f)
    scale = counts.double() ** exponent
    gram += torch.diag_embed(scale[:, None] * reg[None, :])
    empty = counts == 0
    gram[empty] = torch.eye(d, dtype=torch.float64)
    rhs[empty] = 0
    return gram, rhs


ALS_BAD = {
    "decreasing indptr": (lambda a: {"indptr": torch.tensor([0, 3, 2])}, IndexError,
                          r"indptr must hold non-decreasing offsets"),
    "indptr past the end": (lambda a: {"indptr": torch.tensor([0, 999])}, IndexError,
                            r"indptr\[1\] = 999"),
    "int32 indptr": (lambda a: {"indptr": a["indptr"].int()}, RuntimeError,
                     r"'indptr' must be a non-empty 1-D int64"),
    "index out of range": (lambda a: {"indices": torch.full_like(a["indices"], 7)}, IndexError,
                           r"indices\[\d+\] = 7 is out of range for F with 7 rows"),
    "reg_diag shape": (lambda a: {"reg_diag": a["reg_diag"][:-1]}, RuntimeError,
                       r"reg_diag must have shape \(d,\)"),
    "offset shape": (lambda a: {"col_offset": a["col_offset"][:-1]}, RuntimeError,
                     r"col_offset must have shape \(n,\)"),
    "length mismatch": (lambda a: {"vals": a["vals"][:-1]}, RuntimeError,
                        r"indices and vals must have the same length"),
    "mixed dtypes": (lambda a: {"F": a["F"].float()}, RuntimeError, r"has dtype"),
    "nan exponent": (lambda a: {"count_exponent": float("nan")}, RuntimeError,
                     r"count_exponent must be finite"),
    # A NaN or negative ridge makes the systems indefinite (NaN rows), an infinite one
    # their solutions NaN: refused, naming the entry.
    "nan reg_diag": (lambda a: {"reg_diag": _with(a["reg_diag"], 1, float("nan"))}, ValueError,
                     r"argument 'reg_diag' must be finite and non-negative; found reg_diag\[1\] = nan"),
    "negative reg_diag": (lambda a: {"reg_diag": _with(a["reg_diag"], 2, -0.5)}, ValueError,
                          r"argument 'reg_diag' must be finite and non-negative; found reg_diag\[2\] = -0.5"),
    "inf reg_diag": (lambda a: {"reg_diag": _with(a["reg_diag"], 0, float("inf"))}, ValueError,
                     r"argument 'reg_diag' must be finite and non-negative; found reg_diag\[0\] = inf"),
}


# The cases whose defect lies in tensor data: CUDA finds them on the device and
# reports them at the next mfext call (tests/cuda/test_cuda_cf_ops.py).
ALS_DATA_CASES = {"decreasing indptr", "indptr past the end", "index out of range",
                  "nan reg_diag", "negative reg_diag", "inf reg_diag"}


def _with(t, i, value):
    """A copy of t with t[i] = value."""
    t = t.clone()
    t[i] = value
    return t


# The input forms every recommender (and mfext.metrics) accepts, by name.
FORMS = ["ratings", "scipy_coo", "scipy_csr", "torch_coo", "torch_csr", "triple", "dense_nan"]


def as_form(r, form: str):
    """The ratings ``r`` (a datasets.Ratings) in one input form of ``FORMS``.

    The scipy forms skip the test where scipy is absent; ``dense_nan`` is an
    (n_users, n_items) tensor with NaN for the missing entries.
    """
    import math
    import warnings

    import pytest
    import torch

    rows, cols, vals = r.rows, r.cols, r.vals
    shape = (r.n_users, r.n_items)
    if form == "ratings":
        return r
    if form.startswith("scipy"):
        sp = pytest.importorskip("scipy.sparse")
        coo = sp.coo_matrix((vals.numpy(), (rows.numpy(), cols.numpy())), shape=shape)
        return coo if form == "scipy_coo" else coo.tocsr()
    if form.startswith("torch"):
        with warnings.catch_warnings():  # torch's notes on sparse invariants and CSR being beta
            warnings.simplefilter("ignore", UserWarning)
            coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, shape).coalesce()
            return coo if form == "torch_coo" else coo.to_sparse_csr()
    if form == "triple":
        return (rows, cols, vals)
    if form == "dense_nan":
        dense = torch.full(shape, math.nan, dtype=vals.dtype)
        dense[rows, cols] = vals
        return dense
    raise ValueError(form)

