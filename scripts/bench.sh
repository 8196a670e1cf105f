#!/usr/bin/env bash
# The README's main command: sets up the virtual environment $VENV (default .venv) with the test and
# bench extras (scripts/setup.sh), then runs the benchmark runner. With a CUDA device: the benchmarks
# (markdown table on stdout; JSON, CSV, PNG under benchmarks/results/<card>/). Without one: the CPU
# smoke run, which checks the kernels through the Triton interpreter and makes no speed claim.
# Extra arguments go to the runner (`bash scripts/bench.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=test,bench VENV="$VENV" bash scripts/setup.sh
exec "$VENV/bin/python" -m benchmarks.run "$@"
