#!/usr/bin/env bash
# Compile every CUDA kernel file for sm_90 with warnings as errors and report
# register spills. The kernels include no torch headers, so this runs anywhere
# nvcc does, GPU or not. No -Icsrc: csrc/math.h would shadow the system <math.h>
# (the kernels include it as "../math.h").
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
status=0
for cu in csrc/cuda/*.cu; do
  log="$out/$(basename "$cu").log"
  if ! nvcc -c "$cu" -o "$out/$(basename "$cu").o" -std=c++17 -O3 \
      -gencode=arch=compute_90,code=sm_90 \
      -Werror all-warnings -Xcompiler -Wall,-Werror -Xptxas -v,-warn-spills \
      >"$log" 2>&1; then
    cat "$log"; echo "nvcc check: $cu FAILED"; status=1; continue
  fi
  spills=$(grep -E "bytes spill (stores|loads)" "$log" | grep -vE " 0 bytes spill stores, 0 bytes spill loads" || true)
  if [ -n "$spills" ]; then
    echo "nvcc check: $cu compiles, with register spills:"; echo "$spills"
  else
    echo "nvcc check: $cu OK (sm_90, -Werror, no spills)"
  fi
done
exit $status
