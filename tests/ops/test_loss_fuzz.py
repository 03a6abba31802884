"""Property-based tests (hypothesis) of the fused ops against the autograd reference.

Valid inputs of random shapes, strides, dtypes, weights and duplicate entries
must match the reference; malformed inputs must raise the documented exception.
Malformed cases run in a child process, so a crash fails the test instead of
killing pytest.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import mfext  # noqa: E402
from mfext import reference as ref  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("MFEXT_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("MFEXT_FUZZ_RANDOM", "0") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DTYPES = st.sampled_from([torch.float32, torch.float64])


def _layout(draw, shape, dtype, gen, nonneg=False):
    """A tensor of `shape` with a random layout: contiguous, transposed or strided."""
    kind = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    low = 0.0 if nonneg else -1.0
    if kind == "transposed" and len(shape) == 2:
        base = torch.rand(shape[1], shape[0], generator=gen, dtype=torch.float64).t()
    elif kind == "strided":
        step = draw(st.integers(2, 3))
        big = torch.rand(*[s * step for s in shape], generator=gen, dtype=torch.float64)
        base = big[tuple(slice(None, None, step) for _ in shape)]
    else:
        base = torch.rand(*shape, generator=gen, dtype=torch.float64)
    return (base * (1 - low) + low).to(dtype)


@st.composite
def dense_cases(draw):
    m, n, k = draw(st.integers(1, 40)), draw(st.integers(1, 40)), draw(st.integers(1, 12))
    dtype = draw(DTYPES)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    A = _layout(draw, (m, n), dtype, gen)
    W = _layout(draw, (m, k), dtype, gen)
    H = _layout(draw, (k, n), dtype, gen)
    weight = None
    if draw(st.booleans()):
        weight = _layout(draw, (m, n), dtype, gen, nonneg=True)
        weight[weight < draw(st.floats(0.0, 1.0))] = 0
    return A, W, H, weight


@st.composite
def sparse_cases(draw):
    m, n, k = draw(st.integers(1, 30)), draw(st.integers(1, 30)), draw(st.integers(1, 12))
    nnz = draw(st.integers(0, 200))
    dtype = draw(DTYPES)
    index_dtype = draw(st.sampled_from([torch.int32, torch.int64]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    rows = torch.randint(0, m, (nnz,), generator=gen).to(index_dtype)
    cols = torch.randint(0, n, (nnz,), generator=gen).to(index_dtype)
    if draw(st.booleans()):  # CSR order
        order = torch.argsort(rows.long(), stable=True)
        rows, cols = rows[order], cols[order]
    vals = _layout(draw, (nnz,), dtype, gen)
    W = _layout(draw, (m, k), dtype, gen)
    H = _layout(draw, (k, n), dtype, gen)
    weight = _layout(draw, (nnz,), dtype, gen, nonneg=True) if draw(st.booleans()) else None
    return rows, cols, vals, W, H, weight


EPS = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}  # unit roundoff


def _error_bounds(rows, cols, vals, W, H, weight, dtype):
    """Elementwise bounds on the rounding error of (loss, grad_W, grad_H) computed in
    `dtype`, for the entries (rows[e], cols[e], vals[e], weight[e]); all math in float64.

    Per entry, |prediction| + |target| <= Mr = sum_p |W_ip H_pj| + |v|, the computed
    residual is off by at most (k + 1) eps Mr, and g = 2 w r by 2 w (k + 2) eps Mr; a
    sum of c such products adds at most c eps times their absolute sum. So:
      loss:      eps |loss| + 2 (k + 2) eps sum_e w |r| Mr      (float64 accumulation)
      grad_W[i]: (k + 2 + c_i) eps sum_{e in row i} 2 w Mr |H[:, j_e]|
      grad_H[j]: (k + 2 + c_j) eps sum_{e in col j} 2 w Mr |W[i_e]|
    with c_i, c_j the entry counts of the row and column; doubled for safety. A
    dropped entry of typical size lies far outside these (see
    test_error_bounds_detect_a_dropped_entry), unlike a relative tolerance on the norm.
    """
    eps = EPS[dtype]
    W, H, vals = W.double(), H.double(), vals.double()
    m, k = W.shape
    n = H.shape[1]
    r, c = rows.long(), cols.long()
    w = torch.ones_like(vals) if weight is None else weight.double()
    Wa, Ha = W.abs(), H.abs()
    pred = (W[r] * H.t()[c]).sum(1)
    Mr = (Wa[r] * Ha.t()[c]).sum(1) + vals.abs()
    resid = pred - vals
    loss = (w * resid.square()).sum()
    loss_bound = eps * loss.abs() + 2 * (k + 2) * eps * (w * resid.abs() * Mr).sum()
    g_scale = 2 * w * Mr  # bound on |d loss / d prediction| of each entry
    row_count = torch.bincount(r, minlength=m).double()
    col_count = torch.bincount(c, minlength=n).double()
    gW_sum = torch.zeros(m, k, dtype=torch.float64).index_add_(0, r, g_scale[:, None] * Ha.t()[c])
    gH_sum = torch.zeros(n, k, dtype=torch.float64).index_add_(0, c, g_scale[:, None] * Wa[r])
    gW_bound = (k + 2 + row_count)[:, None] * eps * gW_sum
    gH_bound = ((k + 2 + col_count)[:, None] * eps * gH_sum).t()
    tiny = 1e-300  # exact zeros stay exact
    return [2 * loss_bound + tiny, 2 * gW_bound + tiny, 2 * gH_bound + tiny]


def _dense_as_entries(A, weight):
    """The dense problem as entries: every (i, j), with weight 1 when there is none."""
    m, n = A.shape
    rows = torch.arange(m).repeat_interleave(n)
    cols = torch.arange(n).repeat(m)
    return rows, cols, A.reshape(-1), None if weight is None else weight.reshape(-1)


def _within(out, expected, bounds):
    """True when every element of out is within its bound of the float64 reference."""
    return all(bool(((x.double() - y.double()).abs() <= b).all())
               for x, y, b in zip(out, expected, bounds))


def _check(out, expected, dtype, bounds):
    for x, y in zip(out, expected):
        assert x.shape == y.shape and x.dtype == dtype
    worst = [float(((x.double() - y.double()).abs() / b).max()) if x.numel() else 0.0
             for x, y, b in zip(out, expected, bounds)]
    assert _within(out, expected, bounds), f"error / bound per output (loss, W, H): {worst}"


def _upcast(ts):
    return [None if t is None else (t.double() if t.is_floating_point() else t) for t in ts]


def _dense_bounds(A, W, H, weight):
    rows, cols, vals, w = _dense_as_entries(A, weight)
    return _error_bounds(rows, cols, vals, W, H, w, A.dtype)


@SETTINGS
@given(dense_cases())
def test_fuzz_dense_matches_reference(case):
    out = mfext.dense_loss_grad(*case)
    _check(out, ref.dense_loss_grad(*_upcast(case)), case[0].dtype, _dense_bounds(*case))


@SETTINGS
@given(sparse_cases())
def test_fuzz_sparse_matches_reference(case):
    out = mfext.sparse_loss_grad(*case)
    _check(out, ref.sparse_loss_grad(*_upcast(case)), case[2].dtype,
           _error_bounds(*case, case[2].dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_error_bounds_detect_a_dropped_entry(kind, dtype):
    """The fuzz tests' bounds must catch a kernel that skips one entry of a 40 x 40
    problem (the largest fuzz size; a relative tolerance of 1e-3 on the norm lets that
    pass): the entry of median contribution is dropped, and the result of the rest,
    rounded to `dtype`, must fall outside the bounds of the full problem."""
    gen = torch.Generator().manual_seed(7)
    m, n, k = 40, 40, 12
    W = torch.rand(m, k, generator=gen, dtype=torch.float64).to(dtype)
    H = torch.rand(k, n, generator=gen, dtype=torch.float64).to(dtype)
    if kind == "dense":
        A = torch.rand(m, n, generator=gen, dtype=torch.float64).to(dtype)
        rows, cols, vals, weight = _dense_as_entries(A, None)
    else:
        nnz = 600
        rows = torch.randint(0, m, (nnz,), generator=gen)
        cols = torch.randint(0, n, (nnz,), generator=gen)
        vals = torch.rand(nnz, generator=gen, dtype=torch.float64).to(dtype)
        weight = None
    full = ref.sparse_loss_grad(rows, cols, vals.double(), W.double(), H.double())
    bounds = _error_bounds(rows, cols, vals, W, H, weight, dtype)
    out = mfext.sparse_loss_grad(rows, cols, vals, W, H) if kind == "sparse" else \
        mfext.dense_loss_grad(A, W, H)
    assert _within(out, full, bounds)  # the real kernel passes
    contribution = ((W.double()[rows] * H.double().t()[cols]).sum(1) - vals.double()).square()
    drop = int(torch.argsort(contribution)[contribution.numel() // 2])
    keep = torch.arange(rows.numel()) != drop
    dropped = ref.sparse_loss_grad(rows[keep], cols[keep], vals.double()[keep], W.double(),
                                   H.double())
    dropped = [x.to(dtype) for x in dropped]  # as a kernel in dtype would return it
    for name, x, y, b in zip(("loss", "grad_W", "grad_H"), dropped, full, bounds):
        assert not _within([x], [y], [b]), f"{name}: the dropped entry went unnoticed"


# ----------------------------------------------------------------- malformed inputs

# One child process runs a batch of cases, one line of output each; a crash ends
# the child and shows as a missing line and a bad exit code. The arguments are built
# outside the `try`, so a broken case expression fails the test instead of counting
# as a raised error; the call alone is inside it.
_CHILD = textwrap.dedent(
    """
    import sys, torch, mfext
    op = getattr(mfext, sys.argv[1])
    for expr in sys.stdin.read().splitlines():
        print("CASE", expr, flush=True)
        args = eval(expr, {"torch": torch})
        try:
            op(*args)
        except Exception as exc:
            print("RAISED", type(exc).__name__, str(exc).splitlines()[0], flush=True)
            continue
        print("NO ERROR", flush=True)
    """
)


def _assert_all_raise(cases, op: str) -> None:
    """cases: (defect, expression, exception type name, regex the message must match)."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, op], input="\n".join(c[1] for c in cases),
        capture_output=True, text=True, timeout=300,
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, f"child died ({proc.returncode}) after {lines[-1:]}: {proc.stderr[-2000:]}"
    results = [l for l in lines if not l.startswith("CASE")]
    assert len(results) == len(cases)
    for (defect, expr, exc_type, pattern), result in zip(cases, results):
        assert result.startswith("RAISED "), f"{defect}: no error for {expr}"
        raised_type, message = result[len("RAISED "):].split(" ", 1)
        assert raised_type == exc_type, f"{defect}: {raised_type} instead of {exc_type}: {message}"
        assert f"mfext::{op}: " in message, f"{defect}: the message must name the op: {message}"
        assert re.search(pattern, message), f"{defect}: {message!r} does not match {pattern!r}"


@st.composite
def malformed_sparse(draw):
    """Valid shapes with one defect: an out-of-range or negative index, a length mismatch,
    a bad dtype, a wrong ndim or a negative weight; with the error it must raise."""
    m, n, k, nnz = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 8))
    defect = draw(st.sampled_from(["row_high", "row_negative", "col_high", "col_huge", "length", "dtype", "ndim", "weight"]))
    rows = [draw(st.integers(0, m - 1)) for _ in range(nnz)]
    cols = [draw(st.integers(0, n - 1)) for _ in range(nnz)]
    at = draw(st.integers(0, nnz - 1))
    if defect == "row_high":
        rows[at] = m + draw(st.integers(0, 1000))
    elif defect == "row_negative":
        rows[at] = -draw(st.integers(1, 1000))
    elif defect == "col_high":
        cols[at] = n
    elif defect == "col_huge":
        cols[at] = 2**40
    vals_len = nnz + 1 if defect == "length" else nnz
    vals_dtype = "torch.int64" if defect == "dtype" else "torch.float32"
    W = f"torch.rand({m}, {k})" + ("[None]" if defect == "ndim" else "")
    weight = f"-torch.ones({nnz})" if defect == "weight" else "None"
    expr = (
        f"(torch.tensor({rows}), torch.tensor({cols}), torch.ones({vals_len}, dtype={vals_dtype}), "
        f"{W}, torch.rand({k}, {n}), {weight})"
    )
    expected = {
        "row_high": ("IndexError", rf"rows\[{at}\] = {rows[at]} is out of range for W with {m} rows"),
        "row_negative": ("IndexError", rf"rows\[{at}\] = {rows[at]} is out of range for W with {m} rows"),
        "col_high": ("IndexError", rf"cols\[{at}\] = {n} is out of range for H with {n} columns"),
        "col_huge": ("IndexError", rf"cols\[{at}\] = {2**40} is out of range for H with {n} columns"),
        "length": ("RuntimeError", rf"rows, cols and vals must have the same length, got {nnz}, {nnz} and {nnz + 1}"),
        "dtype": ("RuntimeError", r"argument 'vals' must be float32 or float64, got dtype Long"),
        "ndim": ("RuntimeError", r"argument 'W' must be 2-D"),
        "weight": ("ValueError", r"argument 'weight' must be finite and non-negative"),
    }[defect]
    return (defect, expr) + expected


MALFORMED_SETTINGS = settings(
    max_examples=2, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MALFORMED_BATCH = max(10, FUZZ_EXAMPLES // 3)


@MALFORMED_SETTINGS
@given(st.lists(malformed_sparse(), min_size=MALFORMED_BATCH, max_size=MALFORMED_BATCH))
def test_fuzz_malformed_sparse_raises_cleanly(cases):
    _assert_all_raise(cases, "sparse_loss_grad")


@st.composite
def malformed_dense(draw):
    m, n, k = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    defect = draw(st.sampled_from(["m", "n", "k", "dtype", "ndim", "weight_shape", "weight_negative", "bool"]))
    A = f"torch.rand({m + (defect == 'm')}, {n + (defect == 'n')})"
    W = f"torch.rand({m}, {k})" + (".double()" if defect == "dtype" else "")
    H = f"torch.rand({k + (defect == 'k')}, {n})" + ("[None]" if defect == "ndim" else "")
    if defect == "bool":
        H = f"(torch.rand({k}, {n}) > 0.5)"
    weight = {"weight_shape": f"torch.ones({m}, {n + 1})", "weight_negative": f"-torch.ones({m}, {n})"}.get(defect, "None")
    expected = {
        "m": ("RuntimeError", r"A of shape \[\d+, \d+\] and W of shape \[\d+, \d+\] disagree on m"),
        "n": ("RuntimeError", r"A of shape \[\d+, \d+\] and H of shape \[\d+, \d+\] disagree on n"),
        "k": ("RuntimeError", r"W of shape \[\d+, \d+\] and H of shape \[\d+, \d+\] disagree on the rank k"),
        "dtype": ("RuntimeError", r"argument 'W' has dtype Double but 'A' has dtype Float"),
        "ndim": ("RuntimeError", r"argument 'H' must be 2-D"),
        "weight_shape": ("RuntimeError", rf"weight must have the shape of A \[{m}, {n}\], got \[{m}, {n + 1}\]"),
        "weight_negative": ("ValueError", r"argument 'weight' must be finite and non-negative"),
        "bool": ("RuntimeError", r"argument 'H' must be float32 or float64, got dtype Bool"),
    }[defect]
    return (defect, f"({A}, {W}, {H}, {weight})") + expected


@MALFORMED_SETTINGS
@given(st.lists(malformed_dense(), min_size=MALFORMED_BATCH, max_size=MALFORMED_BATCH))
def test_fuzz_malformed_dense_raises_cleanly(cases):
    _assert_all_raise(cases, "dense_loss_grad")
