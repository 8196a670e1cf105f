"""The speed model's baselines (benchmarks/baselines.py) and the recorder's costs they rest on
(benchmarks/launch_record.py). Inductor's code generation and the template compiles need TRITON_INTERPRET
unset: they run in one subprocess on the tiny Mixer shape (S=12, C=16, DS=8, DC=40), batch 4."""
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from benchmarks import baselines as bl
from benchmarks.launch_record import AtenOp, record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY, BATCH = "tiny", 4

_SCRIPT = textwrap.dedent("""
    import json, math
    from benchmarks import baselines as bl
    from benchmarks.launch_record import AtenOp
    one = [dict(kwargs=dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, GROUP_M=8), num_warps=4, num_stages=2)]
    out = {}
    for name, fn in (("eager_bf16", bl.eager_bf16), ("eager_autocast", bl.eager_autocast),
                     ("compile_default", bl.compile_default), ("compile_max_autotune", bl.compile_max_autotune)):
        seqs = fn("tiny", 4)
        out[name] = {}
        for (op, ph), steps in seqs.items():
            p = bl.price(steps, configs=one)
            out[name][op + "/" + ph] = dict(
                time_s=p["time_s"], parts=[t for _, t in p["parts"]], flops=bl._flops(steps),
                steps=[dict(type=type(s).__name__, name=s.name, gemm=isinstance(s, AtenOp) and s.M is not None,
                            options=[[type(x).__name__ for x in o] for o in getattr(s, "options", [])])
                       for s in steps])
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def tiny():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = ROOT
    r = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# The recorder


def test_unsafe_view_of_a_contiguous_tensor_costs_nothing():
    x = torch.empty(4, 6, 8, device="meta", dtype=torch.bfloat16)
    rec, _ = record(lambda: torch.ops.aten._unsafe_view(x, [24, 8]))
    assert rec.steps == []
    rec, _ = record(lambda: (x.view(24, 8), x.reshape(4, 48), x.transpose(1, 2), x.expand(2, 4, 6, 8), x.t()
                             if x.dim() == 2 else torch.ops.aten.alias(x)))
    assert rec.steps == []


def test_a_real_copy_still_costs():
    x = torch.empty(4, 6, 8, device="meta", dtype=torch.bfloat16)
    rec, _ = record(lambda: x.transpose(1, 2).reshape(4, 48))      # not viewable: clone, then _unsafe_view
    assert [s.name for s in rec.steps] == ["clone"]
    assert rec.steps[0].bytes == 2 * x.numel() * 2


def test_matrix_products_carry_their_gemm_shape():
    bf = dict(device="meta", dtype=torch.bfloat16)
    a, w = torch.empty(64, 196, **bf), torch.empty(32, 196, **bf)
    rec, _ = record(lambda: a @ w.t())
    (mm,) = rec.steps
    assert (mm.name, mm.M, mm.N, mm.K, mm.batch, mm.dtype) == ("mm", 64, 32, 196, 1, torch.bfloat16)
    assert mm.aligned is False and mm.gemm == (64, 32, 196, 1)       # rows of 196 bf16: 392 B
    assert mm.flops == 2.0 * 64 * 32 * 196
    b = torch.empty(32, **bf)
    rec, _ = record(lambda: torch.addmm(b, torch.empty(64, 192, **bf), torch.empty(192, 32, **bf)))
    assert rec.steps[0].aligned is True and (rec.steps[0].M, rec.steps[0].N, rec.steps[0].K) == (64, 32, 192)
    rec, _ = record(lambda: torch.bmm(torch.empty(3, 8, 16, **bf), torch.empty(3, 16, 24, **bf)))
    assert (rec.steps[0].batch, rec.steps[0].M, rec.steps[0].N, rec.steps[0].K) == (3, 8, 24, 16)
    rec, _ = record(lambda: a + 1)
    assert rec.steps[0].M is None and rec.steps[0].gemm is None


# --------------------------------------------------------------------------------------------------
# Autocast (traced on FakeTensorMode "cuda" tensors: autocast's own dispatch)


def test_autocast_graph_has_fp32_layernorm_and_bf16_casts():
    gm, _ = bl.autocast_graph(TINY, "channel_mixing", BATCH)
    nodes = list(gm.graph.nodes)
    ln = [n for n in nodes if n.target is torch.ops.aten.native_layer_norm.default]
    assert ln and ln[0].meta["val"][0].dtype == torch.float32
    casts = [n for n in nodes if n.target is torch.ops.aten._to_copy.default]
    assert len(casts) >= 5 and all(n.kwargs["dtype"] == torch.bfloat16 for n in casts)   # x, 2 weights, 2 biases
    gelu = [n for n in nodes if n.target is torch.ops.aten.gelu.default]
    assert gelu[0].meta["val"].dtype == torch.bfloat16
    out = [n for n in nodes if n.op == "output"][0].args[0]
    assert (out[0] if isinstance(out, (list, tuple)) else out).meta["val"].dtype == torch.float32   # residual


def test_autocast_eager_records_casts_and_shapes():
    seqs = bl.eager_autocast(TINY, BATCH)
    fwd = seqs["token_mixing", "fwd"]
    assert sum(s.name == "_to_copy" for s in fwd) >= 5
    assert any(s.name == "native_layer_norm" for s in fwd)
    assert all(s.M is not None for s in fwd if s.flops)
    assert not any(s.name == "_unsafe_view" for ph in ("fwd", "bwd") for s in seqs["token_mixing", ph])


# --------------------------------------------------------------------------------------------------
# The four baselines on the tiny shape (subprocess)


def test_compile_default_keeps_gemms_in_cublas_and_fuses_pointwise(tiny):
    cd = tiny["compile_default"]
    for key, v in cd.items():
        for s in v["steps"]:
            assert s["type"] == "AtenOp"
            assert s["gemm"] or s["name"].startswith("triton_"), (key, s["name"])   # cuBLAS or generated
    fwd = [s["name"] for s in cd["channel_mixing/fwd"]["steps"]]
    assert sum(s["gemm"] for s in cd["channel_mixing/fwd"]["steps"]) == 2
    assert "gelu" not in fwd                                  # no ATen gelu op: GELU sits in a generated kernel
    assert any("native_layer_norm" in n for n in fwd)         # LayerNorm in its own generated kernel
    eager = tiny["eager_autocast"]["channel_mixing/fwd"]["steps"]
    assert len(fwd) < len(eager)


def test_max_autotune_offers_template_alternatives(tiny):
    steps = tiny["compile_max_autotune"]["channel_mixing/fwd"]["steps"]
    choices = [s for s in steps if s["type"] == "Choice"]
    assert len(choices) == 2
    assert all(any(o == ["TemplateGemm"] for o in c["options"]) for c in choices)     # epilogue fused
    assert all(any(o[0] == "AtenOp" for o in c["options"]) for c in choices)          # or cuBLAS


@pytest.mark.parametrize("name", bl.BASELINES)
def test_flops_equal_the_blocks_matrix_products(tiny, name):
    want = bl.matmul_flops("mixer", bl.family_shapes()[TINY][1], BATCH)
    for op, f in want.items():
        assert tiny[name][f"{op}/fwd"]["flops"] == pytest.approx(f)
        assert tiny[name][f"{op}/bwd"]["flops"] == pytest.approx(2 * f)


@pytest.mark.parametrize("name", bl.BASELINES)
def test_price_is_positive_and_finite(tiny, name):
    for key, v in tiny[name].items():
        assert v["time_s"] > 0 and math.isfinite(v["time_s"]), key
        assert all(t > 0 and math.isfinite(t) for t in v["parts"]), key
        assert v["time_s"] == pytest.approx(sum(v["parts"]))


def test_price_prices_gemms_by_shape():
    from benchmarks import hopper_model as hm
    op = AtenOp("mm", 1.0, 2.0 * 1024 * 1024 * 1024, M=1024, N=1024, K=1024, dtype=torch.bfloat16, aligned=True)
    got = bl.price([op])["time_s"]
    assert got == pytest.approx(bl.gemm_time(1024, 1024, 1024, torch.bfloat16))
    assert bl.price([AtenOp("add", 3e6)])["time_s"] == pytest.approx(hm.model_elementwise(3e6))
