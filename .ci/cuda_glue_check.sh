#!/usr/bin/env bash
# Syntax-checks the CUDA glue (csrc/cuda/*_glue.cpp, and csrc/mfext.cpp as the
# CUDA build compiles it) against the installed torch's headers and the CUDA
# toolkit's runtime headers. A CPU-only torch ships c10/cuda and the ATen
# headers the glue uses, so this runs without a GPU or a CUDA torch; it cannot
# link (there is no libc10_cuda), so it checks that everything compiles only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# -isystem: warnings inside torch's and CUDA's headers are not ours to fix.
torch_inc=$("$PY" -c "from torch.utils.cpp_extension import include_paths; print(' '.join('-isystem ' + p for p in include_paths()))")
py_inc=$("$PY" -c "import sysconfig; print('-isystem ' + sysconfig.get_paths()['include'])")
nvcc_bin=$(command -v nvcc)
cuda_inc=""
for d in "${CUDA_HOME:-}" /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "$nvcc_bin")")")"; do
  if [ -n "$d" ] && [ -f "$d/include/cuda_runtime_api.h" ]; then cuda_inc="-isystem $d/include"; break; fi
done
if [ -z "$cuda_inc" ]; then
  # nvcc may be a wrapper script: ask it where its headers are.
  cuda_inc="-isystem $(dirname "$(nvcc --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/.*INCLUDES="-I\([^"]*\)".*/\1/p' | head -1)")/include"
fi
# A CPU torch lacks one generated header of c10/cuda; supply what CUDA builds generate.
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
mkdir -p "$shim/c10/cuda/impl"
if ! "$PY" -c "import torch, os, sys; sys.exit(not os.path.exists(os.path.join(os.path.dirname(torch.__file__), 'include/c10/cuda/impl/cuda_cmake_macros.h')))"; then
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$shim/c10/cuda/impl/cuda_cmake_macros.h"
fi
pids=()
srcs=(csrc/cuda/*_glue.cpp csrc/mfext.cpp)
for src in "${srcs[@]}"; do
  # shellcheck disable=SC2086
  g++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror -DMFEXT_WITH_CUDA -DTORCH_EXTENSION_NAME=_C \
      -DTORCH_API_INCLUDE_EXTENSION_H -Icsrc $torch_inc -isystem "$shim" $py_inc $cuda_inc "$src" \
      > "$shim/$(basename "$src").log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!srcs[@]}"; do
  if wait "${pids[$i]}"; then
    echo "glue check: ${srcs[$i]} OK"
  else
    cat "$shim/$(basename "${srcs[$i]}").log"; echo "glue check: ${srcs[$i]} FAILED"; status=1
  fi
done
exit $status
