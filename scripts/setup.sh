#!/usr/bin/env bash
# Creates (or reuses) the virtual environment $VENV (default .venv) and installs the project with the
# extras named in $EXTRAS (default "test,dev"). torch 2.14.1 and torchvision 0.29.1 are installed
# first and explicitly: a matching pair (torchvision from the registry fails to import beside other
# torch builds), taken from a local wheel cache where pip has one.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-test,dev}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
