#!/usr/bin/env bash
# Compile every CUDA kernel file for sm_90 with warnings as errors; a register
# spill fails the check too (the hot loops are sized to fit in registers, and a
# spill there costs local-memory traffic on every entry). The kernels include no
# torch headers, so this runs anywhere nvcc does, GPU or not. -Icsrc proves that
# no header of ours shadows a system header. Files compile in parallel, one per core.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

check_one() {  # cu_file out_dir: writes out_dir/<name>.result (first line: OK or FAILED)
  local cu=$1 dir=$2 name log
  name=$(basename "$cu")
  log="$dir/$name.log"
  if ! nvcc -c "$cu" -o "$dir/$name.o" -std=c++17 -O3 -Icsrc \
      -gencode=arch=compute_90,code=sm_90 \
      -Werror all-warnings -Xcompiler -Wall,-Werror -Xptxas -v,-warn-spills \
      >"$log" 2>&1; then
    { echo FAILED; cat "$log"; echo "nvcc check: $cu FAILED"; } > "$dir/$name.result"
    return 0
  fi
  local spills
  spills=$(grep -E "bytes spill (stores|loads)" "$log" | grep -vE " 0 bytes spill stores, 0 bytes spill loads" || true)
  if [ -n "$spills" ]; then
    { echo FAILED; echo "nvcc check: $cu FAILED: register spills:"; echo "$spills"; } > "$dir/$name.result"
  else
    { echo OK; echo "nvcc check: $cu OK (sm_90, -Werror, no spills)"; } > "$dir/$name.result"
  fi
}
export -f check_one

printf '%s\n' csrc/cuda/*.cu | xargs -P "$(nproc)" -I{} bash -c 'check_one "$1" "$2"' _ {} "$out"
status=0
for cu in csrc/cuda/*.cu; do
  result="$out/$(basename "$cu").result"
  tail -n +2 "$result"
  [ "$(head -n 1 "$result")" = OK ] || status=1
done
exit $status
