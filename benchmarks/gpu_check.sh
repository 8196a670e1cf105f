#!/usr/bin/env bash
# One run on a GPU machine with torch and triton preinstalled and no network (the project's H100 has
# torch 2.11 + triton 3.6): the GPU tests (240 s at most), the sm_90 compile report (only with
# COMPILE_CHECK=1), then the benchmarks in the time left, in under 8 minutes including compilation and
# autotuning. Runs from the working tree (PYTHONPATH=.).
#
#   bash benchmarks/gpu_check.sh            # results to $OUT when set, else benchmarks/results/<card>/
#   MAX_AUTOTUNE=1 bash benchmarks/gpu_check.sh   # also torch.compile max-autotune (needs more time)
#
# Stages never stop the script: each one's failure is recorded and the next runs; the exit status is
# non-zero if any stage failed. Files (at most 8, flat): pytest_gpu.log, [compile_check.log,] bench.log,
# results.{json,csv,md,png}, summary.md. The short summary table is printed last.
# Benchmarks run here (a subset of the full sweep, to fit the time): B/16 token mixing, channel mixing
# and the whole block at batch 256 (fwd, fwd+bwd, inference), the ResMLP-24, gMLP-S/16, gMixer-24 blocks (same
# modes, last: cut first when time runs short) and timm Mixer-B/16 (a mixed-precision
# training step with AdamW at batch 256, inference at batch 1024: issue 5's targets), bf16, providers
# mixer-kernels, eager, torch.compile default, with the device time per kernel (--kernels). Cases that
# do not fit the time budget are listed as skipped.
# Without a CUDA device it is a dry run of the same stages: GPU tests skip, and the benchmark stage is
# the CPU smoke run (correctness only, no speed claims).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
PY=${PYTHON:-$(command -v python || command -v python3)}
TOTAL_S=${GPU_CHECK_TOTAL_S:-450}        # the whole script; the machine allows 8 minutes
PYTEST_S=${GPU_CHECK_PYTEST_S:-240}
COMPILE_S=${GPU_CHECK_COMPILE_S:-60}

HAS_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ -n "${OUT:-}" ]; then
  DEST=$OUT
else
  SLUG=$("$PY" -c "import re, torch; n = torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu-smoke'; \
print(re.sub(r'[^a-z0-9]+', '-', n.lower()).strip('-'))" 2>/dev/null || echo unknown)
  DEST=benchmarks/results/$SLUG
fi
mkdir -p "$DEST"
STATUS=()
FAILED=0
record() {  # record <stage> <exit status> [detail]
  if [ "$2" -eq 0 ]; then STATUS+=("| $1 | ok | ${3:-} |"); else STATUS+=("| $1 | FAILED (exit $2) | ${3:-} |"); FAILED=1; fi
}
echo "gpu_check: $("$PY" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, \
"cuda", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")' 2>&1); results to $DEST"
[ "$HAS_CUDA" = 1 ] || echo "gpu_check: no CUDA device: a dry run (GPU tests skip; CPU smoke run, no speed claims)"

# 1. The GPU tests (all of `pytest -m gpu`), a per-test timeout where pytest-timeout is installed and
#    a stack dump of any test running over 90 s either way. The ops' own accuracy tests at real sizes
#    (every shape and dtype) run first, then tests/test_gpu.py (modules, CUDA graphs, torch.compile),
#    then the gpu tests of the other files, so a slow one there cannot starve the broad ones of time.
TIMEOUT_ARGS=()
"$PY" -c "import pytest_timeout" 2>/dev/null && TIMEOUT_ARGS=(--timeout 120)
FIRST=(tests/test_token_mixing.py tests/test_channel_mixing.py tests/test_layernorm_stats.py tests/test_gpu.py)
TEST_FILES=("${FIRST[@]}")
for f in tests/test_*.py; do [[ " ${FIRST[*]} " == *" $f "* ]] || TEST_FILES+=("$f"); done
timeout -k 10 -s INT "$PYTEST_S" "$PY" -m pytest -m gpu -q -p no:cacheprovider -o faulthandler_timeout=90 \
  "${TIMEOUT_ARGS[@]}" "${TEST_FILES[@]}" 2>&1 | tee "$DEST/pytest_gpu.log" | tail -n 40
rc=${PIPESTATUS[0]}
[ "$rc" -eq 124 ] && echo "pytest: stopped after ${PYTEST_S} s" | tee -a "$DEST/pytest_gpu.log"
record "pytest -m gpu" "$rc" "$(grep -E '(passed|failed|error|skipped|no tests ran)' "$DEST/pytest_gpu.log" \
  | grep -E ' in [0-9.]+s' | tail -n 1 | tr -d '=|' | sed 's/^ *//; s/ *$//')"

# 2. Registers, spills and shared memory of every registered kernel, compiled for sm_90.
#    Off by default (COMPILE_CHECK=1 turns it on): .ci/run already compiles every kernel for sm_90 with
#    triton 3.6, this machine's version, on every submission, and the GPU minutes go to the tests.
if [ "${COMPILE_CHECK:-0}" = 1 ]; then
  timeout -k 5 "$COMPILE_S" "$PY" -m mixer_kernels.ops._compile_check --arch 90 > "$DEST/compile_check.log" 2>&1
  rc=$?
  tail -n 30 "$DEST/compile_check.log"
  record "compile check (sm_90)" "$rc"
fi

# 3. The benchmarks, in the time left: the runner starts no case after its budget and writes its files
#    after every case, so a stop by `timeout` keeps what was measured.
LEFT=$((TOTAL_S - SECONDS))
if [ "$HAS_CUDA" = 1 ]; then
  BENCH_ARGS=(--families anchors,token,channel,model,block,resmlp,gmlp,gmixer --shapes B/16 --batches 256 --modes fwd,fwd+bwd,infer
              --models B/16 --model-sources timm --model-batches 256 --model-modes train,infer --model-infer-batches 1024
              --providers mixer-kernels,eager,compile --kernels --budget-s $((LEFT > 90 ? LEFT - 60 : 30)))
  [ "${MAX_AUTOTUNE:-0}" = 1 ] && BENCH_ARGS+=(--max-autotune)
else
  BENCH_ARGS=(--smoke)
fi
if [ "$LEFT" -gt 30 ]; then
  # bench.log gets everything (progress on stderr, the full markdown table on stdout); the console
  # gets the progress lines only.
  timeout -k 10 -s INT "$LEFT" "$PY" -m benchmarks.run "${BENCH_ARGS[@]}" --out "$DEST" 2>&1 \
    | tee "$DEST/bench.log" | grep --line-buffered -v '^|'
  rc=${PIPESTATUS[0]}
else
  echo "benchmarks: no time left (${LEFT} s)" | tee "$DEST/bench.log"
  rc=1
fi
record "benchmarks" "$rc"

# The short table, last.
{
  echo
  echo "| gpu_check stage | result | detail |"
  echo "|---|---|---|"
  printf '%s\n' "${STATUS[@]}"
  echo
  echo "total ${SECONDS} s"
} >> "$DEST/summary.md"
echo
echo "==== gpu_check summary ($DEST) ===="
cat "$DEST/summary.md"
exit "$FAILED"
