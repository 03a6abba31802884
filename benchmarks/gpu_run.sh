#!/usr/bin/env bash
# One command for a GPU machine: build mfext with its CUDA
# kernels, run the CUDA tests, run the GPU benchmarks (the ops, then the
# collaborative-filtering epochs) and compute-sanitizer (memcheck, racecheck)
# over a small set of kernel calls. Everything it learns (device, versions,
# commands, pytest summary, sanitizer results, benchmark JSON and tables) goes to
# benchmarks/results/gpu/ and, when $OUT is set, to $OUT (summary.md, the JSON
# files, and every log in logs.tar.gz: a few files, easy to copy back).
#
#   bash benchmarks/gpu_run.sh [--quick] [--deadline SECONDS] [STAGE ...]
#   STAGE: build test bench cfbench sanitize (all five, in this order, by default)
#
# --quick: the tests without the slow ones and the benchmarks at smaller sizes
# (the issues' targets are stated at the full sizes). --deadline: the whole run
# ends within SECONDS; each stage gets what is left (less a margin), a stage
# with under 30 s left is skipped, and every stage's results are published as
# soon as it ends, so a device call with a hard limit always returns what was
# done. A stage's failure is recorded and the next stage still runs; the exit
# status is non-zero if any stage failed. Works offline: the build is
# `pip install --no-build-isolation --no-deps -e .` against the installed torch.
# MovieLens: MFEXT_DATA, else ./.gpudata when it exists (a git-ignored copy of
# ../shared/data, for a GPU machine that cannot reach the data folder).
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=0
DEADLINE=0
STAGES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --deadline) DEADLINE=${2:?--deadline needs SECONDS}; shift ;;
    build|test|sanitize|bench|cfbench) STAGES+=("$1") ;;
    *) echo "gpu_run: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ ${#STAGES[@]} -eq 0 ] && STAGES=(build test bench cfbench sanitize)
if [ -z "${MFEXT_DATA:-}" ] && [ -d .gpudata ]; then
  export MFEXT_DATA="$PWD/.gpudata"
fi
PY=${PYTHON:-python3}
RES=benchmarks/results/gpu
mkdir -p "$RES"
SUMMARY="$RES/summary.md"
FAILED=0
note() { echo "$*" | tee -a "$SUMMARY"; }
publish() {
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT"
  cp "$RES"/summary.md "$RES"/*.json "$OUT"/ 2>/dev/null
  tar -czf "$OUT/logs.tar.gz" -C "$RES" --exclude='*.json' . 2>/dev/null
}
run_stage() {  # name timeout_s command...
  local name=$1 limit=$2; shift 2
  if [ "$DEADLINE" -gt 0 ]; then
    local left=$((DEADLINE - SECONDS - 15))  # 15 s to publish and exit
    if [ $left -lt 30 ]; then
      note "$name: skipped, $((DEADLINE - SECONDS)) s left of the --deadline"
      FAILED=1
      return 1
    fi
    [ $left -lt "$limit" ] && limit=$left
  fi
  local t0=$SECONDS
  echo "== $name (limit ${limit} s): $*" | tee -a "$SUMMARY"
  timeout "$limit" "$@" > "$RES/$name.log" 2>&1
  local rc=$?
  note "$name: exit $rc after $((SECONDS - t0)) s (log: $RES/$name.log)"
  tail -n 15 "$RES/$name.log"
  [ $rc -ne 0 ] && FAILED=1
  publish
  return $rc
}

{
  echo "# mfext GPU run, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "command: bash benchmarks/gpu_run.sh $*"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | wc -l) changed files"
  echo "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null || echo 'not available')"
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -n 2 | head -n 1 || echo 'not found')"
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0], '| torch', torch.__version__, '| torch CUDA', torch.version.cuda, '| GPU', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
  echo
} > "$SUMMARY" 2>&1
cat "$SUMMARY"
nvidia-smi > "$RES/nvidia-smi.txt" 2>&1 || true

for stage in "${STAGES[@]}"; do
  case "$stage" in
    build)
      # Only the device's own architecture unless told otherwise: half the compile time.
      if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
        TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null || echo "9.0")
        export TORCH_CUDA_ARCH_LIST
      fi
      export MAX_JOBS=${MAX_JOBS:-$(nproc)}
      note "build: TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
      run_stage build 480 env FORCE_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps -v -e .
      "$PY" -c "import mfext; print('build_info:', mfext.build_info())" 2>&1 | tee -a "$SUMMARY"
      ;;
    test)
      marker="cuda"
      [ $QUICK -eq 1 ] && marker="cuda and not slow"
      # pytest-xdist, where installed: the tests are small, the machine has 16 cores.
      parallel=()
      "$PY" -c "import xdist" 2>/dev/null && parallel=(-n "${MFEXT_TEST_WORKERS:-8}")
      note "test: ${parallel[*]:-one process}, MFEXT_DATA=${MFEXT_DATA:-../shared/data}"
      run_stage test 420 "$PY" -m pytest -q -m "$marker" -p no:cacheprovider "${parallel[@]}" tests \
        --junitxml="$RES/pytest_cuda.xml"
      note "pytest ($marker): $(grep -E '[0-9]+ (passed|failed|skipped|errors?)' "$RES/test.log" | tail -n 1)"
      ;;
    sanitize)
      CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
      if [ -z "$CS" ]; then
        note "sanitize: compute-sanitizer not found; skipped"
        continue
      fi
      # Instrument mfext's kernels only (all live in namespace mfext): torch's own
      # kernels (random numbers, copies) run at full speed and are not ours to check.
      only_ours=()
      "$CS" --help 2>/dev/null | grep -q -- '--kernel-name ' && only_ours=(--kernel-name kns=mfext)
      note "sanitize: ${only_ours[*]:-every kernel instrumented (no --kernel-name in this compute-sanitizer)}"
      for tool in memcheck racecheck; do
        run_stage "sanitize_$tool" 300 "$CS" --tool "$tool" --error-exitcode 99 --print-limit 20 \
          "${only_ours[@]}" "$PY" benchmarks/cuda_smoke.py
        note "sanitize_$tool: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|cuda_smoke:' "$RES/sanitize_$tool.log" | tr '\n' ' ')"
      done
      ;;
    bench)
      args=(--out "$RES/cuda_ops$([ $QUICK -eq 1 ] && echo _quick).json")
      [ $QUICK -eq 1 ] && args+=(--quick)
      run_stage bench 420 "$PY" benchmarks/bench_cuda.py "${args[@]}"
      sed -n '/^device:/,$p' "$RES/bench.log" >> "$SUMMARY"
      ;;
    cfbench)
      args=(--out "$RES/cf_cuda$([ $QUICK -eq 1 ] && echo _quick).json")
      [ $QUICK -eq 1 ] && args+=(--quick)
      run_stage cfbench 420 "$PY" benchmarks/bench_cf_cuda.py "${args[@]}"
      sed -n '/^device:/,$p' "$RES/cfbench.log" >> "$SUMMARY"
      ;;
  esac
done
note ""
note "gpu_run: $([ $FAILED -eq 0 ] && echo 'all stages passed' || echo 'SOME STAGES FAILED')"
publish
exit $FAILED
