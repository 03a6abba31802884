"""The benchmark grid: cases (dense or sparse, m, n, k, nnz, dtype), presets, inputs.

Every input is synthetic and seeded, so a run needs no files and two runs time
the same numbers.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence

import torch

DTYPES: Dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Case:
    """One problem: ``kind`` "dense" (A is m x n) or "sparse" (nnz observed entries)."""

    kind: str
    m: int
    n: int
    k: int
    nnz: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kind not in ("dense", "sparse"):
            raise ValueError(f"Case.kind must be 'dense' or 'sparse', got {self.kind!r}")
        if min(self.m, self.n, self.k) < 1:
            raise ValueError(f"Case m, n, k must be >= 1, got {self.m}, {self.n}, {self.k}")
        if self.kind == "sparse" and self.nnz < 1:
            raise ValueError(f"a sparse Case needs nnz >= 1, got {self.nnz}")
        # torch indexes with int64: a larger shape cannot be allocated, only fail row by row
        sizes = [self.m * self.k, self.k * self.n, self.nnz] + (
            [self.m * self.n] if self.kind == "dense" else [self.m, self.n])
        if max(sizes) >= 2 ** 63:
            raise ValueError(f"Case {self.m}x{self.n}x{self.k}"
                             + (f"@{self.nnz}" if self.kind == "sparse" else "")
                             + " is too large: a tensor holds fewer than 2**63 elements")
        if self.dtype not in DTYPES:
            raise ValueError(f"Case.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    @property
    def label(self) -> str:
        shape = f"{self.m}x{self.n} k={self.k}"
        return shape + (f" nnz={self.nnz:,}" if self.kind == "sparse" else "")

    def as_dict(self) -> dict:
        return asdict(self)


def _dense(shapes: Iterable[tuple], dtype: str = "float32") -> List[Case]:
    return [Case("dense", m, n, k, 0, dtype) for m, n, k in shapes]


def _sparse(shapes: Iterable[tuple], dtype: str = "float32") -> List[Case]:
    return [Case("sparse", m, n, k, nnz, dtype) for m, n, k, nnz in shapes]


# MovieLens-1M has 6,040 users x 3,706 items; MovieLens-10M 69,878 x 10,677.
ML1M = (6040, 3706)
ML10M = (69878, 10677)

PRESETS: Dict[str, List[Case]] = {
    # Seconds: for CI. Tiny shapes, float32, still one size sweep and one k sweep each.
    "smoke": _dense([(48, 48, 4), (96, 96, 4), (48, 48, 8)])
    + _sparse([(60, 50, 4, 300), (120, 100, 4, 1200), (60, 50, 8, 300)]),
    # Under a minute on two cores.
    "quick": _dense([(512, 512, 32), (1024, 1024, 32), (2048, 2048, 32),
                     (1024, 1024, 8), (1024, 1024, 128)])
    + _sparse([(*ML1M, 32, 100_000), (*ML1M, 32, 300_000),
               (*ML1M, 8, 100_000), (*ML1M, 128, 100_000)]),
    # About ten minutes on two cores.
    "default": _dense([(256, 256, 32), (512, 512, 32), (1024, 1024, 32), (2048, 2048, 32),
                       (4096, 4096, 32), (8192, 512, 32), (512, 8192, 32)])
    + _dense([(2048, 2048, k) for k in (8, 16, 64, 128, 256)])
    + _dense([(512, 512, 32), (1024, 1024, 32), (2048, 2048, 32), (1024, 1024, 128)], "float64")
    + _sparse([(*ML1M, 32, 100_000), (*ML1M, 32, 1_000_000), (*ML10M, 32, 3_000_000),
               (*ML10M, 32, 10_000_000)])
    + _sparse([(*ML1M, k, 1_000_000) for k in (8, 16, 64, 128, 256)])
    + _sparse([(*ML1M, 32, 1_000_000), (*ML1M, 128, 1_000_000)], "float64"),
}

_SIZE_RE = re.compile(r"^(\d+)x(\d+)x(\d+)(?:@(\d+))?$")


def parse_sizes(spec: str, dtypes: Sequence[str]) -> List[Case]:
    """Cases from ``--sizes``: comma-separated ``MxNxK`` (dense) or ``MxNxK@NNZ`` (sparse).

    Each shape is run in every dtype of ``dtypes``.
    """
    cases = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        match = _SIZE_RE.match(part.replace("_", ""))
        if not match:
            raise ValueError(
                f"--sizes: cannot read {part!r}; use MxNxK for a dense case or "
                f"MxNxK@NNZ for a sparse one, e.g. 1024x1024x32,6040x3706x32@1000000")
        m, n, k, nnz = match.groups()
        for dtype in dtypes:
            try:
                if nnz is None:
                    cases.append(Case("dense", int(m), int(n), int(k), 0, dtype))
                else:
                    cases.append(Case("sparse", int(m), int(n), int(k), int(nnz), dtype))
            except ValueError as exc:
                raise ValueError(f"--sizes {part!r}: {exc}") from None
    if not cases:
        raise ValueError(f"--sizes: no case in {spec!r}")
    return cases


def select_cases(preset: str, sizes: Optional[str] = None,
                 dtypes: Optional[Sequence[str]] = None, kind: str = "all") -> List[Case]:
    """The run's cases: ``sizes`` if given, else ``preset``; ``dtypes`` overrides theirs.

    Duplicates (same kind, shape and dtype) are run once, in first-seen order.
    """
    for d in dtypes or ():
        if d not in DTYPES:
            raise ValueError(f"--dtype must be among {sorted(DTYPES)}, got {d!r}")
    if sizes:
        cases = parse_sizes(sizes, dtypes or ["float32"])
    else:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        cases = PRESETS[preset]
        if dtypes:
            cases = [Case(c.kind, c.m, c.n, c.k, c.nnz, d) for c in cases for d in dtypes]
    if kind != "all":
        cases = [c for c in cases if c.kind == kind]
    seen, out = set(), []
    for c in cases:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def make_inputs(case: Case, device: str, seed: int = 0) -> dict:
    """Seeded inputs for ``case`` on ``device``.

    Returns
    -------
    dict
        dense: ``A`` (m, n), ``W`` (m, k), ``H`` (k, n).
        sparse: ``rows``, ``cols`` (nnz,) int64 in uniform random order (duplicates
        possible), ``vals`` (nnz,), ``W`` (m, k), ``H`` (k, n) as the ``.t()`` view of
        a contiguous (n, k) tensor, the layout the fused op prefers.
    """
    gen = torch.Generator().manual_seed(seed)
    dtype = DTYPES[case.dtype]

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=dtype).to(device)

    W = rand(case.m, case.k)
    if case.kind == "dense":
        return {"A": rand(case.m, case.n), "W": W, "H": rand(case.k, case.n)}
    rows = torch.randint(0, case.m, (case.nnz,), generator=gen).to(device)
    cols = torch.randint(0, case.n, (case.nnz,), generator=gen).to(device)
    return {"rows": rows, "cols": cols, "vals": rand(case.nnz), "W": W,
            "H": rand(case.n, case.k).t()}
