"""The command line through ``python -m mfext`` in a child process: bad files and
options exit with status 2 and one line on stderr naming the option or the file at
fault, never a traceback. ``CLI_CASES`` counts toward tests/test_bad_input_coverage.py."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import _write_corrupt


ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "mfext", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    ratings = folder / "u.data"
    rng = np.random.default_rng(0)
    lines = [f"{u}\t{i}\t{rng.integers(1, 6)}\t0" for u in range(1, 11) for i in range(1, 9)
             if rng.random() < 0.6]
    ratings.write_text("\n".join(lines) + "\n")
    model = folder / "model.pt"
    proc = _cli("fit", str(ratings), "--rank", "2", "--max-iter", "2", "--out", str(model),
                cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return model


def _corrupt_file(folder: Path, saved: Path, kind: str) -> Path:
    path = folder / f"{kind}.pt"
    _write_corrupt(path, kind, saved)
    return path


CLI_CASES = {
    "fit_missing_file": lambda d, m: ["fit", str(d / "nope.data"), "--rank", "2", "--out",
                                      str(d / "o.pt")],
    "fit_garbage_file": lambda d, m: ["fit", str(_garbage(d)), "--rank", "2", "--out",
                                      str(d / "o.pt")],
    "fit_rank_zero": lambda d, m: ["fit", str(m.parent / "u.data"), "--rank", "0", "--out",
                                   str(d / "o.pt")],
    "recommend_missing_model": lambda d, m: ["recommend", str(d / "nope.pt"), "--user", "1"],
    "recommend_text_model": lambda d, m: ["recommend", str(_corrupt_file(d, m, "text")),
                                          "--user", "1"],
    "recommend_truncated_model": lambda d, m: ["recommend", str(_corrupt_file(d, m, "truncated")),
                                               "--user", "1"],
    "recommend_foreign_model": lambda d, m: ["recommend",
                                             str(_corrupt_file(d, m, "foreign_dict")),
                                             "--user", "1"],
    "recommend_unknown_user": lambda d, m: ["recommend", str(m), "--user", "999999"],
    "recommend_n_zero": lambda d, m: ["recommend", str(m), "--user", "1", "-n", "0"],
    "recommend_directory_as_model": lambda d, m: ["recommend", str(d), "--user", "1"],
    "fit_out_in_missing_directory": lambda d, m: ["fit", str(m.parent / "u.data"), "--rank", "2",
                                                  "--out", str(d / "no" / "such" / "o.pt")],
}


def _garbage(folder: Path) -> Path:
    path = folder / "garbage.data"
    path.write_bytes(b"\x00\xff this is not\ta ratings file\n")
    return path


# What the one line on stderr must name: the option or the file at fault. (argparse's own
# usage error, two lines naming neither, fails this.)
CLI_MESSAGES = {
    "fit_missing_file": r"nope\.data",
    "fit_garbage_file": r"garbage\.data",
    "fit_rank_zero": r"--rank\b.*\b0\b",
    "recommend_missing_model": r"nope\.pt",
    "recommend_text_model": r"text\.pt is not a readable MatrixFactorization file",
    "recommend_truncated_model": r"truncated\.pt is not a readable MatrixFactorization file",
    "recommend_foreign_model": r"foreign_dict\.pt is not a saved MatrixFactorization",
    "recommend_unknown_user": r"--user\b.*999999",
    "recommend_n_zero": r"(^|\s)-n\b.*\b0\b",
    "recommend_directory_as_model": r"(?i)is a directory",
    "fit_out_in_missing_directory": r"--out\b.*no[/\\]such",
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_input_exits_cleanly(tmp_path, cli_model, case):
    proc = _cli(*CLI_CASES[case](tmp_path, cli_model), cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], proc.stderr
    assert re.search(CLI_MESSAGES[case], lines[0]), lines[0]


def test_cli_recommend_ok(tmp_path, cli_model):
    proc = _cli("recommend", str(cli_model), "--user", "1", "-n", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "user 1" in proc.stdout
