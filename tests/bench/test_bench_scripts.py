"""The helpers of benchmarks/*.py and of the MovieLens report (no timing assertions)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _common  # noqa: E402
import bench_cf_cuda  # noqa: E402
import bench_cuda  # noqa: E402
import cuda_smoke  # noqa: E402
import peers_dense  # noqa: E402
import peers_sparse  # noqa: E402
from helpers import SHARED_DATA  # noqa: E402

from mfext.bench.movielens import _curve  # noqa: E402


def test_loglog_slope_recovers_a_power_law():
    x = np.array([1e3, 1e4, 1e5, 1e6])
    slope, intercept = _common.loglog_slope(x, 3.0 * x ** 1.5)
    assert slope == pytest.approx(1.5) and intercept == pytest.approx(np.log(3.0))


def test_device_slug_names_the_cpu():
    slug = _common.device_slug("cpu")
    assert slug.startswith("cpu-") and slug == slug.lower() and " " not in slug


def test_dense_optimum_is_the_truncated_svd_error():
    A = peers_dense.make_matrix(60, 40, 3, noise=0.1)
    assert (A >= 0).all() and A.dtype == torch.float32
    U, S, Vh = torch.linalg.svd(A.double(), full_matrices=False)
    W, H = U[:, :3] * S[:3], Vh[:3]
    assert peers_dense.rel_error(A, W, H) == pytest.approx(peers_dense.optimum(A, 3), rel=1e-9)
    assert peers_dense.rel_error(A, torch.zeros(60, 3), torch.zeros(3, 40)) == pytest.approx(1.0)


def test_sweep_stops_at_the_target_and_reports_it():
    A = peers_dense.make_matrix(50, 40, 2, noise=0.05)
    target = peers_dense.optimum(A, 2) * 1.01
    calls = []

    def fn(niter: int):
        calls.append(niter)
        return peers_dense.svd_lowrank(A, 2, niter)

    r = peers_dense.sweep("svd", fn, [0, 2, 4, 8], A, target, max_seconds=60)
    assert r["time_to_target"] is not None and r["best_rel_error"] <= target
    assert [run["knob"] for run in r["runs"]] == calls[1:][: len(r["runs"])]
    assert r["runs"][-1]["rel_error"] <= target  # it stopped at the first knob that reached it


@pytest.mark.parametrize("optimizer, nonnegative", [("als", False), ("adam", False), ("gd", False),
                                                    ("als", True)])
def test_mfext_support_probe_finds_every_method_the_peer_benchmark_runs(optimizer, nonnegative):
    """factorize runs each of these, so the benchmark must not skip any (the probe says None)."""
    A = peers_dense.make_matrix(10, 10, 2, noise=0.0)
    assert peers_dense.mfext_supports(optimizer, nonnegative, A, 2) is None


def test_mfext_support_probe_gives_the_reason_for_an_unknown_optimizer():
    A = peers_dense.make_matrix(10, 10, 2, noise=0.0)
    why = peers_dense.mfext_supports("lbfgs", False, A, 2)
    assert isinstance(why, str) and why.startswith("ValueError: optimizer must be one of"), why
    assert "'lbfgs'" in why


@pytest.mark.parametrize("name, text", [
    ("u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t1\t878887116\n"),
    ("ratings.dat", "1::1193::5\n1::661::3\n2::1193::4\n"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,9\n2,1,2.5,9\n"),
])
def test_sparse_fallback_loader_reads_each_format(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    r = peers_sparse._fallback_load(path)
    assert r.vals.numel() == 3 and r.n_users == 2 and r.n_items == 2
    assert r.rows.max() < r.n_users and r.cols.max() < r.n_items
    raw_users = r.user_ids[r.rows.numpy()]
    assert raw_users[0] == int(text.splitlines()[1 if name.endswith(".csv") else 0]
                               .replace("::", "\t").replace(",", "\t").split("\t")[0])
    train, test = peers_sparse._fallback_split(r, test_size=1 / 3)
    assert train.vals.numel() == 2 and test.vals.numel() == 1


def test_curve_reads_cumulative_and_per_epoch_seconds():
    cumulative = [{"epoch": i, "val_rmse": 1.0 - i / 10, "seconds": 0.5 * (i + 1)} for i in range(4)]
    assert [c["seconds"] for c in _curve(cumulative, 2.1)] == [0.5, 1.0, 1.5, 2.0]
    per_epoch = [{"epoch": i, "val_rmse": 1.0, "seconds": s} for i, s in enumerate([0.6, 0.4, 0.5])]
    assert [c["seconds"] for c in _curve(per_epoch, 1.6)] == pytest.approx([0.6, 1.0, 1.5])


# The GPU scripts run the same code on the CPU (--device cpu) at tiny sizes
# (--smoke), so that a session with a GPU never spends its minutes on a Python
# error. These check that they run and write what the GPU session reads back.

@pytest.fixture
def cpu_dry_run(monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    monkeypatch.setattr(bench_cuda, "DEVICE", bench_cuda.DEVICE)  # restored afterwards


def _positive_times(node) -> list:
    """Every median_ms in a nested result."""
    if isinstance(node, dict):
        found = [node["median_ms"]] if "median_ms" in node else []
        return found + [t for v in node.values() for t in _positive_times(v)]
    if isinstance(node, list):
        return [t for v in node for t in _positive_times(v)]
    return []


def test_bench_cuda_dry_run_on_cpu(tmp_path, capsys, cpu_dry_run):
    out = tmp_path / "ops.json"
    assert bench_cuda.main(["--smoke", "--device", "cpu", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["mode"] == "smoke" and res["facts"]["device"].startswith("cpu")
    assert {"fused", "tiled", "autograd"} <= set(res["dense"])
    assert res["dense"]["fused"]["speedup_vs_autograd"] > 0
    ks = [r["k"] for r in res["crossover"]["rows"]]
    assert ks == list(bench_cuda.SIZES["smoke"].crossover_ks)
    assert "fused_ms" not in res["crossover"]["rows"][-1]  # k > 64 has the tiled path only
    sparse = res["sparse"]
    assert sparse["vs_autograd"]["fast"]["speedup_vs_autograd"] > 0
    assert sparse["throughput_row_sorted"]["deterministic"]["entries_per_s"] > 0
    times = _positive_times(res)
    assert len(times) == 13 and all(t > 0 for t in times)  # 3 ceilings, 3 dense, 3 + 4 sparse
    assert "target x50" in capsys.readouterr().out


def test_bench_cf_cuda_dry_run_on_cpu(tmp_path, capsys, cpu_dry_run):
    out = tmp_path / "cf.json"
    argv = ["--smoke", "--device", "cpu", "--data", str(SHARED_DATA), "--out", str(out)]
    assert bench_cf_cuda.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["mode"] == "smoke"
    for mode in ("hogwild", "blocked"):
        sgd = res["sgd"][mode]
        assert sgd["median_ms"] > 0 and 0 < sgd["train_rmse_last_epoch"] < 2
    assert res["als"]["d"] == bench_cf_cuda.RANK + 1 and res["als"]["train_rmse_sample"] < 2
    ml = res["movielens"]
    data = SHARED_DATA / "ml-100k" / "u.data"  # the file the smoke mode reads
    if data.exists():  # CI has the data: the section must run, not skip
        assert "skipped" not in ml, ml
        assert ml["data"] == "ml-100k/u.data"
        assert 0.5 < ml["sgd"]["test_rmse"] < 1.0 and 0.5 < ml["als"]["test_rmse"] < 1.0
    else:
        assert ml == {"skipped": f"{data} not found"}
    assert "SGD epoch (hogwild" in capsys.readouterr().out


def test_cuda_smoke_dry_run_on_cpu(capsys):
    assert cuda_smoke.main(["--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "FAIL" not in printed and "bad index reported" in printed
