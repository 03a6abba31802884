"""Runs every CUDA kernel of mfext once on small inputs and checks the results.

Small and quick on purpose: it is what .../gpu_run.sh runs under
compute-sanitizer (memcheck, racecheck), where every access is instrumented.
Covers: the fused dense kernel (float32 3xTF32 and 1xTF32, float64, weighted,
column-major A, several column groups), the tiled path (float32, float16),
sparse fast and deterministic modes (vector and scalar loads, chunks held in
registers and re-read, units crossed by long rows), the collaborative-filtering
kernels (SGD epochs blocked and Hogwild, ALS normal equations and solves on
shared-memory and workspace paths), and the bad-input path.

    python benchmarks/cuda_smoke.py
    python benchmarks/cuda_smoke.py --device cpu   # a dry run of this script, no GPU
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a source checkout without installing
    sys.path.insert(0, str(ROOT))

import mfext  # noqa: E402
import mfext.cf_ops  # noqa: E402
from mfext import reference as ref  # noqa: E402
from mfext.cuda import dense_path  # noqa: E402


def rel_err(x, y) -> float:
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    d = y.norm().item()
    return (x - y).norm().item() / (d if d > 0 else 1.0)


def check(name, out, expected, tol) -> bool:
    errs = [rel_err(x, y) for x, y in zip(out, expected)]
    ok = all(e <= tol for e in errs)
    print(f"{'ok  ' if ok else 'FAIL'} {name}: " + " ".join(f"{e:.1e}" for e in errs))
    return ok


def cf_kernels(dev: str) -> bool:
    """SGD and ALS on CUDA against the same op on the CPU (float64)."""
    ok = True
    g = torch.Generator().manual_seed(1)
    for k in (1, 8, 33, 128):
        m, n, nnz, P = 50, 40, 2000, 4
        rows = torch.randint(0, m, (nnz,), generator=g)
        cols = torch.randint(0, n, (nnz,), generator=g)
        vals = torch.rand(nnz, generator=g, dtype=torch.float64) * 4 + 1
        W = torch.randn(m, k, generator=g, dtype=torch.float64) * 0.1
        Ht = torch.randn(n, k, generator=g, dtype=torch.float64) * 0.1
        bu, bi = torch.zeros(m, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        block = (rows % P) * P + cols % P
        order = torch.sort(block, stable=True).indices
        block_ptr = torch.zeros(P * P + 1, dtype=torch.int64)
        block_ptr[1:] = torch.bincount(block, minlength=P * P).cumsum(0)
        t = torch.arange(P)
        schedule = (t * P)[None, :] + (t[None, :] + t[:, None]) % P
        r, c, v = rows[order], cols[order], vals[order]
        kw = dict(lr=0.01, reg=0.02, bias_reg=0.01, global_mean=3.0)
        cpu = [x.clone() for x in (W, Ht, bu, bi)]
        sse_cpu = mfext.cf_ops.sgd_epoch_(*cpu, r, c, v, block_ptr=block_ptr, schedule=schedule, **kw)
        gpu = [x.to(dev) for x in (W, Ht, bu, bi)]
        sse_gpu = mfext.cf_ops.sgd_epoch_(*gpu, r.to(dev), c.to(dev), v.to(dev),
                                          block_ptr=block_ptr.to(dev), schedule=schedule.to(dev), **kw)
        ok &= check(f"sgd blocked k={k}", gpu + [sse_gpu], cpu + [sse_cpu], 1e-10)
        hog = [x.to(dev) for x in (W, Ht, bu, bi)]
        sse_hog = mfext.cf_ops.sgd_epoch_(*hog, r.to(dev), c.to(dev), v.to(dev), **kw)
        good = bool(torch.isfinite(sse_hog)) and all(bool(torch.isfinite(x).all()) for x in hog)
        print(f"{'ok  ' if good else 'FAIL'} sgd hogwild k={k}: sse {float(sse_hog):.3e} (blocked {float(sse_cpu):.3e})")
        ok &= good
    for d in (1, 33, 129, 300):  # 300: the Gram scratch in global memory
        R, n, nnz = 30, 60, 900
        keys = torch.randint(0, R, (nnz,), generator=g)
        keys[:20] = 0  # one long row
        indptr = torch.zeros(R + 1, dtype=torch.int64)
        indptr[1:] = torch.bincount(keys, minlength=R).cumsum(0)
        indices = torch.randint(0, n, (nnz,), generator=g)
        vals = torch.rand(nnz, generator=g, dtype=torch.float64)
        F = torch.randn(n, d, generator=g, dtype=torch.float64)
        offset = torch.rand(n, generator=g, dtype=torch.float64)
        reg = torch.full((d,), 0.1, dtype=torch.float64)
        args = (indptr, indices, vals, F, offset, reg, 0.75)
        on_gpu = tuple(a.to(dev) if isinstance(a, torch.Tensor) else a for a in args)
        ok &= check(f"als normal equations d={d}", mfext.cf_ops.als_normal_equations(*on_gpu),
                    mfext.cf_ops.als_normal_equations(*args), 1e-10)
        ok &= check(f"als solve d={d}", [mfext.cf_ops.als_solve(*on_gpu)],
                    [mfext.cf_ops.als_solve(*args)], 1e-8)
    return ok


def bad_index_reported(dev: str) -> bool:
    """An out-of-range row: CUDA returns a NaN loss and raises at the next check; the CPU raises at once."""
    rows = torch.tensor([0, 1, 9], device=dev)
    cols = torch.tensor([0, 1, 1], device=dev)
    loss = None
    try:
        loss, _, _ = mfext.sparse_loss_grad(rows, cols, torch.ones(3, device=dev),
                                            torch.ones(4, 2, device=dev), torch.ones(2, 3, device=dev))
        mfext.cuda_check_errors()
        print("FAIL bad index: no error raised")
        return False
    except IndexError as exc:
        nan_loss = loss is not None and torch.isnan(loss).item()
        good = "rows[2] = 9" in str(exc) and (nan_loss or dev != "cuda")
        print(f"{'ok  ' if good else 'FAIL'} bad index reported: {str(exc)[:80]}")
        return good


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    dev = parser.parse_args(argv).device
    if dev == "cuda" and not (torch.cuda.is_available() and mfext.build_info()["cuda"]):
        print("cuda_smoke: needs a GPU and a CUDA build of mfext", file=sys.stderr)
        return 2

    def path(name: str):
        return dense_path(name) if dev == "cuda" else contextlib.nullcontext()

    torch.manual_seed(0)
    ok = True
    for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 1e-10)):
        for (m, n, k, weighted, col_major) in ((130, 200, 16, True, False), (67, 70, 33, False, True), (9, 5, 64, True, False)):
            A = torch.rand(m, n, dtype=dtype, device=dev)
            if col_major:
                A = A.t().contiguous().t()
            W = torch.rand(m, k, dtype=dtype, device=dev)
            H = torch.rand(k, n, dtype=dtype, device=dev)
            w = torch.rand(m, n, dtype=dtype, device=dev) if weighted else None
            expected = ref.dense_loss_grad(*(t.double().cpu() if t is not None else None for t in (A, W, H, w)))
            for name in ("fused", "tiled"):
                with path(name):
                    out = mfext.dense_loss_grad(A, W, H, w)
                ok &= check(f"dense {name} {dtype} {m}x{n} k={k}", out, expected, tol)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    A, W, H = torch.rand(100, 90, device=dev), torch.rand(100, 8, device=dev), torch.rand(8, 90, device=dev)
    with path("fused"):
        ok &= check("dense fused 1xTF32", mfext.dense_loss_grad(A, W, H), ref.dense_loss_grad(A.double(), W.double(), H.double()), 1e-2)
    torch.backends.cuda.matmul.allow_tf32 = prev
    if dev == "cuda":  # float16 is a CUDA-only input
        Ah, Wh, Hh = A.half(), W.half(), H.half()
        ok &= check("dense tiled float16", mfext.dense_loss_grad(Ah, Wh, Hh), ref.dense_loss_grad(Ah.double(), Wh.double(), Hh.double()), 5e-3)

    for k in (1, 7, 64, 128, 516):
        m, n, nnz = 300, 40, 3000
        rows = torch.randint(0, m, (nnz,), device=dev)
        cols = torch.randint(0, n, (nnz,), device=dev)
        rows[::3] = 5  # a long row: its entries cross work units
        vals = torch.rand(nnz, device=dev)
        W = torch.rand(m, k, device=dev)
        H = torch.rand(n, k, device=dev).t()
        w = torch.rand(nnz, device=dev)
        expected = ref.sparse_loss_grad(rows.cpu(), cols.cpu(), vals.double().cpu(), W.double().cpu(), H.double().cpu(), w.double().cpu())
        for det in (False, True):
            torch.use_deterministic_algorithms(det)
            out = mfext.sparse_loss_grad(rows, cols, vals, W, H, w)
            torch.use_deterministic_algorithms(False)
            ok &= check(f"sparse {'det ' if det else 'fast'} k={k}", out, expected, 2e-5)

    ok &= cf_kernels(dev)

    ok &= bad_index_reported(dev)
    if dev == "cuda":
        torch.cuda.synchronize()
    print("cuda_smoke:", "all passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
