"""The command line's implicit-feedback paths: ``fit --model implicit-als``, ``evaluate``
(checked against mfext.metrics computed directly) and ``bench --movielens --implicit``,
with their bad options."""
from __future__ import annotations

import json

import pytest
import torch

import mfext
from mfext import datasets, metrics
from mfext.cli.main import main
from cli_helpers import _assert_one_line_error, _cli, _ratings_text


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("implicit")
    train, test = folder / "train.data", folder / "test.data"
    train.write_text(_ratings_text(0))
    test.write_text(_ratings_text(1))
    return {"dir": folder, "train": train, "test": test}


def test_fit_implicit_als_then_recommend_and_evaluate(files, capsys):
    out = files["dir"] / "imp.pt"
    code, stdout, err = _cli(["fit", str(files["train"]), "--rank", "3", "--max-iter", "4",
                              "--model", "implicit-als", "--solver", "cholesky", "--alpha", "2",
                              "--test-size", "0.2", "--out", str(out)], capsys)
    assert code == 0, err
    assert "P@10" in stdout and "nDCG@10" in stdout
    model = mfext.recommenders.load_model(out)
    assert isinstance(model, mfext.ImplicitALS) and model.alpha == 2.0
    code, stdout, err = _cli(["recommend", str(out), "--user", "101", "-n", "3"], capsys)
    assert code == 0, err
    code, stdout, err = _cli(["evaluate", str(out), str(files["test"]), "-k", "5"], capsys)
    assert code == 0, err
    # the printed metrics are mfext.metrics on the same data
    from mfext.cli.evaluate import evaluate_command
    res = evaluate_command(str(out), str(files["test"]), k=5)
    test = datasets.load_movielens(files["test"])
    rows = model.user_index(test.user_ids)[test.rows]
    cols = model.item_index(test.item_ids)[test.cols]
    keep = (rows < model.n_users_) & (cols < model.n_items_) & (test.vals >= 4)
    seen_counts = model._seen_indptr[1:] - model._seen_indptr[:-1]
    train = (torch.repeat_interleave(torch.arange(model.n_users_), seen_counts),
             model._seen_items, torch.ones(model._seen_items.numel()))
    ref = metrics.ranking_metrics(model, train, (rows[keep], cols[keep],
                                                 torch.ones(int(keep.sum()))), k=5)
    for name, value in ref.items():
        assert res[name] == pytest.approx(value, nan_ok=True), name
    assert f"ndcg@5 {ref['ndcg']:.4f}" in stdout


def test_evaluate_a_matrix_factorization_prints_rmse(files, capsys):
    out = files["dir"] / "mf.pt"
    assert main(["fit", str(files["train"]), "--rank", "2", "--max-iter", "3",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    code, stdout, err = _cli(["evaluate", str(out), str(files["test"])], capsys)
    assert code == 0, err
    assert "rmse" in stdout and "precision@10" in stdout


@pytest.mark.parametrize("argv, command, needle", [
    (["fit", "{train}", "--rank", "2", "--model", "implicit-als", "--solver", "sgd",
      "--out", "{dir}/x.pt"], "fit", "--solver"),
    (["fit", "{train}", "--rank", "2", "--model", "mf", "--alpha", "2", "--out", "{dir}/x.pt"],
     "fit", "--alpha"),
    (["fit", "{train}", "--rank", "2", "--model", "implicit-als", "--alpha", "-1",
      "--out", "{dir}/x.pt"], "fit", "--alpha"),
    (["fit", "{train}", "--rank", "2", "--model", "implicit-als", "--lr", "0.1",
      "--out", "{dir}/x.pt"], "fit", "--lr"),
    (["evaluate", "{dir}/missing.pt", "{test}"], "evaluate", "missing.pt"),
    (["evaluate", "{train}", "{test}"], "evaluate", "train.data"),
    (["evaluate", "{dir}/mf.pt", "{test}", "-k", "0"], "evaluate", "-k"),
    (["evaluate", "{dir}/mf.pt", "{test}", "--threshold", "nan"], "evaluate", "--threshold"),
    (["evaluate", "{dir}/mf.pt", "{test}", "--threshold", "9"], "evaluate", "--threshold"),
    (["bench", "--implicit"], "bench", "--movielens"),
    (["bench", "--movielens", "{train}", "--implicit", "--solvers", "sgd"], "bench", "--solvers"),
])
def test_bad_options_give_one_line(files, capsys, argv, command, needle):
    if not (files["dir"] / "mf.pt").exists():
        assert main(["fit", str(files["train"]), "--rank", "2", "--max-iter", "2",
                     "--out", str(files["dir"] / "mf.pt")]) == 0
        capsys.readouterr()
    argv = [a.format(train=files["train"], test=files["test"], dir=files["dir"]) for a in argv]
    code, out, err = _cli(argv, capsys)
    _assert_one_line_error(code, err, command, needle)
    assert not (files["dir"] / "x.pt").exists()


def test_bench_movielens_implicit(files, capsys, tmp_path):
    code, out, err = _cli(["bench", "--movielens", str(files["train"]), "--implicit",
                           "--rank", "2", "--max-iter", "2", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / "implicit.json").read_text())
    solvers = {(r["library"], r["solver"]) for r in rec["rows"]}
    assert {("mfext", "cg"), ("mfext", "cholesky")} <= solvers
    for r in rec["rows"]:
        assert r["seconds_per_iteration"] > 0 and 0 <= r["ndcg@10"] <= 1
    assert "mfext cg" in out
