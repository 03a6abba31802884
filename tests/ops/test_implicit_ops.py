"""implicit_als_cg_ and the base/weight terms of als_solve/als_normal_equations,
against dense float64 references built from the full m x n objective."""
from __future__ import annotations

import pytest
import torch

import mfext  # noqa: F401  (registers the ops)
from mfext.ops.als import als_normal_equations, als_solve
from mfext.ops.implicit import implicit_als_cg_

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


def _cg_reference(X, indptr, cols, weight, Y, gram, steps, target=None, row_gram=None):
    """implicit's CG per row on the dense float64 system, from X: (R, d) float64.
    target: b's coefficients (default weight + 1); row_gram: (R, d, d) per-row G."""
    t = weight.double() + 1 if target is None else target.double()
    A, b = _dense_systems(indptr, cols, weight, t, Y, gram)
    if row_gram is not None:
        A = A - gram.double() + row_gram.double()
    out = X.double().clone()
    for i in range(out.shape[0]):
        x = out[i]
        r = b[i] - A[i] @ x
        p = r.clone()
        rs = float(r @ r)
        for _ in range(steps):
            if rs < 1e-20:
                break
            Ap = A[i] @ p
            pAp = float(p @ Ap)
            if pAp <= 0:
                break
            a = rs / pAp
            x += a * p
            r -= a * Ap
            rs_new = float(r @ r)
            if rs_new < 1e-20:
                break
            p = r + (rs_new / rs) * p
            rs = rs_new
    return out, A, b


def _cg_case(shape, dtype, seed, idx=torch.int64, reg=1.0):
    R, n, d, nnz = shape
    indptr, cols, w, _, Y, _ = _problem(R, n, d, nnz, dtype, seed=seed, idx=idx,
                                        empty_rows=(0,), dup=True, zeros=True)
    Yd = Y.double()
    gram = (Yd.t() @ Yd + reg * torch.eye(d, dtype=torch.float64)).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    X = (0.1 * torch.randn(R, d, generator=g, dtype=torch.float64)).to(dtype)
    return X, indptr, cols, w, Y, gram


# (R, n, d, nnz): R = n = d = 1, primes, d = 1, k = 1 entries, an entry-free problem,
# the dispatched ranks 32/64/128 and a rank beside them.
CG_SHAPES = [(1, 1, 1, 1), (7, 11, 5, 30), (13, 3, 1, 20), (5, 17, 64, 40), (4, 9, 7, 0),
             (3, 5, 4, 1), (11, 23, 32, 90), (6, 19, 128, 50), (9, 29, 33, 70)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CG_SHAPES)
@pytest.mark.parametrize("steps", [1, 3])
def test_cg_matches_dense_reference(dtype, shape, steps):
    X, indptr, cols, w, Y, gram = _cg_case(shape, dtype, seed=sum(shape) + steps)
    ref, _, _ = _cg_reference(X, indptr, cols, w, Y, gram, steps)
    X0 = X.clone()
    assert implicit_als_cg_(X, indptr, cols, w, Y, gram, steps) is None
    assert X.dtype == dtype and X.shape == X0.shape
    tol = dict(rtol=2e-3, atol=2e-4) if dtype == torch.float32 else TOL[dtype]
    torch.testing.assert_close(X.double(), ref, **tol)


@pytest.mark.parametrize("shape", CG_SHAPES)
def test_cg_with_d_steps_solves_the_system(shape):
    """d + 2 steps reach the exact solution (reg = 10 keeps the condition number near 30:
    in floating point, CG on worse-conditioned systems needs more than d steps)."""
    X, indptr, cols, w, Y, gram = _cg_case(shape, torch.float64, seed=3 * sum(shape), reg=10.0)
    _, A, b = _cg_reference(X, indptr, cols, w, Y, gram, 0)
    implicit_als_cg_(X, indptr, cols, w, Y, gram, shape[2] + 2)
    torch.testing.assert_close(X, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("idx", [torch.int32, torch.int64])
def test_cg_index_dtypes_and_views(idx):
    X, indptr, cols, w, Y, gram = _cg_case((6, 10, 8, 25), torch.float64, seed=3, idx=idx)
    Ybig = torch.zeros(8, 20, dtype=torch.float64)
    Ybig[:, :10] = Y.t()
    Yv = Ybig.t()[:10]                              # (10, 8), non-contiguous
    gbig = torch.zeros(8, 16, dtype=torch.float64)
    gbig[:, ::2] = gram
    gv = gbig[:, ::2]                               # (8, 8), non-contiguous
    Xbig = torch.zeros(6, 16, dtype=torch.float64)
    Xbig[:, ::2] = X
    Xv = Xbig[:, ::2]                               # (6, 8), a non-contiguous view
    implicit_als_cg_(Xv, indptr, cols, w, Yv, gv, 3)
    implicit_als_cg_(X, indptr, cols.long(), w, Y.contiguous(), gram.contiguous(), 3)
    assert torch.equal(Xv, X)
    assert torch.equal(Xbig[:, 1::2], torch.zeros(6, 8, dtype=torch.float64))


def _with_threads(counts, fn):
    """fn() under each torch thread count of ``counts``; the count is restored after."""
    before = torch.get_num_threads()
    try:
        out = []
        for threads in counts:
            torch.set_num_threads(threads)
            out.append(fn())
        return out
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cg_is_deterministic_across_thread_counts(dtype):
    """The rows' sums do not depend on the thread count; the GEMM (torch's) may, so
    gram = 0 leaves the sparse part alone, and a full run repeats bitwise."""
    X, indptr, cols, w, Y, gram = _cg_case((700, 200, 32, 14000), dtype, seed=5)

    def run():
        Z, F = X.clone(), X.clone()
        implicit_als_cg_(Z, indptr, cols, w, Y, torch.zeros_like(gram), 1)
        implicit_als_cg_(F, indptr, cols, w, Y, gram, 3)
        return Z, F

    outs = _with_threads((1, 2, 2), run)
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[1][1], outs[2][1])


def _diag_case(shape, dtype, seed):
    """A CG case whose shared term is diagonal: gram (d,) in [0.5, 2.5)."""
    X, indptr, cols, w, Y, _ = _cg_case(shape, dtype, seed)
    g = torch.Generator().manual_seed(seed + 2)
    lam = (0.5 + 2 * torch.rand(shape[2], generator=g, dtype=torch.float64)).to(dtype)
    return X, indptr, cols, w, Y, lam


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CG_SHAPES)
@pytest.mark.parametrize("steps", [1, 3])
def test_cg_diagonal_gram_matches_dense_reference(dtype, shape, steps):
    """A 1-D gram is diag(gram): each row's steps run back to back on the CPU."""
    X, indptr, cols, w, Y, lam = _diag_case(shape, dtype, seed=7 * sum(shape) + steps)
    ref, _, _ = _cg_reference(X, indptr, cols, w, Y, torch.diag(lam.double()), steps)
    implicit_als_cg_(X, indptr, cols, w, Y, lam, steps)
    tol = dict(rtol=2e-3, atol=2e-4) if dtype == torch.float32 else TOL[dtype]
    torch.testing.assert_close(X.double(), ref, **tol)


@pytest.mark.parametrize("shape", [(11, 23, 32, 90), (6, 19, 128, 50), (9, 29, 33, 70)])
def test_cg_in_the_eigenbasis_gives_the_full_gram_iterates(shape):
    """With Y -> Y Q and X -> X Q for Y^T Y + reg I = Q diag(lam) Q^T, the diagonal
    gram's CG gives the full gram's iterates rotated (what ImplicitALS relies on)."""
    X, indptr, cols, w, Y, gram = _cg_case(shape, torch.float64, seed=sum(shape))
    lam, Q = torch.linalg.eigh(gram)
    Xr = X @ Q
    implicit_als_cg_(X, indptr, cols, w, Y, gram, 3)
    implicit_als_cg_(Xr, indptr, cols, w, Y @ Q, lam, 3)
    torch.testing.assert_close(Xr @ Q.t(), X, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cg_diagonal_gram_is_bitwise_identical_for_any_thread_count(dtype):
    X, indptr, cols, w, Y, lam = _diag_case((700, 200, 32, 14000), dtype, seed=8)

    def run():
        Z = X.clone()
        implicit_als_cg_(Z, indptr, cols, w, Y, lam, 3)
        return Z

    outs = _with_threads((1, 2, 3), run)
    assert not torch.equal(outs[0], X)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_cg_diagonal_gram_view_and_bad_shapes():
    X, indptr, cols, w, Y, lam = _diag_case((6, 10, 8, 25), torch.float64, seed=4)
    big = torch.zeros(16, dtype=torch.float64)
    big[::2] = lam
    Xv = X.clone()
    implicit_als_cg_(Xv, indptr, cols, w, Y, big[::2], 2)  # a non-contiguous (d,) view
    implicit_als_cg_(X, indptr, cols, w, Y, lam, 2)
    assert torch.equal(Xv, X)
    X0 = X.clone()
    with pytest.raises(RuntimeError, match=r"gram must have shape \(d, d\) = \(8, 8\) or \(d,\)"):
        implicit_als_cg_(X, indptr, cols, w, Y, lam[:7], 2)
    with pytest.raises(RuntimeError, match="'gram' must be a \\(d, d\\) or \\(d,\\) tensor"):
        implicit_als_cg_(X, indptr, cols, w, Y, lam.reshape(2, 2, 2), 2)
    with pytest.raises(RuntimeError, match="gram"):
        implicit_als_cg_(X, indptr, cols, w, Y, lam.float(), 2)
    assert torch.equal(X, X0)


@pytest.mark.parametrize("diagonal", [False, True])
def test_cg_a_nan_reaches_x_instead_of_stopping_the_row(diagonal):
    """A NaN residual is not "converged" (NaN < 1e-20 is false, as in the reference):
    the rows whose entries read a NaN row of Y come back NaN, the others finite."""
    X, indptr, cols, w, Y, gram = _cg_case((6, 10, 8, 25), torch.float64, seed=3)
    if diagonal:
        gram = gram.diagonal().clone()
    Y[int(cols[-1])] = float("nan")
    hit = torch.zeros(6, dtype=torch.bool)
    for r in range(6):
        hit[r] = bool((cols[int(indptr[r]):int(indptr[r + 1])] == cols[-1]).any())
    implicit_als_cg_(X, indptr, cols, w, Y, gram, 2)
    assert bool(torch.isnan(X[hit]).all(dim=1).all()) and bool(torch.isfinite(X[~hit]).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CG_SHAPES)
@pytest.mark.parametrize("diagonal", [False, True])
def test_cg_with_a_target_matches_dense_reference(dtype, shape, diagonal):
    """b = sum_e target[e] y_c: the explicit-ratings right-hand side."""
    X, indptr, cols, w, Y, gram = _cg_case(shape, dtype, seed=11 * sum(shape) + diagonal)
    if diagonal:
        gram = gram.diagonal().clone()
    g = torch.Generator().manual_seed(sum(shape))
    target = (torch.rand(w.numel(), generator=g, dtype=torch.float64) * 4 + 1).to(dtype)
    G = torch.diag(gram.double()) if diagonal else gram
    ref, _, _ = _cg_reference(X, indptr, cols, w, Y, G, 3, target=target)
    implicit_als_cg_(X, indptr, cols, w, Y, gram, 3, target=target)
    tol = dict(rtol=2e-3, atol=2e-4) if dtype == torch.float32 else TOL[dtype]
    torch.testing.assert_close(X.double(), ref, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CG_SHAPES)
def test_cg_row_scale_matches_dense_reference(dtype, shape):
    """A 1-D gram scaled per row (the ridge times n_r^exponent of explicit ALS), weight 1."""
    X, indptr, cols, w, Y, lam = _diag_case(shape, dtype, seed=13 * sum(shape))
    R = shape[0]
    counts = (indptr[1:] - indptr[:-1]).to(torch.float64)
    scale = counts.clamp_min(1).pow(0.7).to(dtype)                  # (R,)
    ones = torch.ones_like(w)
    g = torch.Generator().manual_seed(sum(shape) + 1)
    target = (torch.rand(w.numel(), generator=g, dtype=torch.float64) * 4 + 1).to(dtype)
    row_gram = torch.diag_embed(scale.double()[:, None] * lam.double()[None, :])  # (R, d, d)
    ref, A, b = _cg_reference(X, indptr, cols, ones, Y, torch.zeros(shape[2], shape[2]),
                              3, target=target, row_gram=row_gram)
    implicit_als_cg_(X, indptr, cols, ones, Y, lam, 3, target=target, row_scale=scale)
    tol = dict(rtol=2e-3, atol=2e-4) if dtype == torch.float32 else TOL[dtype]
    torch.testing.assert_close(X.double(), ref, **tol)
    if dtype == torch.float64 and R:  # enough steps: the exact explicit-ALS solution
        Z = torch.zeros_like(X)
        implicit_als_cg_(Z, indptr, cols, ones, Y, lam, shape[2] + 30, target=target,
                         row_scale=scale)
        torch.testing.assert_close(Z, torch.linalg.solve(A, b), rtol=1e-7, atol=1e-7)


def test_cg_target_and_row_scale_bad_inputs():
    X, indptr, cols, w, Y, lam = _diag_case((4, 6, 3, 10), torch.float64, seed=1)
    X0 = X.clone()
    t = torch.ones_like(w)
    with pytest.raises(RuntimeError, match="target must have length"):
        implicit_als_cg_(X, indptr, cols, w, Y, lam, 2, target=t[:-1])
    with pytest.raises(RuntimeError, match="target"):
        implicit_als_cg_(X, indptr, cols, w, Y, lam, 2, target=t.float())
    with pytest.raises(RuntimeError, match="row_scale must have length 4"):
        implicit_als_cg_(X, indptr, cols, w, Y, lam, 2, row_scale=torch.ones(3, dtype=X.dtype))
    with pytest.raises(RuntimeError, match=r"row_scale needs a \(d,\) gram"):
        implicit_als_cg_(X, indptr, cols, w, Y, torch.diag(lam), 2,
                         row_scale=torch.ones(4, dtype=X.dtype))
    assert torch.equal(X, X0)


def test_cg_bad_inputs_name_the_argument_and_leave_X():
    X, indptr, cols, w, Y, gram = _cg_case((4, 6, 3, 10), torch.float64, seed=1)
    X0 = X.clone()
    bad = cols.clone()
    bad[-1] = 6
    with pytest.raises(IndexError, match=r"indices\[\d+\] = 6 is out of range for Y with 6 rows"):
        implicit_als_cg_(X, indptr, bad, w, Y, gram, 2)
    dec = indptr.clone()
    dec[2] = dec[1] - 1 if dec[1] > 0 else 11
    with pytest.raises(IndexError, match="indptr"):
        implicit_als_cg_(X, dec, cols, w, Y, gram, 2)
    big = indptr.clone()
    big[-1] = cols.numel() + 1
    with pytest.raises(IndexError, match="indptr"):
        implicit_als_cg_(X, big, cols, w, Y, gram, 2)
    with pytest.raises(ValueError, match="cg_steps"):
        implicit_als_cg_(X, indptr, cols, w, Y, gram, 0)
    with pytest.raises(RuntimeError, match="gram must have shape"):
        implicit_als_cg_(X, indptr, cols, w, Y, torch.eye(2, dtype=torch.float64), 2)
    with pytest.raises(RuntimeError, match="X must have shape"):
        implicit_als_cg_(X[:3], indptr, cols, w, Y, gram, 2)
    with pytest.raises(RuntimeError, match="weight"):
        implicit_als_cg_(X, indptr, cols, w[:-1], Y, gram, 2)
    with pytest.raises(RuntimeError, match="weight"):
        implicit_als_cg_(X, indptr, cols, w.float(), Y, gram, 2)
    with pytest.raises(RuntimeError, match="indptr"):
        implicit_als_cg_(X, indptr.int(), cols, w, Y, gram, 2)
    assert torch.equal(X, X0)


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
            out.append(("cg", (X, indptr, cols, w, Y, gram + Y.t() @ Y, 2)))
            out.append(("cg", (X.clone(), indptr, cols.int(), w, Y, gram, 1)))
            out.append(("cg", (X.clone(), indptr, cols, w, Y, torch.ones(d, dtype=dtype), 2)))
            out.append(("cg", (X.clone(), indptr, cols, w, Y, torch.ones(d, dtype=dtype), 2,
                               t, torch.full((shape[0],), 0.5, dtype=dtype))))
            reg = torch.full((d,), 0.1, dtype=dtype)
            out.append(("solve", (indptr, cols, t, Y, None, reg, 0.0, gram, w)))
            out.append(("normal", (indptr, cols, t, Y, None, reg, 0.0, gram, w)))
    return out


@pytest.mark.parametrize("case", _samples(), ids=lambda c: c[0])
def test_opcheck(case):
    name, args = case
    op = {"cg": torch.ops.mfext.implicit_als_cg_.default,
          "solve": torch.ops.mfext.als_solve.default,
          "normal": torch.ops.mfext.als_normal_equations.default}[name]
    torch.library.opcheck(op, args)
