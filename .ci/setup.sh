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
# Rebuild only when needed: mfext already installed (editable) from this tree, built
# against the running torch, no build switch set, and no source or build file newer
# than the compiled library. Make-style, so the second README command in a row does
# not recompile the same sources.
up_to_date() {
  [ -z "${USE_CUDA:-}${FORCE_CUDA:-}${MFEXT_SANITIZE:-}${MFEXT_PORTABLE:-}${TORCH_CUDA_ARCH_LIST:-}" ] || return 1
  "$PY" - <<'PYEOF' 2>/dev/null
import glob, os, sys
import mfext, mfext._C as lib
root = os.path.abspath(".")
if os.path.dirname(os.path.dirname(os.path.abspath(mfext.__file__))) != root:
    sys.exit(1)  # another copy of mfext is installed
info = mfext.build_info()
if info["torch_built"] != info["torch_running"].split("+")[0]:
    sys.exit(1)
built = os.path.getmtime(lib.__file__)
sources = glob.glob("csrc/**/*", recursive=True) + ["setup.py", "pyproject.toml"]
sys.exit(any(os.path.isfile(f) and os.path.getmtime(f) > built for f in sources))
PYEOF
}
if up_to_date; then
  echo "setup: mfext is installed from this tree and up to date; not rebuilding"
else
  "$PY" -m pip install -q setuptools wheel pybind11 ninja numpy
  # --no-build-isolation: build against the torch above, not a fresh one in an isolated env.
  "$PY" -m pip install -q --no-build-isolation -e ".[test,bench]"
fi
"$PY" -c "import mfext, torch; print('setup: mfext', mfext.__version__, 'torch', torch.__version__, mfext.build_info())"
