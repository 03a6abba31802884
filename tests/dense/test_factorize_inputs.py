"""mfext.factorize's arguments: what it accepts (numpy scalars, integer, bool and half
data, inputs left unchanged) and what it refuses, with a clear ValueError/TypeError
naming the argument (``FACTORIZE_CASES`` counts toward tests/test_bad_input_coverage.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mfext
from factorize_reference import F64, OPTIMIZERS
from helpers import _small


def test_rank_above_min_needs_reg(gen):
    A = torch.rand(6, 4, generator=gen, dtype=F64)
    with pytest.raises(ValueError, match="rank must be in 1..min"):
        mfext.factorize(A, 5)
    for optimizer in OPTIMIZERS:
        for init in ("random", "svd"):
            res = mfext.factorize(A, 5, optimizer=optimizer, reg=0.1, seed=0, max_iter=50,
                                  init=init)
            assert res.W.shape == (6, 5) and math.isfinite(res.loss_history[-1])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(rank=0), ValueError, "rank must be in 1..min"),
        (dict(rank=2.0), TypeError, "rank must be an int"),
        (dict(A=torch.rand(5)), ValueError, r"A must be a 2-D matrix .* shape \(5,\)"),
        (dict(A=torch.rand(0, 3)), ValueError, "at least one row"),
        (dict(A=torch.rand(4, 3, dtype=torch.complex64)), TypeError, "A must be real"),
        (dict(A=torch.full((4, 3), float("nan"))), ValueError, "no observed entry"),
        (dict(A=torch.tensor([[1.0, float("inf")], [1.0, 2.0]])), ValueError, "infinite"),
        (dict(weight=torch.rand(3, 4)), ValueError, r"weight must have the shape of A \(4, 3\)"),
        (dict(weight=-torch.ones(4, 3)), ValueError, "weight must be finite and non-negative"),
        (dict(optimizer="sgd"), ValueError, "optimizer must be one of"),
        (dict(backend="cuda"), ValueError, "backend must be one of"),
        (dict(reduction="max"), ValueError, "reduction must be"),
        (dict(init="pca"), ValueError, "init must be"),
        (dict(init=(torch.rand(4, 3), torch.rand(3, 3))), ValueError, r"init \(W0, H0\)"),
        (dict(lr=0.0), ValueError, "lr must be > 0"),
        (dict(lr=float("nan")), ValueError, "lr must be finite"),
        (dict(reg=-1.0), ValueError, "reg must be >= 0"),
        (dict(max_iter=-1), ValueError, "max_iter must be >= 0"),
        (dict(log_every=0), ValueError, "log_every must be > 0"),
        (dict(dtype=torch.float16), TypeError, "dtype must be torch.float32 or torch.float64"),
        (dict(callback=3), TypeError, "callback must be callable"),
        (dict(optimizer="gd", line_search=False), ValueError, "needs a learning rate"),
    ],
)
def test_bad_input_is_refused_clearly(kwargs, error, match):
    args = dict(A=torch.rand(4, 3, dtype=F64), rank=2)
    args.update(kwargs)
    A, rank = args.pop("A"), args.pop("rank")
    with pytest.raises(error, match=match):
        mfext.factorize(A, rank, **args)


INTEGER_ARGUMENTS = {
    "rank": np.int64(3),
    "max_iter": np.int32(7),
    "log_every": np.uint8(2),
    "nnls_sweeps": np.int16(2),
    "seed": np.uint64(12345),
}


@pytest.mark.parametrize("name", list(INTEGER_ARGUMENTS))
def test_numpy_integers_are_accepted_for_integer_arguments(name, gen):
    A = torch.rand(9, 7, generator=gen, dtype=F64)
    plain = dict(rank=3, max_iter=7, log_every=2, nnls_sweeps=2, seed=12345)
    kwargs = dict(plain, **{name: INTEGER_ARGUMENTS[name]})
    numpy_run = mfext.factorize(A, kwargs.pop("rank"), optimizer="als", nonnegative=True, tol=0,
                                **kwargs)
    python_run = mfext.factorize(A, plain.pop("rank"), optimizer="als", nonnegative=True, tol=0,
                                 **plain)
    assert torch.equal(numpy_run.W, python_run.W) and torch.equal(numpy_run.H, python_run.H)
    assert numpy_run.loss_history == python_run.loss_history
    assert numpy_run.n_iter == 7 and type(numpy_run.seed) is int and numpy_run.seed == 12345


@pytest.mark.parametrize("name", list(INTEGER_ARGUMENTS))
@pytest.mark.parametrize("bad", [np.bool_(True), True, np.float64(3.0)], ids=["np.bool_", "bool", "np.float64"])
def test_bools_and_floats_are_refused_for_integer_arguments(name, bad):
    kwargs = dict({"rank": 2}, **{name: bad})
    with pytest.raises(TypeError, match=f"{name} must be an int"):
        mfext.factorize(torch.rand(5, 4, dtype=F64), kwargs.pop("rank"), **kwargs)


def test_numpy_floats_are_accepted_for_real_arguments(gen):
    A = torch.rand(9, 7, generator=gen, dtype=F64)
    a = mfext.factorize(A, 2, optimizer="gd", lr=np.float32(0.25), reg=np.float32(0.5),
                        tol=np.float64(0.0), max_iter=5, seed=0)
    b = mfext.factorize(A, 2, optimizer="gd", lr=float(np.float32(0.25)), reg=float(np.float32(0.5)),
                        tol=0.0, max_iter=5, seed=0)
    assert torch.equal(a.W, b.W) and a.loss_history == b.loss_history
    with pytest.raises(TypeError, match="reg must be a number"):
        mfext.factorize(A, 2, reg=np.bool_(False))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("dtype_", [F64, torch.float32], ids=["f64", "f32"])
def test_factorize_leaves_its_inputs_unchanged(optimizer, dtype_, gen):
    """The data, the weights and the initial factors are read, never written."""
    W0 = torch.randn(40, 3, generator=gen, dtype=F64)
    H0 = torch.randn(3, 30, generator=gen, dtype=F64)
    # Near an exact fit, so that the float32 loss is recomputed in float64 too.
    A = (W0 @ H0).to(dtype_)
    A_missing = A.clone()
    A_missing[2, 3] = float("nan")
    weight = (0.5 + torch.rand(40, 30, generator=gen)).to(dtype_)
    init = (W0.to(dtype_), H0.to(dtype_))
    inputs = (A, A_missing, weight, *init)
    copies = [t.clone() for t in inputs]
    for data in (A, A_missing):
        for kwargs in ({}, {"weight": weight}, {"init": init}, {"reg": 0.1}):
            mfext.factorize(data, 3, optimizer=optimizer, seed=0, max_iter=4, log_every=1,
                            lr=1e-3 if optimizer != "als" else None, **kwargs)
            for before, after in zip(copies, inputs):
                torch.testing.assert_close(after, before, rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------- bad input, per argument


A = _small()


FACTORIZE_CASES = {
    "A_1d": (dict(A=torch.rand(5), rank=1), ValueError, "2-D"),
    "A_3d": (dict(A=torch.rand(2, 3, 4), rank=1), ValueError, "2-D"),
    "A_empty_rows": (dict(A=torch.rand(0, 4), rank=1), ValueError, "at least one row"),
    "A_empty_cols": (dict(A=torch.rand(4, 0), rank=1), ValueError, "at least one row"),
    "A_complex": (dict(A=torch.rand(3, 3, dtype=torch.complex64), rank=1), TypeError, "real"),
    "A_object": (dict(A=np.array([[object()]]), rank=1), TypeError, "object"),
    "A_string": (dict(A="abc", rank=1), TypeError, "A must be a numeric array"),
    "A_bytes_array": (dict(A=np.array([[b"1"]]), rank=1), TypeError, "A must be a numeric"),
    "A_inf": (dict(A=torch.tensor([[1.0, math.inf], [2.0, 3.0]]), rank=1), ValueError, "infinite"),
    "A_all_nan": (dict(A=torch.full((3, 3), math.nan), rank=1), ValueError, "no observed"),
    "rank_0": (dict(A=A, rank=0), ValueError, "rank"),
    "rank_negative": (dict(A=A, rank=-2), ValueError, "rank"),
    "rank_too_big_no_reg": (dict(A=A, rank=6), ValueError, "reg > 0"),
    "rank_float": (dict(A=A, rank=2.0), TypeError, "rank"),
    "rank_bool": (dict(A=A, rank=True), TypeError, "rank"),
    "weight_negative": (dict(A=A, rank=1, weight=-torch.ones(6, 5)), ValueError, "weight"),
    "weight_nan": (dict(A=A, rank=1, weight=torch.full((6, 5), math.nan)), ValueError, "weight"),
    "weight_inf": (dict(A=A, rank=1, weight=torch.full((6, 5), math.inf)), ValueError, "weight"),
    "weight_shape": (dict(A=A, rank=1, weight=torch.ones(5, 6)), ValueError, "weight"),
    "weight_all_zero": (dict(A=A, rank=1, weight=torch.zeros(6, 5)), ValueError, "no observed"),
    "weight_complex": (dict(A=A, rank=1, weight=torch.ones(6, 5, dtype=torch.complex64)),
                       TypeError, "weight"),
    "optimizer_unknown": (dict(A=A, rank=1, optimizer="lbfgs"), ValueError, "optimizer"),
    "backend_unknown": (dict(A=A, rank=1, backend="triton"), ValueError, "backend"),
    "lr_zero": (dict(A=A, rank=1, lr=0.0), ValueError, "lr"),
    "lr_negative": (dict(A=A, rank=1, lr=-1.0), ValueError, "lr"),
    "lr_nan": (dict(A=A, rank=1, lr=math.nan), ValueError, "lr"),
    "lr_string": (dict(A=A, rank=1, lr="0.1"), TypeError, "lr"),
    "max_iter_negative": (dict(A=A, rank=1, max_iter=-3), ValueError, "max_iter"),
    "max_iter_float": (dict(A=A, rank=1, max_iter=2.5), TypeError, "max_iter"),
    "reg_negative": (dict(A=A, rank=1, reg=-1.0), ValueError, "reg"),
    "reg_inf": (dict(A=A, rank=1, reg=math.inf), ValueError, "reg"),
    "tol_negative": (dict(A=A, rank=1, tol=-1.0), ValueError, "tol"),
    "dtype_int": (dict(A=A, rank=1, dtype=torch.int32), TypeError, "dtype"),
    "reduction_unknown": (dict(A=A, rank=1, reduction="max"), ValueError, "reduction"),
    "init_unknown": (dict(A=A, rank=1, init="magic"), ValueError, "init"),
    "init_bad_shapes": (dict(A=A, rank=2, init=(torch.rand(6, 3), torch.rand(2, 5))),
                        ValueError, "init"),
    "callback_not_callable": (dict(A=A, rank=1, callback=3), TypeError, "callback"),
    "device_meta": (dict(A=A, rank=1, device="meta"), ValueError, "meta"),
    "A_meta": (dict(A=torch.rand(3, 3, device="meta"), rank=1), ValueError, "meta"),
}


@pytest.mark.parametrize("case", sorted(FACTORIZE_CASES))
def test_factorize_bad_input(case):
    kwargs, exc, match = FACTORIZE_CASES[case]
    kwargs = dict(kwargs)
    A_ = kwargs.pop("A")
    with pytest.raises(exc, match=match):
        mfext.factorize(A_, kwargs.pop("rank"), max_iter=kwargs.pop("max_iter", 3), **kwargs)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.float16])
def test_factorize_integer_bool_half_data_runs_in_float(dtype):
    data = (torch.rand(6, 5) * 4).to(dtype)
    res = mfext.factorize(data, 2, max_iter=5, seed=0)
    assert res.W.dtype == torch.float32 and torch.isfinite(res.W).all()
