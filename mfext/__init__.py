"""mfext: fused C++/CUDA kernels for matrix factorization in PyTorch.

``import mfext`` registers the ops under ``torch.ops.mfext``. The public names:
the ops (:mod:`mfext.ops`), :func:`factorize` (:mod:`mfext.dense`),
:class:`MatrixFactorization` and :class:`ImplicitALS` (:mod:`mfext.recommenders`), the shared training
loop's :class:`DivergenceError` (:mod:`mfext.training`), :mod:`mfext.datasets`
(loaders, splits) and :mod:`mfext.metrics` (ranking metrics at k).
"""
from ._library import build_info
from .cuda import cuda_check_errors
# Through the alias module, first: loading mfext/factorize.py binds the name
# ``factorize`` to that module, and this line then binds it to the function for good.
from .factorize import DivergenceError, FactorizeResult, factorize
from .ops import dense_loss, dense_loss_grad, sparse_loss, sparse_loss_grad
from . import datasets, metrics, training
from .recommenders import ImplicitALS, MatrixFactorization

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
    "ImplicitALS",
    "datasets",
    "metrics",
]
