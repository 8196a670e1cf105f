"""The speed model's terms (benchmarks/hopper_model.py), each on a planted compile row whose SASS counts are
written out, so that every term's arithmetic is checked: the class ceiling, instruction issue, shared-memory
bandwidth, the serial chain with drains and exposed loads, one CTA per SM, L2 and HBM traffic, the launch;
and the cuBLAS and elementwise sides by the same constants."""
import math
import os

import pytest
import torch
from helpers import compile_planted

from benchmarks import hopper_model as hm
from mixer_kernels.ops._registry import Work

CLK = hm.clock()
SMS = hm.C("SMS")


def _row(main=None, rest=None, warps=8, occ=1, shared=0, stages=3, outer=None, registers=128):
    main = dict(dict(instructions=100, wgmma_flop=0.0, hmma_flop=0.0, drains=0, hgmma={}, a_from_registers=0),
                **(main or {}))
    rest = dict(dict(instructions=50, wgmma_flop=0.0, hmma_flop=0.0, drains=0), **(rest or {}))
    return dict(num_warps=warps, num_stages=stages, shared=shared, ctas_per_sm=occ, registers=registers,
                sass=dict(main=main, outer=outer, rest=rest))


# a 128x128x64 bf16 tile, 8 warps: per iteration 2 warpgroups x 4 wgmma m64n128k16
GEMM = dict(wgmma_flop=4 * 2 * 64 * 128 * 16, hgmma={"64x128x16": 4})


def test_tensor_term_at_the_class_ceiling():
    grid = SMS * 10
    w = Work(flops=0.0, bytes=0.0, trips=100)
    m = hm.kernel_time(_row(main=dict(GEMM, instructions=20), rest=dict(instructions=0)), w, grid, "H100", k=6400)
    per_cta = 100 * 2 * GEMM["wgmma_flop"] / hm.C("TC")          # 2 warpgroups
    assert m["ceiling_class"] == "triton K>=1024"
    assert m["tensor_s"] == pytest.approx(10 * per_cta / hm.ceiling("triton K>=1024") / CLK)
    low_k = hm.kernel_time(_row(main=dict(GEMM, instructions=20), rest=dict(instructions=0)), w, grid, "H100", k=512)
    assert low_k["ceiling_class"] == "triton K<1024" and low_k["tensor_s"] > m["tensor_s"]
    # no class may run a main loop faster than cuBLAS's large-K rate
    assert all(hm.ceiling(c) <= 1.0 for c in hm.CEILINGS)


def test_issue_term():
    w = Work(flops=0.0, bytes=0.0, trips=100)
    m = hm.kernel_time(_row(main=dict(GEMM, instructions=400)), w, SMS, "H100")
    assert m["issue_s"] == pytest.approx((8 / 4) * (100 * 400 + 50) / CLK)
    assert m["bound"] in ("issue", "serial") and "issue_ratio" in m


def test_mufu_pipe():
    # 100 instructions of which 20 MUFU: 20 x 8 = 160 pipe cycles per warp > 100 issue cycles
    w = Work(flops=0.0, bytes=0.0, trips=100)
    m = hm.kernel_time(_row(main=dict(instructions=100, mufu=20), rest=dict(instructions=0), occ=4), w, SMS * 4,
                       "H100")
    assert m["issue_s"] == pytest.approx(4 * (8 / 4) * 100 * 20 * hm.C("MUFU_CYCLES") / CLK)


def test_a_config_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        hm.kernel_time(_row(occ=0, shared=300_000), Work(0.0, 0.0, 1), SMS, "H100")


def test_h100_pcie():
    w = Work(flops=0.0, bytes=0.0, trips=100)
    sxm = hm.kernel_time(_row(main=dict(GEMM)), w, 114 * 2, "H100")
    pcie = hm.kernel_time(_row(main=dict(GEMM)), w, 114 * 2, "H100 PCIe")
    assert pcie["waves"] == 2 and sxm["waves"] == 2 and pcie["time_s"] > sxm["time_s"]
    assert hm.model_gemm(8192, 8192, 8192, card="H100 PCIe") > hm.model_gemm(8192, 8192, 8192)


def test_drained_chain_adds_the_phases():
    w = Work(flops=0.0, bytes=0.0, trips=100)
    it_wg = GEMM["wgmma_flop"] / hm.C("TC")
    free = hm.kernel_time(_row(main=dict(GEMM, instructions=100)), w, SMS, "H100")
    drained = hm.kernel_time(_row(main=dict(GEMM, instructions=100, drains=2)), w, SMS, "H100")
    fill = hm.C("LAT")                              # one CTA per SM: the tile's first loads are exposed
    # both warpgroups' wgmmas (they move through the stages together), the drains, the issue: added up
    assert drained["serial_s"] == pytest.approx(
        (100 * (2 * it_wg + 2 * hm.C("DRAIN") + 2 * 100) + 2 * 50 + fill) / CLK)
    assert free["serial_s"] == pytest.approx((100 * max(it_wg / hm.ceiling("triton K>=1024"), 2 * 100)
                                              + 2 * 50 + fill) / CLK)
    assert "drained chain" in drained["model_hazards"] and "drained chain" not in free["model_hazards"]


def test_exposed_load_and_synchronous_copy():
    w = Work(flops=0.0, bytes=0.0, trips=100)
    base = hm.kernel_time(_row(main=dict(GEMM)), w, SMS, "H100")
    wait = hm.kernel_time(_row(main=dict(GEMM, exposed_waits=1)), w, SMS, "H100")
    copy = hm.kernel_time(_row(main=dict(GEMM, sync_copy=1)), w, SMS, "H100")
    it_wg = GEMM["wgmma_flop"] / hm.C("TC")
    for m in (wait, copy):
        assert m["serial_s"] == pytest.approx((100 * (2 * it_wg + 2 * 100 + hm.C("LAT")) + 2 * 50 + hm.C("LAT"))
                                              / CLK)
        assert "exposed load" in m["model_hazards"] and m["time_s"] > base["time_s"]


def test_resident_ctas_hide_each_others_chains():
    w = Work(flops=0.0, bytes=0.0, trips=100)
    one = hm.kernel_time(_row(main=dict(GEMM, drains=2), occ=1), w, SMS * 2, "H100")
    two = hm.kernel_time(_row(main=dict(GEMM, drains=2), occ=2), w, SMS * 2, "H100")
    assert one["waves"] == 2 and two["waves"] == 1 and two["resident"] == 2
    assert two["time_s"] < one["time_s"]
    assert "one CTA per SM" in one["model_hazards"] and "one CTA per SM" not in two["model_hazards"]


def test_shared_memory_term():
    # one warpgroup on a 64x128 tile, both operands from shared memory, cp.async fills of A and B per k16 step:
    # (2 KB A + 4 KB B read by the wgmma) + (2 KB + 4 KB filled) per 64 tensor cycles = 192 B/clk > 128
    main = dict(instructions=10, wgmma_flop=2 * 64 * 128 * 16, hgmma={"64x128x16": 1},
                ldgsts_bytes=(64 * 16 + 16 * 128) * 2 / 4)       # per warp: 4 warps fill the tile
    m = hm.kernel_time(_row(main=main, rest=dict(instructions=0), warps=4, occ=2), Work(0.0, 0.0, 1000), SMS * 2,
                       "H100")
    smem_bytes = 1000 * (2 * (64 * 16 + 16 * 128) * 2)
    assert m["smem_s"] == pytest.approx(2 * smem_bytes / hm.C("SMEM_BW") / CLK)
    assert m["smem_s"] > 1.4 * m["tensor_s"]
    # the cp.async fills come through L2 too: every CTA re-reads its operand tiles
    assert m["l2_bytes"] == pytest.approx(SMS * 2 * 1000 * (64 * 16 + 16 * 128) * 2)
    assert "one warpgroup per SM" not in m["model_hazards"]     # two CTAs: two warpgroups


def test_l2_and_hbm_terms():
    # every CTA re-reads 64 KB of operands per iteration: L2-bound, not HBM-bound
    main = dict(instructions=10, ldg_bytes=64 * 1024 / 8)
    grid = SMS * 4
    w = Work(flops=0.0, bytes=1e6, trips=100)
    m = hm.kernel_time(_row(main=main, rest=dict(instructions=0), occ=4), w, grid, "H100")
    l2 = grid * 100 * 64 * 1024
    assert m["l2_bytes"] == pytest.approx(l2)
    assert m["l2_s"] == pytest.approx(l2 / hm.C("L2_BW"))
    assert m["bound"] == "l2" and "L2-bound" in m["model_hazards"]
    big = Work(flops=0.0, bytes=3.0e9, trips=1)
    m = hm.kernel_time(_row(main=dict(instructions=1), rest=dict(instructions=1)), big, grid, "H100")
    assert m["bound"] == "memory"
    assert m["time_s"] == pytest.approx(3.0e9 / hm.bandwidth("H100") + hm.C("LAUNCH_S"))
    assert hm.kernel_time(_row(main=dict(instructions=1), rest=dict(instructions=1)), big, grid, "H200")["time_s"] \
        < m["time_s"]


def test_mma_sync_class():
    w = Work(flops=0.0, bytes=0.0, trips=100)
    m = hm.kernel_time(_row(main=dict(instructions=1, hmma_flop=4096.0 * 64), rest=dict(instructions=0), warps=4),
                       w, SMS, "H100")
    assert m["ceiling_class"] == "mma.sync"
    assert m["tensor_s"] == pytest.approx(100 * 4 * 64 / hm.C("HMMA_EFF") / CLK)


def test_ranges_are_ordered():
    w = Work(flops=1e9, bytes=1e8, trips=100)
    r = hm.ranged(hm.kernel_time, _row(main=dict(GEMM, drains=1, ldg_bytes=4096)), w, SMS * 3, "H100", k=2048)
    assert r["fast"] < r["central"] < r["slow"]
    g = hm.ranged(hm.model_gemm, 50176, 3072, 768, torch.bfloat16, "H100")
    assert g["fast"] < g["central"] < g["slow"]
    for c in hm.CONSTANTS.values():
        assert c.source and (c.fast <= c.central <= c.slow or c.fast >= c.central >= c.slow)


def test_cublas_by_shape_class():
    big = hm.model_gemm(8192, 8192, 8192, torch.bfloat16, detail=True)
    assert big["ceiling_class"] == "cublas K>=4096"
    # the clock is set so that cuBLAS 8192^3 runs at PEAK_CUBLAS, less the last wave's empty SMs
    tiles = 64 * 32
    assert big["tensor_s"] == pytest.approx(math.ceil(tiles / SMS) * 2 * 128 * 256 * 8192 / (hm.C("TC") * CLK))
    assert 0.9 < 2 * 8192 ** 3 / big["time_s"] / hm.C("PEAK_CUBLAS") < 1.0
    low = hm.model_gemm(50176, 3072, 768, torch.bfloat16, detail=True)
    assert low["ceiling_class"] == "cublas K<1024"
    unaligned = hm.model_gemm(196, 384, 196, torch.bfloat16, batch=256 * 768 // 196, aligned=False, detail=True)
    aligned = hm.model_gemm(196, 384, 196, torch.bfloat16, batch=256 * 768 // 196, detail=True)
    assert unaligned["ceiling_class"] == "cublas unaligned" and unaligned["time_s"] >= aligned["time_s"]
    # a tiny GEMM costs at least a launch
    assert hm.model_gemm(16, 16, 16) >= hm.C("LAUNCH_S")
    assert hm.model_elementwise(3e9) == pytest.approx(1e-3 + hm.C("LAUNCH_S"))


# --------------------------------------------------------------------------------------------------
# The same terms on real compiled kernels (tests/planted_model_kernels.py), each planting one hazard.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def planted():
    return compile_planted("planted_model_kernels.py")


def _model(row, trips=64, grid=SMS * 8):
    return hm.kernel_time(row, Work(0.0, 0.0, trips), grid, "H100")


def test_planted_pipelined_loop_has_no_serial_hazard(planted):
    m = _model(planted["pipelined"])
    assert not {"drained chain", "exposed load"} & set(m["model_hazards"])
    assert m["serial_s"] < m["tensor_s"]                 # two CTAs per SM hide each other's chains
    # cp.async refills through L2: 32 KB per iteration (the tiles every CTA re-reads) and two stages in the prologue
    assert m["l2_bytes"] == pytest.approx(SMS * 8 * (64 + 2) * (128 * 64 + 64 * 128) * 2)


def test_planted_one_stage_loop_exposes_its_loads(planted):
    row = planted["one_stage"]
    main = row["sass"]["main"]
    assert main["sync_copy"] == 1 and main["ldgsts_bytes"] == 0
    m, p = _model(row), _model(planted["pipelined"])
    assert "exposed load" in m["model_hazards"]
    assert m["serial_s"] > 3 * p["serial_s"]             # a load latency per iteration on the chain


def test_planted_chained_dots_add_their_phases(planted):
    row = planted["chained"]
    assert row["sass"]["main"]["drains"] >= 1 and row["sass"]["main"]["mufu"] > 0
    m = _model(row)
    assert "drained chain" in m["model_hazards"] and m["bound"] == "serial"
    # the SM's tensor and issue time add up in a drained loop (no ping-pong): the launch is at least their sum
    assert m["time_s"] >= m["tensor_s"] + m["issue_s"]


def test_planted_one_warpgroup_tile_is_smem_bound(planted):
    row = planted["one_warpgroup"]
    m = _model(row, grid=SMS * row["ctas_per_sm"] * 4)
    assert m["smem_s"] > 1.4 * m["tensor_s"]             # about 190 B/clk needed against 128
    assert m["bound"] in ("smem", "l2")                  # and its small tiles re-read as much from L2
