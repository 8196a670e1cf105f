"""The calibration data set (benchmarks/calibration/): integrity without compiling, and one subprocess that
compiles and models three anchors (TRITON_INTERPRET unset there)."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from benchmarks.calibration import rebuild
from benchmarks.calibration.published import ANCHORS, GROUPS, Anchor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_enough_anchors_each_with_a_source_on_an_h100():
    assert len(ANCHORS) >= 30
    assert len({a.id for a in ANCHORS}) == len(ANCHORS)
    for a in ANCHORS:
        assert isinstance(a, Anchor) and a.group in GROUPS
        assert a.source.get("url") or (a.source.get("repo") and a.source.get("path") and a.source.get("commit"))
        assert "H100" in a.card, a.id
        assert a.value > 0 and a.unit in ("ms", "us", "TFLOP/s") and a.statistic
        assert a.unit != "TFLOP/s" or a.flops > 0
        assert math.isfinite(a.measured_s()) and a.measured_s() > 0


def test_every_group_has_both_parts():
    for g in GROUPS:
        parts = {a.part for a in ANCHORS if a.group == g}
        assert parts == {"fit", "held_out"}, g


def test_rebuild_functions_exist_and_cheap_specs_are_well_formed():
    for a in ANCHORS:
        fn = getattr(rebuild, a.rebuild)
        if a.fidelity in ("cublas", "aten", "reimplemented"):
            _check(fn(a))


def _check(spec):
    if isinstance(spec, list):
        assert spec
        for s in spec:
            _check(s)
        return
    kind = spec[0]
    if kind == "gemm":
        _, M, N, K, dtype, batch, tile = spec
        assert min(M, N, K, batch) >= 1 and isinstance(dtype, torch.dtype)
        assert tile is None or (len(tile) == 2 and min(tile) >= 64)
    elif kind == "elementwise":
        assert spec[1] > 0 and (len(spec) == 2 or spec[2] in ("elementwise", "layer_norm"))
    elif kind == "sequence":
        for s in spec[1]:
            _check(s)
    elif kind == "sync":
        assert spec == ("sync",)
    elif kind == "tuned":
        _, tuned_at, run_at = spec
        assert tuned_at and len(tuned_at) == len(run_at)
        for s in tuned_at + run_at:
            _check(s)
    else:
        assert kind == "triton"
        _, fn, args, grid, warps, stages, work, options = spec
        assert hasattr(fn, "arg_names") and set(args) == set(fn.arg_names)
        assert (grid if isinstance(grid, int) else math.prod(grid)) >= 1 and warps in (1, 2, 4, 8, 16, 32)
        assert work["bytes"] > 0 and work["trips"] >= 1 and work["outer"] >= 1 and isinstance(options, dict)


_SCRIPT = """
import json, math
from benchmarks.calibration import calibrate
from benchmarks.calibration.published import ANCHORS
ids = {ids!r}
rows = calibrate.evaluate("H100", [a for a in ANCHORS if a.id in ids])
print(json.dumps([dict(id=r["id"], t=r["modelled_s"], error=r["error"]) for r in rows]))
"""


def test_three_anchors_compile_and_model():
    ids = ["triton09-fp8-matmul_kernel_persistent-8192x8192x4096", "cublas-fp16-2048x4096x4096"]
    try:
        import liger_kernel  # noqa: F401
        ids.append("liger-relu_squared-liger-N4096")
    except ImportError:
        ids.append("triton09-fp8-matmul_kernel-8192x8192x4096")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = ROOT
    r = subprocess.run([sys.executable, "-c", _SCRIPT.format(ids=ids)], capture_output=True, text=True, env=env,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(rows) == 3
    for row in rows:
        assert row["error"] is None, row
        assert math.isfinite(row["t"]) and row["t"] > 0


@pytest.mark.parametrize("name", ["liger_layer_norm", "liger_relu_squared", "liger_rms_norm", "liger_fused_moe_fwd",
                                  "liger_tvd_fwd"])
def test_liger_specs_when_the_package_is_installed(name):
    pytest.importorskip("liger_kernel")
    for a in ANCHORS:
        if a.rebuild == name:
            _check(getattr(rebuild, name)(a))


def test_new_hazard_groups_have_anchors():
    """gemm_epilogue (a GEMM with a heavy fused epilogue) and an exposed-load loop (Liger TVD) are anchored."""
    assert {a.part for a in ANCHORS if a.group == "gemm_epilogue"} == {"fit", "held_out"}
    assert any(a.rebuild == "liger_tvd_fwd" and a.group == "memory_triton" for a in ANCHORS)


def test_expected_moe_tiles():
    # every token routes to every expert when K == E; otherwise between the uniform count and one more per expert
    assert rebuild._expected_m_tiles(8192, 8, 8) == 8 * 128
    t = rebuild._expected_m_tiles(8192, 128, 8)
    assert 128 * 8 <= t <= 128 * 9
