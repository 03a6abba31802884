"""Command-line failures are one line on stderr that names the option or file at fault,
with status 2 (1 for an internal error, with the MFEXT_DEBUG hint; 130 on Ctrl-C), and
a bad option stops the command before it reads ratings, trains or runs the grid."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

import mfext
from mfext import datasets
from mfext.cli import options as cli_options
from mfext.cli import recommend as recommend_cli
from mfext.cli.main import main
from cli_helpers import _assert_one_line_error, _cli


ROOT = Path(__file__).resolve().parents[2]


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


def test_an_unexpected_error_is_one_line_with_the_debug_hint(workdir, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("float division by zero\nsecond line")

    monkeypatch.setattr(recommend_cli, "recommend_command", broken)
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

    monkeypatch.setattr(recommend_cli, "recommend_command", broken)
    monkeypatch.delenv("MFEXT_DEBUG", raising=False)
    code, _, err = _cli(["recommend", str(workdir["raw"]), "--user", "101"], capsys)
    assert (code, err) == (2, f"mfext recommend: error: {line}\n")


def test_ctrl_c_is_one_line_with_status_130(workdir, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recommend_cli, "recommend_command", interrupted)
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
