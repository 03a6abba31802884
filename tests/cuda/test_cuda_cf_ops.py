"""The collaborative-filtering ops on CUDA (skipped without a GPU and a CUDA build).

* sgd_epoch_: the blocked schedule agrees with the CPU op and repeats bit for
  bit; Hogwild processes every entry exactly once (checked on entries that
  share no user and no item, where races cannot change the result) and learns.
* als_normal_equations / als_solve: agree with a float64 reference (and with the
  CPU op) on both sides of the shared-memory / workspace crossover, including
  empty rows, row slices, the ridge fallback of singular systems, and both index
  dtypes.
* _sparse_dot: agrees with the CPU op.
* Every op: the CPU's messages for bad arguments (at once) and bad index data
  (at the next mfext call, with the in-place tensors left untouched), opcheck,
  torch.compile, and no device synchronization.
"""
from __future__ import annotations

import re

import pytest
import torch

import mfext
from mfext import cf_ops
from helpers import (ALS_BAD, ALS_DATA_CASES, HAS_CUDA, SGD_BAD, _csr_problem, _grid,
                     _normal_reference, _sgd_args, _sgd_problem, _sgd_reference,
                     assert_no_device_sync, deterministic_algorithms, rel_err)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device or CUDA build"),
]

TOL = {torch.float64: 1e-11, torch.float32: 2e-5}
SGD_KW = dict(lr=0.02, reg=0.05, bias_reg=0.01, global_mean=3.0)
FACTORS = ("W", "H_t", "user_bias", "item_bias")


def _cuda(x):
    return x.cuda() if isinstance(x, torch.Tensor) else x


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0]


# --------------------------------------------------------------------------- SGD

SGD_SHAPES = [(1, 1, 1, 5), (7, 5, 3, 60), (13, 11, 17, 200), (40, 30, 64, 900),
              (50, 40, 128, 2000), (20, 30, 33, 300)]


@pytest.mark.parametrize("shape", SGD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("biases", [True, False], ids=["biases", "nobias"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_sgd_blocked_matches_the_cpu_op(shape, biases, dtype, index_dtype, gen):
    m, n, k, nnz = shape
    rows, cols, vals, W, Ht, bu, bi = _sgd_problem(gen, m, n, k, nnz, dtype, index_dtype)
    order, block_ptr, schedule = _grid(gen, rows, cols, m, n, P=4)
    schedule[1, 2] = -1  # an empty slot
    cpu = [t.clone() for t in (W, Ht, bu, bi)]
    gpu = [t.cuda() for t in (W, Ht, bu, bi)]
    sse_cpu = cf_ops.sgd_epoch_(*cpu, rows, cols, vals, order=order, block_ptr=block_ptr,
                                schedule=schedule, use_biases=biases, **SGD_KW)
    sse_gpu = cf_ops.sgd_epoch_(*gpu, rows.cuda(), cols.cuda(), vals.cuda(), order=order.cuda(),
                                block_ptr=block_ptr.cuda(), schedule=schedule.cuda(),
                                use_biases=biases, **SGD_KW)
    assert sse_gpu.device.type == "cuda" and sse_gpu.dtype == torch.float64
    assert abs(float(sse_gpu) - float(sse_cpu)) <= TOL[dtype] * 10 * max(1.0, float(sse_cpu))
    for name, g, c in zip(FACTORS, gpu, cpu):
        assert rel_err(g, c) <= TOL[dtype] * 10, name


def test_sgd_blocked_repeats_bit_for_bit(gen):
    rows, cols, vals, W, Ht, bu, bi = _sgd_problem(gen, 300, 200, 32, 20000, torch.float32)
    order, block_ptr, schedule = _grid(gen, rows, cols, 300, 200, P=8)
    args = [t.cuda() for t in (rows, cols, vals)]
    blocked = dict(order=order.cuda(), block_ptr=block_ptr.cuda(), schedule=schedule.cuda())
    runs = []
    for _ in range(2):
        f = [t.cuda() for t in (W, Ht, bu, bi)]
        sse = cf_ops.sgd_epoch_(*f, *args, **blocked, **SGD_KW)
        runs.append(f + [sse])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("k", [1, 3, 8, 32, 64, 128, 200])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("with_order", [False, True], ids=["storage", "order"])
def test_sgd_hogwild_updates_every_entry_once(k, dtype, with_order, gen):
    # Every entry has its own user and item: the updates commute, so any
    # interleaving of the warps must give the sequential result.
    nnz = 3000
    m, n = nnz + 5, nnz + 9
    rows = torch.randperm(m, generator=gen)[:nnz]
    cols = torch.randperm(n, generator=gen)[:nnz]
    _, _, vals, W, Ht, bu, bi = _sgd_problem(gen, m, n, k, nnz, dtype)
    order = torch.randperm(nnz, generator=gen)[: nnz - 100] if with_order else None
    seq = order.tolist() if with_order else range(nnz)
    (W_ref, Ht_ref, bu_ref, bi_ref), sse_ref = _sgd_reference(
        W, Ht, bu, bi, rows, cols, vals, seq, SGD_KW["lr"], SGD_KW["reg"], SGD_KW["bias_reg"],
        SGD_KW["global_mean"], True, True)
    gpu = [t.cuda() for t in (W, Ht, bu, bi)]
    sse = cf_ops.sgd_epoch_(*gpu, rows.cuda(), cols.cuda(), vals.cuda(), order=_cuda(order),
                            nonnegative=True, **SGD_KW)
    tol = TOL[dtype] * 10
    assert abs(float(sse) - sse_ref) <= tol * sse_ref
    for name, g, ref in zip(FACTORS, gpu, (W_ref, Ht_ref, bu_ref, bi_ref)):
        assert rel_err(g, ref) <= tol, name


def test_sgd_hogwild_learns(gen):
    from mfext import datasets as ds
    r = ds.synthetic_ratings(2000, 1500, 200_000, rank=8, noise=0.1, seed=0)
    rows, cols, vals = r.rows.cuda(), r.cols.cuda(), r.vals.float().cuda()
    W = (torch.randn(2000, 8, generator=gen) * 0.1).cuda()
    Ht = (torch.randn(1500, 8, generator=gen) * 0.1).cuda()
    bu, bi = torch.zeros(2000, device="cuda"), torch.zeros(1500, device="cuda")
    mu = float(vals.mean())
    sse = [float(cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, lr=0.01, reg=0.01,
                                   bias_reg=0.01, global_mean=mu)) for _ in range(15)]
    assert all(x == x for x in sse)  # finite, not NaN
    assert sse[-1] < 0.2 * sse[0]


def _sgd_case_on_cuda(gen, case):
    a = _sgd_args(gen)
    change, exc, pattern = SGD_BAD[case]
    a.update(change(a))
    return a, exc, pattern


def _call_sgd(a):
    return torch.ops.mfext.sgd_epoch_(*(a[k] for k in (
        "W", "H_t", "user_bias", "item_bias", "rows", "cols", "vals", "order", "block_ptr",
        "schedule", "lr", "reg", "bias_reg", "global_mean", "use_biases", "nonnegative")))


@pytest.mark.parametrize("case", list(SGD_BAD), ids=list(SGD_BAD))
def test_sgd_bad_inputs_match_the_cpu(case, gen):
    a, exc, pattern = _sgd_case_on_cuda(gen, case)
    with pytest.raises(exc) as cpu_info:
        _call_sgd(a)
    g = {key: _cuda(v) for key, v in a.items()}
    if case == "W aliases H_t":
        g["H_t"] = g["W"]
    before = [g[key].clone() for key in FACTORS]
    if exc is IndexError:  # index data: found on the device, raised by the next call
        sse = _call_sgd(g)
        assert torch.isnan(sse).item()
        for key, b in zip(FACTORS, before):
            assert torch.equal(g[key], b), key
        with pytest.raises(IndexError) as info:
            mfext.cuda_check_errors()
        mfext.cuda_check_errors()  # reported once
    else:
        with pytest.raises(exc) as info:
            _call_sgd(g)
    assert re.search(pattern, str(info.value)), str(info.value)
    assert _first_line(cpu_info.value) in str(info.value)


@pytest.mark.parametrize("blocked", [False, True], ids=["hogwild", "blocked"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_opcheck_sgd_epoch_on_cuda(blocked, dtype, gen):
    m = n = nnz = 20
    rows, cols, vals, W, Ht, bu, bi = _sgd_problem(gen, m, n, 3, nnz, dtype)
    extra = [None, None, None]
    if blocked:
        extra = list(_grid(gen, rows, cols, m, n, P=2))
    else:  # one entry per user and item: Hogwild's result is then independent of timing
        rows, cols = torch.randperm(m, generator=gen), torch.randperm(n, generator=gen)
    args = [_cuda(t) for t in (W, Ht, bu, bi, rows, cols, vals, *extra)]
    torch.library.opcheck(torch.ops.mfext.sgd_epoch_.default,
                          (*args, 0.01, 0.05, 0.01, 3.0, True, False))


# --------------------------------------------------------------------------- ALS

ALS_CASES = [(1, 1, 1, 3), (6, 5, 3, 8), (17, 9, 65, 40), (30, 40, 16, 25), (8, 7, 33, 90),
             (12, 20, 129, 200), (6, 30, 300, 40)]


def _als_on_both(gen, shape, dtype, index_dtype=torch.int64, exponent=0.75, offset=True):
    R, n, d, cmax = shape
    indptr, indices, vals, F, col_offset, reg = _csr_problem(gen, R, n, d, cmax, dtype,
                                                             index_dtype)
    args = (indptr, indices, vals, F, col_offset if offset else None, reg, exponent)
    return args, tuple(_cuda(a) for a in args)


@pytest.mark.parametrize("shape", ALS_CASES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("exponent", [0.0, 1.0, 0.75])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_als_matches_the_cpu_op(shape, exponent, dtype, gen):
    """Against the independent float64 reference (einsum-built systems, torch.linalg.solve),
    at every d (the CPU op's own tests stop at d = 65), and then against the CPU op."""
    cpu_args, gpu_args = _als_on_both(gen, shape, dtype, exponent=exponent)
    gram, rhs = cf_ops.als_normal_equations(*gpu_args)
    gram_ref, rhs_ref = _normal_reference(*cpu_args)
    x_ref = torch.linalg.solve(gram_ref, rhs_ref)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert gram.device.type == "cuda" and gram.shape == gram_ref.shape and gram.dtype == dtype
    assert rel_err(gram, gram_ref) <= tol and rel_err(rhs, rhs_ref) <= tol
    assert torch.equal(gram, gram.transpose(1, 2))
    x = cf_ops.als_solve(*gpu_args)
    # The CPU op reaches 7e-13 (float64) and 7e-4 (float32) on these systems at d = 300.
    assert rel_err(x, x_ref) <= (1e-9 if dtype == torch.float64 else 2e-3)
    gram_cpu, rhs_cpu = cf_ops.als_normal_equations(*cpu_args)
    assert rel_err(gram, gram_cpu) <= tol and rel_err(rhs, rhs_cpu) <= tol
    assert rel_err(x, cf_ops.als_solve(*cpu_args)) <= (1e-9 if dtype == torch.float64 else 2e-3)


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("offset", [True, False], ids=["offset", "nooffset"])
def test_als_row_slices_index_dtypes_and_offsets(index_dtype, offset, gen):
    cpu_args, gpu_args = _als_on_both(gen, (40, 25, 9, 30), torch.float64, index_dtype,
                                      offset=offset)
    sl = lambda args: (args[0][7:23],) + args[1:]  # noqa: E731  (rows 7..21, offsets > 0)
    for op in (cf_ops.als_normal_equations, cf_ops.als_solve):
        out = op(*sl(gpu_args))
        ref = op(*sl(cpu_args))
        for o, r in zip(out if isinstance(out, tuple) else (out,),
                        ref if isinstance(ref, tuple) else (ref,)):
            assert rel_err(o, r) <= 1e-11


@pytest.mark.parametrize("d", [5, 40, 300])
def test_als_singular_systems_fall_back_like_the_cpu(d, gen):
    # Fewer entries than unknowns and no ridge: singular; both devices add the
    # fallback ridge (element_math.h). Row 5 sees only a zero factor row (a zero matrix: the
    # smallest ridge, x = 0); row 1 is empty (gram = I, x = 0).
    R, n = 6, 10
    indptr = torch.tensor([0, 2, 2, 5, 6, 8, 9])
    indices = torch.randint(0, n, (9,), generator=gen)
    indices[8] = n - 1
    vals = torch.randn(9, generator=gen, dtype=torch.float64)
    F = torch.randn(n, d, generator=gen, dtype=torch.float64)
    F[n - 1] = 0  # row 5 sees only this zero factor row
    reg = torch.zeros(d, dtype=torch.float64)
    args = (indptr, indices, vals, F, None, reg, 0.0)
    x_cpu = cf_ops.als_solve(*args)
    x = cf_ops.als_solve(*(_cuda(a) for a in args))
    assert torch.equal(torch.isnan(x).cpu(), torch.isnan(x_cpu))
    finite = torch.isfinite(x_cpu)
    assert rel_err(x.cpu()[finite], x_cpu[finite]) <= 1e-6


@pytest.mark.parametrize("op", ["als_normal_equations", "als_solve"])
@pytest.mark.parametrize("case", list(ALS_BAD), ids=list(ALS_BAD))
def test_als_bad_inputs_match_the_cpu(op, case, gen):
    _, _, _, F, offset, reg = _csr_problem(gen, 4, 7, 3, 5, torch.float64)
    a = dict(indptr=torch.tensor([0, 2, 4, 6, 8]), indices=torch.randint(0, 7, (8,), generator=gen),
             vals=torch.randn(8, generator=gen, dtype=torch.float64), F=F, col_offset=offset,
             reg_diag=reg, count_exponent=1.0)
    change, exc, pattern = ALS_BAD[case]
    a.update(change(a))
    fn = getattr(torch.ops.mfext, op)
    with pytest.raises(exc) as cpu_info:
        fn(*a.values())
    g = [_cuda(v) for v in a.values()]
    if case in ALS_DATA_CASES:  # tensor data: found on the device, raised by the next call
        out = fn(*g)
        for t in out if isinstance(out, tuple) else (out,):
            assert torch.isnan(t).all()
        with pytest.raises(exc) as info:
            mfext.cuda_check_errors()
        mfext.cuda_check_errors()  # reported once
    else:
        with pytest.raises(exc) as info:
            fn(*g)
    assert re.search(pattern, str(info.value)), str(info.value)
    assert _first_line(cpu_info.value) in str(info.value)


@pytest.mark.parametrize("op", ["als_normal_equations", "als_solve"])
@pytest.mark.parametrize("d", [4, 300])
def test_opcheck_als_on_cuda(op, d, gen):
    _, gpu_args = _als_on_both(gen, (5, 6, d, 6), torch.float64)
    torch.library.opcheck(getattr(torch.ops.mfext, op).default, gpu_args)


# --------------------------------------------------------------------------- _sparse_dot


@pytest.mark.parametrize("k", [1, 3, 4, 32, 64, 128, 200])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_sparse_dot_matches_the_cpu_op(k, dtype, index_dtype, gen):
    rows, cols, _, W, Ht, _, _ = _sgd_problem(gen, 70, 50, k, 5000, dtype, index_dtype)
    out = cf_ops.sparse_dot(rows.cuda(), cols.cuda(), W.cuda(), Ht.cuda())
    ref = cf_ops.sparse_dot(rows, cols, W, Ht)
    assert out.device.type == "cuda" and out.dtype == dtype
    assert rel_err(out, ref) <= TOL[dtype]
    empty = cf_ops.sparse_dot(rows[:0].cuda(), cols[:0].cuda(), W.cuda(), Ht.cuda())
    assert empty.shape == (0,)


def test_sparse_dot_strided_factors(gen):
    W = torch.randn(30, 16, generator=gen, dtype=torch.float64)
    Ht = torch.randn(16, 20, generator=gen, dtype=torch.float64).t()  # not contiguous
    rows = torch.randint(0, 30, (500,), generator=gen)
    cols = torch.randint(0, 20, (500,), generator=gen)
    out = cf_ops.sparse_dot(rows.cuda(), cols.cuda(), W.cuda()[:, :], Ht.cuda())
    assert rel_err(out, (W[rows] * Ht[cols]).sum(1)) <= 1e-12


@pytest.mark.parametrize("which, pattern", [
    ("rows", r"rows\[3\] = 70 is out of range for W with 70 rows"),
    ("cols", r"cols\[3\] = 50 is out of range for H_t with 50 rows \(items\)"),
])
def test_sparse_dot_bad_index_matches_the_cpu(which, pattern, gen):
    rows, cols, _, W, Ht, _, _ = _sgd_problem(gen, 70, 50, 8, 10, torch.float32)
    bad = {"rows": rows, "cols": cols}
    bad[which][3] = 70 if which == "rows" else 50
    with pytest.raises(IndexError, match=pattern):
        cf_ops.sparse_dot(rows, cols, W, Ht)
    out = cf_ops.sparse_dot(rows.cuda(), cols.cuda(), W.cuda(), Ht.cuda())
    assert torch.isnan(out).all()
    with pytest.raises(IndexError, match=pattern):
        mfext.cuda_check_errors()


def test_opcheck_sparse_dot_on_cuda(gen):
    rows, cols, _, W, Ht, _, _ = _sgd_problem(gen, 7, 5, 4, 30, torch.float64)
    torch.library.opcheck(torch.ops.mfext._sparse_dot.default,
                          tuple(t.cuda() for t in (rows, cols, W, Ht)))


# --------------------------------------------------------------------------- all ops


def test_cf_ops_compile_fullgraph_on_cuda(gen):
    _, (indptr, indices, vals, F, offset, reg, e) = _als_on_both(gen, (5, 6, 4, 6), torch.float32)
    fn = torch.compile(lambda *a: cf_ops.als_solve(*a) * 2.0, fullgraph=True)
    assert torch.allclose(fn(indptr, indices, vals, F, offset, reg, e),
                          2.0 * cf_ops.als_solve(indptr, indices, vals, F, offset, reg, e))
    rows, cols, _, W, Ht, _, _ = _sgd_problem(gen, 7, 5, 4, 30, torch.float32)
    rows, cols, W, Ht = (t.cuda() for t in (rows, cols, W, Ht))
    dot = torch.compile(lambda r, c, w, h: cf_ops.sparse_dot(r, c, w, h) + 1.0, fullgraph=True)
    assert torch.allclose(dot(rows, cols, W, Ht), cf_ops.sparse_dot(rows, cols, W, Ht) + 1.0)


def test_cf_ops_never_synchronize(gen):
    rows, cols, vals, W, Ht, bu, bi = (t.cuda() for t in _sgd_problem(
        gen, 300, 200, 32, 20000, torch.float32))
    order, block_ptr, schedule = (t.cuda() for t in _grid(gen, rows.cpu(), cols.cpu(), 300, 200, P=4))
    # 3000 rows: more than 8 per SM, so the glue also orders the rows by length.
    _, als_small = _als_on_both(gen, (3000, 40, 33, 30), torch.float32)
    _, als_large = _als_on_both(gen, (10, 40, 300, 30), torch.float32)

    def run():
        cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, **SGD_KW)
        cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, order=order, block_ptr=block_ptr,
                          schedule=schedule, **SGD_KW)
        for args in (als_small, als_large):
            cf_ops.als_normal_equations(*args)
            cf_ops.als_solve(*args)
        cf_ops.sparse_dot(rows, cols, W, Ht)

    assert_no_device_sync(run)


def test_cf_ops_under_deterministic_algorithms(gen):
    """ALS and blocked SGD run under torch's determinism guard; Hogwild SGD does not."""
    _, args = _als_on_both(gen, (10, 40, 300, 30), torch.float64)
    rows, cols, vals, W, Ht, bu, bi = (t.cuda() for t in _sgd_problem(
        gen, 30, 20, 8, 500, torch.float32))
    order, block_ptr, schedule = (t.cuda() for t in _grid(gen, rows.cpu(), cols.cpu(), 30, 20, P=2))
    with deterministic_algorithms(True):
        a = cf_ops.als_solve(*args)
        b = cf_ops.als_solve(*args)
        cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, order=order, block_ptr=block_ptr,
                          schedule=schedule, **SGD_KW)
        with pytest.raises(RuntimeError, match="Hogwild mode.*deterministic"):
            cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, **SGD_KW)
    assert torch.equal(a, b)
