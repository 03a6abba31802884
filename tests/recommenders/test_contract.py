"""The shared recommender contract (tests/recommenders/contract.py), run for
MatrixFactorization with each of its solvers on small data."""
from __future__ import annotations

import torch
from contract import RecommenderContract

from mfext import MatrixFactorization

# Few epochs: the contract checks behaviour, not fit quality.
_EPOCHS = {"sgd": 5, "als": 3, "adam": 20}


class _MatrixFactorizationContract(RecommenderContract):
    solver = "sgd"

    def make_model(self, **params):
        defaults = dict(rank=3, solver=self.solver, max_iter=_EPOCHS[self.solver], random_state=0)
        return MatrixFactorization(**{**defaults, **params})


class TestSgd(_MatrixFactorizationContract):
    solver = "sgd"


class TestAls(_MatrixFactorizationContract):
    solver = "als"


class TestAdam(_MatrixFactorizationContract):
    solver = "adam"


def test_a_file_in_the_first_save_format_loads(tmp_path):
    """Version 1 of the file format, written field by field as the first release saved it."""
    W = torch.tensor([[1.0, 0.5], [0.0, 2.0]])
    Ht = torch.tensor([[1.0, 1.0], [0.5, -1.0], [2.0, 0.0]])
    bu, bi = torch.tensor([0.25, -0.5]), torch.tensor([0.0, 0.125, -0.25])
    params = dict(MatrixFactorization(rank=2, solver="als", random_state=3).get_params(),
                  dtype="float32", device=None)
    state = {
        "format": "mfext.MatrixFactorization", "version": 1, "params": params, "device": "cpu",
        "tensors": {"user_factors": W, "item_factors": Ht, "user_bias": bu, "item_bias": bi,
                    "user_counts": torch.tensor([2, 1]), "item_counts": torch.tensor([1, 1, 1]),
                    "seen_indptr": torch.tensor([0, 2, 3]), "seen_items": torch.tensor([0, 2, 1])},
        "scalars": {"global_mean": 3.0, "rating_mean": 3.0, "n_users": 2, "n_items": 3,
                    "n_iter": 4, "best_epoch": None},
        "history": [{"epoch": 1, "train_rmse": 0.5, "seconds": 0.1}],
        "user_ids": ["ann", "bob"], "item_ids": torch.tensor([10, 20, 30]),
    }
    torch.save(state, tmp_path / "v1.pt")
    model = MatrixFactorization.load(tmp_path / "v1.pt")
    assert model.get_params() == MatrixFactorization(rank=2, solver="als",
                                                     random_state=3).get_params()
    u, i = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 1, 2, 0, 1, 2])
    expected = 3.0 + bu[u] + bi[i] + (W[u] * Ht[i]).sum(1)
    assert torch.equal(model.predict(u, i), expected)
    items, _ = model.recommend(["ann", "bob"], n=3, raw_ids=True)
    # ann rated items 0 and 2, bob item 1; bob scores 4.5 for item 0 and 2.25 for item 2
    assert items.tolist() == [[20, -1, -1], [10, 30, -1]]
    assert model.n_iter_ == 4 and model.history_ == state["history"]
