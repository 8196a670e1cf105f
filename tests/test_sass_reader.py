"""The SASS reader (ops/_sass.py) on every wgmma form nvdisasm prints for sm_90a: fp16, bf16, tf32, fp8,
int8 and sparse, and on mma.sync. Planted fp16 and fp8 GEMMs (tests/planted_kernels.py) are compiled for
real; written SASS lines and loops, copied from such compiles and from hand-written PTX, check the parse
line by line. Compiling needs TRITON_INTERPRET unset: a subprocess."""
import os

import pytest
from helpers import compile_planted

from mixer_kernels.ops import _sass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def planted():
    return compile_planted("planted_kernels.py", "fp16", "fp8")


def _main_loop_per_warpgroup(block_n, block_k, k_step, rate):
    """Expected main loop of a BLOCK_M=128, 8-warp K-loop GEMM: each of the two warpgroups owns 64 rows
    and issues BLOCK_K / k_step wgmma m64n<BLOCK_N>k<k_step>; FLOP in bf16-rate units (rate: the operand
    type's tensor-core rate over bf16's)."""
    steps = block_k // k_step
    return {f"64x{block_n}x{k_step}": steps}, steps * 2 * 64 * block_n * k_step / rate


@pytest.mark.parametrize("case, block_k, k_step, rate", [("fp16", 64, 16, 1), ("fp8", 128, 32, 2)])
def test_planted_gemm(planted, case, block_k, k_step, rate):
    row = planted[case]
    assert row["error"] is None and row["hazards"] == []
    assert row["wgmma"] and not any(row["notes"].values())
    sass = row["sass"]
    assert sass["dot_loops"] == 1 and sass["total"]["hmma"] == 0
    shapes, flop = _main_loop_per_warpgroup(128, block_k, k_step, rate)
    main = sass["main"]
    assert main["hgmma"] == shapes
    assert main["wgmma_flop"] == flop == 4 * 2 * 64 * 128 * 16      # the same tensor time for both
    assert main["a_from_registers"] == 0 and main["drains"] == 0 and main["hmma"] == 0
    assert sass["epilogue"]["drains"] == 1                          # the wait after the loop
    assert sass["loads"]["cp_async"] > 0 and sass["loads"]["plain"] == 0     # LDGDEPBAR is no load


# One instruction each: (SASS, shape key, bf16-rate FLOP per warpgroup or warp, A from registers).
# Real forms (ptxas/nvdisasm of triton 3.8's wheel, sm_90a): Triton GEMMs on fp16 ("tnspB": B is N-major
# in shared memory), bf16, tf32, fp8, int8; the rest from hand-written wgmma / mma PTX.
WGMMA_LINES = [
    ("HGMMA.64x128x16.F32 R24, gdesc[UR8].tnspB, R24 ;", "64x128x16", 2 * 64 * 128 * 16, False),
    ("HGMMA.64x256x16.F32 R24, gdesc[UR8].tnspB, R24, gsb0 ;", "64x256x16", 2 * 64 * 256 * 16, False),
    ("HGMMA.64x128x16.F32 R24, R88, gdesc[UR4], R24 ;", "64x128x16", 2 * 64 * 128 * 16, True),
    ("HGMMA.64x8x16.F16 R24, gdesc[UR4], R24, UP0, gsb0 ;", "64x8x16", 2 * 64 * 8 * 16, False),
    ("HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24 ;", "64x128x16", 2 * 64 * 128 * 16, False),
    ("HGMMA.64x128x16.F32.BF16 R24, R96, gdesc[UR12], R24, gsb0 ;", "64x128x16", 2 * 64 * 128 * 16, True),
    ("HGMMA.64x128x8.F32.TF32 R24, gdesc[UR8], R24 ;", "64x128x8", 2 * 64 * 128 * 8 * 2, False),
    ("HGMMA.64x8x8.F32.TF32 R24, gdesc[UR4], R24, UP0, gsb0 ;", "64x8x8", 2 * 64 * 8 * 8 * 2, False),
    ("QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR16], R24 ;", "64x128x32", 2 * 64 * 128 * 32 / 2, False),
    ("QGMMA.64x256x32.F32.E4M3.E4M3 R24, gdesc[UR8], R24, gsb0 ;", "64x256x32", 2 * 64 * 256 * 32 / 2, False),
    ("QGMMA.64x128x32.F32.E4M3.E4M3 R24, R96, gdesc[UR4], R24 ;", "64x128x32", 2 * 64 * 128 * 32 / 2, True),
    ("QGMMA.64x128x32.F32.E5M2.E5M2 R24, gdesc[UR8], R24 ;", "64x128x32", 2 * 64 * 128 * 32 / 2, False),
    ("QGMMA.64x8x32.F16.E4M3.E4M3 R24, gdesc[UR4], R24, UP0, gsb0 ;", "64x8x32", 2 * 64 * 8 * 32 / 2, False),
    ("QGMMA.64x8x32.F32.E4M3.E5M2 R24, gdesc[UR4], R24, UP0, gsb0 ;", "64x8x32", 2 * 64 * 8 * 32 / 2, False),
    ("IGMMA.64x128x32.S8.S8 R24, gdesc[UR8], R24 ;", "64x128x32", 2 * 64 * 128 * 32 / 2, False),
    ("IGMMA.64x8x32.U8.S8 R24, gdesc[UR4], R24, UP0, gsb0 ;", "64x8x32", 2 * 64 * 8 * 32 / 2, False),
    # sparse (2:4): K is the dense K, done in the time of K / 2
    ("HGMMA.SP.64x8x32.F32 R24, gdesc[UR4], R24, UP0, R28, 0x0, gsb0 ;", "SP.64x8x32", 2 * 64 * 8 * 16, False),
    ("HGMMA.SP.64x8x32.F32 R24, R28, gdesc[UR4], R24, UP0, R30, 0x0, gsb0 ;", "SP.64x8x32", 2 * 64 * 8 * 16, True),
    ("HGMMA.SP.64x8x32.F32.BF16 R24, gdesc[UR4], R24, UP0, R28, 0x0, gsb0 ;", "SP.64x8x32", 2 * 64 * 8 * 16,
     False),
    ("HGMMA.SP.64x8x16.F32.TF32 R24, gdesc[UR4], R24, UP0, R28, 0x0, gsb0 ;", "SP.64x8x16", 2 * 64 * 8 * 8 * 2,
     False),
    ("QGMMA.SP.64x8x64.F32.E4M3.E4M3 R24, gdesc[UR4], R24, UP0, R28, gsb0 ;", "SP.64x8x64", 2 * 64 * 8 * 32 / 2,
     False),
    ("IGMMA.SP.64x8x64.S8.S8 R24, gdesc[UR4], R24, UP0, R28, gsb0 ;", "SP.64x8x64", 2 * 64 * 8 * 32 / 2, False),
]

MMA_LINES = [
    ("HMMA.16816.F32 R16, R4, R8, R16 ;", 2 * 16 * 8 * 16),                 # fp16
    ("HMMA.16816.F32.BF16 R16, R4, R8, R16 ;", 2 * 16 * 8 * 16),
    ("HMMA.16816.F16 R8, R4, R8, R10 ;", 2 * 16 * 8 * 16),
    ("HMMA.1688.F32.TF32 R16, R4, R8, R16 ;", 2 * 16 * 8 * 8 * 2),
    ("IMMA.16832.S8.S8 R4, R4.ROW, R8.COL, R4 ;", 2 * 16 * 8 * 32 / 2),
    ("HMMA.SP.16832.F32 R12, R4, R8, R12, R10, 0x0 ;", 2 * 16 * 8 * 16),
    ("HMMA.SP.16832.F32.BF16 R12, R4, R8, R12, R10, 0x0 ;", 2 * 16 * 8 * 16),
]


def _one(text: str) -> _sass.Region:
    r = _sass.Region()
    (ins,) = _sass.parse(f"        /*0000*/                   {text}")
    r.add(ins)
    return r


@pytest.mark.parametrize("text, key, flop, a_regs", WGMMA_LINES, ids=[t[0].split(" ")[0] for t in WGMMA_LINES])
def test_wgmma_line(text, key, flop, a_regs):
    r = _one(text)
    assert r.hgmma == {key: 1} and r.hgmma_count == 1 and r.hmma == 0
    assert r.wgmma_flop == flop
    assert r.a_from_registers == int(a_regs)


@pytest.mark.parametrize("text, flop", MMA_LINES, ids=[t[0].split(" ")[0] for t in MMA_LINES])
def test_mma_sync_line(text, flop):
    r = _one(text)
    assert r.hmma == 1 and r.hgmma == {} and r.wgmma_flop == 0
    assert r.hmma_flop == flop


def test_other_lines_are_no_tensor_work():
    for text in ("WARPGROUP.ARRIVE ;", "WARPGROUP.DEPBAR.LE gsb0, 0x1 ;", "F2FP.F16.F32.PACK_AB R24, R25, R24 ;",
                 "LDGSTS.E.BYPASS.128 [R93], desc[UR14][R18.64], !P0 ;", "STS.U8 [R95+UR6+0xc000], R102 ;"):
        r = _one(text)
        assert r.instructions == 1 and r.hgmma == {} and r.hmma == 0 and r.a_from_registers == 0
    assert _one("WARPGROUP.DEPBAR.LE gsb0, 0x0 ;").drains == 1


# The main loop of the planted 128x128 K-loop GEMMs (8 warps), trimmed: per warpgroup 4 wgmma per iteration,
# the wait for the previous iteration's group (gsb0, 0x1) inside the loop, the drain (gsb0, 0x0) after it.
LOOP = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/              @!P0 BRA `(.L_x_0) ;
.L_x_1:
        /*0020*/                   DEPBAR.LE SB0, 0x2 ;
        /*0030*/                   WARPGROUP.ARRIVE ;
        /*0040*/                   {op} R24, {a}gdesc[UR8]{tnsp}, R24 ;
        /*0050*/                   {op} R24, {a}gdesc[UR8]{tnsp}, R24 ;
        /*0060*/                   {op} R24, {a}gdesc[UR20]{tnsp}, R24 ;
        /*0070*/                   {op} R24, {a}gdesc[UR8]{tnsp}, R24, gsb0 ;
        /*0080*/                   WARPGROUP.DEPBAR.LE gsb0, 0x1 ;
        /*0090*/                   LDGSTS.E.BYPASS.128 [R93], desc[UR14][R18.64], !P0 ;
        /*00a0*/                   LDGDEPBAR ;
        /*00b0*/              @!P0 BRA `(.L_x_1) ;
.L_x_0:
        /*00c0*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;
        /*00d0*/                   F2FP.F16.F32.PACK_AB R24, R25, R24 ;
        /*00e0*/                   STG.E [R2.64], R24 ;
        /*00f0*/                   EXIT ;
.L_x_2:
        /*0100*/                   BRA `(.L_x_2);
"""

# (opcode, B descriptor suffix, shape key, tensor-core rate over bf16's); Triton's fp16 and bf16 GEMMs with
# B stored K x N read it transposed (".tnspB")
LOOP_FORMS = {
    "fp16": ("HGMMA.64x128x16.F32", ".tnspB", "64x128x16", 1),
    "bf16": ("HGMMA.64x128x16.F32.BF16", ".tnspB", "64x128x16", 1),
    "tf32": ("HGMMA.64x128x8.F32.TF32", "", "64x128x8", 0.5),
    "fp8": ("QGMMA.64x128x32.F32.E4M3.E4M3", "", "64x128x32", 2),
    "fp8_wide": ("QGMMA.64x256x32.F32.E4M3.E4M3", "", "64x256x32", 2),
    "int8": ("IGMMA.64x128x32.S8.S8", "", "64x128x32", 2),
}


@pytest.mark.parametrize("form", LOOP_FORMS)
@pytest.mark.parametrize("a_regs", [False, True], ids=["a_smem", "a_regs"])
def test_main_loop(form, a_regs):
    op, tnsp, key, rate = LOOP_FORMS[form]
    sass = LOOP.format(op=op, tnsp=tnsp, a="R88, " if a_regs else "")
    for line in sass.splitlines():      # line by line: only the wgmma lines carry tensor work
        for ins in _sass.parse(line):
            r = _one(ins.text + " ;")
            assert r.hgmma_count == (1 if ins.text.startswith(op) else 0), line
    r = _sass.analyse(sass)
    assert r.loops == 1 and r.dot_loops == 1
    m, n, k = (int(v) for v in key.split("x"))
    assert r.main.instructions == 10 and r.main.hgmma == {key: 4}
    assert r.main.wgmma_flop == 4 * 2 * m * n * k / rate
    assert r.main.a_from_registers == (4 if a_regs else 0)
    assert r.main.drains == 0 and r.epilogue.drains == 1
    assert r.epilogue.instructions == 5 and r.epilogue.hgmma == {}
    assert r.total.hgmma == {key: 4} and r.total.hmma == 0
    assert r.loads == dict(tma=0, cp_async=1, plain=0)


# Memory traffic and waits per region (the speed model's shared-memory, L2 and serial-chain terms).
SASS_COPY = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_1:
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0020*/                   LDG.E.U16 R8, desc[UR4][R2.64+0x10] ;
        /*0030*/                   STS.128 [R12], R4 ;
        /*0040*/                   LDGSTS.E.BYPASS.128 [R33], desc[UR4][R104.64], P5 ;
        /*0050*/                   LDGDEPBAR ;
        /*0060*/                   DEPBAR.LE SB0, 0x0 ;
        /*0070*/                   DEPBAR.LE SB0, 0x1 ;
        /*0080*/                   LDS.64 R20, [R12] ;
        /*0090*/                   LDSM.16.M88.4 R24, [R13] ;
        /*00a0*/                   UTMALDG.2D [UR8], [UR4] ;
        /*00b0*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24, gsb0 ;
        /*00b8*/                   MUFU.EX2 R30, R31 ;
        /*00c0*/              @P0 BRA `(.L_x_1) ;
        /*00c8*/                   STG.E.128 [R2.64], R24 ;
        /*00d0*/                   EXIT ;
"""


def test_sass_reader_counts_memory_traffic_and_waits():
    main = _sass.analyse(SASS_COPY).as_dict()["main"]
    assert main["ldg_bytes"] == 32 * 16 + 32 * 2            # per warp: a 128-bit and a 16-bit load
    assert main["sts_bytes"] == 32 * 16 and main["ldgsts_bytes"] == 32 * 16
    assert main["lds_bytes"] == 32 * 8 + 4 * 128             # LDS.64 and a 4-matrix ldmatrix
    assert main["tma"] == 1
    assert main["exposed_waits"] == 1                        # SB0, 0x0 only: 0x1 leaves a group in flight
    assert main["sync_copy"] == 1                            # LDG feeding STS in one iteration
    assert main["mufu"] == 1
    assert _sass.analyse(SASS_COPY).as_dict()["rest"]["stg_bytes"] == 32 * 16
