"""Build script for mfext: a CPU extension always, CUDA kernels when possible.

Environment switches
--------------------
USE_CUDA=0        never build the CUDA kernels.
FORCE_CUDA=1      build them or fail at once with the reason.
TORCH_CUDA_ARCH_LIST  honoured (read by torch's build helpers); the default here is
                  "8.0;9.0+PTX": A100, H100 (sm_90) and PTX for newer GPUs. The fused
                  dense kernel needs 8.0 or newer; older GPUs use the tiled path.
MFEXT_PORTABLE=1  do not tune the CPU code for the build machine (-march=native).
MFEXT_SANITIZE=1  build with -fsanitize=address,undefined (see .ci/sanitize).
"""
from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import (
        CUDA_HOME,
        BuildExtension,
        CppExtension,
        CUDAExtension,
    )
except ImportError as exc:  # pragma: no cover - build-time guard
    sys.exit(
        "mfext builds against the installed torch: install torch first, then run "
        "`pip install --no-build-isolation -e .` (error: %s)" % exc
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def _flag(name: str) -> str:
    return os.environ.get(name, "").strip()


def _cuda_decision() -> tuple[bool, str]:
    """Return (build_cuda, reason)."""
    nvcc = shutil.which("nvcc") or (
        os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else None
    )
    have_nvcc = bool(nvcc and os.path.exists(nvcc))
    torch_cuda = torch.version.cuda is not None
    if _flag("USE_CUDA") == "0":
        if _flag("FORCE_CUDA") == "1":
            sys.exit("mfext: USE_CUDA=0 and FORCE_CUDA=1 contradict each other")
        return False, "USE_CUDA=0"
    if _flag("FORCE_CUDA") == "1":
        if not torch_cuda:
            sys.exit(
                "mfext: FORCE_CUDA=1 but the installed torch %s has no CUDA "
                "(torch.version.cuda is None); install a CUDA build of torch"
                % torch.__version__
            )
        if not have_nvcc:
            sys.exit("mfext: FORCE_CUDA=1 but nvcc was not found (set CUDA_HOME)")
        return True, "FORCE_CUDA=1"
    if torch_cuda and have_nvcc:
        return True, "torch has CUDA %s and nvcc is at %s" % (torch.version.cuda, nvcc)
    if not torch_cuda:
        return False, "torch %s has no CUDA" % torch.__version__
    return False, "nvcc not found"


def _extension():
    build_cuda, reason = _cuda_decision()
    # csrc/*.cpp: the schemas and the device-independent argument checks.
    shared = sorted(set(glob.glob("csrc/*.cpp")) - {"csrc/no_cuda.cpp"})
    sources = shared + sorted(glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3", "-fopenmp", "-std=c++17"]
    ldflags = ["-fopenmp"]
    if _flag("MFEXT_PORTABLE") != "1":
        cxx.append("-march=native")
    if _flag("MFEXT_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
        cxx = [f for f in cxx if f != "-O3"] + ["-O1"] + san
        ldflags += san
    define_macros = []
    if build_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*_glue.cpp"))
        define_macros.append(("MFEXT_WITH_CUDA", "1"))
        # No --use_fast_math: the kernels need IEEE float semantics (no flush to
        # zero), and they use no transcendental functions that it would speed up.
        nvcc = ["-O3", "-lineinfo", "-std=c++17"]
        ext = CUDAExtension(
            "mfext._C",
            sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=ldflags,
        )
    else:
        sources += ["csrc/no_cuda.cpp"]
        ext = CppExtension(
            "mfext._C",
            sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx},
            extra_link_args=ldflags,
        )
    print(
        "mfext build configuration:\n"
        "  torch        %s (CUDA %s)\n"
        "  CUDA kernels %s (%s)\n"
        "  arch list    %s\n"
        "  cxx flags    %s\n"
        "  sources      %d files"
        % (
            torch.__version__,
            torch.version.cuda,
            "yes" if build_cuda else "no",
            reason,
            os.environ.get("TORCH_CUDA_ARCH_LIST", "-") if build_cuda else "-",
            " ".join(cxx),
            len(sources),
        ),
        flush=True,
    )
    return ext


setup(
    packages=find_packages(include=["mfext", "mfext.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
