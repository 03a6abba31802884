"""The reference example: the toy matrix factorized with the fused backend."""
import torch

import mfext
from mfext import reference as ref


def test_toy_matrix_fused_reaches_reference_quality():
    A = torch.tensor(ref.TOY_MATRIX, dtype=torch.float64)
    result = mfext.factorize(A, 2, lr=0.01, max_iter=5000, seed=0)
    final = torch.nn.functional.mse_loss(result.W @ result.H, A).item()
    assert final < 1e-8
    assert result.W.shape == (4, 2) and result.H.shape == (2, 2)


def test_toy_matrix_fused_follows_autograd():
    A = torch.tensor(ref.TOY_MATRIX, dtype=torch.float64)
    fused = mfext.factorize(A, 2, lr=0.01, max_iter=300, seed=3)
    auto = mfext.factorize(A, 2, lr=0.01, max_iter=300, seed=3, backend="autograd")
    assert torch.allclose(fused.W, auto.W, rtol=1e-9, atol=1e-12)
    assert torch.allclose(fused.H, auto.H, rtol=1e-9, atol=1e-12)
