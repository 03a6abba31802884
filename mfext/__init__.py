"""mfext: fused C++/CUDA kernels for matrix factorization in PyTorch.

``import mfext`` registers the ops under ``torch.ops.mfext``.
"""
from ._library import build_info
from .cuda import cuda_check_errors
from .factorize import DivergenceError, FactorizeResult, factorize
from .ops import dense_loss, dense_loss_grad, sparse_loss, sparse_loss_grad
from . import datasets
from .estimator import MatrixFactorization

__version__ = "0.1.0"

__all__ = [
    "build_info",
    "cuda_check_errors",
    "dense_loss",
    "dense_loss_grad",
    "sparse_loss",
    "sparse_loss_grad",
    "factorize",
    "FactorizeResult",
    "DivergenceError",
    "MatrixFactorization",
    "datasets",
]
