"""opcheck, gradcheck, the differentiable forms and torch.compile(fullgraph=True)."""
from __future__ import annotations

import pytest
import torch

import mfext
from mfext import reference as ref
from helpers import RTOL, rel_err


def _skip_inductor_without_triton(device: str) -> None:
    """Inductor compiles CUDA graphs with Triton; the aot_eager tests cover CUDA without it."""
    if device == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            pytest.skip("inductor on CUDA needs Triton, which is not installed")


def _dense_args(gen, device, dtype, weighted=False, m=6, n=5, k=3):
    A = torch.randn(m, n, generator=gen, dtype=dtype).to(device)
    W = torch.randn(m, k, generator=gen, dtype=dtype).to(device)
    H = torch.randn(k, n, generator=gen, dtype=dtype).to(device)
    weight = torch.rand(m, n, generator=gen, dtype=dtype).to(device) if weighted else None
    return A, W, H, weight


def _sparse_args(gen, device, dtype, weighted=False, m=6, n=5, k=3, nnz=20):
    rows = torch.randint(0, m, (nnz,), generator=gen).to(device)
    cols = torch.randint(0, n, (nnz,), generator=gen).to(device)
    vals = torch.randn(nnz, generator=gen, dtype=dtype).to(device)
    W = torch.randn(m, k, generator=gen, dtype=dtype).to(device)
    H = torch.randn(n, k, generator=gen, dtype=dtype).to(device).t()
    weight = torch.rand(nnz, generator=gen, dtype=dtype).to(device) if weighted else None
    return rows, cols, vals, W, H, weight


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_dense(weighted, requires_grad, dtype, device, gen):
    args = list(_dense_args(gen, device, dtype, weighted))
    if requires_grad:
        args[1].requires_grad_(True)
        args[2].requires_grad_(True)
    torch.library.opcheck(torch.ops.mfext.dense_loss_grad.default, tuple(args))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_sparse(weighted, requires_grad, dtype, device, gen):
    args = list(_sparse_args(gen, device, dtype, weighted))
    if requires_grad:
        args[3].requires_grad_(True)
        args[4] = args[4].detach().requires_grad_(True)
    torch.library.opcheck(torch.ops.mfext.sparse_loss_grad.default, tuple(args))


@pytest.mark.parametrize("weighted", [False, True])
def test_gradcheck_dense(weighted, device, gen):
    A, W, H, weight = _dense_args(gen, device, torch.float64, weighted)
    inputs = [t.requires_grad_(True) for t in (A, W, H)]
    if weight is not None:
        inputs.append(weight.requires_grad_(True))
    fn = lambda A, W, H, *w: mfext.dense_loss(A, W, H, *w)
    assert torch.autograd.gradcheck(fn, tuple(inputs))


@pytest.mark.parametrize("weighted", [False, True])
def test_gradcheck_sparse(weighted, device, gen):
    rows, cols, vals, W, H, weight = _sparse_args(gen, device, torch.float64, weighted)
    H = H.detach()
    inputs = [t.requires_grad_(True) for t in (vals, W, H)]
    if weight is not None:
        inputs.append(weight.requires_grad_(True))
    fn = lambda v, W, H, *w: mfext.sparse_loss(rows, cols, v, W, H, *w)
    assert torch.autograd.gradcheck(fn, tuple(inputs))


@pytest.mark.parametrize("weighted", [False, True])
def test_gradgradcheck_dense(weighted, device, gen):
    A, W, H, weight = _dense_args(gen, device, torch.float64, weighted)
    inputs = [t.requires_grad_(True) for t in (A, W, H)]
    if weight is not None:
        inputs.append((weight + 0.1).requires_grad_(True))  # perturbed weights stay >= 0
    fn = lambda A, W, H, *w: mfext.dense_loss(A, W, H, *w)
    assert torch.autograd.gradgradcheck(fn, tuple(inputs))
    # The raw op's registered autograd gives the same second derivatives.
    op = lambda A, W, H, *w: torch.ops.mfext.dense_loss_grad.default(A, W, H, *w)[0]
    assert torch.autograd.gradgradcheck(op, tuple(inputs))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_gradgradcheck_sparse(weighted, index_dtype, device, gen):
    rows, cols, vals, W, H, weight = _sparse_args(gen, device, torch.float64, weighted)
    rows, cols = rows.to(index_dtype), cols.to(index_dtype)
    H = H.detach()  # the (n, k).t() layout
    inputs = [t.requires_grad_(True) for t in (vals, W, H)]
    if weight is not None:
        inputs.append((weight + 0.1).requires_grad_(True))
    fn = lambda v, W, H, *w: mfext.sparse_loss(rows, cols, v, W, H, *w)
    assert torch.autograd.gradgradcheck(fn, tuple(inputs))
    op = lambda v, W, H, *w: torch.ops.mfext.sparse_loss_grad.default(rows, cols, v, W, H, *w)[0]
    assert torch.autograd.gradgradcheck(op, tuple(inputs))


def _second_derivatives(loss_fn, W, H):
    """d/d(W, H) of a function of the first gradients (create_graph=True)."""
    W = W.detach().clone().requires_grad_(True)
    H = H.detach().clone().requires_grad_(True)
    gW, gH = torch.autograd.grad(loss_fn(W, H), (W, H), create_graph=True)
    return torch.autograd.grad(gW.square().sum() + (gH * H).sum() + gW.sum(), (W, H))


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_double_backward_matches_autograd(kind, dtype, device, gen):
    if kind == "dense":
        A, W, H, weight = _dense_args(gen, device, dtype, True, m=23, n=17, k=4)
        weight[weight < 0.2] = 0.0
        A_nan = A.masked_fill(weight == 0, float("nan"))  # missing entries may hold NaN
        fused = lambda W, H: mfext.dense_loss(A_nan, W, H, weight)
        expected = lambda W, H: ref.dense_loss(A.double().cpu(), W, H, weight.double().cpu())
    else:
        rows, cols, vals, W, H, weight = _sparse_args(gen, device, dtype, True, m=23, n=17, k=4, nnz=150)
        fused = lambda W, H: mfext.sparse_loss(rows, cols, vals, W, H, weight)
        expected = lambda W, H: ref.sparse_loss(rows.cpu(), cols.cpu(), vals.double().cpu(), W, H,
                                                weight.double().cpu())
    got = _second_derivatives(fused, W, H)
    want = _second_derivatives(expected, W.double().cpu(), H.double().cpu())
    for x, y in zip(got, want):
        assert x is not None and x.dtype == dtype
        assert rel_err(x, y) <= RTOL[dtype]


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_torch_func_transforms_match_autograd(kind, device, gen):
    if kind == "dense":
        A, W, H, weight = _dense_args(gen, device, torch.float64, True, m=9, n=7, k=3)
        fused = lambda W, H: mfext.dense_loss(A, W, H, weight)
        expected = lambda W, H: ref.dense_loss(A, W, H, weight)
    else:
        rows, cols, vals, W, H, weight = _sparse_args(gen, device, torch.float64, True, m=9, n=7, k=3,
                                                      nnz=40)
        fused = lambda W, H: mfext.sparse_loss(rows, cols, vals, W, H, weight)
        expected = lambda W, H: ref.sparse_loss(rows, cols, vals, W, H, weight)
    W, H = W.detach(), H.detach()
    grad = torch.func.grad(fused, argnums=(0, 1))(W, H)
    for x, y in zip(grad, torch.func.grad(expected, argnums=(0, 1))(W, H)):
        assert rel_err(x, y) <= 1e-12
    jac = torch.func.jacrev(fused, argnums=1)(W, H)
    assert rel_err(jac, torch.func.jacrev(expected, argnums=1)(W, H)) <= 1e-12
    # The Hessian in reverse mode, and vmap (one op call per batch element).
    hess = torch.func.jacrev(torch.func.jacrev(fused))(W, H)
    assert hess.shape == W.shape + W.shape
    assert rel_err(hess, torch.func.jacrev(torch.func.jacrev(expected))(W, H)) <= 1e-12
    batch = torch.stack([W, 2 * W, -W])
    assert rel_err(torch.func.vmap(fused, in_dims=(0, None))(batch, H),
                   torch.stack([expected(w, H) for w in batch])) <= 1e-12


def test_first_order_backward_reuses_the_fused_gradients(monkeypatch, gen):
    """Only a recorded backward (create_graph, torch.func) forms the (m, n) residual."""
    import mfext.ops.dense as dense_ops  # the dense loss's backward reads masked_weighted here

    formed = []
    original = dense_ops.masked_weighted
    monkeypatch.setattr(dense_ops, "masked_weighted",
                        lambda r, w: formed.append(r.shape) or original(r, w))
    A, W, H, weight = _dense_args(gen, "cpu", torch.float64, True)
    W.requires_grad_(True)
    H.requires_grad_(True)
    mfext.dense_loss(A, W, H, weight).backward()
    torch.autograd.grad(mfext.dense_loss(A, W, H, weight), (W, H))
    assert formed == []
    torch.autograd.grad(mfext.dense_loss(A, W, H, weight), (W, H), create_graph=True)
    assert formed == [A.shape]


def test_data_gradient_is_zero_at_missing_entries(gen):
    A, W, H, weight = _dense_args(gen, "cpu", torch.float64, True, m=8, n=6)
    weight[weight < 0.3] = 0.0
    A = A.masked_fill(weight == 0, float("nan")).requires_grad_(True)
    (dA,) = torch.autograd.grad(mfext.dense_loss(A, W, H, weight), A)
    clean = torch.nan_to_num(A.detach()).requires_grad_(True)
    (expected,) = torch.autograd.grad(ref.dense_loss(clean, W, H, weight), clean)
    assert bool(torch.isfinite(dA).all()) and bool((dA[weight == 0] == 0).all())
    assert rel_err(dA, expected) <= 1e-12


@pytest.mark.parametrize("transform", ["jvp", "jacfwd", "hessian"])
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_forward_mode_ad_is_refused_clearly(kind, transform, gen):
    if kind == "dense":
        A, W, H, _ = _dense_args(gen, "cpu", torch.float64)
        fn = lambda W: mfext.dense_loss(A, W, H)
    else:
        rows, cols, vals, W, H, _ = _sparse_args(gen, "cpu", torch.float64)
        fn = lambda W: mfext.sparse_loss(rows, cols, vals, W, H)
    with pytest.raises(NotImplementedError, match="jvp function .* forward mode AD"):
        if transform == "jvp":
            torch.func.jvp(fn, (W,), (torch.ones_like(W),))
        elif transform == "jacfwd":
            torch.func.jacfwd(fn)(W)
        else:
            torch.func.hessian(fn)(W)


def test_dense_loss_is_a_drop_in_for_autograd(dtype, device, gen):
    A, W, H, weight = _dense_args(gen, device, dtype, True, m=40, n=30, k=4)
    W1, H1 = W.clone().requires_grad_(True), H.clone().requires_grad_(True)
    W2, H2 = W.clone().requires_grad_(True), H.clone().requires_grad_(True)
    (2.5 * mfext.dense_loss(A, W1, H1, weight)).backward()
    (2.5 * ref.dense_loss(A, W2, H2, weight)).backward()
    assert rel_err(W1.grad, W2.grad) <= RTOL[dtype]
    assert rel_err(H1.grad, H2.grad) <= RTOL[dtype]


def test_gradient_outputs_are_not_differentiable(device, gen):
    A, W, H, _ = _dense_args(gen, device, torch.float64)
    W.requires_grad_(True)
    _, grad_W, _ = mfext.dense_loss_grad(A, W, H)
    assert not grad_W.requires_grad


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_compile_fullgraph_training_step(kind, device, gen):
    """A whole training step compiles with no graph break and matches eager."""
    torch._dynamo.reset()
    if kind == "dense":
        A, W, H, _ = _dense_args(gen, device, torch.float32, m=32, n=24, k=4)
        data = (A,)
    else:
        rows, cols, vals, W, H, _ = _sparse_args(gen, device, torch.float32, m=32, n=24, k=4, nnz=100)
        H = H.detach()
        data = (rows, cols, vals)

    def compiled_step(data, W, H, lr):
        loss = (
            mfext.dense_loss(data[0], W, H)
            if kind == "dense"
            else mfext.sparse_loss(data[0], data[1], data[2], W, H)
        )
        gW, gH = torch.autograd.grad(loss, (W, H))
        return loss.detach(), W - lr * gW, H - lr * gH

    # trace_autograd_ops lets dynamo trace torch.autograd.grad, so the whole step is one graph.
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        step = torch.compile(compiled_step, fullgraph=True, backend="aot_eager")
        W1, H1 = W.clone().requires_grad_(True), H.clone().requires_grad_(True)
        loss_c, Wc, Hc = step(data, W1, H1, 1e-3)
    W2, H2 = W.clone().requires_grad_(True), H.clone().requires_grad_(True)
    loss_e, We, He = compiled_step(data, W2, H2, 1e-3)
    assert rel_err(loss_c, loss_e) <= 1e-6
    assert rel_err(Wc, We) <= 1e-6 and rel_err(Hc, He) <= 1e-6


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_compile_forward_then_backward(kind, device, gen):
    """The usual pattern: a compiled loss (one graph) whose backward AOTAutograd compiles."""
    _skip_inductor_without_triton(device)
    torch._dynamo.reset()
    A, W, H, _ = _dense_args(gen, device, torch.float32, m=20, n=10, k=3)
    rows, cols, vals, _, _, _ = _sparse_args(gen, device, torch.float32, m=20, n=10, k=3, nnz=50)

    def loss_fn(W, H):
        if kind == "dense":
            return mfext.dense_loss(A, W, H) / A.numel()
        return mfext.sparse_loss(rows, cols, vals, W, H) / vals.numel()

    compiled = torch.compile(loss_fn, fullgraph=True)
    W1, H1 = W.clone().requires_grad_(True), H.clone().requires_grad_(True)
    compiled(W1, H1).backward()
    W2, H2 = W.clone().requires_grad_(True), H.clone().requires_grad_(True)
    loss_fn(W2, H2).backward()
    assert rel_err(W1.grad, W2.grad) <= 1e-5 and rel_err(H1.grad, H2.grad) <= 1e-5


def test_compile_inductor_dense_step(device, gen):
    _skip_inductor_without_triton(device)
    torch._dynamo.reset()
    A, W, H, _ = _dense_args(gen, device, torch.float32, m=16, n=12, k=3)

    @torch.compile(fullgraph=True)
    def loss_and_grads(A, W, H):
        loss, gW, gH = mfext.dense_loss_grad(A, W, H)
        return loss * 0.5, gW * 0.5, gH * 0.5

    out = loss_and_grads(A, W, H)
    expected = ref.dense_loss_grad(A, W, H)
    for x, y in zip(out, expected):
        assert rel_err(x, 0.5 * y) <= 1e-5
