"""Fixtures of the command-line tests in this folder."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest
import torch

import mfext
from mfext.cli.main import main
from cli_helpers import _ratings_text


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
