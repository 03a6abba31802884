"""als_normal_equations / als_solve on the CPU: against einsum-built systems and torch
solves, row slices, index dtypes, the ridge fallback, thread counts, bad arguments,
opcheck and torch.compile."""
from __future__ import annotations

import re

import pytest
import torch

import mfext  # noqa: F401  (registers the ops)
from mfext import cf_ops
from mfext.recommenders.limits import num_threads as threads
from helpers import ALS_BAD, RTOL, _csr_problem, _normal_reference, rel_err


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
