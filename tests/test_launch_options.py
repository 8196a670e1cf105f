"""FP contraction is pinned on every launch (ops/_tuning.LAUNCH_OPTIONS): Triton 3.10 turns it off by default,
which would change our numerics and speed unannounced. Checked three ways: every launch of every family's
forward and backward, recorded on meta tensors (benchmarks/launch_record.py), carries the option into the
config the speed model compiles; every launch site in the package's source passes it; and the compiled PTX
keeps its fused multiply-adds with the option (the interpreter never contracts: only compiled code shows
it), loses them without, and no compile prints Triton 3.9's FP-fusion warning."""
import ast
import os
import subprocess
import sys

import pytest
import torch

from mixer_kernels.ops._tuning import FP_FUSION, LAUNCH_OPTIONS

OPS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mixer_kernels", "ops")


def _recordings(dtype):
    from benchmarks import speed_model as sm
    out = {}
    plans = [(sm._fused, dict(S=196, C=64, DS=32, DC=128)),             # Mixer, token path S <= 256
             (sm._fused, dict(S=576, C=64, DS=32, DC=128)),             # Mixer, the large-S token path
             (sm._fused_resmlp, dict(S=196, C=64, DS=0, DC=128)),
             (sm._fused_gmlp, dict(S=196, C=64, DS=0, DC=128)),
             (sm._fused_gmixer, dict(S=196, C=64, DS=32, DC=128))]
    for fn, shape in plans:
        for (op, phase), rec in fn(shape, 2, dtype).items():
            out[fn.__name__, shape["S"], op, phase] = rec
    return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_every_recorded_launch_pins_fp_fusion(dtype):
    recs = _recordings(dtype)
    launches = [(key, launch) for key, rec in recs.items() for launch in rec.launches]
    assert len({launch.kernel for _, launch in launches}) >= 10, "the families launch fewer kernels than expected"
    bad = [f"{key}: {launch.kernel} {cfg.get('options')}" for key, launch in launches for cfg in launch.configs
           if cfg.get("options", {}).get("enable_fp_fusion") is not FP_FUSION]
    assert not bad, "launches without the pinned enable_fp_fusion:\n" + "\n".join(bad)


def test_every_launch_site_passes_the_options():
    """Launches the recording above may not reach (the GPU-only routes of ops/_channel_routes, chosen by
    measurement): each kernel[grid](...) call of the package passes **LAUNCH_OPTIONS, or **kwargs assigned
    with them in the same function (the launches that choose their config through ops/_tuning.pick)."""
    missing, sites = [], 0
    for name in sorted(os.listdir(OPS)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(OPS, name)).read())
        for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
            kwargs_pinned = any("kwargs" in ast.unparse(a.targets[0]) and "LAUNCH_OPTIONS" in ast.unparse(a.value)
                                for a in ast.walk(fn) if isinstance(a, ast.Assign))
            for call in ast.walk(fn):
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Subscript)
                        and ast.unparse(call.func.value).endswith("kernel")):
                    continue
                sites += 1
                spread = [ast.unparse(k.value) for k in call.keywords if k.arg is None]
                if "LAUNCH_OPTIONS" not in spread and not ("kwargs" in spread and kwargs_pinned):
                    missing.append(f"{name}:{call.lineno}: {ast.unparse(call.func)}")
    assert sites >= 25
    assert not missing, "launches without **LAUNCH_OPTIONS:\n" + "\n".join(missing)


_FMA_SCRIPT = r"""
import json, warnings
warnings.simplefilter("always")
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mixer_kernels.ops._tuning import LAUNCH_OPTIONS

@triton.jit
def axpy(X, Y, Z, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(X + offs, mask=m)
    y = tl.load(Y + offs, mask=m)
    tl.store(Z + offs, x * y + 3.0, mask=m)

out = {}
for name, opts in (("pinned", LAUNCH_OPTIONS), ("off", dict(enable_fp_fusion=False))):
    src = ASTSource(axpy, {"X": "*fp32", "Y": "*fp32", "Z": "*fp32", "n": "i32", "BLOCK": "constexpr"}, {"BLOCK": 128})
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, **opts)).asm["ptx"]
    out[name] = ptx.count("fma.rn.f32")
print(json.dumps(out))
"""


def test_pinned_ptx_keeps_its_fmas(tmp_path):
    script = tmp_path / "fma_check.py"          # @triton.jit needs its source in a file
    script.write_text(_FMA_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITON_DEFAULT_FP_FUSION")}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(OPS.rstrip(os.sep)).rsplit(os.sep, 1)[0],
                                         env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    counts = json.loads(r.stdout.strip().splitlines()[-1])
    assert LAUNCH_OPTIONS == {"enable_fp_fusion": True}
    assert counts["pinned"] > 0 and counts["off"] == 0, counts
    assert "TRITON_DEFAULT_FP_FUSION" not in r.stderr, r.stderr[-2000:]
