"""The command line: demo, bench (smoke grid), and the estimator commands.

No timing assertions: the checks are that every command runs, that the reports
hold the expected fields and rows, and that the benchmark's own parity column
shows the fused op agreeing with autograd.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
import torch

import mfext
from mfext import datasets
from mfext.__main__ import main
from mfext.bench import cf as cf_commands
from mfext.bench import options as cli_options
from mfext.bench import cost
from mfext.bench.grid import PRESETS, Case, parse_sizes, select_cases
from mfext.bench.memory import peak_extra
from mfext.bench.timing import time_call

from conftest import movielens_path

ROOT = Path(__file__).resolve().parents[1]
ROW_NUMBERS = ("median_ms", "q1_ms", "q3_ms", "min_ms", "max_ms", "gflops", "gbs",
               "pct_peak_bw", "pct_peak_flops", "pct_roofline", "flops", "bytes", "first_call_s")


def _run_bench(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "out"
    assert main(["bench", *extra, "--out", str(out), "--no-progress"]) == 0
    return json.loads((out / "results.json").read_text())


def test_demo_prints_both_backends_and_a_timing(capsys):
    assert main(["demo", "--size", "64", "--rank", "4", "--repeat", "2", "--iterations", "200"]) == 0
    text = capsys.readouterr().out
    for needle in ("Original matrix A", "[autograd]", "[fused]", "W =", "H =", "W @ H =",
                   "64x64, k=4", "autograd", "fused", "speedup"):
        assert needle in text, needle


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("smoke")
    assert main(["bench", "--smoke", "--backends", "autograd,fused", "--out", str(out),
                 "--no-progress"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_smoke_json_has_machine_versions_and_ceilings(smoke):
    _, res = smoke
    assert res["schema"] == "mfext-bench/1" and res["preset"] == "smoke"
    for key in ("cpu_model", "logical_cpus", "torch_threads", "memory_bytes", "gpus", "platform"):
        assert key in res["machine"], key
    for key in ("python", "torch", "numpy", "mfext", "mfext_build"):
        assert res["versions"][key], key
    assert res["versions"]["mfext_build"]["torch_built"]
    cpu = res["ceilings"]["cpu"]
    assert cpu["gemm_gflops"]["float32"] > 0 and cpu["copy_gbs"] > 0
    assert res["settings"]["backends"] == ["autograd", "fused"]
    assert res["command"].startswith("python -m mfext bench --smoke")


def test_smoke_json_has_one_ok_row_per_case_and_backend(smoke):
    _, res = smoke
    rows = res["rows"]
    expected = {(c.kind, c.m, c.n, c.k, c.nnz, c.dtype, b)
                for c in PRESETS["smoke"] for b in ("autograd", "fused")}
    got = {(r["kind"], r["m"], r["n"], r["k"], r["nnz"], r["dtype"], r["backend"]) for r in rows}
    assert got == expected and len(rows) == len(expected)
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["device"] == "cpu"
        for key in ROW_NUMBERS:
            assert isinstance(r[key], float) and r[key] > 0, (key, r[key])
        assert r["min_ms"] <= r["q1_ms"] <= r["median_ms"] <= r["q3_ms"] <= r["max_ms"]
        assert len(r["samples_ms"]) == res["settings"]["repeat"]
        assert r["flops"] == cost.flops(Case(r["kind"], r["m"], r["n"], r["k"], r["nnz"], r["dtype"]))
        assert r["speedup_vs_autograd"] > 0
        assert isinstance(r["peak_extra_tensor_bytes"], int)
        assert r["peak_extra_rss_bytes"] is None or isinstance(r["peak_extra_rss_bytes"], int)
        if r["backend"] == "autograd":
            assert r["speedup_vs_autograd"] == pytest.approx(1.0) and r["rel_err"] is None
        else:  # the fused op agrees with autograd on the benchmark's own inputs
            assert r["rel_err"] < 1e-4


def test_smoke_markdown_and_plots(smoke):
    out, res = smoke
    md = (out / "results.md").read_text()
    assert "# mfext bench: smoke" in md and "Ceilings on cpu" in md
    assert "| device | kind | dtype |" in md and "speedup vs autograd" in md
    assert sum(line.startswith("| cpu |") for line in md.splitlines()) == len(res["rows"])
    assert sorted(Path(p).name for p in res["plots"]) == ["speedup_vs_size.png", "time_vs_k.png"]
    for name in ("speedup_vs_size.png", "time_vs_k.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, name


@pytest.mark.slow  # one torch.compile: ~15 s with a cold inductor cache
def test_compile_backend_is_its_own_row(tmp_path):
    res = _run_bench(tmp_path, "--smoke", "--sizes", "50x40x4@300",
                     "--backends", "autograd,compile", "--repeat", "2", "--no-memory")
    rows = [r for r in res["rows"] if r["backend"] == "compile"]
    assert [r["kind"] for r in rows] == ["sparse"]
    for r in rows:  # CI has a compiler: the compiled step runs and agrees with autograd
        assert r["status"] == "ok", r.get("error")
        assert r["rel_err"] < 1e-4 and r["first_call_s"] > 0
    assert "peak_extra_rss_bytes" not in res["rows"][0]


def test_bench_dtype_and_kind_select_the_rows(tmp_path):
    res = _run_bench(tmp_path, "--smoke", "--sizes", "20x10x3,30x20x2@50", "--dtype", "float64",
                     "--kind", "sparse", "--backends", "fused,autograd", "--repeat", "1")
    assert res["preset"] == "sizes"
    assert [(r["kind"], r["dtype"], r["backend"]) for r in res["rows"]] == [
        ("sparse", "float64", "autograd"), ("sparse", "float64", "fused")]
    assert res["rows"][1]["rel_err"] < 1e-10


@pytest.mark.parametrize("args, needle", [
    (["--sizes", "12x"], "--sizes"),
    (["--sizes", "4x4x2", "--backends", "fast"], "--backends"),
    (["--sizes", "4x4x2", "--dtype", "float16"], "--dtype"),
    (["--sizes", "4x4x2", "--repeat", "0"], "--repeat"),
    (["--sizes", "4x4x2", "--device", "tpu"], "--device"),
])
def test_bench_bad_arguments_name_the_option(tmp_path, capsys, args, needle):
    assert main(["bench", *args, "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mfext bench: error: ") and needle in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_cuda_without_a_gpu_says_so(tmp_path, capsys):
    assert main(["bench", "--smoke", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_grid_selection_and_sizes():
    cases = parse_sizes("8x6x2, 10x9x3@40", ["float32", "float64"])
    assert cases == [Case("dense", 8, 6, 2, 0, "float32"), Case("dense", 8, 6, 2, 0, "float64"),
                     Case("sparse", 10, 9, 3, 40, "float32"), Case("sparse", 10, 9, 3, 40, "float64")]
    quick64 = select_cases("quick", dtypes=["float64"])
    assert {c.dtype for c in quick64} == {"float64"} and len(quick64) == len(PRESETS["quick"])
    assert all(c.kind == "dense" for c in select_cases("default", kind="dense"))
    default = select_cases("default")
    assert len(default) == len(set(default))  # duplicates are run once
    with pytest.raises(ValueError, match="nnz"):
        Case("sparse", 4, 4, 2, 0)
    with pytest.raises(ValueError, match="preset"):
        select_cases("huge")


def test_cost_model_counts_work_and_traffic():
    d = Case("dense", 30, 20, 4, 0, "float64")
    assert cost.flops(d) == 6 * 30 * 20 * 4 + 4 * 30 * 20
    assert cost.bytes_moved(d) == 8 * (30 * 20 + 2 * (30 * 4 + 4 * 20))
    s = Case("sparse", 30, 20, 4, 100, "float32")
    assert cost.flops(s) == 6 * 100 * 4 + 4 * 100
    assert cost.bytes_moved(s) == 100 * (8 + 8 + 4) + 4 * 2 * (30 * 4 + 4 * 20)


def test_time_call_statistics():
    t = time_call(lambda: torch.ones(100).sum(), "cpu", repeat=4)
    assert t.min <= t.q1 <= t.median <= t.q3 <= t.max and len(t.samples) == 4 and t.number >= 1
    with pytest.raises(ValueError, match="repeat"):
        time_call(lambda: None, "cpu", repeat=0)


def test_peak_extra_sees_a_temporary():
    nbytes = 16 << 20

    def step():
        return torch.ones(nbytes // 4).sum()  # a 16 MiB temporary, touched, then freed

    step()
    mem = peak_extra(step, "cpu")
    assert mem["tensors"] >= nbytes
    if mem["rss"] is not None:
        assert mem["rss"] >= 0.9 * nbytes


def test_module_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "mfext", "bench", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    for flag in ("--quick", "--smoke", "--device", "--dtype", "--sizes", "--repeat", "--out",
                 "--movielens"):
        assert flag in proc.stdout



# --------------------------------------------------------------- the estimator commands


def _cli(argv: List[str], capsys) -> Tuple[int, str, str]:
    """Run ``main(argv)`` in this process: (exit status, stdout, stderr).

    argparse's own usage errors leave through SystemExit; they count as a status too.
    """
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str, command: str, needle: str) -> None:
    """A failure: status 2, exactly one line on stderr, of the CLI's form, naming ``needle``."""
    assert code == 2, (code, err)
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith(f"mfext {command}: error: "), err
    assert needle in err, (needle, err)


def _ratings_text(seed: int = 0) -> str:
    """u.data lines with raw ids that are not 0..n-1 (users 101.., items 7, 14, ...)."""
    rng = np.random.default_rng(seed)
    lines = [f"{100 + u}\t{7 * i}\t{rng.integers(1, 6)}\t0" for u in range(1, 13)
             for i in range(1, 10) if rng.random() < 0.6]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Dict[str, Path]:
    """A ratings file, a model fit on it by the CLI (raw ids), and one fit on a plain triple."""
    folder = tmp_path_factory.mktemp("cf")
    ratings = folder / "u.data"
    ratings.write_text(_ratings_text())
    raw_model = folder / "raw.pt"
    assert main(["fit", str(ratings), "--rank", "2", "--max-iter", "3",
                 "--out", str(raw_model)]) == 0
    gen = torch.Generator().manual_seed(3)
    n_users, n_items, nnz = 9, 11, 60
    rows = torch.randint(0, n_users, (nnz,), generator=gen)
    rows[:n_users] = torch.arange(n_users)  # every user and item index occurs
    cols = torch.randint(0, n_items, (nnz,), generator=gen)
    cols[:n_items] = torch.arange(n_items)
    vals = 1 + 4 * torch.rand(nnz, generator=gen)
    plain = mfext.MatrixFactorization(rank=3, max_iter=4, random_state=0).fit((rows, cols, vals))
    assert plain.user_ids_ is None
    plain_model = folder / "plain.pt"
    plain.save(plain_model)
    torch.save({"rows": rows, "cols": cols}, folder / "plain_triple.pt")
    return {"dir": folder, "ratings": ratings, "raw": raw_model, "plain": plain_model}


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


def _garbage(folder: Path) -> Path:
    path = folder / "garbage.data"
    path.write_bytes(b"\x00\xff this is not\ta ratings file\n")
    return path


def _a_file(folder: Path) -> Path:
    path = folder / "a_file"
    path.write_text("x")
    return path


HUGE = "99999999999999999999999"  # beyond int64

# name -> (argv from (tmp folder, workdir), the command, what the message must name; {d} is
# the tmp folder)
FAILURES: Dict[str, Tuple[Callable[[Path, dict], List[str]], str, str]] = {
    # recommend: users
    "user_index_out_of_range": (lambda d, w: ["recommend", str(w["plain"]), "--user", "9"],
                                "recommend", "--user '9' is not in the model"),
    "user_not_an_index": (lambda d, w: ["recommend", str(w["plain"]), "--user", "abc"],
                          "recommend", "--user 'abc'"),
    "user_negative_index": (lambda d, w: ["recommend", str(w["plain"]), "--user", "-1"],
                            "recommend", "--user '-1' is not in the model"),
    "user_huge_index": (lambda d, w: ["recommend", str(w["plain"]), "--user", HUGE],
                        "recommend", f"--user '{HUGE}' is not in the model"),
    "user_huge_raw_id": (lambda d, w: ["recommend", str(w["raw"]), "--user", HUGE],
                         "recommend", f"--user '{HUGE}' is not in the model"),
    "user_unknown_raw_id": (lambda d, w: ["recommend", str(w["raw"]), "--user", "100"],
                            "recommend", "--user '100' is not in the model"),
    "user_fractional_raw_id": (lambda d, w: ["recommend", str(w["raw"]), "--user", "101.5"],
                               "recommend", "--user '101.5' is not in the model"),
    "user_second_one_unknown": (lambda d, w: ["recommend", str(w["raw"]), "--user", "101",
                                              "--user", "no-such-user"],
                                "recommend", "--user 'no-such-user'"),
    "n_zero": (lambda d, w: ["recommend", str(w["raw"]), "--user", "101", "-n", "0"],
               "recommend", "-n must be an integer >= 1, got 0"),
    "recommend_device_not_a_device": (lambda d, w: ["recommend", str(w["raw"]), "--user", "101",
                                                    "--device", "tpu"],
                                      "recommend", "--device 'tpu' is not a device"),
    "recommend_device_absent_gpu": (lambda d, w: ["recommend", str(w["raw"]), "--user", "101",
                                                  "--device", "cuda:99"],
                                    "recommend", "--device cuda:99"),
    "model_missing": (lambda d, w: ["recommend", str(d / "nope.pt"), "--user", "1"],
                      "recommend", "nope.pt"),
    "model_is_a_directory": (lambda d, w: ["recommend", str(d), "--user", "1"],
                             "recommend", "{d}: Is a directory"),
    "model_not_a_model": (lambda d, w: ["recommend", str(w["ratings"]), "--user", "1"],
                          "recommend", "u.data is not a readable MatrixFactorization file"),
    # fit: options
    "test_size_negative": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2", "--out",
                                         str(d / "m.pt"), "--test-size", "-0.5"],
                           "fit", "--test-size must be a share in [0, 1)"),
    "test_size_one": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2", "--out",
                                    str(d / "m.pt"), "--test-size", "1"],
                      "fit", "--test-size must be a share in [0, 1)"),
    "test_size_above_one": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2", "--out",
                                          str(d / "m.pt"), "--test-size", "1.5"],
                            "fit", "--test-size must be a share in [0, 1)"),
    "test_size_nan": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2", "--out",
                                    str(d / "m.pt"), "--test-size", "nan"],
                      "fit", "--test-size must be a share in [0, 1) (0: train on all), got nan"),
    "out_is_a_directory": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2", "--out", str(d)],
                           "fit", "--out {d}: is a directory"),
    "out_in_a_missing_directory": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2",
                                                 "--out", str(d / "no" / "such" / "m.pt")],
                                   "fit", "no such directory"),
    "out_under_a_file": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2",
                                       "--out", str(_a_file(d) / "m.pt")],
                         "fit", "a_file is not a directory"),
    "rank_zero": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "0", "--out",
                                str(d / "m.pt")], "fit", "--rank must be an integer >= 1, got 0"),
    "max_iter_zero": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2", "--max-iter", "0",
                                    "--out", str(d / "m.pt")], "fit", "--max-iter must be"),
    "reg_negative": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2", "--reg", "-1",
                                   "--out", str(d / "m.pt")], "fit", "--reg must be"),
    "lr_nan": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2", "--lr", "nan",
                             "--out", str(d / "m.pt")], "fit", "--lr must be"),
    "seed_negative": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2", "--seed", "-1",
                                    "--out", str(d / "m.pt")], "fit", "--seed must be"),
    "seed_beyond_64_bits": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2", "--seed",
                                          str(2 ** 64), "--out", str(d / "m.pt")],
                            "fit", f"--seed must be an integer <= {2 ** 64 - 1}"),
    "fit_device_not_a_device": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2",
                                              "--device", "tpu", "--out", str(d / "m.pt")],
                                "fit", "--device 'tpu' is not a device"),
    "ratings_missing": (lambda d, w: ["fit", str(d / "nope.data"), "--rank", "2", "--out",
                                      str(d / "m.pt")], "fit", "nope.data"),
    "ratings_garbage": (lambda d, w: ["fit", str(_garbage(d)), "--rank", "2", "--out",
                                      str(d / "m.pt")], "fit", "garbage.data"),
    # argparse's own usage errors: one line too
    "rank_not_an_int": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "two", "--out",
                                      str(d / "m.pt")], "fit", "argument --rank: invalid int"),
    "rank_missing": (lambda d, w: ["fit", str(w["ratings"]), "--out", str(d / "m.pt")],
                     "fit", "the following arguments are required: --rank"),
    "solver_unknown": (lambda d, w: ["fit", str(w["ratings"]), "--rank", "2", "--solver", "lbfgs",
                                     "--out", str(d / "m.pt")], "fit", "argument --solver"),
    # demo and bench
    "demo_size_zero": (lambda d, w: ["demo", "--size", "0"], "demo", "--size must be"),
    "demo_rank_zero": (lambda d, w: ["demo", "--rank", "0"], "demo", "--rank must be"),
    "demo_repeat_zero": (lambda d, w: ["demo", "--repeat", "0"], "demo", "--repeat must be"),
    "demo_iterations_negative": (lambda d, w: ["demo", "--iterations", "-1"], "demo",
                                 "--iterations must be"),
    "bench_threads_negative": (lambda d, w: ["bench", "--threads", "-2", "--sizes", "4x4x2",
                                             "--out", str(d / "b")], "bench", "--threads must be"),
    "bench_out_is_a_file": (lambda d, w: ["bench", "--sizes", "4x4x2", "--out", str(_a_file(d))],
                            "bench", "--out"),
    "bench_sizes_beyond_int64": (lambda d, w: ["bench", "--sizes", f"{HUGE}x4x2",
                                               "--out", str(d / "b")], "bench", "--sizes"),
    "bench_sizes_zero": (lambda d, w: ["bench", "--sizes", "0x4x2", "--out", str(d / "b")],
                         "bench", "--sizes '0x4x2'"),
    "movielens_unknown_solver": (lambda d, w: ["bench", "--movielens", str(w["ratings"]),
                                               "--solvers", "als,lbfgs", "--out", str(d / "b")],
                                 "bench", "--solvers"),
    "movielens_rank_zero": (lambda d, w: ["bench", "--movielens", str(w["ratings"]),
                                          "--rank", "0", "--out", str(d / "b")],
                            "bench", "--rank must be"),
    "movielens_out_is_a_file": (lambda d, w: ["bench", "--movielens", str(w["ratings"]),
                                              "--rank", "2", "--out", str(_a_file(d))],
                                "bench", "--out"),
}


@pytest.fixture
def no_work(monkeypatch) -> List[str]:
    """Records any reading of ratings, training or grid run: a bad option must stop before."""
    calls: List[str] = []

    def spy(name, real):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(datasets, "load_movielens", spy("load_movielens", datasets.load_movielens))
    monkeypatch.setattr(mfext.MatrixFactorization, "fit",
                        spy("fit", mfext.MatrixFactorization.fit))
    import mfext.bench.runner as runner
    monkeypatch.setattr(runner, "run_grid", spy("run_grid", runner.run_grid))
    return calls


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_cli_failures_are_one_line_that_names_the_argument(workdir, tmp_path, capsys, no_work,
                                                           case):
    make_argv, command, needle = FAILURES[case]
    code, out, err = _cli(make_argv(tmp_path, workdir), capsys)
    _assert_one_line_error(code, err, command, needle.format(d=tmp_path))
    if case not in ("ratings_missing", "ratings_garbage"):
        assert no_work in ([], ["load_movielens"]) and "fit" not in no_work, no_work
    if command == "fit":
        assert not (tmp_path / "m.pt").exists()
    if command == "bench":
        assert "run_grid" not in no_work and not (tmp_path / "b").exists()


@pytest.mark.parametrize("option", ["--out", "--test-size", "--rank", "--device"])
def test_fit_checks_its_options_before_reading_the_ratings(workdir, tmp_path, capsys, no_work,
                                                           option):
    bad = {"--out": str(tmp_path), "--test-size": "-0.5", "--rank": "0", "--device": "tpu"}
    argv = {"--out": str(tmp_path / "m.pt"), "--test-size": "0.2", "--rank": "2"}
    argv[option] = bad[option]
    code, _, err = _cli(["fit", str(workdir["ratings"])]
                        + [a for kv in argv.items() for a in kv], capsys)
    _assert_one_line_error(code, err, "fit", option)
    assert no_work == []  # neither the ratings read nor a fit started


def test_fit_refuses_an_unwritable_out_directory_before_training(workdir, tmp_path, capsys,
                                                                 no_work, monkeypatch):
    """A scratch file, not os.access, decides (root passes os.access on a read-only mount)."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli_options.tempfile, "mkstemp", refuse)
    code, _, err = _cli(["fit", str(workdir["ratings"]), "--rank", "2",
                         "--out", str(tmp_path / "m.pt")], capsys)
    _assert_one_line_error(code, err, "fit", f"--out {tmp_path / 'm.pt'}: cannot write in "
                                               f"{tmp_path} (Permission denied)")
    assert no_work == []


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


def test_an_unexpected_error_is_one_line_with_the_debug_hint(workdir, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("float division by zero\nsecond line")

    monkeypatch.setattr(cf_commands, "recommend_command", broken)
    monkeypatch.delenv("MFEXT_DEBUG", raising=False)
    code, _, err = _cli(["recommend", str(workdir["raw"]), "--user", "101"], capsys)
    assert code == 1
    assert err == ("mfext recommend: internal error: ZeroDivisionError: float division by zero "
                   "second line (rerun with MFEXT_DEBUG=1 for the traceback)\n")
    monkeypatch.setenv("MFEXT_DEBUG", "1")
    with pytest.raises(ZeroDivisionError, match="float division by zero"):
        main(["recommend", str(workdir["raw"]), "--user", "101"])


@pytest.mark.parametrize("exc, line", [
    (KeyError("user_factors"), "KeyError: user_factors"),
    (OverflowError("Python int too large to convert to C long"),
     "OverflowError: Python int too large to convert to C long"),
    (RuntimeError("a\n  b"), "RuntimeError: a b"),
    (FileNotFoundError(2, "No such file or directory", "x.pt"), "x.pt: No such file or directory"),
])
def test_expected_errors_are_one_line_with_status_2(workdir, capsys, monkeypatch, exc, line):
    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(cf_commands, "recommend_command", broken)
    monkeypatch.delenv("MFEXT_DEBUG", raising=False)
    code, _, err = _cli(["recommend", str(workdir["raw"]), "--user", "101"], capsys)
    assert (code, err) == (2, f"mfext recommend: error: {line}\n")


def test_ctrl_c_is_one_line_with_status_130(workdir, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cf_commands, "recommend_command", interrupted)
    monkeypatch.delenv("MFEXT_DEBUG", raising=False)
    assert _cli(["recommend", str(workdir["raw"]), "--user", "101"], capsys)[::2] == (
        130, "mfext recommend: interrupted\n")


def test_the_console_entry_point_prints_no_traceback(workdir, tmp_path):
    """Through ``python -m mfext``: what the user's terminal shows, exit status included."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MFEXT_DEBUG", None)
    for argv, needle in ((["recommend", str(workdir["plain"]), "--user", HUGE], "--user"),
                         (["fit", str(workdir["ratings"]), "--rank", "2", "--out",
                           str(tmp_path), "--test-size", "-0.5"], "--test-size"),
                         (["fit", str(workdir["ratings"]), "--rank", "x", "--out", "m.pt"],
                          "--rank")):
        proc = subprocess.run([sys.executable, "-m", "mfext", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert needle in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("argv, needle", [
    (["fit", "ratings.csv", "--rank", "4", "--out", "m.pt"], "ratings.csv"),
    (["recommend", "m.pt", "--user", "1"], "m.pt"),
    (["bench", "--movielens", "ratings.csv", "--rank", "4"], "ratings.csv"),
])
def test_estimator_commands_on_missing_files_name_the_file(tmp_path, capsys, argv, needle):
    """The estimator commands import the estimator directly (it is part of every build)."""
    argv = [a if not a.endswith((".csv", ".pt")) else str(tmp_path / a) for a in argv]
    argv += ["--out", str(tmp_path / "out")] if argv[0] == "bench" else []
    code, _, err = _cli(argv, capsys)
    _assert_one_line_error(code, err, argv[0], str(tmp_path / needle))


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


@pytest.mark.data
def test_bench_movielens_reports_each_solver(tmp_path):
    data = movielens_path("ml-100k/u.data")
    out = tmp_path / "ml"
    assert main(["bench", "--movielens", str(data), "--rank", "8", "--max-iter", "2",
                 "--solvers", "als,sgd", "--out", str(out)]) == 0
    res = json.loads((out / "movielens.json").read_text())
    mf = [r for r in res["rows"] if r["library"] == "mfext"]
    assert [r["model"] for r in mf] == ["MatrixFactorization(als)", "MatrixFactorization(sgd)"]
    for r in res["rows"]:
        assert 0.5 < r["test_rmse"] < 2.0 and r["fit_seconds"] > 0
    assert res["data"]["n_test"] == pytest.approx(10_000, rel=0.02)
    assert (out / "movielens.md").exists() and (out / "rmse_vs_time.png").exists()
