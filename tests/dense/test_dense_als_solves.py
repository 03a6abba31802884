"""The pieces of dense ALS (mfext.dense.als): batched normal-equation solves, the
orthonormal basis, non-negative coordinate descent (against scipy) and weighted Grams."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mfext.dense.als import (nnls_coordinate_descent, orthonormal_basis, solve_normal_equations,
                             weighted_gram)
from factorize_reference import F64
from helpers import rel_err


def _spd(gen, *batch, k):
    X = torch.randn(*batch, k, 2 * k, generator=gen, dtype=F64)
    return X @ X.transpose(-1, -2)


def test_solve_normal_equations_shared_and_batched(gen):
    k, b = 6, 40
    rhs = torch.randn(b, k, generator=gen, dtype=F64)
    shared = _spd(gen, k=k)
    x = solve_normal_equations(shared, rhs, 0.3)
    expected = torch.linalg.solve(shared + 0.3 * torch.eye(k, dtype=F64), rhs.t()).t()
    assert rel_err(x, expected) < 1e-12
    grams = _spd(gen, b, k=k)
    x = solve_normal_equations(grams, rhs, 0.0)
    expected = torch.linalg.solve(grams, rhs.unsqueeze(-1)).squeeze(-1)
    assert rel_err(x, expected) < 1e-10


def test_solve_normal_equations_singular_gram_is_finite(gen):
    k = 5
    F = torch.randn(3, k, generator=gen, dtype=F64)  # rank 3 < k
    gram = F.t() @ F
    rhs = torch.randn(7, 3, generator=gen, dtype=F64) @ F  # consistent systems
    x = solve_normal_equations(gram, rhs)
    assert bool(torch.isfinite(x).all())
    assert rel_err(x @ gram, rhs) < 1e-6


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "batched"])
def test_solve_normal_equations_ill_conditioned_for_float32(shared, gen):
    """Factors of rank 3 plus 1e-6 noise, and right-hand sides with float32-sized errors:
    with float32's eps the minimum-norm solution, not the solution of the noise."""
    k, r = 6, 3
    F = (torch.randn(50, r, generator=gen, dtype=F64) @ torch.randn(r, k, generator=gen, dtype=F64)
         + 1e-6 * torch.randn(50, k, generator=gen, dtype=F64))
    gram = F.t() @ F  # eigenvalues: three O(100), three O(1e-10)
    rhs = torch.randn(8, 50, generator=gen, dtype=F64) @ F
    rhs = rhs * (1 + 1e-7 * torch.randn(8, k, generator=gen, dtype=F64))  # float32-sized errors
    eps32 = torch.finfo(torch.float32).eps
    batch_gram = gram if shared else gram.expand(8, k, k).clone()
    x = solve_normal_equations(batch_gram, rhs, eps=eps32)
    # The reference: the pseudo-inverse with float32's cutoff.
    expected = rhs @ torch.linalg.pinv(gram, rtol=k * eps32, hermitian=True)
    assert rel_err(x, expected) < 1e-8
    # float64's cutoff solves along the noise directions: far larger entries.
    blown = solve_normal_equations(batch_gram, rhs)
    assert rel_err(blown, torch.linalg.solve(gram, rhs.t()).t()) < 1e-3
    assert float(blown.norm()) > 100 * float(x.norm())


def test_solve_normal_equations_nan_gram_gives_nan_rows(gen):
    grams = _spd(gen, 4, k=3)
    grams[1, 0, 0] = float("nan")
    x = solve_normal_equations(grams, torch.randn(4, 3, generator=gen, dtype=F64))
    assert bool(torch.isnan(x[1]).all()) and bool(torch.isfinite(x[[0, 2, 3]]).all())
    with pytest.raises(ValueError, match="reg must be >= 0"):
        solve_normal_equations(grams, torch.randn(4, 3, dtype=F64), float("nan"))


@pytest.mark.parametrize("dtype_", [F64, torch.float32], ids=["f64", "f32"])
def test_orthonormal_basis_spans_the_factor(dtype_, gen):
    F = (torch.randn(40, 5, generator=gen, dtype=F64) * torch.tensor([1e3, 1.0, 1e-2, 5.0, 1e-3])).to(dtype_)
    Q = orthonormal_basis(F)
    assert Q.dtype == dtype_ and Q.shape == F.shape
    eye = torch.eye(5, dtype=F64)
    tol = 1e-10 if dtype_ == F64 else 1e-5
    assert rel_err(Q.double().t() @ Q.double(), eye) < tol
    # Same column space: projecting F on Q reproduces it.
    Qd, Fd = Q.double(), F.double()
    assert rel_err(Qd @ (Qd.t() @ Fd), Fd) < tol
    # A rank-deficient F (exactly): a zero column for each missing direction.
    G = torch.cat([F[:, :3].double(), F[:, :2].double() @ torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=F64)], 1)
    Qg = orthonormal_basis(G)
    nonzero = Qg.norm(dim=0) > 0.5
    assert int(nonzero.sum()) == 3 and float(Qg[:, ~nonzero].abs().max()) < 1e-6
    assert rel_err(Qg @ (Qg.t() @ G), G) < 1e-10


def test_solve_normal_equations_checks_shapes(gen):
    with pytest.raises(ValueError, match="gram must be"):
        solve_normal_equations(torch.rand(3, 4), torch.rand(2, 3))
    with pytest.raises(ValueError, match="rhs must be"):
        solve_normal_equations(torch.rand(3, 3), torch.rand(2, 4))
    with pytest.raises(ValueError, match="disagree on b"):
        solve_normal_equations(torch.rand(5, 3, 3), torch.rand(2, 3))


def test_nnls_matches_scipy(gen):
    scipy_opt = pytest.importorskip("scipy.optimize")
    k, b, rows = 5, 12, 20
    M = torch.randn(b, rows, k, generator=gen, dtype=F64)
    y = torch.randn(b, rows, generator=gen, dtype=F64)
    gram = M.transpose(1, 2) @ M
    rhs = (M.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)
    x = nnls_coordinate_descent(gram, rhs, torch.zeros(b, k, dtype=F64), sweeps=500)
    for i in range(b):
        expected, _ = scipy_opt.nnls(M[i].numpy(), y[i].numpy())
        np.testing.assert_allclose(x[i].numpy(), expected, atol=1e-8)
    shared = solve_normal_equations(gram[0], rhs, 0.1, nonnegative=True, sweeps=300)
    assert bool((shared >= 0).all())


def test_weighted_gram_matches_einsum(gen):
    weight = torch.rand(9, 13, generator=gen, dtype=F64)
    F = torch.randn(13, 4, generator=gen, dtype=F64)
    expected = torch.einsum("ij,ja,jb->iab", weight, F, F)
    assert rel_err(weighted_gram(weight, F), expected) < 1e-12
