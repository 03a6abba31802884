#!/usr/bin/env bash
# Installs what mfext needs, then mfext itself, built against the installed torch.
# torch is pinned here and nowhere else, and installed only when it is missing, so a
# machine without a GPU never pulls a multi-GB CUDA build of torch.
set -euo pipefail
TORCH_PIN="torch==2.13.0"
PY="${PYTHON:-python3}"
cd "$(dirname "$0")/.."

# For .ci/selftest.sh: a set-up that fails on purpose must fail the CI run.
if [ "${MFEXT_CI_FAIL_SETUP:-0}" = 1 ]; then
  echo "setup: failing on purpose (MFEXT_CI_FAIL_SETUP=1)" >&2
  exit 1
fi

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: torch is missing; installing $TORCH_PIN"
  "$PY" -m pip install -q "$TORCH_PIN"
fi
"$PY" -m pip install -q setuptools wheel pybind11 ninja numpy
# --no-build-isolation: build against the torch above, not a fresh one in an isolated env.
"$PY" -m pip install -q --no-build-isolation -e ".[test,bench]"
"$PY" -c "import mfext, torch; print('setup: mfext', mfext.__version__, 'torch', torch.__version__, mfext.build_info())"
