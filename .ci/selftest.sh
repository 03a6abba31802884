#!/usr/bin/env bash
# Self-test of .ci/run: a stage that fails must fail the whole run. The set-up is made
# to exit 1 (MFEXT_CI_FAIL_SETUP=1); .ci/run must then exit non-zero, name the failed
# stage, and never reach pytest or the later stages. Takes a few seconds (one venv).
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
MFEXT_CI_FAIL_SETUP=1 bash .ci/run >"$log" 2>&1
rc=$?
fail() { cat "$log"; echo "ci selftest: FAILED: $1"; exit 1; }
[ "$rc" -ne 0 ] || fail ".ci/run exited 0 although its set-up failed"
grep -q "setup: failing on purpose" "$log" || fail "the set-up did not run"
grep -q "== stage tests FAILED" "$log" || fail "the failed stage was not named"
grep -q "== stage main-job" "$log" && fail "a stage ran after the failed one"
grep -qE "[0-9]+ (passed|failed)" "$log" && fail "pytest ran although the set-up failed"
grep -q "== CI stage times" "$log" || fail "no stage times were printed"
echo "ci selftest: OK (.ci/run exited $rc when its set-up failed)"
