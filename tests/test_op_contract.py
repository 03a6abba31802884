"""opcheck, gradcheck, the differentiable forms and torch.compile(fullgraph=True)."""
from __future__ import annotations

import pytest
import torch

import mfext
from mfext import reference as ref
from conftest import RTOL, rel_err


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
