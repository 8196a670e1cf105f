"""The Hopper speed model: a launch's time from its compiled code, and the same rules for cuBLAS and ATen.
A model, not a measurement. Version MODEL_VERSION; its constants live in CONSTANTS only (each with the
published range it comes from); any change to them or to the formula is a commit of its own that re-runs
the calibration (`python -m benchmarks.calibration.calibrate`) and reports it, never with a kernel change.

One ceiling table for every matrix product (CEILINGS): a main loop never runs faster than the published
rate of its class (the clock peak SMS*TC*CLOCK times the class's fraction), ours by what their SASS
shows, cuBLAS by its shape class (it has no SASS here).

Per Triton launch (one compiled case: ptxas + SASS report of mixer_kernels/ops/_sass.py, a Work):

    r      = CTAs resident per SM in a full wave = min(CTAs per SM, ceil(grid / SMS)); waves = ceil(grid / (SMS*occ))
             (a config that does not fit on an SM is refused)
    per CTA (W warps, trips*outer main-loop iterations; static SASS counts per iteration):
      tensor = (W/4) * F_wg / TC / ceiling(class)          the CTA's tensor-core cycles (mma.sync at HMMA_EFF)
      issue  = (W/4) * max(n, MUFU_CYCLES * n_mufu)        one instruction per scheduler per cycle; MUFU at 16/SM/clk
      smem   = shared-memory bytes / SMEM_BW               fills (TMA/cp.async/STS) + LDS + wgmma operand reads
      chain  = trips*outer * iteration chain + (W/4) * n_rest
               iteration chain = max(wgmma, issue)         when the loop keeps wgmmas in flight
                               = (W/4)*wgmma + DRAIN*d + issue + LAT*e   when it drains them (d full drains:
                                 the CTA's warpgroups move through the stages together, the phases add up)
                                 or waits for a load right after issuing it (e exposed waits, LDG feeding STS)
    busy   = r * (tensor + issue) for a drained loop (no ping-pong between CTAs), else max(r*tensor, r*issue)
    SM     = max(busy, r*smem, chain)                      cycles per wave
    edges  = at one CTA per SM, for a kernel with tensor work: LAT + one pipeline stage of loads (per tile) and
             its stores, at the SM's share of HBM bandwidth: nothing overlaps them
    L2     = L2->SM operand bytes of a wave / L2_BW        every CTA's loads (re-reads of operand tiles, weights)
    HBM    = compulsory bytes of a wave / BW
    time   = waves * max(SM / CLOCK + edges, L2, HBM) + LAUNCH_S   (ISOLATED_LAUNCH_S for a launch timed alone)

cuBLAS GEMM [batch] x [M, K] @ [K, N] (model_gemm): its tile (128x256, 128x128 for small M or N, or the one a
source names), persistent waves over the SMs at its class's ceiling (fp8 twice, tf32 half the bf16 rate),
split-K when its tiles do not fill the SMs; L2 operand traffic, HBM; the first loads and the last tile's stores
it cannot overlap; the launch.
Memory-bound ATen / generated kernel (model_elementwise): bytes / (BW * ATEN_EFF[class]) + the launch.
Cards (CARDS): H100 SXM, H200 (its bandwidth), H100 PCIe (114 SMs, its clock and bandwidth).

Ranges: each constant has a fast / central / slow value (the ends of its published range, fast = the end
that makes every kernel faster); `model_*(..., level="fast" | "central" | "slow")`, and `ranged(f, ...)`
gives all three. What it still leaves out: bank conflicts, clock changes within a run, overlap between
kernels other than launch set-up, L2 misses of operand re-reads (they are charged at L2 bandwidth).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MODEL_VERSION = "2.2 (2026-12-08)"


@dataclass(frozen=True)
class Const:
    fast: float
    central: float
    slow: float
    unit: str
    source: str

    def at(self, level: str) -> float:
        return getattr(self, level)


def _fixed(v, unit, source):
    return Const(v, v, v, unit, source)


# Every constant of the model, H100 SXM5 unless the name says otherwise.
CONSTANTS: dict[str, Const] = {
    "SMS": _fixed(132, "SMs", "H100 SXM5 datasheet (NVIDIA H100 Tensor Core GPU Architecture whitepaper)"),
    "TC": _fixed(4096, "dense bf16 FLOP / SM / clock",
                 "whitepaper: 989.4 dense bf16 TFLOP/s = 132 SMs x 4096 x 1.83 GHz; fp8 twice, tf32 half"),
    "SCHEDULERS": _fixed(4, "warp schedulers / SM", "whitepaper: 4 SM sub-partitions, one issue per cycle each"),
    # The clock at which cuBLAS's large-K rate is the ceiling 1.0: bf16 8192^3 reaches 751 TFLOP/s
    # (NVIDIA/Fuser PR 4221, nvjet kernel, 1.464 ms) to 800 (DESIGN.md 2: 8192^3 on the lent H100; H200
    # 769-798); modelled with 128x256 tiles (16 waves of 2048 tiles: 97% full).
    "PEAK_CUBLAS": Const(800e12, 751e12, 721e12, "FLOP/s",
                         "cuBLAS bf16 8192^3: NVIDIA/Fuser PR 4221 (751, central), DESIGN.md 2 (about 800 on the lent "
                         "H100); cuBLAS fp16 2048x8192x8192 721 (triton-lang/triton issue 2339, 2023)"),
    "HMMA_EFF": Const(0.62, 0.5, 0.4, "of the wgmma rate",
                      "mma.sync on Hopper: about half the wgmma rate (arXiv 2402.13499, Luo et al., H800; "
                      "WMMA without memory traffic 50% of peak, r/CUDA measurement)"),
    "BW_H100": Const(3.1e12, 3.0e12, 2.8e12, "B/s",
                     "HBM3 device-to-device copy 3.0 TB/s measured (DESIGN.md 2); datasheet 3.35"),
    "BW_H200": Const(4.4e12, 4.3e12, 4.1e12, "B/s", "HBM3e copy 4.3 TB/s measured on the lent H200 (DESIGN.md 2)"),
    "L2_BW": Const(10.6e12, 9.7e12, 7.0e12, "B/s",
                   "L2->SM, 4-30 MB working sets, H100 SXM / GH100: 9.7-10.6 TB/s (te42kyfo/gpu-benches "
                   "gpu-l2-cache); H100 PCIe about 6.9"),
    "SMEM_BW": _fixed(128, "B / SM / clock", "shared memory 32 banks x 4 B per clock (CUDA guide, Hopper)"),
    "LAT": Const(260, 570, 800, "cycles", "load latency: L2 hit about 260, HBM about 570 unloaded "
                 "(te42kyfo/gpu-benches gpu-latency, H100); loaded HBM higher"),
    "DRAIN": Const(32, 64, 128, "cycles", "wgmma pipeline latency exposed by a full drain (wgmma.wait_group 0): "
                   "a m64nNk16 wgmma's latency is about 100+ cycles beyond its issue (arXiv 2402.13499)"),
    "LAUNCH_S": Const(1.5e-6, 2.5e-6, 4e-6, "s", "back-to-back launches in one stream overlap set-up: "
                      "2-4 us between dependent kernels in profiler traces; a single do_bench launch "
                      "floors at 5-7 us (DESIGN.md 6c)"),
    "MUFU_CYCLES": _fixed(8, "SMSP cycles per warp MUFU instruction",
                          "CUDA C Programming Guide, arithmetic instruction throughput, compute capability 9.0: "
                          "16 results per SM per clock for ex2/rcp/rsqrt/lg2/sin/cos (32 lanes / 4 per SMSP)"),
    "ISOLATED_LAUNCH_S": Const(4e-6, 5e-6, 7e-6, "s",
                               "one launch timed alone (triton.testing.do_bench, CUDA events): a floor of 5-7 us "
                               "on H100 (DESIGN.md 6c); what the published single-kernel anchors carry"),
}

# The cards: SMs, sustained clock relative to the H100 SXM's (a constant), memory bandwidth (a constant).
CARDS = {"H100": dict(sms=132, clock=None, bw="BW_H100"),
         "H200": dict(sms=132, clock=None, bw="BW_H200"),
         "H100 PCIe": dict(sms=114, clock="CLOCK_H100_PCIE", bw="BW_H100_PCIE")}
CONSTANTS["BW_H100_PCIE"] = Const(2.0e12, 1.9e12, 1.7e12, "B/s", "H100 PCIe datasheet: HBM2e 2.0 TB/s; copies "
                                  "reach about 90-95% of the datasheet on H100 SXM (3.0 of 3.35)")
CONSTANTS["CLOCK_H100_PCIE"] = Const(0.885, 0.79, 0.75, "of the H100 SXM's per-SM tensor clock",
                                     "fast: the datasheets' per-SM ratio (756 dense bf16 TFLOP/s on 114 SMs against "
                                     "989.4 on 132) at boost; central: fitted on the fit part of the calibration's "
                                     "chained_dot group (two H100 PCIe attention anchors, 350 W power limit)")

# The ceiling table: the fraction of the clock peak SMS*TC*CLOCK a main loop of each class reaches at most.
# cuBLAS by K range (and alignment: a leading dimension that is not 16-byte aligned rules out TMA and the
# sm90 kernels: sm80-class mma.sync kernels); Triton by what its SASS shows (wgmma or mma.sync; persistent
# or not, K range: the published Triton/cuBLAS ratios at the same K).
CEILINGS: dict[str, tuple[float, str]] = {
    "cublas K>=4096": (1.0, "definition: the clock is set by cuBLAS bf16 8192^3 (PEAK_CUBLAS)"),
    "cublas 1024<=K<4096": (0.89, "fitted on the calibration's fit part: cuBLAS fp16 2048^3 (triton-lang/triton "
                                  "issue 2339, H100) at 0.918 of the model with 0.97"),
    "cublas K<1024": (0.74, "cuBLAS fp16 553 TFLOP/s at 8192x8192x512 against 751 at 8192^3 (Triton tutorial 09's H100 "
                            "table as issue 22 quotes it); fit part: cuBLAS bf16 6144x8192x64 (pytorch/FBGEMM issue "
                            "2766) at 0.92 of the model with 0.80"),
    "cublas unaligned": (0.5, "no TMA: sm80-class mma.sync kernels (HMMA_EFF; cuBLAS needs 16-byte aligned "
                              "leading dimensions for its sm90 kernels)"),
    "triton persistent K<1024": (0.89, "x the cuBLAS K<1024 rate: tutorial 09 persistent 490 against cuBLAS 553 "
                                       "TFLOP/s at 8192x8192x512 fp16, H100 (issue 22's quote; TMA persistent 527)"),
    "triton persistent K>=1024": (1.0, "triton-lang/triton PR 5461, H100 fp8 8192x8192x4096: persistent 1285 and "
                                       "descriptor-persistent 1331 against cuBLAS 1278 TFLOP/s"),
    "triton K<1024": (0.81, "x the cuBLAS K<1024 rate: tutorial 09 matmul_kernel 450 against cuBLAS 553 TFLOP/s at "
                            "8192x8192x512 fp16, H100 (issue 22's quote)"),
    "triton K>=1024": (0.94, "triton-lang/triton PR 5461, H100 fp8 8192x8192x4096: matmul_kernel 1209 against the "
                             "persistent kernel's 1285 TFLOP/s"),
    "mma.sync": (0.5, "HMMA_EFF"),
}


def C(name: str, level: str = "central") -> float:
    return CONSTANTS[name].at(level)


def clock(level: str = "central", card: str = "H100") -> float:
    """The sustained tensor clock (Hz): cuBLAS's large-K rate on an H100 SXM over SMS*TC, scaled per card."""
    scale = CARDS[card]["clock"]
    return C("PEAK_CUBLAS", level) / (C("SMS") * C("TC")) * (C(scale, level) if scale else 1.0)


def sms(card: str = "H100") -> int:
    return CARDS[card]["sms"]


def bandwidth(card: str, level: str = "central") -> float:
    return C(CARDS[card]["bw"], level)


def ceiling(cls: str, level: str = "central") -> float:
    f = CEILINGS[cls][0]
    if cls in ("cublas unaligned", "mma.sync"):
        f = C("HMMA_EFF", level)
    if cls.startswith("triton") and "K<1024" in cls:
        f = f * CEILINGS["cublas K<1024"][0]
    return f


def triton_class(k: int | None, persistent: bool, mma_sync: bool) -> str:
    if mma_sync:
        return "mma.sync"
    low_k = k is not None and k < 1024
    return f"triton {'persistent ' if persistent else ''}{'K<1024' if low_k else 'K>=1024'}"


def _get(region, key, default=0):
    return (region or {}).get(key, default) or default


def _smem_wgmma_bytes(region) -> float:
    """Shared-memory operand bytes the wgmmas of a region read, per warpgroup: B always (N x 32 bytes per
    k-step of 16-bit, k32 of 8-bit, k8 of tf32), A (64 x 32 bytes) when it is not in registers."""
    if not region:
        return 0.0
    n = 0.0
    for shape, count in (region.get("hgmma") or {}).items():
        N = int(shape.split("x")[1])
        n += count * N * 32
    smem_a = max(0, sum((region.get("hgmma") or {}).values()) - region.get("a_from_registers", 0))
    return n + smem_a * 64 * 32


def _load_bytes(region, warps: int, shared: int, stages: int) -> float:
    """Global->SM bytes a region's loads bring per execution, per CTA: plain and cp.async loads by width
    (per warp), TMA copies as one stage of the shared-memory ring per copy group (shared / stages)."""
    if not region:
        return 0.0
    b = (_get(region, "ldg_bytes") + _get(region, "ldgsts_bytes")) * warps
    if _get(region, "tma"):
        b += shared / max(1, stages)
    return b


def _smem_bytes(region, warps: int, shared: int, stages: int) -> float:
    """Shared-memory traffic of a region per CTA: fills (cp.async and TMA), STS and LDS, wgmma operand reads."""
    if not region:
        return 0.0
    fills = _get(region, "ldgsts_bytes") * warps + (shared / max(1, stages) if _get(region, "tma") else 0.0)
    return fills + (_get(region, "sts_bytes") + _get(region, "lds_bytes")) * warps \
        + (warps / 4) * _smem_wgmma_bytes(region)


def _launch(level: str, isolated: bool) -> float:
    return C("ISOLATED_LAUNCH_S" if isolated else "LAUNCH_S", level)


def kernel_time(row: dict, work, grid: int, card: str, level: str = "central", k: int | None = None,
                persistent: bool | None = None, isolated: bool = False) -> dict:
    """The modelled time of one launch (seconds) and its parts and hazards. row: a compile_kernel row (sm_90);
    k: the GEMM depth its main loop covers (the ceiling class), None if not a GEMM or unknown."""
    sass = row["sass"]
    warps = row["num_warps"]
    stages = row.get("num_stages", 1)
    shared = row.get("shared", 0)
    if row["ctas_per_sm"] < 1:
        raise ValueError(f"does not fit on an SM: {row['shared']} B of shared memory, {row['registers']} registers "
                         f"x {row['num_warps']} warps")
    occ = row["ctas_per_sm"]
    main, outer, rest = sass["main"], sass["outer"], sass["rest"]
    t, o = work.trips, work.outer
    n_sm, tc, sched = sms(card), C("TC"), C("SCHEDULERS")
    clk = clock(level, card)
    mufu_c = C("MUFU_CYCLES")
    lat, drain_c = C("LAT", level), C("DRAIN", level)
    per_sched = warps / sched
    wg = warps / 4

    def loop(region_key):
        return t * o * _get(main, region_key) + o * _get(outer, region_key)

    def slots(region):      # issue cycles of a region per warp: one per instruction, MUFU_CYCLES per MUFU
        return max(_get(region, "instructions"), mufu_c * _get(region, "mufu"))
    n_loop, n_rest = t * o * slots(main) + o * slots(outer), slots(rest)
    f_wg = loop("wgmma_flop") + _get(rest, "wgmma_flop")
    f_w = loop("hmma_flop") + _get(rest, "hmma_flop")
    if persistent is None:
        persistent = bool(outer) and o > 1 and grid <= n_sm * occ
    mma_sync = f_w > 0 and f_wg == 0
    cls = triton_class(k, persistent, mma_sync) if (f_wg or f_w) else None
    ceil_f = ceiling(cls, level) if cls else 1.0
    # tensor cycles of one CTA on the SM's tensor cores, at the class's ceiling
    cta_tensor = (wg * f_wg / tc + warps * f_w / (tc * C("HMMA_EFF", level))) / (ceil_f if cls != "mma.sync" else 1.0)
    issue = per_sched * (n_loop + n_rest)
    smem = (t * o * _smem_bytes(main, warps, shared, stages) + o * _smem_bytes(outer, warps, shared, stages)
            + _smem_bytes(rest, warps, shared, stages)) / C("SMEM_BW")
    # one CTA's critical path
    it_wg = _get(main, "wgmma_flop") / tc + warps * _get(main, "hmma_flop") / (tc * C("HMMA_EFF", level)) / 4
    it_issue = per_sched * slots(main)
    drains = _get(main, "drains")
    exposed = _get(main, "exposed_waits") + (1 if _get(main, "sync_copy") else 0)
    if drains or exposed:
        # the phases add up; a CTA's warpgroups move through the shared-memory stages together, so their
        # wgmma phases coincide and share the SM's tensor cores
        it_chain = wg * it_wg + drains * drain_c + it_issue + exposed * lat
    else:
        it_chain = max(it_wg / (ceil_f if cls and cls != "mma.sync" else 1.0), it_issue)
    outer_chain = per_sched * slots(outer) + _get(outer, "drains") * drain_c
    r = min(occ, math.ceil(grid / n_sm))
    waves = math.ceil(grid / (n_sm * occ))
    fills = 1 if persistent else o
    chain = t * o * it_chain + o * outer_chain + per_sched * n_rest
    if not main:        # no loop: the whole kernel is one pass
        chain = per_sched * n_rest
    if drains or exposed:
        # a loop that drains its wgmmas (or waits on its loads) alternates tensor and other phases; resident
        # CTAs do not ping-pong them (no warp specialisation), so the SM's tensor and issue time add up
        busy = r * (cta_tensor + issue)
    else:
        busy = max(r * cta_tensor, r * issue)
    sm_cycles = max(busy, r * smem, chain)
    # memory: L2->SM operand traffic of every CTA, compulsory HBM traffic
    cta_loads = (t * o * _load_bytes(main, warps, shared, stages) + o * _load_bytes(outer, warps, shared, stages)
                 + _load_bytes(rest, warps, shared, stages))
    l2_bytes = max(cta_loads * grid, work.bytes)
    if getattr(work, "l2_bytes", None):
        l2_bytes = work.l2_bytes
    hbm = work.bytes / bandwidth(card, level) / waves
    l2 = l2_bytes / C("L2_BW", level) / waves
    # one CTA per SM: nothing overlaps a tile's first loads (the latency, then one pipeline stage at the SM's
    # share of HBM bandwidth) or its stores (at the same share), so they add to the tile's main loop (a kernel
    # without tensor work streams: its loads and stores are the memory term)
    edges = 0.0
    if r == 1 and cls:
        share = bandwidth(card, level) / min(grid, n_sm)
        first = _load_bytes(main, warps, shared, stages) if main else 0.0
        stored = (o * _get(outer, "stg_bytes") + _get(rest, "stg_bytes")) * warps
        edges = fills * (lat / clk + first / share) + stored / share
    per_wave = max(sm_cycles / clk + edges, l2, hbm)
    time = waves * per_wave + _launch(level, isolated)
    parts = dict(tensor=waves * r * cta_tensor / clk, issue=waves * r * issue / clk, smem=waves * r * smem / clk,
                 serial=waves * (chain / clk + edges), l2=waves * l2, memory=waves * hbm)
    floor = max(work.flops / (clock(level, card) * n_sm * tc),
                work.bytes / bandwidth(card, level))
    bound = max(parts, key=parts.get)
    main_tc = wg * _get(main, "wgmma_flop") / tc + warps * _get(main, "hmma_flop") / (tc * C("HMMA_EFF", level))
    issue_ratio = it_issue / main_tc * wg if main_tc else None
    haz = []
    if drains:
        haz.append("drained chain")
    if exposed:
        haz.append("exposed load")
    if r * wg <= 1 and cls:
        haz.append("one warpgroup per SM")
    if r == 1 and cls and (drains or exposed or n_rest):
        haz.append("one CTA per SM")
    if bound == "l2":
        haz.append("L2-bound")
    if bound == "smem":
        haz.append("smem-bound")
    if bound == "issue" and cls:
        haz.append("issue-bound")
    if waves > 1 and grid % (n_sm * occ) and (grid % (n_sm * occ)) < 0.5 * n_sm * occ:
        haz.append("tail")
    return dict(time_s=time, floor_s=floor, waves=waves, resident=r, bound=bound, issue_ratio=issue_ratio,
                ceiling_class=cls, model_hazards=haz, l2_bytes=l2_bytes,
                **{f"{k_}_s": v for k_, v in parts.items()})


# Memory-bound ATen kernels by class: the fraction of the copy bandwidth each reaches (fitted on the fit part of
# the calibration's memory_aten group; judged on its held-out part).
ATEN_EFF: dict[str, tuple[float, str]] = {
    "elementwise": (1.0, "Liger-Kernel benchmark data, H100: torch relu / square at 0.93-1.02 of the copy model"),
    "layer_norm": (0.62, "Liger-Kernel benchmark data, H100: torch.nn.LayerNorm forward fp32, M = 4096, "
                         "N = 1024-16384 (fit part)"),
}
_ATEN_CLASS = {"native_layer_norm": "layer_norm", "native_layer_norm_backward": "layer_norm"}


def _cublas_class(K: int, aligned: bool) -> str:
    if not aligned:
        return "cublas unaligned"
    return "cublas K>=4096" if K >= 4096 else ("cublas 1024<=K<4096" if K >= 1024 else "cublas K<1024")


def model_gemm(M: int, N: int, K: int, dtype=None, card: str = "H100", *, batch: int = 1, aligned: bool = True,
               level: str = "central", detail: bool = False, isolated: bool = False, tile: tuple | None = None):
    """The modelled time (seconds) of one cuBLAS product [batch] x [M, K] @ [K, N] (+ a bias or scaled
    accumulate in its epilogue), `aligned` False when a leading dimension is not 16-byte aligned (no TMA).
    cuBLAS's tile (128x256, or 128x128 for N <= 128 or M <= 128: its heuristics' sm90 choices), persistent
    waves over 132 SMs, its class's ceiling; L2 operand traffic (each tile reads (BM + BN) x K) and
    compulsory HBM bytes. `tile`: the (BM, BN) of the kernel cuBLAS runs, where a source names it.
    detail=True gives a dict of the parts."""
    import torch
    e = (dtype or torch.bfloat16).itemsize
    fp32 = dtype in (torch.float32,)
    fp8 = e == 1
    bm, bn = tile or ((128, 256) if min(M, N) > 128 else (128, 128))
    tiles = batch * math.ceil(M / bm) * math.ceil(N / bn)
    n_sm = sms(card)
    # fewer tiles than SMs and a deep K: cuBLAS splits K (split-K / stream-K) over the idle SMs, at the cost of
    # fp32 partial tiles written and summed
    splits = max(1, min(n_sm // tiles, K // 1024)) if tiles < n_sm else 1
    K_split = math.ceil(K / splits)
    tiles *= splits
    waves = math.ceil(tiles / n_sm)
    cls = _cublas_class(K, aligned)
    rate = n_sm * C("TC") * clock(level, card) * ceiling(cls, level) * (0.5 if fp32 else 2.0 if fp8 else 1.0)
    tensor = waves * (2.0 * bm * bn * K_split) / (rate / n_sm)
    flops = 2.0 * batch * M * N * K
    tensor = max(tensor, flops / rate)
    hbm_bytes = batch * (M * K + K * N + M * N) * e
    l2_bytes = tiles * (bm + bn) * K_split * e + (2 * splits * batch * M * N * 4 if splits > 1 else 0)
    hbm = hbm_bytes / bandwidth(card, level)
    l2 = l2_bytes / C("L2_BW", level)
    # warp-specialised and persistent, cuBLAS overlaps every tile's fill and epilogue but its first loads and
    # its last tile's stores (bm x bn outputs at the SM's share of L2 bandwidth)
    edges = C("LAT", level) / clock(level, card) + bm * bn * max(e, 2) / (C("L2_BW", level) / n_sm)
    t = max(tensor, hbm, l2) + edges + _launch(level, isolated)
    if detail:
        return dict(time_s=t, tensor_s=tensor, memory_s=hbm, l2_s=l2, ceiling_class=cls, waves=waves, tiles=tiles,
                    splits=splits)
    return t


def model_elementwise(nbytes: float, card: str = "H100", level: str = "central", kind: str = "elementwise",
                      isolated: bool = False) -> float:
    """The modelled time (seconds) of one memory-bound ATen or generated kernel moving `nbytes`, of class `kind`
    (ATEN_EFF: "elementwise", "layer_norm")."""
    return nbytes / (bandwidth(card, level) * ATEN_EFF[kind][0]) + _launch(level, isolated)


def aten_time(op, card: str, level: str = "central") -> float:
    """The modelled time of one recorded ATen op (benchmarks/launch_record.AtenOp): a matrix product by
    model_gemm with its shape when recorded, anything else by its bytes."""
    if op.flops:
        shape = getattr(op, "gemm", None)
        if shape:
            M, N, K, batch = shape
            return model_gemm(M, N, K, getattr(op, "dtype", None), card, batch=batch,
                              aligned=getattr(op, "aligned", True), level=level)
        rate = sms(card) * C("TC") * clock(level, card)
        return max(op.flops / rate, op.bytes / bandwidth(card, level)) + C("LAUNCH_S", level)
    return model_elementwise(op.bytes, card, level, kind=_ATEN_CLASS.get(op.name, "elementwise"))


def floor_time(flops: float, nbytes: float, card: str) -> float:
    return max(flops / C("PEAK_CUBLAS"), nbytes / bandwidth(card))


def ranged(fn, *args, **kwargs) -> dict:
    """{fast, central, slow} of a model function that takes `level` and returns seconds (or a dict with time_s)."""
    out = {}
    for level in ("fast", "central", "slow"):
        v = fn(*args, level=level, **kwargs)
        out[level] = v["time_s"] if isinstance(v, dict) else v
    return out


# --------------------------------------------------------------------------------------------------
# Stable entry points (issue 22): model any launch, ours or anyone's.


def _as_work(work):
    from mixer_kernels.ops._registry import Work
    if isinstance(work, Work):
        return work
    w = Work(flops=float(work.get("flops", 0.0)), bytes=float(work.get("bytes", 0.0)),
             trips=int(work.get("trips", 1)), outer=int(work.get("outer", 1)))
    if work.get("l2_bytes"):
        w.l2_bytes = float(work["l2_bytes"])
    return w


def compile_launch(fn, args: dict, num_warps: int, num_stages: int, **options) -> dict:
    """The sm_90a compile row (ops/_compile_check.compile_kernel) of one launch of the @triton.jit `fn`
    with `args` (parameter name -> torch dtype for a pointer, a Python value for a scalar or constexpr),
    specialised as the JIT would."""
    from mixer_kernels.ops._compile_check import compile_kernel
    from mixer_kernels.ops._registry import jit_function, signature_of
    fn = jit_function(fn)
    sig, constexprs, attrs = signature_of(fn, args)
    key = (fn.fn.__module__, fn.fn.__qualname__, tuple(sorted(sig.items())),
           tuple(sorted((k, repr(v)) for k, v in constexprs.items())), tuple(sorted(map(repr, attrs.items()))),
           num_warps, num_stages, tuple(sorted(options.items())))
    if key not in _COMPILED:       # compiling is the slow part (seconds); the model is re-run many times
        _COMPILED[key] = compile_kernel(fn, sig, constexprs, attrs, num_warps, num_stages, 90, **options)
    return _COMPILED[key]


_COMPILED: dict = {}


def model_triton_launch(fn, args: dict, grid, num_warps: int, num_stages: int, work, card: str = "H100",
                        level: str = "central", isolated: bool = False, **options) -> dict:
    """The modelled time of one Triton launch: `fn` a @triton.jit function, `args` parameter name -> torch
    dtype (pointer) or Python value (scalar, constexpr), `grid` an int or a tuple, `work` a registry Work
    or a mapping with flops, bytes, trips, outer (and optionally k: the GEMM depth, for the ceiling class;
    l2_bytes: the L2->SM bytes when known better than the SASS says); `options` other compile options
    (num_ctas, enable_fp_fusion, maxnreg). Returns kernel_time's dict (time_s, parts, hazards) plus the
    compile row."""
    row = compile_launch(fn, args, num_warps, num_stages, **options)
    if row["error"]:
        raise RuntimeError(f"{getattr(fn, '__name__', fn)}: {row['error']}")
    g = grid if isinstance(grid, int) else math.prod(int(v) for v in grid)
    k = work.get("k") if isinstance(work, dict) else None
    w = _as_work(work)
    if k is None:       # a GEMM's depth per tile: its K step times the main loop's trips
        bk = next((args[n] for n in ("BLOCK_K", "BLOCK_SIZE_K") if isinstance(args.get(n), int)), None)
        k = w.trips * bk if bk else None
    try:
        out = kernel_time(row, w, g, card, level=level, k=k, isolated=isolated)
    except ValueError as e:      # a config that cannot launch on the card
        raise RuntimeError(f"{getattr(fn, '__name__', fn)}: {e}") from None
    out["row"] = row
    return out
