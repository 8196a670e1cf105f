"""The speed report's parts: the hazard detector (ops/_sass.py + the compile check) on planted kernels,
the SASS reader on a written example (the model's formula: tests/test_hopper_model.py), the launch
recorder (benchmarks/launch_record.py) against the ops' known launch sequences, and the committed
report (benchmarks/results/model-sm90/). Compiling needs TRITON_INTERPRET unset: a subprocess."""
import json
import os

import pytest
import torch
from helpers import compile_planted

from mixer_kernels.ops import _sass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = os.path.join(ROOT, "benchmarks", "results", "model-sm90")


@pytest.fixture(scope="module")
def planted():
    return compile_planted("planted_kernels.py")


def test_detector_finds_serialised_wgmma(planted):
    row = planted["serialised"]
    assert row["hazards"] == ["serialised"]
    assert row["notes"]["C7515"] >= 1
    main = row["sass"]["main"]
    assert sum(main["hgmma"].values()) > 0 and main["hmma"] == 0
    assert main["drains"] == sum(main["hgmma"].values())    # every wgmma waits for the one before


def test_detector_finds_mma_sync(planted):
    row = planted["mma_sync"]
    assert row["hazards"] == ["mma.sync"]
    assert row["sass"]["total"]["hmma"] > 0 and not row["sass"]["total"]["hgmma"]


def test_detector_passes_a_clean_kernel(planted):
    row = planted["clean"]
    assert row["hazards"] == []
    main = row["sass"]["main"]
    assert main["hgmma"] == {"64x128x16": 4}        # 128x128x64 tile: two warpgroups x 4 k16 steps each
    assert main["drains"] == 0 and main["a_from_registers"] == 0
    assert row["sass"]["loads"]["cp_async"] > 0
    assert 1 <= row["ctas_per_sm"] <= 2


SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
.L_x_1:
        /*0020*/                   LDGSTS.E.BYPASS.128 [R3], desc[UR4][R8.64] ;
        /*0030*/                   WARPGROUP.ARRIVE ;
        /*0040*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24 ;
        /*0050*/                   HGMMA.64x128x16.F32.BF16 R24, R96, gdesc[UR12], R24, gsb0 ;
        /*0060*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;
        /*0070*/              @P0 BRA `(.L_x_1) ;
        /*0080*/                   HMMA.16816.F32.BF16 R8, R12, R16, R8 ;
        /*0090*/                   STG.E [R2.64], R24 ;
        /*00a0*/                   EXIT ;
.L_x_2:
        /*00b0*/                   BRA `(.L_x_2);
"""


def test_sass_reader_on_a_written_example():
    r = _sass.analyse(SASS)
    assert r.loops == 1 and r.dot_loops == 1
    assert r.main.instructions == 6 and r.main.hgmma == {"64x128x16": 2}
    assert r.main.a_from_registers == 1 and r.main.drains == 1
    assert r.main.wgmma_flop == 2 * (2 * 64 * 128 * 16)
    assert r.epilogue.instructions == 4 and r.epilogue.hmma == 1      # after the loop, the trap loop included
    assert r.rest.instructions == 6
    assert r.loads == dict(tma=0, cp_async=1, plain=1)
    assert r.total.hmma_flop == 2 * 16 * 8 * 16
    assert _sass.ptxas_notes("ptxas info : (C7515) Potential ... (C7517) x (C7517) y") == dict(C7515=1, C7517=2,
                                                                                             C7519=0)


# A TMA main loop: the mbarrier wait's retry is a cold block after the kernel's EXIT that jumps back into the
# loop. It is no loop of its own (read as one, it swallowed the main loop and the epilogue).
SASS_TMA = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_1:
        /*0010*/                   UTMALDG.2D [UR8], [UR4] ;
        /*0020*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P1, [UR6], R0 ;
        /*0030*/              @!P1 BRA `(.L_x_9) ;
.L_x_8:
        /*0040*/                   WARPGROUP.ARRIVE ;
        /*0050*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24, gsb0 ;
        /*0060*/              @P0 BRA `(.L_x_1) ;
        /*0070*/                   STG.E [R2.64], R24 ;
        /*0080*/                   EXIT ;
.L_x_9:
        /*0090*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P1, [UR6], R0 ;
        /*00a0*/              @!P1 BRA `(.L_x_9) ;
        /*00b0*/                   BRA `(.L_x_8) ;
.L_x_2:
        /*00c0*/                   BRA `(.L_x_2);
"""


def test_sass_reader_skips_cold_paths_after_exit():
    r = _sass.analyse(SASS_TMA)
    assert r.loops == 1 and r.dot_loops == 1
    assert r.main.instructions == 6 and r.main.hgmma == {"64x128x16": 1}
    assert r.loads["tma"] == 1
    assert r.epilogue.instructions == 6     # STG, EXIT and the cold blocks: counted once, not as loops


def _meta(*shape, dtype=torch.bfloat16):
    return torch.empty(*shape, device="meta", dtype=dtype)


def test_launch_recorder_catches_the_channel_op():
    from benchmarks.launch_record import AtenOp, record
    from mixer_kernels.ops import channel_mixing as cm
    B, S, C, DC = 4, 196, 768, 3072
    x = _meta(B, S, C)
    ln = (_meta(C), _meta(C))
    fc = (_meta(DC, C), _meta(DC), _meta(C, DC), _meta(C))
    rec, (out, mean, rstd, z) = record(lambda: cm._forward(x, *ln, *fc, None, 1e-6, "none", True))
    assert [s.kernel for s in rec.launches] == ["_layernorm_stats_kernel", "_channel_hidden_kernel",
                                                "_channel_out_kernel"]
    hidden = rec.launches[1]
    from mixer_kernels._config import triton_interpret
    # the autotuner's 16-bit list after its own pruning (one config under the interpreter)
    assert len(hidden.configs) == (1 if triton_interpret() else 2)
    for cfg in hidden.configs:
        kw = cfg["kwargs"]
        assert hidden.grid_size(cfg) == triton_cdiv(B * S, kw["BLOCK_M"]) * triton_cdiv(DC, kw["BLOCK_N"])
    assert hidden.args["M"] == B * S and hidden.args["X"].device.type == "meta"
    assert out.device.type == "meta" and z.shape == (B * S, DC)
    rec, _ = record(lambda: cm._backward_impl(x, x, mean, rstd, z, *ln, *fc[:3], None, "none", True, True, True))
    kernels = [s.kernel for s in rec.launches]
    assert kernels.count("_channel_wgrad_kernel") == 2 and kernels[-1] == "_layernorm_bwd_kernel"
    assert any(isinstance(s, AtenOp) and s.name == "sum" for s in rec.steps)   # the split-K partials' sums


def triton_cdiv(a, b):
    return -(-a // b)


def test_launch_recorder_counts_eager_matmul_flops():
    from benchmarks.speed_model import _eager
    shape = dict(S=49, C=64, DS=32, DC=256)
    seqs = _eager(shape, 2, torch.bfloat16)
    B, S, C, DS, DC = 2, 49, 64, 32, 256
    flops = {k: sum(s.flops for s in rec.steps) for k, rec in seqs.items()}
    assert flops["token_mixing", "fwd"] == 4 * B * C * S * DS
    assert flops["token_mixing", "bwd"] == 8 * B * C * S * DS          # input and weight gradients
    assert flops["channel_mixing", "fwd"] == 4 * B * S * C * DC
    assert flops["channel_mixing", "bwd"] == 8 * B * S * C * DC
    names = [s.name for s in seqs["token_mixing", "fwd"].steps]
    assert "native_layer_norm" in names and "gelu" in names


def test_launch_recorder_fills_in_parameter_defaults():
    # a launch binds the defaults of the parameters its launcher leaves out; the speed model recompiles
    # each launch from its recorded arguments alone, so they must be there (once a KeyError in the model)
    import triton
    import triton.language as tl

    from benchmarks.launch_record import record

    def body(X, n, SCALE: tl.constexpr = 3, BLOCK: tl.constexpr = 16):
        offs = tl.arange(0, BLOCK)
        tl.store(X + offs, tl.load(X + offs, mask=offs < n) * SCALE, mask=offs < n)

    plain = triton.jit(body)
    tuned = triton.autotune([triton.Config({"BLOCK": 32}, num_warps=2)], key=["n"])(triton.jit(body))
    x = _meta(8, dtype=torch.float32)
    rec, _ = record(lambda: (plain[(1,)](x, 8), plain[(1,)](x, 8, SCALE=5, enable_fp_fusion=False),
                             tuned[(1,)](x, 8, enable_fp_fusion=True)))
    args = [launch.args for launch in rec.launches]
    assert [{k: v for k, v in a.items() if k != "X"} for a in args] == [
        dict(n=8, SCALE=3, BLOCK=16), dict(n=8, SCALE=5, BLOCK=16), dict(n=8, SCALE=3)]
    assert all(a["X"] is x for a in args)
    # compile options go with the config (what the model compiles), not with the kernel's arguments
    assert rec.launches[0].configs == [dict(kwargs={}, num_warps=4, num_stages=3, options={})]
    assert rec.launches[1].configs[0]["options"] == dict(enable_fp_fusion=False)
    assert rec.launches[2].configs == [dict(kwargs=dict(BLOCK=32), num_warps=2, num_stages=3,
                                            options=dict(enable_fp_fusion=True))]


# Every shape of the committed report and the ops it models there (gMLP's block is one op).
_HALVES = ("token_mixing", "channel_mixing", "block")
SHAPE_OPS = {"B/16": _HALVES, "L/16": _HALVES, "B/16@384": _HALVES, "B/8": _HALVES, "resmlp_24": _HALVES,
             "resmlp_big_24": _HALVES, "gmixer_24": _HALVES, "gmlp_s16": ("gmlp_block", "block")}


def test_committed_report():
    from benchmarks import hopper_model as hm
    with open(os.path.join(REPORT, "results.json")) as f:
        doc = json.load(f)
    assert doc["title"] == "model, not a measurement"
    assert doc["model_version"] == hm.MODEL_VERSION, "the model changed: regenerate the report (and the calibration)"
    assert {v[:3] for v in doc["triton"]} == {"3.6", "3.8"}, "run it under both Triton versions CI has"
    assert doc["date"] and doc["batch"] == 256 and set(doc["shapes"]) == set(SHAPE_OPS)
    assert all(c["source"] for c in doc["constants"].values())
    kernel_keys = {"kernel", "case", "modelled_ms", "modelled_fast_ms", "modelled_slow_ms", "floor_ms", "serialised",
                   "hmma", "spills", "issue_ratio", "ceiling_class", "hazards", "l2_ms", "smem_ms", "serial_ms"}
    assert doc["kernels"] and all(kernel_keys <= set(k) for k in doc["kernels"] if not k.get("error"))
    sides = ("fused", "library", "eager_bf16", "eager_autocast", "compile_default", "compile_max_autotune")
    got = {(o["triton"][:3], o["card"], o["op"], o["mode"], o["shape"]) for o in doc["ops"]}
    for v in ("3.6", "3.8"):
        for shape, ops in SHAPE_OPS.items():
            for op in ops:
                for mode in ("fwd", "fwd+bwd"):
                    assert (v, "H100", op, mode, shape) in got
    for o in doc["ops"]:
        assert 0 < o["floor_ms"] <= o["modelled_ms"]
        for side in sides:
            r = o[f"{side}_ms"]
            assert 0 < r["fast"] <= r["central"] <= r["slow"], (o["shape"], o["op"], o["mode"], side)
        assert o["library_ms"]["central"] <= o["fused_ms"]["central"] + 1e-9
    picks = [k for k in doc["kernels"] if k.get("tuner_pick") and k["kernel"].startswith("_channel_")]
    assert picks and all(k["composition_ms"] > 0 for k in picks)     # cuBLAS + a pass, beside each GEMM
    with open(os.path.join(REPORT, "summary.md")) as f:
        text = f.read()
    assert "model, not a measurement" in text and "speed targets" in text


def test_committed_calibration_is_of_this_model():
    from benchmarks import hopper_model as hm
    with open(os.path.join(ROOT, "benchmarks", "results", "calibration", "results.json")) as f:
        doc = json.load(f)
    assert doc["model_version"] == hm.MODEL_VERSION, "the model changed: re-run python -m benchmarks.calibration"
    failing = {g for g, ok in doc["summary"]["accepted"].items() if not ok}
    assert failing <= set(KNOWN_FAILING), f"calibration groups newly failing acceptance: {failing - set(KNOWN_FAILING)}"
    assert len(doc["rows"]) >= 30


# Calibration groups whose held-out part fails acceptance, as committed (the honest verdict, kept visible: a group
# leaves this list when the model meets it; none may join it without saying why here).
KNOWN_FAILING = {
    "gemm_epilogue": "Liger fused MoE forward (grouped GEMM, SwiGLU epilogue, exposed loads, near-tied costs): "
                     "the model is 1.2-1.4x too fast (held-out median 0.74); a p-norm overlap of the costs (p 3-8) "
                     "cannot meet it and the Triton tutorial GEMMs together (issue 22 stays open)",
}
