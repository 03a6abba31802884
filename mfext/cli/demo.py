"""``mfext demo``: the toy matrix with both backends, then a side-by-side timing.

This module owns the command's arguments and what it prints. The training
belongs to :func:`mfext.factorize`, the reference loss and the toy matrix to
:mod:`mfext.reference`, the timing to :func:`mfext.bench.timing.time_call`.
"""
from __future__ import annotations

import argparse
from typing import List, Optional

import torch

import mfext
from mfext import reference as ref
from mfext.bench.timing import time_call

from .options import check_positive_int

__all__ = ["run_demo"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` and its arguments to the subcommands ``sub``."""
    demo = sub.add_parser("demo", help="the toy example with both backends, and a timing")
    demo.add_argument("--size", type=int, default=2048, help="timing matrix size (default 2048)")
    demo.add_argument("--rank", type=int, default=32, help="timing rank (default 32)")
    demo.add_argument("--repeat", type=int, default=5, help="timed samples (default 5)")
    demo.add_argument("--iterations", type=int, default=5000, help="Adam steps on the toy matrix")


def run(args: argparse.Namespace, argv: Optional[List[str]] = None) -> None:
    """Run ``mfext demo`` with the parsed ``args``."""
    run_demo(args.size, args.rank, args.repeat, args.iterations)


def run_demo(size: int = 2048, rank: int = 32, repeat: int = 5, iterations: int = 5000) -> dict:
    """Factorize the toy matrix (k=2, Adam) with both backends, then time one step.

    Prints the original, W, H and the reconstruction for each backend, as the
    reference loop does, and the time each took; then the median time of one
    loss-and-gradient step on a seeded ``size`` x ``size`` float32 matrix.

    Returns
    -------
    dict: ``toy`` {backend: {seconds, loss}} and ``timing`` {autograd_ms, fused_ms, speedup}.

    Raises
    ------
    ValueError
        ``size``, ``rank`` or ``repeat`` below 1, or ``iterations`` below 0 (the
        message names the command-line option), before anything runs.
    """
    for option, value, minimum in (("--size", size, 1), ("--rank", rank, 1),
                                   ("--repeat", repeat, 1), ("--iterations", iterations, 0)):
        check_positive_int(value, option, minimum)
    torch.set_printoptions(precision=4, sci_mode=False)
    A = torch.tensor(ref.TOY_MATRIX, dtype=torch.float32)
    print(f"Original matrix A (4x2), k=2, Adam lr=0.01, {iterations} iterations")
    print(A)
    toy = {}
    for backend in ("autograd", "fused"):
        res = mfext.factorize(A, 2, lr=0.01, max_iter=iterations, seed=0, backend=backend)
        toy[backend] = {"seconds": res.seconds, "loss": res.loss_history[-1]}
        print(f"\n[{backend}] {res.seconds:.3f} s, final mse loss {res.loss_history[-1]:.3e}")
        print("W =\n", res.W, "\nH =\n", res.H, "\nW @ H =\n", res.W @ res.H)

    gen = torch.Generator().manual_seed(0)
    A = torch.rand(size, size, generator=gen)
    W = torch.rand(size, rank, generator=gen)
    H = torch.rand(rank, size, generator=gen)
    t_ref = time_call(lambda: ref.dense_loss_grad(A, W, H), "cpu", repeat=repeat).median
    t_fused = time_call(lambda: mfext.dense_loss_grad(A, W, H), "cpu", repeat=repeat).median
    print(
        f"\nloss + gradients, {size}x{size}, k={rank}, float32, {torch.get_num_threads()} threads "
        f"(median of {repeat}):\n  autograd {t_ref * 1e3:8.2f} ms\n  fused    {t_fused * 1e3:8.2f} ms"
        f"\n  speedup  {t_ref / t_fused:8.2f}x"
    )
    return {"toy": toy, "timing": {"autograd_ms": t_ref * 1e3, "fused_ms": t_fused * 1e3,
                                   "speedup": t_ref / t_fused}}
