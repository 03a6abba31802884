"""Worker functions for the multi-process tests (importable by spawned children)."""
from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist


def start(rank: int, world: int, init_file: str, timeout_s: float = 30.0) -> None:
    import mfext.distributed as mdist

    torch.set_num_threads(1)
    mdist.init(backend="gloo", init_method=f"file://{init_file}", world_size=world, rank=rank,
               timeout_s=timeout_s)


def dense_worker(rank: int, world: int, init_file: str, out_dir: str, A: torch.Tensor,
                 kwargs: dict) -> None:
    import mfext
    from mfext.distributed import row_block

    start(rank, world, init_file)
    r0, r1 = row_block(A.shape[0], world, rank)
    result = mfext.factorize(A[r0:r1], **kwargs)
    torch.save({"W": result.W, "H": result.H, "history": result.loss_history,
                "n_iter": result.n_iter}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def mismatch_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import mfext

    start(rank, world, init_file)
    A = torch.rand(10, 8, dtype=torch.float64)
    rank_k = 2 if rank == 0 else 3  # the ranks disagree on k
    try:
        mfext.factorize(A, rank_k, max_iter=3, seed=0)
    except RuntimeError as exc:
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
            f.write(str(exc))
    dist.destroy_process_group()


def dying_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Rank 1 exits after start-up; rank 0 must fail with a clear error, not hang."""
    import mfext

    start(rank, world, init_file, timeout_s=20.0)
    A = torch.rand(64, 32, dtype=torch.float64)
    if rank == 1:
        os._exit(0)  # dies without a word
    t0 = time.monotonic()
    try:
        mfext.factorize(A, 4, max_iter=100_000, seed=0, tol=0.0)
        message = "NO ERROR"
    except RuntimeError as exc:
        message = f"{type(exc).__name__}: {exc}"
    with open(os.path.join(out_dir, "rank0.txt"), "w") as f:
        f.write(f"{time.monotonic() - t0:.2f}\n{message}")
    # The process group lost a peer: skip its teardown, which may abort the process.
    os._exit(0)


def checkpoint_worker(rank: int, world: int, init_file: str, out_dir: str, A: torch.Tensor,
                      kwargs: dict, phase: str) -> None:
    """phase "save": train, then checkpoint; phase "resume": resume from it and finish."""
    import mfext
    from mfext.distributed import load_checkpoint, row_block, save_checkpoint

    start(rank, world, init_file)
    r0, r1 = row_block(A.shape[0], world, rank)
    path = os.path.join(out_dir, "checkpoint.pt")
    if phase == "save":
        result = mfext.factorize(A[r0:r1], **kwargs)
        save_checkpoint(path, result.W, result.H, iteration=result.n_iter)
    else:
        state = load_checkpoint(path)
        result = mfext.factorize(A[r0:r1], init=(state["W"], state["H"]), **kwargs)
        torch.save({"W": result.W, "H": result.H}, os.path.join(out_dir, f"resumed{rank}.pt"))
    dist.destroy_process_group()


def sparse_worker(rank: int, world: int, init_file: str, out_dir: str, data: tuple,
                  shape: tuple, params: dict) -> None:
    """Fit the estimator on this rank's users (rows re-indexed from 0)."""
    import scipy.sparse as sp

    import mfext
    from mfext.distributed import row_block

    start(rank, world, init_file)
    rows, cols, vals = data
    r0, r1 = row_block(shape[0], world, rank)
    mine = (rows >= r0) & (rows < r1)
    X = sp.coo_matrix((vals[mine].numpy(), ((rows[mine] - r0).numpy(), cols[mine].numpy())),
                      shape=(r1 - r0, shape[1]))
    model = mfext.MatrixFactorization(**params).fit(X, distributed=True)
    torch.save({"W": model.user_factors_, "Ht": model.item_factors_, "bu": model.user_bias_,
                "bi": model.item_bias_, "history": [h["train_rmse"] for h in model.history_]},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def shard_worker(rank: int, world: int, init_file: str, out_dir: str, path: str) -> None:
    """Each rank loads its users' shard of a ratings file and fits ALS on it."""
    import mfext
    from mfext.distributed import load_ratings_shard

    start(rank, world, init_file)
    train, test, row0 = load_ratings_shard(path, test_size=0.2, seed=0)
    model = mfext.MatrixFactorization(rank=3, solver="als", max_iter=3, random_state=0,
                                      dtype=torch.float64).fit(train, validation=test)
    torch.save({"row0": row0, "users": train.shape[0], "Ht": model.item_factors_,
                "val": model.history_[-1]["val_rmse"]}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()
