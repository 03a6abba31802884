#!/usr/bin/env bash
# Builds the C++ extension with -fsanitize=address,undefined in a scratch copy of
# the tree and runs the op tests under it. Any sanitizer report fails the run.
#   bash .ci/sanitize.sh [pytest args...]   (default: the op, bad-input and fuzz tests)
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$work"/
cd "$work"
USE_CUDA=0 MFEXT_SANITIZE=1 MFEXT_PORTABLE=1 python3 setup.py -q build_ext --inplace >build.log 2>&1 \
  || { tail -50 build.log; echo "sanitize: build failed"; exit 1; }
asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(tests/ops/test_loss_parity.py tests/ops/test_loss_bad_inputs.py tests/ops/test_loss_fuzz.py tests/ops/test_thread_counts_and_limits.py -k "not beyond_32_bits")
log="$work/sanitizer.log"
set +e
# Python itself leaks by design: leak checking off; every other report aborts.
LD_PRELOAD="$asan $ubsan" \
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$log" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$log" \
MFEXT_FUZZ_EXAMPLES=60 PYTHONPATH="$work" python3 -m pytest -q -p no:cacheprovider "${tests[@]}"
status=$?
set -e
if compgen -G "$log*" >/dev/null; then
  cat "$log"*; echo "sanitize: sanitizer reports found"; exit 1
fi
[ $status -eq 0 ] || { echo "sanitize: tests failed ($status)"; exit $status; }
echo "sanitize: clean (address, undefined) over: ${tests[*]}"
