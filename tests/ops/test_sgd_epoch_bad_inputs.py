"""sgd_epoch_ refuses bad arguments before it writes anything.

The argument table (shared with the CUDA tests), tensors that require grad, and
outputs that overlap each other or the inputs (in-place aliasing).
"""
from __future__ import annotations

import math
import re

import pytest
import torch

import mfext  # noqa: F401  (registers the ops)
from mfext import cf_ops
from helpers import SGD_BAD, _sgd_args


def _call_sgd(a):
    return torch.ops.mfext.sgd_epoch_(
        a["W"], a["H_t"], a["user_bias"], a["item_bias"], a["rows"], a["cols"], a["vals"],
        a["order"], a["block_ptr"], a["schedule"], a["lr"], a["reg"], a["bias_reg"],
        a["global_mean"], a["use_biases"], a["nonnegative"])


@pytest.mark.parametrize("case", list(SGD_BAD), ids=list(SGD_BAD))
def test_sgd_epoch_bad_inputs(case, gen):
    a = _sgd_args(gen)
    change, exc, pattern = SGD_BAD[case]
    a.update(change(a))
    before = [a[k].clone() for k in ("W", "H_t", "user_bias", "item_bias")]
    with pytest.raises(exc) as info:
        _call_sgd(a)
    assert re.search(pattern, str(info.value)), str(info.value)
    assert "mfext::sgd_epoch_" in str(info.value)
    for t, b in zip((a[k] for k in ("W", "H_t", "user_bias", "item_bias")), before):
        assert torch.equal(t, b)  # checks run before any update


@pytest.mark.parametrize("name", ["W", "H_t", "user_bias", "item_bias"])
@pytest.mark.parametrize("call", ["wrapper", "op"])
def test_sgd_epoch_refuses_tensors_that_require_grad(name, call, gen):
    """Refused with grad mode on, the tensors left unchanged; under torch.no_grad() (as
    for torch's in-place ops) the epoch runs and matches the same epoch on plain tensors."""
    a = _sgd_args(gen)
    a[name] = a[name].clone().requires_grad_()
    plain = {key: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for key, v in a.items()}
    before = [a[key].detach().clone() for key in ("W", "H_t", "user_bias", "item_bias")]

    def run(args):
        if call == "op":
            return _call_sgd(args)
        return cf_ops.sgd_epoch_(
            args["W"], args["H_t"], args["user_bias"], args["item_bias"], args["rows"],
            args["cols"], args["vals"], lr=args["lr"], reg=args["reg"],
            bias_reg=args["bias_reg"], global_mean=args["global_mean"])

    with pytest.raises(RuntimeError, match=rf"mfext::sgd_epoch_: argument '{name}' requires grad "
                                           rf"and would be updated in place .*{name}\.detach\(\)"):
        run(a)
    for key, b in zip(("W", "H_t", "user_bias", "item_bias"), before):
        assert torch.equal(a[key].detach(), b), key
    assert a[name].grad is None
    with torch.no_grad():
        sse = run(a)
    sse_plain = run(plain)
    assert float(sse) == float(sse_plain)
    for key in ("W", "H_t", "user_bias", "item_bias"):
        assert torch.equal(a[key].detach(), plain[key]), key
    assert not torch.equal(a["W"].detach(), before[0])  # the epoch did run


def test_sgd_epoch_ignores_grad_on_unused_biases(gen):
    """Without biases the bias tensors are not touched, so their flags do not matter."""
    a = _sgd_args(gen, use_biases=False)
    a["user_bias"] = a["user_bias"].clone().requires_grad_()
    before = a["user_bias"].detach().clone()
    _call_sgd(a)
    assert torch.equal(a["user_bias"].detach(), before)


# ---------------------------------------------------------------- overlapping tensors


def _sgd_entries(m=5, n=4, k=3):
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, m, (20,), generator=g)
    cols = torch.randint(0, n, (20,), generator=g)
    vals = torch.rand(20, generator=g)
    return rows, cols, vals


ALIAS_CASES = ["W_Ht_same_storage", "W_is_Ht", "biases_same_storage", "bias_views_of_W"]


@pytest.mark.parametrize("case", ALIAS_CASES)
def test_sgd_epoch_rejects_overlapping_outputs(case):
    rows, cols, vals = _sgd_entries()
    k = 3
    buf = torch.rand(9 * k)
    W, Ht = torch.rand(5, k), torch.rand(4, k)
    bu, bi = torch.zeros(5), torch.zeros(4)
    if case == "W_Ht_same_storage":
        W, Ht = buf[: 5 * k].view(5, k), buf[5 * k:].view(4, k)  # disjoint views of one buffer
    elif case == "W_is_Ht":
        W = Ht = torch.rand(5, k)
        rows, cols = rows.clamp(max=4), cols.clamp(max=4)
        bi = torch.zeros(5)
    elif case == "biases_same_storage":
        both = torch.zeros(9)
        bu, bi = both[:5], both[5:]
    else:
        bu, bi = W.view(-1)[:5], W.view(-1)[5:9]
    before = [t.clone() for t in (W, Ht, bu, bi)]
    with pytest.raises(RuntimeError, match="share memory"):
        cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, lr=0.01, reg=0.0)
    for t, b in zip((W, Ht, bu, bi), before):
        assert torch.equal(t, b)  # rejected before any write


INPUT_ALIAS_CASES = ["vals_view_of_W", "vals_view_of_H_t", "vals_is_user_bias",
                     "rows_view_of_order_target"]


@pytest.mark.parametrize("case", INPUT_ALIAS_CASES)
def test_sgd_epoch_rejects_inputs_overlapping_outputs(case):
    rows, cols, vals = _sgd_entries()
    W, Ht = torch.rand(5, 4), torch.rand(4, 4)
    bu, bi = torch.zeros(5), torch.zeros(4)
    order = None
    if case == "vals_view_of_W":
        vals = W.view(-1)[:20]
    elif case == "vals_view_of_H_t":
        Ht, bi = torch.rand(6, 4), torch.zeros(6)
        vals = Ht.view(-1)[-20:]
    elif case == "vals_is_user_bias":
        bu = torch.zeros(20)
        W = torch.rand(20, 4)
        vals = bu
    else:  # int64 ids sharing memory with a float64 W (a reinterpreting view)
        W, Ht = torch.rand(5, 4, dtype=torch.float64), torch.rand(4, 4, dtype=torch.float64)
        bu, bi = torch.zeros(5, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
        vals = vals.double()
        order = W.view(-1).view(torch.int64)[:0]  # empty: allowed
        rows = W.view(-1).view(torch.int64)[:20]
    before = [t.clone() for t in (W, Ht, bu, bi)]
    with pytest.raises(RuntimeError, match="overlaps"):
        cf_ops.sgd_epoch_(W, Ht, bu, bi, rows, cols, vals, order=order, lr=0.01, reg=0.0)
    for t, b in zip((W, Ht, bu, bi), before):
        assert torch.equal(t, b)


def test_sgd_epoch_distinct_storages_run():
    rows, cols, vals = _sgd_entries()
    W, Ht = torch.rand(5, 3), torch.rand(4, 3)
    sse = cf_ops.sgd_epoch_(W, Ht, torch.zeros(5), torch.zeros(4), rows, cols, vals,
                            lr=0.01, reg=0.0)
    assert math.isfinite(float(sse))
