"""Helpers of the command-line tests in this folder: run ``main(argv)`` in this process,
check the one-line error form, and a small ratings file. Import with
``from cli_helpers import ...``; the ``workdir`` fixture is in this folder's conftest.py."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from mfext.cli.main import main


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
