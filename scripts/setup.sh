#!/usr/bin/env bash
# Creates (or reuses) the virtual environment $VENV (default .venv) and installs the project with the
# extras named in $EXTRAS (default "test,dev"). torch 2.14.1 and torchvision 0.29.1 are installed
# first and explicitly: a matching pair (torchvision from the registry fails to import beside other
# torch builds), taken from a local wheel cache where pip has one. Says before each step what it
# installs, how big and about how long, and after it how long it took; pip shows its own progress.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-test,dev}
PY=${PYTHON:-python3}
PIP=("$VENV/bin/python" -m pip install --progress-bar on)
T0=$SECONDS

step() { printf '\n[setup %4ds] %s\n' "$((SECONDS - T0))" "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtual environment $VENV (a few seconds)"
  "$PY" -m venv "$VENV"
fi
step "upgrading pip in $VENV (a few seconds)"
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  step "installing torch 2.14.1 + torchvision 0.29.1. The registry's torch is the CUDA build (it runs on a CPU
  too): about 2.9 GB of wheels (torch 0.55 GB, NVIDIA libraries 2.3 GB), 5.5 GB once installed with
  triton. About 2-3 minutes from a local wheel cache, plus the download time otherwise. After the
  downloads pip unpacks for a minute or two without printing anything."
  "${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1"
else
  step "torch and torchvision already installed in $VENV: $("$VENV/bin/python" -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__)')"
fi
step "installing mixer-kernels (editable) with the extras [$EXTRAS]: for test,dev that is pytest, hypothesis,
  timm and ruff, about 100 MB, under a minute"
"${PIP[@]}" -e ".[$EXTRAS]"
step "done: $VENV holds $(du -sh "$VENV" 2>/dev/null | cut -f1) (run the tests: $VENV/bin/python -m pytest -m 'not slow')"
