"""The CPU's blocked SGD layout: the lane interleave within each block and the
cache rule for the number of groups, against plain-Python references."""
from __future__ import annotations

import math

import pytest
import torch

from mfext.recommenders import solvers


def _reference(order, block_ptr, lanes):
    out = []
    for b in range(len(block_ptr) - 1):
        run = order[block_ptr[b]:block_ptr[b + 1]]
        c = -(-len(run) // lanes)
        for pos in range(c):
            for lane in range(lanes):
                i = lane * c + pos
                if i < len(run):
                    out.append(run[i])
    return out


@pytest.mark.parametrize("lanes", [1, 2, 4, 7])
@pytest.mark.parametrize("chunk", [1, 5, 1 << 22])
def test_interleave_matches_the_reference(lanes, chunk):
    g = torch.Generator().manual_seed(lanes * 31 + chunk % 97)
    lens = torch.randint(0, 12, (40,), generator=g)
    lens[3] = 0  # empty blocks
    lens[7] = 1
    block_ptr = torch.zeros(41, dtype=torch.int64)
    block_ptr[1:] = lens.cumsum(0)
    nnz = int(block_ptr[-1])
    order = torch.randperm(nnz, generator=g)
    expected = _reference(order.tolist(), block_ptr.tolist(), lanes)
    got = solvers.interleave(order.clone(), block_ptr, lanes, chunk=chunk)
    assert got.tolist() == expected
    for b in range(40):  # each block keeps exactly its entries
        lo, hi = int(block_ptr[b]), int(block_ptr[b + 1])
        assert sorted(got[lo:hi].tolist()) == sorted(order[lo:hi].tolist())


def test_interleave_of_nothing():
    out = solvers.interleave(torch.zeros(0, dtype=torch.int64),
                             torch.zeros(5, dtype=torch.int64), 4)
    assert out.numel() == 0


def test_cpu_groups_follow_the_cache_rule(monkeypatch):
    monkeypatch.setattr(solvers, "l2_cache_bytes", lambda: 2**21)
    assert solvers.cpu_groups(3706, 64, 4, 2) == 8          # ML-1M: the floor of 8
    assert solvers.cpu_groups(100, 8, 4, 16) == 32          # 2 per thread
    want = math.ceil(17770 * 129 * 4 / 2**20)               # Netflix items, k = 128: 9
    assert solvers.cpu_groups(17770, 128, 4, 2) == want == 9
    assert solvers.cpu_groups(17770, 128, 8, 2) == 18       # float64 rows: twice the groups


def test_l2_cache_bytes_is_positive():
    assert solvers.l2_cache_bytes() >= 2**14
