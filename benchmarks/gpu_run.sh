#!/usr/bin/env bash
# One command for a session on a GPU machine: build mfext with its CUDA
# kernels, run the CUDA tests, run compute-sanitizer (memcheck, racecheck) over
# a small set of kernel calls, and run the GPU benchmarks (the ops, then the
# collaborative-filtering epochs). Everything it learns (device, versions,
# commands, pytest summary, sanitizer results, benchmark JSON and tables) goes to
# benchmarks/results/gpu/ and, when $OUT is set, to $OUT (summary.md, the JSON
# files, and every log in logs.tar.gz: a few files, as the device tool returns).
#
#   bash benchmarks/gpu_run.sh [--quick] [STAGE ...]   STAGE: build test sanitize bench cfbench
#
# With no STAGE it runs all five (about 8-10 minutes on an H100 with --quick;
# split the stages over several calls where one call is limited to 10 minutes).
# A stage's failure is recorded and the next stage still runs; the exit status
# is non-zero if any stage failed. Works offline: the build is
# `pip install --no-build-isolation --no-deps -e .` against the installed torch.
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=0
STAGES=()
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    build|test|sanitize|bench|cfbench) STAGES+=("$arg") ;;
    *) echo "gpu_run: unknown argument $arg" >&2; exit 2 ;;
  esac
done
[ ${#STAGES[@]} -eq 0 ] && STAGES=(build test sanitize bench cfbench)
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
  local t0=$SECONDS
  echo "== $name: $*" | tee -a "$SUMMARY"
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
      run_stage test 420 "$PY" -m pytest -q -m "$marker" -p no:cacheprovider tests \
        --junitxml="$RES/pytest_cuda.xml"
      note "pytest ($marker): $(grep -E '^[0-9]+ (passed|failed)|passed|failed' "$RES/test.log" | tail -n 1)"
      ;;
    sanitize)
      CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
      if [ -z "$CS" ]; then
        note "sanitize: compute-sanitizer not found; skipped"
        continue
      fi
      for tool in memcheck racecheck; do
        run_stage "sanitize_$tool" 300 "$CS" --tool "$tool" --error-exitcode 99 --print-limit 20 \
          "$PY" benchmarks/cuda_smoke.py
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
