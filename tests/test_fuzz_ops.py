"""Property-based tests (hypothesis) of the fused ops against the autograd reference.

Valid inputs of random shapes, strides, dtypes, weights and duplicate entries
must match the reference; malformed inputs must raise the documented exception.
Malformed cases run in a child process, so a crash fails the test instead of
killing pytest.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import mfext  # noqa: E402
from mfext import reference as ref  # noqa: E402
from conftest import RTOL, rel_err  # noqa: E402

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


def _check(out, expected, dtype):
    for x, y in zip(out, expected):
        assert x.shape == y.shape and x.dtype == dtype
        assert rel_err(x, y) <= RTOL[dtype] * 10


def _upcast(ts):
    return [None if t is None else (t.double() if t.is_floating_point() else t) for t in ts]


@SETTINGS
@given(dense_cases())
def test_fuzz_dense_matches_reference(case):
    out = mfext.dense_loss_grad(*case)
    _check(out, ref.dense_loss_grad(*_upcast(case)), case[0].dtype)


@SETTINGS
@given(sparse_cases())
def test_fuzz_sparse_matches_reference(case):
    out = mfext.sparse_loss_grad(*case)
    _check(out, ref.sparse_loss_grad(*_upcast(case)), case[2].dtype)


# ----------------------------------------------------------------- malformed inputs

# One child process runs a batch of cases, one line of output each; a crash ends
# the child and shows as a missing line and a bad exit code.
_CHILD = textwrap.dedent(
    """
    import sys, torch, mfext
    op = getattr(mfext, sys.argv[1])
    for expr in sys.stdin.read().splitlines():
        print("CASE", expr, flush=True)
        try:
            op(*eval(expr, {"torch": torch}))
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            print("RAISED", type(exc).__name__, str(exc).splitlines()[0], flush=True)
            continue
        print("NO ERROR", flush=True)
    """
)


def _assert_all_raise(cases, op: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, op], input="\n".join(e for _, e in cases),
        capture_output=True, text=True, timeout=300,
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, f"child died ({proc.returncode}) after {lines[-1:]}: {proc.stderr[-2000:]}"
    results = [l for l in lines if not l.startswith("CASE")]
    assert len(results) == len(cases)
    for (defect, expr), result in zip(cases, results):
        assert result.startswith("RAISED"), f"{defect}: no error for {expr}"


@st.composite
def malformed_sparse(draw):
    """Valid shapes with one defect: an out-of-range or negative index, a length mismatch,
    a bad dtype, a wrong ndim or a negative weight."""
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
    return defect, expr


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
    return defect, f"({A}, {W}, {H}, {weight})"


@MALFORMED_SETTINGS
@given(st.lists(malformed_dense(), min_size=MALFORMED_BATCH, max_size=MALFORMED_BATCH))
def test_fuzz_malformed_dense_raises_cleanly(cases):
    _assert_all_raise(cases, "dense_loss_grad")
