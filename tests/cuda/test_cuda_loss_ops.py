"""CUDA-only checks (skipped without a GPU and a CUDA build of mfext).

Agreement with a float64 reference and with the CPU ops on many shapes; both
dense paths (fused tensor-core kernel, tiled cuBLAS path) on either side of
their crossover; both sparse modes, the deterministic one bit for bit; half
types; bad input reported without a device synchronization; no sync inside
the ops; non-default streams, CUDA graphs and a second GPU.
"""
from __future__ import annotations

import pytest
import torch

import mfext
from mfext import reference as ref
from mfext.cuda import dense_path
from helpers import HAS_CUDA, assert_no_device_sync, deterministic_algorithms, rel_err

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device or CUDA build"),
]

# float32 runs 3xTF32 on the tensor cores (about float32 accuracy).
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def _rand(gen, *shape, dtype=torch.float64, low=-1.0, device="cuda"):
    x = torch.rand(*shape, generator=gen, dtype=torch.float64) * (1.0 - low) + low
    return x.to(dtype=dtype, device=device)


def _dense(gen, m, n, k, dtype, weighted):
    A = _rand(gen, m, n, dtype=dtype)
    W = _rand(gen, m, k, dtype=dtype)
    H = _rand(gen, k, n, dtype=dtype)
    weight = None
    if weighted:
        weight = _rand(gen, m, n, dtype=dtype, low=0.0)
        weight[weight < 0.3] = 0
        A[weight == 0] = float("nan")  # missing entries may hold anything
    return A, W, H, weight


def _sparse(gen, m, n, k, nnz, dtype, weighted, index_dtype=torch.int64, skew=False):
    rows = torch.randint(0, m, (nnz,), generator=gen)
    cols = torch.randint(0, n, (nnz,), generator=gen)
    if skew:  # one very long row and column: their entries span many work units
        rows[::3] = m // 2
        cols[1::4] = n // 3
    vals = _rand(gen, nnz, dtype=dtype)
    W = _rand(gen, m, k, dtype=dtype)
    H = _rand(gen, n, k, dtype=dtype).t()  # the fast layout
    weight = None
    if weighted:
        weight = _rand(gen, nnz, dtype=dtype, low=0.0)
        weight[weight < 0.2] = 0
    return rows.to(index_dtype).cuda(), cols.to(index_dtype).cuda(), vals, W, H, weight


def _ref64(fn, tensors):
    """The autograd reference in float64 on the CPU; missing entries zeroed first."""
    cpu = [None if t is None else (t.double() if t.is_floating_point() else t).cpu() for t in tensors]
    return fn(*cpu)


def _check(out, expected, dtype, like=None):
    tol = TOL[dtype]
    for name, x, y in zip(("loss", "grad_W", "grad_H"), out, expected):
        assert x.is_cuda and x.dtype == dtype, f"{name}: {x.device} {x.dtype}"
        assert x.shape == y.shape, f"{name}: shape {tuple(x.shape)} != {tuple(y.shape)}"
        err = rel_err(x, y)
        assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.0e}"
    if like is not None:
        assert out[1].stride() == torch.empty_like(like[0]).stride()
        assert out[2].stride() == torch.empty_like(like[1]).stride()


def _dense_ref(A, W, H, weight):
    if weight is not None:
        A = torch.where(weight == 0, torch.zeros_like(A), A)
    return _ref64(ref.dense_loss_grad, (A, W, H, weight))


# ------------------------------------------------------------------------------ dense

# (m, n, k): edges, tile boundaries (128 x 64 tiles for float32, 64 x 64 for
# float64), k not a multiple of 16, k at and past the fused limit of 64.
DENSE_SHAPES = [
    (1, 1, 1), (1, 7, 3), (7, 1, 2), (129, 65, 16), (130, 70, 17), (64, 64, 64),
    (200, 333, 33), (33, 97, 48), (257, 129, 63), (300, 200, 65), (64, 300, 128),
]


@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("path", ["auto", "fused", "tiled"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_dense_matches_reference(shape, path, weighted, dtype, gen):
    m, n, k = shape
    if path == "fused" and k > 64:
        pytest.skip("the fused kernel takes k <= 64")
    inputs = _dense(gen, m, n, k, dtype, weighted)
    with dense_path(path):
        out = mfext.dense_loss_grad(*inputs)
    _check(out, [e.to(dtype) for e in _dense_ref(*inputs)], dtype, like=inputs[1:3])


def test_dense_fused_cannot_take_large_k(gen):
    inputs = _dense(gen, 8, 8, 65, torch.float32, False)
    with dense_path("fused"), pytest.raises(RuntimeError, match="fused CUDA path was requested"):
        mfext.dense_loss_grad(*inputs)


@pytest.mark.parametrize("k", [8, 32, 64])
def test_dense_paths_agree(k, gen):
    inputs = _dense(gen, 500, 700, k, torch.float32, True)
    with dense_path("fused"):
        fused = mfext.dense_loss_grad(*inputs)
    with dense_path("tiled"):
        tiled = mfext.dense_loss_grad(*inputs)
    for x, y in zip(fused, tiled):
        assert rel_err(x, y) <= 2e-5


def test_dense_tf32_when_torch_allows_it(gen):
    """With TF32 matmuls allowed the fused kernel runs 1xTF32: faster, about 1e-3 accurate."""
    inputs = _dense(gen, 300, 200, 32, torch.float32, False)
    expected = _dense_ref(*inputs)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with dense_path("fused"):
            out = mfext.dense_loss_grad(*inputs)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    errors = [rel_err(x, y.float()) for x, y in zip(out, expected)]
    assert max(errors) <= 1e-2, errors


@pytest.mark.parametrize("layout", ["A.t()", "strided", "weight broadcast", "misaligned", "W.t() H.t()"])
@pytest.mark.parametrize("path", ["fused", "tiled"])
def test_dense_layouts(layout, path, gen):
    m, n, k, dtype = 150, 90, 12, torch.float32
    A, W, H, weight = _dense(gen, m, n, k, dtype, True)
    if layout == "A.t()":
        A = A.t().contiguous().t()
    elif layout == "strided":
        A = _rand(gen, 2 * m, 3 * n, dtype=dtype)[::2, ::3]
        weight = _rand(gen, m, 2 * n, dtype=dtype, low=0.0)[:, ::2]
    elif layout == "weight broadcast":
        weight = torch.full((1, 1), 0.5, dtype=dtype, device="cuda").expand(m, n)
        A = _rand(gen, m, n, dtype=dtype)
    elif layout == "misaligned":  # rows not 16-byte aligned: the scalar load path
        A = _rand(gen, m * n + 1, dtype=dtype)[1:].view(m, n)
    else:
        W, H = W.t().contiguous().t(), H.t().contiguous().t()
    with dense_path(path):
        out = mfext.dense_loss_grad(A, W, H, weight)
    _check(out, [e.to(dtype) for e in _dense_ref(A, W, H, weight)], dtype, like=(W, H))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_dense_tiled_row_blocks_with_a_short_last_block(dtype, gen):
    """The tiled path runs A in 32 MiB row blocks; here the last one is short (100 of
    2048 or 1024 rows) and has fewer partial losses than the first. Freed NaN memory
    in the caching allocator shows a partial-loss slot that no block writes."""
    m, n, k = 2148, 4096, 8
    inputs = _dense(gen, m, n, k, dtype, False)
    # Free NaN-filled blocks of every small size: the caching allocator hands the
    # op's status + partial-loss buffer (8-13 KB here) one of the same size.
    poison = [torch.full((nbytes // 8,), float("nan"), dtype=torch.float64, device="cuda")
              for nbytes in range(4096, 32768 + 1, 512)]
    del poison
    with dense_path("tiled"):
        out = mfext.dense_loss_grad(*inputs)
    _check(out, [e.to(dtype) for e in _dense_ref(*inputs)], dtype, like=inputs[1:3])


def test_dense_matches_cpu_op(gen):
    inputs = _dense(gen, 211, 157, 24, torch.float64, True)
    gpu = mfext.dense_loss_grad(*inputs)
    cpu = mfext.dense_loss_grad(*[None if t is None else t.cpu() for t in inputs])
    for x, y in zip(gpu, cpu):
        assert rel_err(x, y) <= 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("path", ["fused", "tiled"])
def test_dense_over_2_pow_31_elements(path, gen):
    """m * n > 2^31: 64-bit offsets everywhere (8.6 GB of float32 A)."""
    m, n, k = 65537, 32769, 8
    if torch.cuda.get_device_properties(0).total_memory < 24 * 2**30:
        pytest.skip("needs 24 GiB of GPU memory")
    g = torch.Generator(device="cuda").manual_seed(7)
    A = torch.rand(m, n, generator=g, device="cuda")
    W = torch.rand(m, k, generator=g, device="cuda") - 0.5
    H = torch.rand(k, n, generator=g, device="cuda") - 0.5
    with dense_path(path):
        loss, gW, gH = mfext.dense_loss_grad(A, W, H)
    # float64 reference in row blocks (no m x n float64 temporary).
    W64, H64 = W.double(), H.double()
    ref_loss = torch.zeros((), dtype=torch.float64, device="cuda")
    ref_gW = torch.empty(m, k, dtype=torch.float64, device="cuda")
    ref_gH = torch.zeros(k, n, dtype=torch.float64, device="cuda")
    for r0 in range(0, m, 4096):
        R = W64[r0:r0 + 4096] @ H64 - A[r0:r0 + 4096].double()
        ref_loss += R.square().sum()
        ref_gW[r0:r0 + 4096] = 2 * R @ H64.t()
        ref_gH += 2 * W64[r0:r0 + 4096].t() @ R
        del R
    assert rel_err(loss, ref_loss) <= 1e-5
    assert rel_err(gW, ref_gW) <= 1e-5 and rel_err(gH, ref_gH) <= 1e-5


# ------------------------------------------------------------------------------ sparse

# (m, n, k, nnz): edges, k = 1 and odd k (scalar loads), k = 128 (a warp per
# entry), k = 130 and 516 (chunks re-read), heavy rows/columns crossing units.
SPARSE_SHAPES = [
    (1, 1, 1, 1), (9, 7, 3, 40), (300, 200, 16, 5000), (1000, 50, 128, 20000),
    (50, 1000, 130, 3000), (40, 30, 516, 2000), (5000, 4000, 64, 60000),
]


@pytest.mark.parametrize("shape", SPARSE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mode", ["fast", "deterministic"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_sparse_matches_reference(shape, mode, weighted, dtype, index_dtype, gen):
    inputs = _sparse(gen, *shape, dtype, weighted, index_dtype, skew=shape[3] > 1000)
    with deterministic_algorithms(mode == "deterministic"):
        out = mfext.sparse_loss_grad(*inputs)
    expected = _ref64(ref.sparse_loss_grad, inputs)
    _check(out, [e.to(dtype) for e in expected], dtype, like=inputs[3:5])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_sparse_deterministic_mode_is_bitwise_repeatable(dtype, gen):
    inputs = _sparse(gen, 2000, 300, 64, 200_000, dtype, True, skew=True)
    with deterministic_algorithms(True):
        first = mfext.sparse_loss_grad(*inputs)
        for _ in range(3):
            again = mfext.sparse_loss_grad(*inputs)
            for x, y in zip(first, again):
                assert torch.equal(x, y)
    fast = mfext.sparse_loss_grad(*inputs)
    assert torch.equal(fast[0], mfext.sparse_loss_grad(*inputs)[0])  # the loss is fixed-order in both
    for x, y in zip(fast, first):
        assert rel_err(x, y) <= TOL[dtype]


def test_sparse_matches_cpu_op_with_row_sorted_input(gen):
    rows, cols, vals, W, H, weight = _sparse(gen, 700, 300, 32, 30000, torch.float64, True)
    order = torch.argsort(rows.cpu(), stable=True).cuda()  # grouped by row: few grad_W atomics
    rows, cols, vals, weight = rows[order], cols[order], vals[order], weight[order]
    gpu = mfext.sparse_loss_grad(rows, cols, vals, W, H, weight)
    cpu = mfext.sparse_loss_grad(*[t.cpu() for t in (rows, cols, vals, W, H, weight)])
    for x, y in zip(gpu, cpu):
        assert rel_err(x, y) <= 1e-12


@pytest.mark.parametrize("mode", ["fast", "deterministic"])
def test_sparse_empty_and_edges(mode, gen):
    with deterministic_algorithms(mode == "deterministic"):
        idx = torch.zeros(0, dtype=torch.long, device="cuda")
        vals = torch.zeros(0, device="cuda")
        W, H = torch.ones(5, 3, device="cuda"), torch.ones(3, 4, device="cuda")
        loss, gW, gH = mfext.sparse_loss_grad(idx, idx, vals, W, H)
        assert loss.item() == 0 and not gW.any() and not gH.any()
        W0 = torch.ones(0, 3, device="cuda")
        A0 = torch.zeros(0, 4, device="cuda")
        loss, gW, gH = mfext.dense_loss_grad(A0, W0, H)
        assert loss.item() == 0 and gW.shape == (0, 3) and not gH.any()


# ------------------------------------------------------------------------------ half types


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_half_types(dtype, gen):
    """float16/bfloat16: computed in float32 (accumulating in float32), returned in the input dtype."""
    A, W, H, weight = _dense(gen, 300, 170, 24, dtype, True)
    out = mfext.dense_loss_grad(A, W, H, weight)
    _check(out, [e.to(dtype) for e in _dense_ref(A, W, H, weight)], dtype, like=(W, H))
    inputs = _sparse(gen, 400, 300, 32, 9000, dtype, True)
    out = mfext.sparse_loss_grad(*inputs)
    _check(out, [e.to(dtype) for e in _ref64(ref.sparse_loss_grad, inputs)], dtype, like=inputs[3:5])


# ------------------------------------------------------------------------------ bad input


def _bad_sparse(m=4, n=3):
    rows = torch.tensor([0, 1, 2, 3, 0], device="cuda")
    cols = torch.tensor([0, 1, 2, 0, 2], device="cuda")
    vals = torch.randn(5, device="cuda")
    return rows, cols, vals, torch.randn(m, 2, device="cuda"), torch.randn(2, n, device="cuda")


@pytest.mark.parametrize("mode", ["fast", "deterministic"])
@pytest.mark.parametrize(
    "case",
    [
        ("rows", 2, 4, IndexError, r"rows\[2\] = 4 is out of range for W with 4 rows"),
        ("rows", 1, -1, IndexError, r"rows\[1\] = -1 is out of range"),
        ("cols", 4, 3, IndexError, r"cols\[4\] = 3 is out of range for H with 3 columns"),
        ("weight", 3, -1.0, ValueError, r"'weight' must be finite and non-negative; found weight\[3\] = -1"),
    ],
    ids=["row", "negative row", "col", "weight"],
)
def test_bad_sparse_input_is_reported_without_sync(case, mode):
    name, pos, value, exc, pattern = case
    rows, cols, vals, W, H = _bad_sparse()
    weight = torch.ones(5, device="cuda")
    {"rows": rows, "cols": cols, "weight": weight}[name][pos] = value
    with deterministic_algorithms(mode == "deterministic"):
        loss, gW, gH = mfext.sparse_loss_grad(rows, cols, vals, W, H, weight)
    assert torch.isnan(loss).item() and torch.isnan(gW).all() and torch.isnan(gH).all()
    with pytest.raises(exc, match=pattern):
        mfext.cuda_check_errors()
    mfext.cuda_check_errors()  # reported once
    rows, cols, vals, W, H = _bad_sparse()
    assert torch.isfinite(mfext.sparse_loss_grad(rows, cols, vals, W, H)[0]).item()


def test_an_error_on_a_side_stream_is_reported_while_the_current_stream_is_busy():
    """Consuming an error frees the mailbox at once, whatever any stream has queued."""
    rows, cols, vals, W, H = _bad_sparse()
    rows[2] = 4
    mfext.sparse_loss_grad(rows, cols, vals, W, H)
    torch.cuda.synchronize()
    rows[2], cols[4] = 2, 3
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    torch.cuda._sleep(1_000_000_000)  # the current stream stays busy from here
    with pytest.raises(IndexError, match=r"rows\[2\] = 4"):
        mfext.cuda_check_errors(synchronize=False)
    with torch.cuda.stream(side):
        loss = mfext.sparse_loss_grad(rows, cols, vals, W, H)[0]
    side.synchronize()
    with pytest.raises(IndexError, match=r"cols\[4\] = 3"):
        mfext.cuda_check_errors(synchronize=False)
    torch.cuda.synchronize()
    assert torch.isnan(loss).item()
    mfext.cuda_check_errors()  # each error reported once


@pytest.mark.parametrize("path", ["fused", "tiled"])
def test_bad_dense_weight_is_raised_by_the_next_call(path):
    A, W, H = torch.randn(40, 30, device="cuda"), torch.randn(40, 4, device="cuda"), torch.randn(4, 30, device="cuda")
    weight = torch.ones_like(A)
    weight[5, 7] = float("nan")
    with dense_path(path):
        loss, _, _ = mfext.dense_loss_grad(A, W, H, weight)
        torch.cuda.synchronize()
        with pytest.raises(ValueError, match=r"'weight' must be finite and non-negative \(0 marks a missing entry\); found weight\[5, 7\]"):
            mfext.dense_loss_grad(A, W, H)  # the next mfext call raises the earlier error
    assert torch.isnan(loss).item()
    assert torch.isfinite(mfext.dense_loss_grad(A, W, H)[0]).item()


# ------------------------------------------------------------------------------ no sync, streams


def _all_calls(gen):
    d = _dense(gen, 300, 200, 16, torch.float32, True)
    d_big_k = _dense(gen, 100, 80, 96, torch.float32, True)
    s = _sparse(gen, 500, 400, 32, 20000, torch.float32, True)

    def run():
        out = [mfext.dense_loss_grad(*d), mfext.dense_loss_grad(*d_big_k)]
        with dense_path("tiled"):
            out.append(mfext.dense_loss_grad(*d))
        out.append(mfext.sparse_loss_grad(*s))
        with deterministic_algorithms(True):
            out.append(mfext.sparse_loss_grad(*s))
        return out

    return run


def test_ops_never_synchronize(gen):
    assert_no_device_sync(_all_calls(gen))


def test_ops_return_before_the_device_finishes(gen):
    """Queued behind a long device sleep, the ops must return while it still sleeps."""
    run = _all_calls(gen)
    expected = run()
    torch.cuda.synchronize()
    torch.cuda._sleep(2_000_000_000)  # about a second of device time
    sleeping = torch.cuda.Event()
    sleeping.record()
    got = run()
    assert not sleeping.query(), "an op waited for the device"
    torch.cuda.synchronize()
    for a, b in zip(expected, got):
        for x, y in zip(a, b):
            assert rel_err(x, y) <= 1e-5


def test_non_default_stream(gen):
    A, W, H, weight = _dense(gen, 300, 200, 16, torch.float32, True)
    rows, cols, vals, Ws, Hs, ws = _sparse(gen, 500, 400, 32, 20000, torch.float32, True)
    expected_dense = mfext.dense_loss_grad(2 * A, W, H, weight)
    expected_sparse = mfext.sparse_loss_grad(rows, cols, 2 * vals, Ws, Hs, ws)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # inputs made late on this stream: the ops must wait for them
        A2, vals2 = 2 * A, 2 * vals
        dense = mfext.dense_loss_grad(A2, W, H, weight)
        sparse = mfext.sparse_loss_grad(rows, cols, vals2, Ws, Hs, ws)
    torch.cuda.current_stream().wait_stream(side)
    for x, y in zip(dense + sparse, expected_dense + expected_sparse):
        assert rel_err(x, y) <= 1e-5


def test_cuda_graph_capture(gen):
    A, W, H, _ = _dense(gen, 300, 200, 16, torch.float32, False)
    rows, cols, vals, Ws, Hs, _ = _sparse(gen, 500, 400, 32, 20000, torch.float32, False)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            mfext.dense_loss_grad(A, W, H)
            mfext.sparse_loss_grad(rows, cols, vals, Ws, Hs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        dense = mfext.dense_loss_grad(A, W, H)
        sparse = mfext.sparse_loss_grad(rows, cols, vals, Ws, Hs)
    A.copy_(torch.rand_like(A))
    vals.copy_(torch.rand_like(vals))
    graph.replay()
    torch.cuda.synchronize()
    for x, y in zip(dense + sparse, mfext.dense_loss_grad(A, W, H) + mfext.sparse_loss_grad(rows, cols, vals, Ws, Hs)):
        assert rel_err(x, y) <= 1e-5


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_gpu(gen):
    A, W, H, weight = [t.to("cuda:1") for t in _dense(gen, 200, 100, 8, torch.float32, True)]
    rows, cols, vals, Ws, Hs, ws = [t.to("cuda:1") for t in _sparse(gen, 300, 200, 16, 5000, torch.float32, True)]
    with torch.cuda.device(0):
        dense = mfext.dense_loss_grad(A, W, H, weight)
        sparse = mfext.sparse_loss_grad(rows, cols, vals, Ws, Hs, ws)
    assert all(t.device == torch.device("cuda:1") for t in dense + sparse)
    _check(dense, [e.float() for e in _dense_ref(A, W, H, weight)], torch.float32)
    _check(sparse, [e.float() for e in _ref64(ref.sparse_loss_grad, (rows, cols, vals, Ws, Hs, ws))], torch.float32)
