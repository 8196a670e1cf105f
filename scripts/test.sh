#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the test suite. Without a GPU the Triton kernels run
# under the interpreter on CPU tensors; GPU-only tests are skipped with a reason. Extra arguments go
# to pytest (e.g. `bash scripts/test.sh -m gpu` on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
bash scripts/setup.sh
"$VENV/bin/python" -m pytest "$@"
