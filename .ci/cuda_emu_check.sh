#!/usr/bin/env bash
# Runs the CUDA kernels on the CPU under csrc/cuda/emu/emu.h (every CUDA thread
# a std::thread, WMMA emulated) with AddressSanitizer and UBSan, against a
# float64 reference: their index math, bounds, barriers and error paths get
# tested on machines without a GPU. The tests live in tests/cuda/emu/ (one
# program per op, <op>_test.cpp) and include the kernels' headers as
# "cuda/<op>.h" (-Icsrc). CI runs the full set; --quick is a shorter run for
# development.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
CXX=${CXX:-g++}
flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined
       -fno-sanitize-recover=undefined -pthread -DMFEXT_CUDA_EMU -Wall -Werror
       -Wno-unknown-pragmas -Wno-unused-function -Icsrc)
objs=()
for src in csrc/cuda/*.cu; do
  obj="$out/$(basename "$src").o"
  "$CXX" "${flags[@]}" -x c++ -c "$src" -o "$obj" &
  objs+=("$obj")
done
# Each tests/cuda/emu/*_test.cpp is its own program over every kernel object.
tests=(tests/cuda/emu/*_test.cpp)
for src in "${tests[@]}"; do
  "$CXX" "${flags[@]}" -c "$src" -o "$out/$(basename "$src").o" &
done
wait
status=0
for src in "${tests[@]}"; do
  name=$(basename "$src" .cpp)
  "$CXX" "${flags[@]}" "${objs[@]}" "$out/$name.cpp.o" -o "$out/$name"
  echo "== $name"
  ASAN_OPTIONS=detect_leaks=0 "$out/$name" "$@" || status=1
done
exit $status
