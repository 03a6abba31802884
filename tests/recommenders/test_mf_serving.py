"""MatrixFactorization serving: predict (the formula, score, fallbacks for unknown ids),
raw ids, top-k recommend against brute force, similar items, and fold-in."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mfext import datasets as ds
from mfext import MatrixFactorization
from mfext.recommenders import serving
from mf_helpers import _model


@pytest.mark.parametrize("biases", [True, False], ids=["biases", "nobias"])
def test_predict_formula_score_and_fallbacks(small, biases):
    _, train, test = small
    m = _model(biases=biases).fit(train)
    u, i = test.rows, test.cols
    W, H = m.user_factors_.double(), m.item_factors_.double()
    expected = (W[u] * H[i]).sum(1)
    if biases:
        expected += m.global_mean_ + m.user_bias_.double()[u] + m.item_bias_.double()[i]
    else:
        assert m.global_mean_ == 0.0 and not bool(m.user_bias_.any())
    pred = m.predict(u, i)
    assert pred.shape == (test.nnz,) and pred.dtype == torch.float32
    assert torch.allclose(pred.double(), expected, atol=1e-5)
    rmse = float((pred.double() - test.vals.double()).square().mean().sqrt())
    assert m.score(test) == pytest.approx(rmse, rel=1e-6)
    assert m.score((u.numpy(), i.numpy(), test.vals.numpy())) == pytest.approx(rmse, rel=1e-6)
    # unknown user / item / both
    p = m.predict([60, 0, 60], [0, 40, 40])
    mean = m.global_mean_ if biases else m.rating_mean_
    if biases:
        assert p[0].item() == pytest.approx(mean + m.item_bias_[0].item(), abs=1e-5)
        assert p[1].item() == pytest.approx(mean + m.user_bias_[0].item(), abs=1e-5)
    assert p[2].item() == pytest.approx(mean, abs=1e-5)
    with pytest.raises(ValueError, match=r"users\[0\] is unknown to the model"):
        m.predict([60], [0], unknown="raise")
    with pytest.raises(ValueError, match=r"non-negative"):
        m.predict([-1], [0])
    with pytest.raises(ValueError, match=r"same length"):
        m.predict([0, 1], [0])


def test_raw_ids(tmp_path):
    raw_users, raw_items = [100, 7, 100, 55, 7, 55], [9, 9, 3, 3, 1000, 1000]
    (tmp_path / "u.data").write_text("".join(
        f"{u}\t{i}\t{r}\t0\n" for u, i, r in zip(raw_users, raw_items, [5, 3, 4, 1, 2, 2])))
    r = ds.load_movielens(tmp_path / "u.data")
    m = MatrixFactorization(rank=2, random_state=0, max_iter=5).fit(r)
    assert list(m.user_index([7, 55, 100, 8])) == [0, 1, 2, 3]  # 8 unknown -> n_users_
    by_raw = m.predict([100, 55], [3, 9], raw_ids=True)
    by_index = m.predict([2, 1], [0, 1])
    assert torch.equal(by_raw, by_index)
    items, _ = m.recommend([7], n=3, exclude_seen=False, raw_ids=True)
    assert set(items[0].tolist()) == {3, 9, 1000}
    # A validation Ratings with other id maps is matched by raw id.
    other = ds.Ratings(torch.tensor([0]), torch.tensor([0]), torch.tensor([4.0]),
                       np.array([55]), np.array([9]), 1, 1)
    assert m.score(other) == pytest.approx(abs(m.predict([1], [1]).item() - 4.0), rel=1e-6)
    fresh = MatrixFactorization(rank=2, max_iter=2).fit(([0], [0], [1.0]))
    with pytest.raises(ValueError, match="raw user ids need a model fit on a Ratings"):
        fresh.predict([0], [0], raw_ids=True)


def _brute_scores(m):
    return (m.user_factors_ @ m.item_factors_.t() + m.item_bias_[None, :]
            + (m.global_mean_ + m.user_bias_)[:, None])


def test_recommend_matches_brute_force(small):
    _, train, _ = small
    m = _model().fit(train)
    full = _brute_scores(m)
    users = torch.tensor([3, 0, 59, 3])
    items, scores = m.recommend(users, n=5, exclude_seen=False)
    assert items.shape == (4, 5) and scores.shape == (4, 5)
    top, _ = full[users].topk(5, dim=1)
    assert torch.allclose(scores, top, atol=1e-5)
    assert torch.allclose(full[users[:, None], items], scores, atol=1e-5)
    # exclude_seen leaves out each user's training items and nothing else
    items, scores = m.recommend(users, n=40, exclude_seen=True)
    for row, u in enumerate(users.tolist()):
        seen = set(train.cols[train.rows == u].tolist())
        got = [i for i in items[row].tolist() if i >= 0]
        assert set(got) == set(range(40)) - seen
        assert (items[row] == -1).sum() == len(seen)
        assert torch.isneginf(scores[row][items[row] == -1]).all()
    # a candidate list
    cand = torch.tensor([5, 1, 30])
    items, scores = m.recommend([0], n=10, exclude_seen=False, items=cand)
    assert items.shape == (1, 3) and set(items[0].tolist()) == {5, 1, 30}
    with pytest.raises(ValueError, match="n must be a positive integer"):
        m.recommend([0], n=0)


def _to_form(ids, form, raw_map):
    """Item indices as a candidate list in one input form (raw ids through raw_map)."""
    if form == "list":
        return list(ids)
    if form == "numpy":
        return np.array(ids, dtype=np.int32)
    if form == "tensor":
        return torch.tensor(ids)
    if form == "float-tensor":
        return torch.tensor(ids, dtype=torch.float64)
    return raw_map[np.array(ids)]  # raw ids


@pytest.mark.parametrize("form", ["list", "numpy", "tensor", "float-tensor", "raw"])
def test_recommend_repeated_candidates_count_once(small, form):
    _, train, _ = small
    # raw ids unlike the indices: item index j is raw id 1000 + 7 j
    raw_items = np.arange(40) * 7 + 1000
    data = ds.Ratings(train.rows, train.cols, train.vals, np.arange(60) * 3 + 500, raw_items,
                      60, 40)
    m = _model().fit(data)
    raw = form == "raw"
    full = _brute_scores(m).double()  # float64 reference scores, (users, items)
    for user in (4, 17):
        seen = sorted(set(train.cols[train.rows == user].tolist()))
        unseen = [i for i in range(40) if i not in set(seen)]
        cand = [seen[0], unseen[3], seen[0], unseen[1], unseen[3], seen[1], unseen[0], unseen[1],
                unseen[3]]
        distinct = set(cand)  # 5 items, 2 of them seen
        who = [user * 3 + 500] if raw else [user]
        for exclude_seen in (True, False):
            items, scores = m.recommend(who, n=9, exclude_seen=exclude_seen, raw_ids=raw,
                                        items=_to_form(cand, form, raw_items))
            got = items[0].tolist()
            if raw:
                got = [(i - 1000) // 7 if i != -1 else -1 for i in got]
            assert len(got) == len(distinct)  # n' = the number of distinct candidates
            kept = [i for i in got if i != -1]
            expected = distinct - set(seen) if exclude_seen else distinct
            assert len(kept) == len(set(kept)) and set(kept) == expected
            assert got.count(-1) == len(distinct) - len(expected)
            ref = sorted((full[user, i].item() for i in expected), reverse=True)
            torch.testing.assert_close(scores[0, :len(expected)].double(),
                                       torch.tensor(ref, dtype=torch.float64), rtol=0, atol=1e-5)
            assert torch.isneginf(scores[0, len(expected):]).all()


def test_recommend_chunks_users(small, monkeypatch):
    _, train, _ = small
    m = _model().fit(train)
    whole = m.recommend(torch.arange(60), n=7)
    monkeypatch.setattr(serving, "SCORE_BUDGET", 40 * 7)  # 7 users per chunk
    chunked = m.recommend(torch.arange(60), n=7)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


def test_similar_items_match_brute_force(small):
    _, train, _ = small
    m = _model().fit(train)
    H = m.item_factors_.double()
    unit = H / H.norm(dim=1, keepdim=True)
    sims = unit @ unit.t()
    sims.fill_diagonal_(-math.inf)
    items, got = m.similar_items([0, 17], n=4)
    top, _ = sims[[0, 17]].topk(4, dim=1)
    assert torch.allclose(got.double(), top, atol=1e-5)
    assert 0 not in items[0].tolist() and 17 not in items[1].tolist()
    assert bool((got <= 1 + 1e-6).all())


@pytest.mark.parametrize("solver", ["als", "sgd"])
def test_fold_in_is_the_closed_form_user_step(small, solver):
    _, train, _ = small
    m = _model(solver).fit(train)
    rows = torch.tensor([0, 0, 0, 1, 1])
    cols = torch.tensor([3, 9, 20, 3, 31])
    vals = torch.tensor([5.0, 3.0, 4.0, 1.0, 2.0])
    factors, bias = m.fold_in((rows, cols, vals))
    assert factors.shape == (2, 4) and bias.shape == (2,)
    # reference: ridge regression on [h_i, 1] with the solver's count scaling
    exponent = m.als_reg_exponent if solver == "als" else 1.0
    F = torch.cat([m.item_factors_.double(), torch.ones(40, 1, dtype=torch.float64)], 1)
    for u in range(2):
        sel = rows == u
        f = F[cols[sel]]
        t = vals[sel].double() - m.global_mean_ - m.item_bias_.double()[cols[sel]]
        n_u = int(sel.sum())
        ridge = torch.tensor([0.02] * 4 + [0.02 if solver == "als" else 0.01], dtype=torch.float64)
        x = torch.linalg.solve(f.t() @ f + torch.diag(ridge) * n_u ** exponent, f.t() @ t)
        assert torch.allclose(factors[u].double(), x[:4], atol=1e-4)
        assert bias[u].item() == pytest.approx(x[4].item(), abs=1e-4)


def test_fold_in_recovers_held_out_users():
    r = ds.synthetic_ratings(400, 150, 30000, rank=4, noise=0.1, seed=2, biases=True)
    new = r.rows >= 350
    train = r.subset(~new)
    m = MatrixFactorization(rank=4, solver="als", reg=0.01, random_state=0).fit(
        (train.rows, train.cols, train.vals))
    held = r.subset(new)
    first = torch.arange(held.nnz) % 2 == 0  # half of each new user's ratings to fold in
    fold = held.subset(first)
    factors, bias = m.fold_in((fold.rows - 350, fold.cols, fold.vals), append=True)
    assert m.n_users_ == 400 and factors.shape == (50, 4)
    rest = held.subset(~first)
    rmse = float((m.predict(rest.rows, rest.cols) - rest.vals).square().mean().sqrt())
    assert rmse < 0.2  # noise 0.1; an unknown-user fallback scores about 1.0
    items, _ = m.recommend([350], n=150)
    seen = set(fold.cols[fold.rows == 350].tolist())
    assert seen.isdisjoint(items[0].tolist())
    with pytest.raises(ValueError, match="unknown to the model"):
        m.fold_in(([0], [150], [3.0]))
