"""Command line: ``python -m mfext demo``."""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

import torch

import mfext
from mfext import reference as ref


def _median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def run_demo(size: int = 2048, rank: int = 32, repeat: int = 5, iterations: int = 5000) -> None:
    """The reference example with both backends, then a side-by-side timing."""
    torch.set_printoptions(precision=4, sci_mode=False)
    A = torch.tensor(ref.TOY_MATRIX, dtype=torch.float32)
    print("Original matrix A (4x2), k=2, Adam lr=0.01, %d iterations" % iterations)
    print(A)
    for backend in ("autograd", "fused"):
        res = mfext.factorize(A, 2, lr=0.01, max_iter=iterations, seed=0, backend=backend)
        print(f"\n[{backend}] {res.seconds:.3f} s, final mse loss {res.loss_history[-1]:.3e}")
        print("W =\n", res.W, "\nH =\n", res.H, "\nW @ H =\n", res.W @ res.H)

    gen = torch.Generator().manual_seed(0)
    A = torch.rand(size, size, generator=gen)
    W = torch.rand(size, rank, generator=gen)
    H = torch.rand(rank, size, generator=gen)
    t_ref = _median_seconds(lambda: ref.dense_loss_grad(A, W, H), repeat)
    t_fused = _median_seconds(lambda: mfext.dense_loss_grad(A, W, H), repeat)
    print(
        f"\nloss + gradients, {size}x{size}, k={rank}, float32, {torch.get_num_threads()} threads "
        f"(median of {repeat}):\n  autograd {t_ref * 1e3:8.2f} ms\n  fused    {t_fused * 1e3:8.2f} ms"
        f"\n  speedup  {t_ref / t_fused:8.2f}x"
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mfext", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the toy example with both backends, and a timing")
    demo.add_argument("--size", type=int, default=2048)
    demo.add_argument("--rank", type=int, default=32)
    demo.add_argument("--repeat", type=int, default=5)
    demo.add_argument("--iterations", type=int, default=5000)
    args = parser.parse_args(argv)
    if args.command == "demo":
        run_demo(args.size, args.rank, args.repeat, args.iterations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
