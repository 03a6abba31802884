"""implicit_als_matvec and the base/weight terms of als_solve/als_normal_equations,
against dense float64 references built from the full m x n objective."""
from __future__ import annotations

import pytest
import torch

import mfext  # noqa: F401  (registers the ops)
from mfext.ops.als import als_normal_equations, als_solve
from mfext.ops.implicit import implicit_als_matvec

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=2e-4, atol=2e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def _problem(R, n, d, nnz, dtype, seed, idx=torch.int64, empty_rows=(), dup=False, zeros=False):
    """A random CSR problem: indptr (R+1,), indices (nnz,), weight, target (nnz,), Y (n, d)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, R, (nnz,), generator=g) if R else torch.zeros(0, dtype=torch.long)
    for r in empty_rows:
        rows = rows[rows != r]
    cols = torch.randint(0, n, (rows.numel(),), generator=g)
    if dup and rows.numel():
        rows, cols = torch.cat([rows, rows[:3]]), torch.cat([cols, cols[:3]])
    order = torch.argsort(rows * n + cols, stable=True)
    rows, cols = rows[order], cols[order]
    indptr = torch.zeros(R + 1, dtype=torch.long)
    indptr[1:] = torch.bincount(rows, minlength=R).cumsum(0)
    weight = torch.rand(rows.numel(), generator=g, dtype=torch.float64) * 3
    if zeros and weight.numel():
        weight[::2] = 0
    target = weight + 1
    Y = torch.randn(n, d, generator=g, dtype=torch.float64)
    return (indptr, cols.to(idx), weight.to(dtype), target.to(dtype), Y.to(dtype), rows)


def _dense_systems(indptr, cols, weight, target, Y, gram):
    """Per row: A_r = gram + sum_e w_e y y^T, b_r = sum_e t_e y, in float64."""
    R, d = indptr.numel() - 1, Y.shape[1]
    Yd = Y.double()
    A = gram.double().expand(R, d, d).clone()
    b = torch.zeros(R, d, dtype=torch.float64)
    for r in range(R):
        for e in range(int(indptr[r]), int(indptr[r + 1])):
            y = Yd[int(cols[e])]
            A[r] += float(weight[e]) * torch.outer(y, y)
            b[r] += float(target[e]) * y
    return A, b


SHAPES = [(1, 1, 1, 1), (7, 11, 5, 30), (13, 3, 1, 20), (5, 17, 64, 40), (4, 9, 7, 0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_target", [False, True])
def test_matvec_matches_dense_reference(dtype, shape, with_target):
    R, n, d, nnz = shape
    indptr, cols, w, t, Y, _ = _problem(R, n, d, nnz, dtype, seed=sum(shape), empty_rows=(0,),
                                        dup=True, zeros=True)
    gram = (Y.double().t() @ Y.double() + 0.1 * torch.eye(d, dtype=torch.float64)).to(dtype)
    X = torch.randn(R, d, dtype=dtype)
    out = implicit_als_matvec(indptr, cols, w, Y, gram, X, t if with_target else None)
    A, b = _dense_systems(indptr, cols, w, t, Y, gram)
    ref = torch.einsum("rij,rj->ri", A, X.double()) - (b if with_target else 0)
    assert out.dtype == dtype and out.shape == (R, d)
    torch.testing.assert_close(out.double(), ref, **TOL[dtype])


@pytest.mark.parametrize("idx", [torch.int32, torch.int64])
def test_matvec_index_dtypes_and_views(idx):
    indptr, cols, w, t, Y, _ = _problem(6, 10, 8, 25, torch.float64, seed=3, idx=idx)
    gram = torch.randn(8, 8, dtype=torch.float64)
    gram = gram + gram.t()
    Xbig = torch.randn(6, 16, dtype=torch.float64)
    X = Xbig[:, ::2]                               # (6, 8), a non-contiguous view
    Ybig = torch.randn(8, 20, dtype=torch.float64)
    Yv = Ybig.t()[:10]                             # (10, 8), non-contiguous
    out = implicit_als_matvec(indptr, cols, w, Yv, gram, X, t)
    ref = implicit_als_matvec(indptr, cols.long(), w, Yv.contiguous(), gram, X.contiguous(), t)
    assert torch.equal(out, ref)


def test_matvec_is_deterministic_across_thread_counts():
    indptr, cols, w, t, Y, _ = _problem(300, 200, 32, 6000, torch.float32, seed=5)
    gram = (Y.t() @ Y).contiguous()
    X = torch.randn(300, 32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = implicit_als_matvec(indptr, cols, w, Y, torch.zeros_like(gram), X, t)
        torch.set_num_threads(2)
        two = implicit_als_matvec(indptr, cols, w, Y, torch.zeros_like(gram), X, t)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_matvec_bad_inputs_name_the_argument():
    indptr, cols, w, t, Y, _ = _problem(4, 6, 3, 10, torch.float64, seed=1)
    gram, X = torch.eye(3, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64)
    bad = cols.clone()
    bad[-1] = 6
    with pytest.raises(IndexError, match=r"indices\[9\] = 6 is out of range"):
        implicit_als_matvec(indptr, bad, w, Y, gram, X, t)
    dec = indptr.clone()
    dec[2] = dec[1] - 1 if dec[1] > 0 else 11
    with pytest.raises(IndexError, match="indptr"):
        implicit_als_matvec(dec, cols, w, Y, gram, X, t)
    with pytest.raises(RuntimeError, match="gram must have shape"):
        implicit_als_matvec(indptr, cols, w, Y, torch.eye(2, dtype=torch.float64), X, t)
    with pytest.raises(RuntimeError, match="X must have shape"):
        implicit_als_matvec(indptr, cols, w, Y, gram, X[:3], t)
    with pytest.raises(RuntimeError, match="weight"):
        implicit_als_matvec(indptr, cols, w[:-1], Y, gram, X, t)
    with pytest.raises(RuntimeError, match="target"):
        implicit_als_matvec(indptr, cols, w, Y, gram, X, t.float())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (7, 11, 5, 30), (6, 13, 1, 25), (5, 40, 33, 90)])
def test_als_with_base_and_weight_matches_dense_solve(dtype, shape):
    R, n, d, nnz = shape
    indptr, cols, w, t, Y, _ = _problem(R, n, d, nnz, dtype, seed=7 + d, empty_rows=(0,),
                                        dup=True, zeros=True)
    base = (Y.double().t() @ Y.double()).to(dtype)
    reg = torch.full((d,), 0.05, dtype=dtype)
    gram, rhs = als_normal_equations(indptr, cols, t, Y, None, reg, 0.0, base=base, weight=w)
    A, b = _dense_systems(indptr, cols, w, t, Y, base + torch.diag(reg))
    nonempty = indptr[1:] > indptr[:-1]
    torch.testing.assert_close(gram[nonempty].double(), A[nonempty], **TOL[dtype])
    torch.testing.assert_close(rhs.double(), b, **TOL[dtype])
    x = als_solve(indptr, cols, t, Y, None, reg, 0.0, base=base, weight=w)
    ref = torch.linalg.solve(A, b)
    ref[~nonempty] = 0
    tol = dict(rtol=2e-3, atol=2e-3) if dtype == torch.float32 else TOL[dtype]
    torch.testing.assert_close(x.double(), ref, **tol)


def test_als_without_base_and_weight_is_unchanged():
    """The new arguments default to the old systems, bit for bit."""
    indptr, cols, w, t, Y, _ = _problem(9, 12, 6, 40, torch.float32, seed=11)
    reg = torch.full((6,), 0.1)
    a = als_solve(indptr, cols, t, Y, None, reg, 0.75)
    b = als_solve(indptr, cols, t, Y, None, reg, 0.75, base=None, weight=None)
    ones = als_solve(indptr, cols, t, Y, None, reg, 0.75, weight=torch.ones_like(w))
    assert torch.equal(a, b)
    torch.testing.assert_close(a, ones, rtol=1e-6, atol=1e-6)


def test_als_base_and_weight_bad_inputs():
    indptr, cols, w, t, Y, _ = _problem(4, 6, 3, 10, torch.float64, seed=2)
    reg = torch.full((3,), 0.1, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="base must have shape"):
        als_solve(indptr, cols, t, Y, None, reg, 0.0, base=torch.eye(2, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="weight"):
        als_solve(indptr, cols, t, Y, None, reg, 0.0, weight=w[:-1])
    with pytest.raises(RuntimeError, match="base"):
        als_solve(indptr, cols, t, Y, None, reg, 0.0, base=torch.eye(3))


def _samples():
    out = []
    for dtype in DTYPES:
        for shape in [(3, 5, 4, 9), (1, 1, 1, 1), (4, 6, 2, 0)]:
            indptr, cols, w, t, Y, _ = _problem(*shape, dtype, seed=shape[3])
            d = shape[2]
            gram = torch.eye(d, dtype=dtype)
            X = torch.randn(shape[0], d, dtype=dtype)
            out.append(("matvec", (indptr, cols, w, Y, gram, X, t)))
            out.append(("matvec", (indptr, cols, w, Y, gram, X, None)))
            reg = torch.full((d,), 0.1, dtype=dtype)
            out.append(("solve", (indptr, cols, t, Y, None, reg, 0.0, gram, w)))
            out.append(("normal", (indptr, cols, t, Y, None, reg, 0.0, gram, w)))
    return out


@pytest.mark.parametrize("case", _samples(), ids=lambda c: c[0])
def test_opcheck(case):
    name, args = case
    op = {"matvec": torch.ops.mfext.implicit_als_matvec.default,
          "solve": torch.ops.mfext.als_solve.default,
          "normal": torch.ops.mfext.als_normal_equations.default}[name]
    torch.library.opcheck(op, args)
