"""The command line's fit and recommend commands: recommendations against a float64
reference (user indices and raw ids), a model saved on CUDA loaded without it, test
sizes, blank lines in ratings files, and a MovieLens fit then recommend."""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
import pytest
import torch

import mfext
from mfext import datasets
from mfext.cli.main import main
from cli_helpers import _assert_one_line_error, _cli, _ratings_text
from helpers import movielens_path


def _top_n_reference(model: "mfext.MatrixFactorization", user: int, seen: np.ndarray,
                     n: int) -> Tuple[List[int], np.ndarray]:
    """Top-n item indices and scores by a float64 numpy computation from the factors."""
    W = model.user_factors_.double().numpy()
    H = model.item_factors_.double().numpy()
    bu = model.user_bias_.double().numpy()
    bi = model.item_bias_.double().numpy()
    scores = model.global_mean_ + bu[user] + bi + H @ W[user]
    scores[seen] = -np.inf
    order = np.argsort(-scores, kind="stable")[:n]
    order = order[np.isfinite(scores[order])]  # fewer unseen items than n: the CLI prints fewer
    return order.tolist(), scores[order]


def _printed_items(out: str) -> List[Tuple[str, float]]:
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    return [(r[1], float(r[2])) for r in rows]


def test_recommend_a_model_fit_without_raw_ids_takes_user_indices(workdir, capsys):
    model = mfext.MatrixFactorization.load(workdir["plain"])
    triple = torch.load(workdir["dir"] / "plain_triple.pt")
    for user in (0, model.n_users_ - 1):
        code, out, err = _cli(["recommend", str(workdir["plain"]), "--user", str(user), "-n", "4"],
                              capsys)
        assert code == 0, err
        seen = np.unique(triple["cols"][triple["rows"] == user].numpy())
        items, scores = _top_n_reference(model, user, seen, 4)
        printed = _printed_items(out)
        assert [int(i) for i, _ in printed] == items  # item indices: the model has no raw ids
        assert [s for _, s in printed] == pytest.approx(scores, abs=1e-4)  # printed to 4 places


def test_recommend_raw_ids_match_a_float64_reference(workdir, capsys):
    model = mfext.MatrixFactorization.load(workdir["raw"])
    ratings = datasets.load_movielens(workdir["ratings"])
    counts = np.bincount(ratings.rows.numpy(), minlength=ratings.n_users)
    user = int(np.argmin(counts))  # the most unseen items left
    raw_user = int(ratings.user_ids[user])
    code, out, err = _cli(["recommend", str(workdir["raw"]), "--user", f" {raw_user} ", "-n", "3"],
                          capsys)
    assert code == 0, err
    seen = np.unique(ratings.cols[ratings.rows == user].numpy())
    items, scores = _top_n_reference(model, user, seen, 3)
    assert len(items) == 3
    printed = _printed_items(out)
    assert [int(i) for i, _ in printed] == [int(ratings.item_ids[i]) for i in items]
    assert [s for _, s in printed] == pytest.approx(scores, abs=1e-4)


def test_recommend_loads_a_model_saved_on_cuda_where_cuda_is_absent(workdir, tmp_path, capsys):
    """The file says cuda:0; without CUDA the CLI loads it on the CPU (map_location)."""
    state = torch.load(workdir["raw"], weights_only=True)
    state["device"] = "cuda:0"
    state["params"]["device"] = "cuda:0"
    on_cuda = tmp_path / "saved_on_cuda.pt"
    torch.save(state, on_cuda)
    code, out, err = _cli(["recommend", str(on_cuda), "--user", "105", "-n", "3"], capsys)
    assert code == 0, err
    code, expected, err = _cli(["recommend", str(workdir["raw"]), "--user", "105", "-n", "3"],
                               capsys)
    assert code == 0, err
    assert _printed_items(out) == _printed_items(expected) and len(_printed_items(out)) == 3
    code, _, err = _cli(["recommend", str(on_cuda), "--user", "105", "--device", "cpu"], capsys)
    assert code == 0, err


def test_fit_test_size_zero_trains_on_all(workdir, tmp_path, capsys):
    out = tmp_path / "m.pt"
    code, printed, err = _cli(["fit", str(workdir["ratings"]), "--rank", "2", "--max-iter", "2",
                               "--test-size", "0", "--out", str(out)], capsys)
    assert code == 0, err
    n = len(workdir["ratings"].read_text().splitlines())
    assert f"on {n:,} ratings" in printed and "test RMSE" not in printed
    assert mfext.MatrixFactorization.load(out).user_counts_.sum().item() == n


@pytest.mark.parametrize("name", ["u.data", "ratings.dat", "ratings.csv"])
@pytest.mark.parametrize("prefix", ["\n", "\n\n", "\r\n", " \t\n"])
def test_fit_reads_a_ratings_file_with_leading_blank_lines(tmp_path, capsys, name, prefix):
    """Blank lines (an editor's, a concatenation's) before the first rating or the csv header."""
    text = _ratings_text()
    n = len(text.splitlines())
    if name == "ratings.dat":
        text = text.replace("\t", "::")
    elif name == "ratings.csv":
        text = "userId,movieId,rating,timestamp\n" + text.replace("\t", ",")
    path = tmp_path / name
    path.write_bytes((prefix + text.replace("\n", "\n\n", 1)).encode())  # and one inside
    code, printed, err = _cli(["fit", str(path), "--rank", "2", "--max-iter", "2",
                               "--out", str(tmp_path / "m.pt")], capsys)
    assert code == 0, err
    assert f"on {n:,} ratings of 12 users x 9 items" in printed


@pytest.mark.data
def test_fit_then_recommend_a_raw_user(tmp_path, capsys):
    data = movielens_path("ml-100k/u.data")
    model = tmp_path / "model.pt"
    assert main(["fit", str(data), "--rank", "8", "--out", str(model), "--max-iter", "3",
                 "--test-size", "0.1"]) == 0
    printed = capsys.readouterr().out
    assert model.exists() and "test RMSE (10% held out, seed 0)" in printed
    rmse = float(printed.split("test RMSE (10% held out, seed 0): ")[1].split()[0])
    assert 0.5 < rmse < 2.0 and math.isfinite(rmse)
    assert main(["recommend", str(model), "--user", "196", "-n", "5"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == 5
    code, _, err = _cli(["recommend", str(model), "--user", "no-such-user"], capsys)
    _assert_one_line_error(code, err, "recommend", "--user 'no-such-user' is not in the model")
