"""Implicit ALS on CUDA (skipped without a GPU and a CUDA build).

* als_normal_equations / als_solve with ``base`` and ``weight``: agree with the
  CPU op on both sides of the shared-memory / workspace crossover, with empty
  rows and zero weights.
* implicit_als_cg_: agrees with the CPU op (1, 3 and d + 2 steps; d from 1 to
  300, both index dtypes, non-contiguous X), repeats bit for bit, reports bad
  index data at the next mfext call with X set to NaN, opcheck, and the cg
  half-step of the recommender agrees with the CPU's.
"""
from __future__ import annotations

import pytest
import torch

import mfext
from mfext.ops.als import als_normal_equations, als_solve
from mfext.ops.implicit import implicit_als_cg_
from helpers import HAS_CUDA, rel_err

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device or CUDA build"),
]

DTYPES = [torch.float32, torch.float64]


def _problem(R, n, d, avg, dtype, seed, idx=torch.int64):
    """CSR (indptr, indices, weight with zeros, vals), Y (n, d), gram, X on the CPU."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 2 * avg + 1, (R,), generator=g)
    if R > 1:
        counts[1] = 0  # an empty row
    indptr = torch.zeros(R + 1, dtype=torch.long)
    indptr[1:] = counts.cumsum(0)
    nnz = int(indptr[-1])
    indices = torch.randint(0, n, (nnz,), generator=g).to(idx)
    weight = torch.rand(nnz, generator=g, dtype=torch.float64) * 3
    weight[::3] = 0
    vals = weight + 1
    Y = torch.randn(n, d, generator=g, dtype=torch.float64) / d ** 0.5
    gram = Y.t() @ Y + torch.eye(d, dtype=torch.float64)
    X = 0.1 * torch.randn(R, d, generator=g, dtype=torch.float64)
    return [t.to(dtype) if t.is_floating_point() else t
            for t in (indptr, indices, weight, vals, Y, gram, X)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 7, 64, 129, 300])
@pytest.mark.parametrize("idx", [torch.int32, torch.int64])
def test_als_base_and_weight_match_the_cpu(dtype, d, idx):
    indptr, indices, weight, vals, Y, gram, _ = _problem(37, 50, d, 6, dtype, seed=d, idx=idx)
    reg = torch.full((d,), 0.1, dtype=dtype)
    for base, w in ((gram, weight), (gram, None), (None, weight)):
        args = (indptr, indices, vals, Y, None, reg, 0.5)
        kw = dict(base=base, weight=w)
        kw_gpu = {k: (v.cuda() if v is not None else None) for k, v in kw.items()}
        gpu = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
        G, b = als_normal_equations(*gpu, **kw_gpu)
        Gc, bc = als_normal_equations(*args, **kw)
        tol = 1e-10 if dtype == torch.float64 else 2e-5
        assert rel_err(G.cpu(), Gc) <= tol and rel_err(b.cpu(), bc) <= tol
        x = als_solve(*gpu, **kw_gpu)
        assert rel_err(x.cpu(), als_solve(*args, **kw)) <= (1e-9 if dtype == torch.float64
                                                             else 2e-3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 7, 32, 64, 128, 200, 300])
@pytest.mark.parametrize("steps", [1, 3, 0])
@pytest.mark.parametrize("diagonal", [False, True], ids=["full_gram", "diag_gram"])
def test_cg_matches_the_cpu(dtype, d, steps, diagonal):
    indptr, indices, weight, _, Y, gram, X = _problem(53, 41, d, 7, dtype, seed=d + steps)
    if diagonal:  # a (d,) gram: the CPU runs rows back to back, CUDA its broadcast product
        gram = gram.diagonal().clone()
    steps = steps or d + 2
    Xg = X.cuda()
    implicit_als_cg_(Xg, indptr.cuda(), indices.cuda(), weight.cuda(), Y.cuda(), gram.cuda(),
                     steps)
    implicit_als_cg_(X, indptr, indices, weight, Y, gram, steps)
    tol = 1e-9 if dtype == torch.float64 else 3e-3
    assert rel_err(Xg.cpu(), X) <= tol


@pytest.mark.parametrize("idx", [torch.int32, torch.int64])
def test_cg_views_and_repeats(idx):
    indptr, indices, weight, _, Y, gram, X = _problem(40, 30, 16, 5, torch.float32, 3, idx)
    big = torch.zeros(40, 32, device="cuda")
    big[:, ::2] = X.cuda()
    view = big[:, ::2]
    args = (indptr.cuda(), indices.cuda(), weight.cuda(), Y.cuda(), gram.cuda(), 3)
    implicit_als_cg_(view, *args)
    again = X.cuda()
    implicit_als_cg_(again, *args)
    assert torch.equal(view, again)
    assert torch.equal(big[:, 1::2], torch.zeros(40, 16, device="cuda"))


def test_cg_bad_index_is_reported_at_the_next_call():
    indptr, indices, weight, _, Y, gram, X = _problem(6, 5, 4, 4, torch.float64, 9)
    bad = indices.clone()
    bad[-1] = 5
    Xg = X.cuda()
    implicit_als_cg_(Xg, indptr.cuda(), bad.cuda(), weight.cuda(), Y.cuda(), gram.cuda(), 2)
    torch.cuda.synchronize()
    assert torch.isnan(Xg).all()
    with pytest.raises(IndexError, match=r"implicit_als_cg_: indices\[\d+\] = 5 is out of range"
                                         r" for Y with 5 rows"):
        mfext.cuda_check_errors()
    with pytest.raises(ValueError, match="cg_steps"):
        implicit_als_cg_(Xg, indptr.cuda(), indices.cuda(), weight.cuda(), Y.cuda(),
                         gram.cuda(), 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck_cg_on_cuda(dtype):
    indptr, indices, weight, _, Y, gram, X = _problem(9, 7, 5, 4, dtype, 4)
    for g in (gram, gram.diagonal().clone()):
        args = tuple(a.cuda() for a in (X, indptr, indices, weight, Y, g)) + (2,)
        torch.library.opcheck(torch.ops.mfext.implicit_als_cg_.default, args)


def test_cg_half_step_matches_the_cpu():
    from mfext.recommenders import implicit_solvers as S
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 60, (900,), generator=g)
    cols = torch.randint(0, 45, (900,), generator=g)
    key = torch.unique(rows * 45 + cols)
    rows, cols = key // 45, key % 45
    w = torch.rand(key.numel(), generator=g) * 4
    Y = torch.rand(45, 16, generator=g) * 0.1
    X = torch.rand(60, 16, generator=g) * 0.1
    cpu = S.ImplicitProblem(rows, cols, w, 60, 45)
    gpu = S.ImplicitProblem(rows.cuda(), cols.cuda(), w.cuda(), 60, 45)
    Xc, Xg = X.clone(), X.cuda()
    S.implicit_half_step(cpu.users, Y, Xc, 0.05, "cg", 3)
    S.implicit_half_step(gpu.users, Y.cuda(), Xg, 0.05, "cg", 3)
    assert rel_err(Xg.cpu(), Xc) <= 1e-3
