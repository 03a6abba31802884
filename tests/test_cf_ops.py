"""The collaborative-filtering kernels: parity with float64 references, opcheck, bad input.

* sgd_epoch_: one epoch against a sequential Python/numpy reference (the same
  update rule, entry by entry), in storage order, a given order, and the blocked
  schedule; the blocked schedule is bitwise identical for 1 and 2 threads.
* als_normal_equations / als_solve: against einsum-built systems and torch solves.
* _sparse_dot: against the gather expression.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import mfext  # noqa: F401  (registers the ops)
from mfext import cf_ops
from mfext.estimator import _num_threads as threads
from conftest import RTOL, rel_err




# --------------------------------------------------------------------------- SGD


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


SGD_SHAPES = [(1, 1, 1, 5), (7, 5, 3, 60), (13, 11, 17, 200), (9, 14, 64, 150), (20, 30, 33, 300)]


@pytest.mark.parametrize("shape", SGD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("biases", [True, False], ids=["biases", "nobias"])
@pytest.mark.parametrize("mode", ["storage", "order", "blocked"])
def test_sgd_epoch_matches_sequential_reference(shape, biases, mode, dtype, gen):
    m, n, k, nnz = shape
    rows, cols, vals, W, Ht, bu, bi = _sgd_problem(gen, m, n, k, nnz, dtype)
    lr, reg, bias_reg, mu = 0.02, 0.05, 0.01, 3.0
    order = block_ptr = schedule = None
    if mode == "storage":
        seq = list(range(nnz))
    elif mode == "order":  # a permutation with repeats and omissions
        order = torch.randint(0, nnz, (nnz + 7,), generator=gen)
        seq = order.tolist()
    else:
        order, block_ptr, schedule = _grid(gen, rows, cols, m, n, P=3)
        seq = _blocked_sequence(order, block_ptr, schedule)
    (W_ref, Ht_ref, bu_ref, bi_ref), sse_ref = _sgd_reference(
        W, Ht, bu, bi, rows, cols, vals, seq, lr, reg, bias_reg, mu, biases, False)
    with threads(1):
        sse = cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, order=order,
                                block_ptr=block_ptr, schedule=schedule, lr=lr, reg=reg,
                                bias_reg=bias_reg, global_mean=mu, use_biases=biases)
    tol = RTOL[dtype] * 10  # a chain of updates, each rounded
    assert sse.dtype == torch.float64 and sse.dim() == 0
    assert abs(float(sse) - sse_ref) <= tol * max(1.0, sse_ref)
    for name, x, ref in (("W", W, W_ref), ("H_t", Ht, Ht_ref), ("user_bias", bu, bu_ref),
                         ("item_bias", bi, bi_ref)):
        assert rel_err(x, ref) <= tol, name


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_sgd_epoch_nonnegative_and_index_dtypes(index_dtype, gen):
    rows, cols, vals, W, Ht, bu, bi = _sgd_problem(gen, 8, 6, 5, 80, torch.float64, index_dtype)
    W, Ht = W.abs(), Ht.abs()
    (W_ref, Ht_ref, bu_ref, bi_ref), _ = _sgd_reference(
        W, Ht, bu, bi, rows, cols, vals, range(80), 0.05, 0.02, 0.0, 3.5, True, True)
    cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, lr=0.05, reg=0.02, global_mean=3.5,
                      nonnegative=True)
    assert bool((W >= 0).all()) and bool((Ht >= 0).all())
    assert rel_err(W, W_ref) <= 1e-10 and rel_err(Ht, Ht_ref) <= 1e-10
    assert rel_err(bu, bu_ref) <= 1e-10 and rel_err(bi, bi_ref) <= 1e-10


def test_sgd_blocked_is_identical_for_any_thread_count(gen):
    m, n, k, nnz = 300, 200, 16, 20000
    rows, cols, vals, W, Ht, bu, bi = _sgd_problem(gen, m, n, k, nnz, torch.float32)
    order, block_ptr, schedule = _grid(gen, rows, cols, m, n, P=8)
    results = []
    for n_threads in (1, 2):
        state = [t.clone() for t in (W, Ht, bu, bi)]
        with threads(n_threads):
            sse = cf_ops.sgd_epoch_(*state, rows, cols, vals, order=order, block_ptr=block_ptr,
                                    schedule=schedule, lr=0.01, reg=0.05, bias_reg=0.01,
                                    global_mean=3.0)
        results.append((state, float(sse)))
    (s1, e1), (s2, e2) = results
    assert e1 == e2
    for a, b in zip(s1, s2):
        assert torch.equal(a, b)
    assert not torch.equal(s1[0], W)  # the epoch did update W


def test_sgd_hogwild_reduces_the_error(gen):
    m, n, k, nnz = 200, 150, 8, 30000
    W0 = torch.randn(m, k, generator=gen) * 0.5
    H0 = torch.randn(n, k, generator=gen) * 0.5
    rows = torch.randint(0, m, (nnz,), generator=gen)
    cols = torch.randint(0, n, (nnz,), generator=gen)
    vals = (W0[rows] * H0[cols]).sum(1)
    W = torch.randn(m, k, generator=gen) * 0.1
    Ht = torch.randn(n, k, generator=gen) * 0.1
    empty = torch.empty(0)
    with threads(2):
        errors = [float(cf_ops.sgd_epoch_(W, Ht, empty, empty, rows, cols, vals, lr=0.05, reg=0.0,
                                          use_biases=False)) for _ in range(15)]
    assert all(np.isfinite(errors))
    assert errors[-1] < 0.2 * errors[0]


def _sgd_args(gen, **over):
    rows, cols, vals, W, Ht, bu, bi = _sgd_problem(gen, 5, 4, 3, 12, torch.float32)
    args = dict(W=W, H_t=Ht, user_bias=bu, item_bias=bi, rows=rows, cols=cols, vals=vals,
                order=None, block_ptr=None, schedule=None, lr=0.01, reg=0.1, bias_reg=0.1,
                global_mean=3.0, use_biases=True, nonnegative=False)
    args.update(over)
    return args


def _call_sgd(a):
    return torch.ops.mfext.sgd_epoch_(
        a["W"], a["H_t"], a["user_bias"], a["item_bias"], a["rows"], a["cols"], a["vals"],
        a["order"], a["block_ptr"], a["schedule"], a["lr"], a["reg"], a["bias_reg"],
        a["global_mean"], a["use_biases"], a["nonnegative"])


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


@pytest.mark.parametrize("case", list(SGD_BAD), ids=list(SGD_BAD))
def test_sgd_epoch_bad_inputs(case, gen):
    a = _sgd_args(gen)
    change, exc, pattern = SGD_BAD[case]
    a.update(change(a))
    before = [a[k].clone() for k in ("W", "H_t", "user_bias", "item_bias")]
    with pytest.raises(exc) as info:
        _call_sgd(a)
    assert re.search(pattern, str(info.value)), str(info.value)
    assert "mfext::sgd_epoch_" in str(info.value)
    for t, b in zip((a[k] for k in ("W", "H_t", "user_bias", "item_bias")), before):
        assert torch.equal(t, b)  # checks run before any update


@pytest.mark.parametrize("name", ["W", "H_t", "user_bias", "item_bias"])
@pytest.mark.parametrize("call", ["wrapper", "op"])
def test_sgd_epoch_refuses_tensors_that_require_grad(name, call, gen):
    """Refused with grad mode on, the tensors left unchanged; under torch.no_grad() (as
    for torch's in-place ops) the epoch runs and matches the same epoch on plain tensors."""
    a = _sgd_args(gen)
    a[name] = a[name].clone().requires_grad_()
    plain = {key: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for key, v in a.items()}
    before = [a[key].detach().clone() for key in ("W", "H_t", "user_bias", "item_bias")]

    def run(args):
        if call == "op":
            return _call_sgd(args)
        return cf_ops.sgd_epoch_(
            args["W"], args["H_t"], args["user_bias"], args["item_bias"], args["rows"],
            args["cols"], args["vals"], lr=args["lr"], reg=args["reg"],
            bias_reg=args["bias_reg"], global_mean=args["global_mean"])

    with pytest.raises(RuntimeError, match=rf"mfext::sgd_epoch_: argument '{name}' requires grad "
                                           rf"and would be updated in place .*{name}\.detach\(\)"):
        run(a)
    for key, b in zip(("W", "H_t", "user_bias", "item_bias"), before):
        assert torch.equal(a[key].detach(), b), key
    assert a[name].grad is None
    with torch.no_grad():
        sse = run(a)
    sse_plain = run(plain)
    assert float(sse) == float(sse_plain)
    for key in ("W", "H_t", "user_bias", "item_bias"):
        assert torch.equal(a[key].detach(), plain[key]), key
    assert not torch.equal(a["W"].detach(), before[0])  # the epoch did run


def test_sgd_epoch_ignores_grad_on_unused_biases(gen):
    """Without biases the bias tensors are not touched, so their flags do not matter."""
    a = _sgd_args(gen, use_biases=False)
    a["user_bias"] = a["user_bias"].clone().requires_grad_()
    before = a["user_bias"].detach().clone()
    _call_sgd(a)
    assert torch.equal(a["user_bias"].detach(), before)


@pytest.mark.parametrize("blocked", [False, True], ids=["hogwild", "blocked"])
def test_opcheck_sgd_epoch(blocked, dtype, gen):
    m, n, k, nnz = 6, 5, 3, 20
    rows, cols, vals, W, Ht, bu, bi = _sgd_problem(gen, m, n, k, nnz, dtype)
    order = block_ptr = schedule = None
    if blocked:
        order, block_ptr, schedule = _grid(gen, rows, cols, m, n, P=2)
    args = (W, Ht, bu, bi, rows, cols, vals, order, block_ptr, schedule, 0.01, 0.05, 0.01, 3.0,
            True, False)
    with threads(1):
        torch.library.opcheck(torch.ops.mfext.sgd_epoch_.default, args)


# --------------------------------------------------------------------------- ALS


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


ALS_SHAPES = [(1, 1, 1, 3), (6, 5, 3, 8), (17, 9, 65, 40), (30, 40, 16, 25), (8, 7, 33, 90)]


@pytest.mark.parametrize("shape", ALS_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("exponent", [0.0, 1.0, 0.75])
@pytest.mark.parametrize("with_offset", [True, False], ids=["offset", "nooffset"])
def test_als_normal_equations_match_einsum(shape, exponent, with_offset, dtype, gen):
    R, n, d, cmax = shape
    indptr, indices, vals, F, offset, reg = _csr_problem(gen, R, n, d, cmax, dtype)
    offset = offset if with_offset else None
    gram, rhs = cf_ops.als_normal_equations(indptr, indices, vals, F, offset, reg, exponent)
    gram_ref, rhs_ref = _normal_reference(indptr, indices, vals, F, offset, reg, exponent)
    assert gram.shape == (R, d, d) and rhs.shape == (R, d) and gram.dtype == dtype
    assert rel_err(gram, gram_ref) <= RTOL[dtype]
    assert rel_err(rhs, rhs_ref) <= RTOL[dtype]
    assert torch.equal(gram, gram.transpose(1, 2))


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_als_row_slices_and_index_dtypes(index_dtype, gen):
    indptr, indices, vals, F, offset, reg = _csr_problem(gen, 20, 12, 6, 15, torch.float64,
                                                         index_dtype)
    gram, rhs = cf_ops.als_normal_equations(indptr, indices, vals, F, offset, reg, 1.0)
    part_gram, part_rhs = cf_ops.als_normal_equations(indptr[5:12], indices, vals, F, offset,
                                                      reg, 1.0)
    assert torch.equal(part_gram, gram[5:11]) and torch.equal(part_rhs, rhs[5:11])


@pytest.mark.parametrize("shape", ALS_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_als_solve_matches_torch_solve(shape, dtype, gen):
    R, n, d, cmax = shape
    indptr, indices, vals, F, offset, reg = _csr_problem(gen, R, n, d, cmax, dtype)
    x = cf_ops.als_solve(indptr, indices, vals, F, offset, reg, 0.75)
    gram_ref, rhs_ref = _normal_reference(indptr, indices, vals, F, offset, reg, 0.75)
    x_ref = torch.linalg.solve(gram_ref, rhs_ref)
    assert x.shape == (R, d) and x.dtype == dtype
    assert rel_err(x, x_ref) <= (1e-9 if dtype == torch.float64 else 1e-3)
    assert torch.equal(x[0], torch.zeros(d, dtype=dtype))  # the empty row


def test_als_solve_without_regularization_falls_back_to_a_ridge(gen):
    # 2 entries, d = 5, no ridge: the Gram matrix is singular.
    indptr = torch.tensor([0, 2])
    indices = torch.tensor([0, 1])
    vals = torch.tensor([1.0, 2.0], dtype=torch.float64)
    F = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    x = cf_ops.als_solve(indptr, indices, vals, F, None, torch.zeros(5, dtype=torch.float64), 0.0)
    assert bool(torch.isfinite(x).all())
    assert rel_err(F @ x[0], vals) <= 1e-3  # still (nearly) interpolates


def test_als_solve_rank_deficient_systems_never_give_huge_solutions(device, dtype, gen):
    """One entry per row, d = 3, no ridge: rank 1. The elimination leaves two pivots of
    rounding size and either sign; a positive one accepted would give an enormous x.
    The pivot floor (math::pivot_floor) sends every such row to the fallback ridge."""
    R, d = 3000, 3
    indptr = torch.arange(R + 1)
    indices = torch.arange(R)
    vals = torch.randn(R, generator=gen, dtype=dtype)
    F = torch.randn(R, d, generator=gen, dtype=dtype)
    x = cf_ops.als_solve(*(t.to(device) for t in (indptr, indices, vals, F)), None,
                         torch.zeros(d, dtype=dtype, device=device), 0.0).cpu()
    assert bool(torch.isfinite(x).all())
    # The ridge solution is the minimum-norm interpolant, shrunk by ~1e-4: |x| = |v| / |f|.
    ratio = x.norm(dim=1) / (vals.abs() / F.norm(dim=1))
    assert float(ratio.max()) <= 1.0 + 1e-3
    fitted = (F * x).sum(1)
    assert rel_err(fitted, vals) <= 1e-3


def test_als_identical_for_any_thread_count(gen):
    indptr, indices, vals, F, offset, reg = _csr_problem(gen, 400, 300, 33, 60, torch.float32)
    with threads(1):
        g1, b1 = cf_ops.als_normal_equations(indptr, indices, vals, F, offset, reg, 1.0)
        x1 = cf_ops.als_solve(indptr, indices, vals, F, offset, reg, 1.0)
    with threads(2):
        g2, b2 = cf_ops.als_normal_equations(indptr, indices, vals, F, offset, reg, 1.0)
        x2 = cf_ops.als_solve(indptr, indices, vals, F, offset, reg, 1.0)
    assert torch.equal(g1, g2) and torch.equal(b1, b2) and torch.equal(x1, x2)


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
# reports them at the next mfext call (tests/test_cuda_cf.py).
ALS_DATA_CASES = {"decreasing indptr", "indptr past the end", "index out of range",
                  "nan reg_diag", "negative reg_diag", "inf reg_diag"}


def _with(t, i, value):
    """A copy of t with t[i] = value."""
    t = t.clone()
    t[i] = value
    return t


@pytest.mark.parametrize("op", ["als_normal_equations", "als_solve"])
@pytest.mark.parametrize("case", list(ALS_BAD), ids=list(ALS_BAD))
def test_als_bad_inputs(op, case, gen):
    indptr, indices, vals, F, offset, reg = _csr_problem(gen, 4, 7, 3, 5, torch.float64)
    indptr = torch.tensor([0, 2, 4, 6, 8])
    indices = torch.randint(0, 7, (8,), generator=gen)
    vals = torch.randn(8, generator=gen, dtype=torch.float64)
    a = dict(indptr=indptr, indices=indices, vals=vals, F=F, col_offset=offset, reg_diag=reg,
             count_exponent=1.0)
    change, exc, pattern = ALS_BAD[case]
    a.update(change(a))
    with pytest.raises(exc) as info:
        getattr(torch.ops.mfext, op)(*a.values())
    assert re.search(pattern, str(info.value)), str(info.value)
    assert f"mfext::{op}" in str(info.value)


@pytest.mark.parametrize("op", ["als_normal_equations", "als_solve"])
@pytest.mark.parametrize("with_offset", [True, False], ids=["offset", "nooffset"])
def test_opcheck_als(op, with_offset, dtype, gen):
    indptr, indices, vals, F, offset, reg = _csr_problem(gen, 5, 6, 4, 6, dtype)
    args = (indptr, indices, vals, F, offset if with_offset else None, reg, 0.75)
    torch.library.opcheck(getattr(torch.ops.mfext, op).default, args)


def test_als_ops_compile_fullgraph(gen):
    indptr, indices, vals, F, offset, reg = _csr_problem(gen, 5, 6, 4, 6, torch.float32)
    fn = torch.compile(lambda *a: cf_ops.als_solve(*a) * 2.0, fullgraph=True, backend="eager")
    x = fn(indptr, indices, vals, F, offset, reg, 1.0)
    assert torch.equal(x, 2.0 * cf_ops.als_solve(indptr, indices, vals, F, offset, reg, 1.0))


# --------------------------------------------------------------------------- _sparse_dot


@pytest.mark.parametrize("k", [1, 7, 32, 64, 65, 128])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_sparse_dot_matches_gather(k, index_dtype, dtype, gen):
    m, n, nnz = 23, 17, 301
    rows = torch.randint(0, m, (nnz,), generator=gen).to(index_dtype)
    cols = torch.randint(0, n, (nnz,), generator=gen).to(index_dtype)
    W = torch.randn(m, k, generator=gen, dtype=torch.float64).to(dtype)
    Ht = torch.randn(n, k, generator=gen, dtype=torch.float64).to(dtype)
    out = cf_ops.sparse_dot(rows, cols, W, Ht)
    ref = (W.double()[rows.long()] * Ht.double()[cols.long()]).sum(1)
    assert out.shape == (nnz,) and out.dtype == dtype
    assert rel_err(out, ref) <= RTOL[dtype]


def test_sparse_dot_errors_and_opcheck(gen):
    rows, cols = torch.tensor([0, 1]), torch.tensor([0, 2])
    W, Ht = torch.randn(2, 3, generator=gen), torch.randn(2, 3, generator=gen)
    with pytest.raises(IndexError, match=r"cols\[1\] = 2 is out of range for H_t with 2 rows"):
        cf_ops.sparse_dot(rows, cols, W, Ht)
    with pytest.raises(RuntimeError, match=r"disagree on the rank k"):
        cf_ops.sparse_dot(rows, rows, W, Ht[:, :2])
    torch.library.opcheck(torch.ops.mfext._sparse_dot.default, (rows, rows, W, Ht))


# --------------------------------------------------------------------------- _bucket_sort


@pytest.mark.parametrize("nnz, buckets", [(0, 3), (1, 1), (50, 7), (100_000, 613)])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_bucket_sort_is_a_stable_sort(nnz, buckets, index_dtype, gen):
    keys = torch.randint(0, buckets, (nnz,), generator=gen).to(index_dtype)
    order, offsets = cf_ops.bucket_sort(keys, buckets)
    assert torch.equal(order, torch.sort(keys, stable=True).indices)
    expected = torch.zeros(buckets + 1, dtype=torch.int64)
    expected[1:] = torch.bincount(keys.long(), minlength=buckets).cumsum(0)
    assert torch.equal(offsets, expected)


def test_bucket_sort_errors_and_opcheck(gen):
    with pytest.raises(IndexError, match=r"keys\[1\] = 5 is out of range for 5 buckets"):
        cf_ops.bucket_sort(torch.tensor([0, 5]), 5)
    with pytest.raises(RuntimeError, match=r"'keys' must hold int32 or int64"):
        cf_ops.bucket_sort(torch.tensor([0.0]), 5)
    torch.library.opcheck(torch.ops.mfext._bucket_sort.default, (torch.tensor([2, 0, 2, 1]), 3))
