"""The command line's demo and bench commands (smoke grid, MovieLens report) and the
bench machinery they use (grid selection, cost model, timing, memory).

No timing assertions: the checks are that every command runs, that the reports
hold the expected fields and rows, and that the benchmark's own parity column
shows the fused op agreeing with autograd.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mfext.bench import cost
from mfext.bench.grid import PRESETS, Case, parse_sizes, select_cases
from mfext.bench.memory import peak_extra
from mfext.bench.timing import time_call
from mfext.cli.main import main
from helpers import movielens_path


ROOT = Path(__file__).resolve().parents[2]


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
