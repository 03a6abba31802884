"""``mfext bench --movielens PATH``: RMSE against time for each solver on a real rating file.

The ratings are split 90/10 with seed 0 (``mfext.datasets.train_test_split``);
each solver trains on the 90% with the 10% as validation, and the estimator's
``history_`` gives the validation RMSE after each epoch with its time. When
scikit-surprise is installed, its ``SVD`` trains on the same split and its row
is reported beside mfext's.

This module owns that run, its records (movielens.json, movielens.md) and its
plot. The models belong to :class:`mfext.MatrixFactorization`, the loader and
the split to :mod:`mfext.datasets`, the option checks (whose messages name
``--solvers``, ``--rank``...) to :mod:`mfext.cli.options`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from mfext import MatrixFactorization, datasets
from mfext.cli.options import check_device, check_out_dir, estimator_option_errors

from .peers import surprise_svd


def _curve(history: List[dict], fit_seconds: float) -> List[dict]:
    """``[{epoch, seconds (cumulative), val_rmse}]`` from the estimator's ``history_``.

    ``seconds`` in ``history_`` is read as cumulative when it never decreases and
    its last value is at least half the fit's wall time; otherwise as per-epoch
    times, which are summed.
    """
    secs = [float(h.get("seconds", 0.0)) for h in history]
    cumulative = all(b >= a for a, b in zip(secs, secs[1:])) and bool(secs) \
        and secs[-1] >= 0.5 * fit_seconds
    total, out = 0.0, []
    for h, s in zip(history, secs):
        total = s if cumulative else total + s
        out.append({"epoch": h.get("epoch"), "seconds": total, "val_rmse": h.get("val_rmse")})
    return out


def run_movielens(path: str, out_dir: Path, *, solvers: Sequence[str] = ("sgd", "als", "adam"),
                  rank: int = 64, max_iter: Optional[int] = None, seed: int = 0,
                  device: Optional[str] = None, surprise: bool = True,
                  command: str = "") -> dict:
    """Train every solver (and Surprise's SVD) on one split; write JSON, markdown and a plot.

    Returns
    -------
    dict with ``data`` (path, users, items, train and test sizes) and ``rows``: one per
    solver with ``fit_seconds``, ``test_rmse`` and ``curve``.

    Raises
    ------
    ValueError
        A bad option, checked before any training (the message names it:
        ``--solvers``, ``--rank``, ``--max-iter``, ``--device``, ``--out``), or a
        malformed ratings file.
    """
    from .machine import machine_info, versions

    if not solvers:
        raise ValueError("--solvers: no solver given; choose among sgd, als, adam")
    check_device(device)
    options = {"max_iter": max_iter} if max_iter is not None else {}
    models = {}
    for solver in solvers:  # every option checked before the first (long) fit
        with estimator_option_errors():
            try:
                models[solver] = MatrixFactorization(rank=rank, solver=solver,
                                                     random_state=seed, device=device, **options)
                models[solver]._resolved()
            except ValueError as exc:
                if str(exc).startswith("solver "):
                    raise ValueError(f"--solvers: {exc}") from None
                raise
    out_dir = check_out_dir(out_dir)  # last: a bad option leaves no new directory behind
    ratings = datasets.load_movielens(path)
    train, test = datasets.train_test_split(ratings, test_size=0.1, seed=0)
    rows: List[Dict[str, object]] = []
    for solver in solvers:
        model = models[solver]
        t0 = time.perf_counter()
        with estimator_option_errors():
            model.fit(train, validation=test)
        seconds = time.perf_counter() - t0
        rows.append({"library": "mfext", "model": f"MatrixFactorization({solver})",
                     "rank": rank, "fit_seconds": seconds,
                     "test_rmse": float(model.score(test)),
                     "curve": _curve(list(getattr(model, "history_", []) or []), seconds)})
        print(f"mfext {solver:5s} rank {rank}: test RMSE {rows[-1]['test_rmse']:.4f} "
              f"in {seconds:.2f} s", flush=True)
    if surprise:
        peer = surprise_svd(train, test, rank=rank, seed=seed)
        if peer is None:
            print("scikit-surprise is not installed: no Surprise row (pip install scikit-surprise)")
        else:
            peer["curve"] = [{"epoch": peer["epochs"], "seconds": peer["fit_seconds"],
                              "val_rmse": peer["test_rmse"]}]
            rows.append(peer)
            print(f"surprise SVD rank {rank}: test RMSE {peer['test_rmse']:.4f} "
                  f"in {peer['fit_seconds']:.2f} s", flush=True)
    results = {"command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "data": {"path": str(path), "n_users": int(ratings.n_users),
                        "n_items": int(ratings.n_items), "n_train": int(train.vals.numel()),
                        "n_test": int(test.vals.numel()), "split": "90/10, seed 0"},
               "machine": machine_info(), "versions": versions(), "rows": rows}
    (out_dir / "movielens.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    lines = [f"# MovieLens: {path}", "", f"- Command: `{command}`",
             f"- {results['data']['n_train']:,} train / {results['data']['n_test']:,} test ratings "
             f"(90/10, seed 0)", "",
             "| library | model | rank | fit s | test RMSE |", "|---|---|---|---|---|"]
    lines += [f"| {r['library']} | {r['model']} | {r['rank']} | {r['fit_seconds']:.2f} "
              f"| {r['test_rmse']:.4f} |" for r in rows]
    (out_dir / "movielens.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[5:]))
    _plot(rows, out_dir / "rmse_vs_time.png")
    return results


def _plot(rows: List[dict], path: Path) -> None:
    from .plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        pts = [(c["seconds"], c["val_rmse"]) for c in r["curve"] if c.get("val_rmse") is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "o-" if len(pts) > 1 else "*", label=f"{r['library']} {r['model']}")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("test RMSE")
    ax.set_title("MovieLens: RMSE against time")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
