"""The Hopper speed model: a kernel's time from its compiled code. A model, not a measurement.

Per Triton launch (one compiled case: ptxas report + SASS report of mixer_kernels/ops/_sass.py, and the
launch's Work from the kernel's registry entry):

    r       = CTAs resident per SM in a full wave = min(CTAs per SM by registers/threads/shared memory,
              ceil(grid / SMS))
    waves   = ceil(grid / (SMS * CTAs per SM))
    per CTA, per warp (static SASS counts; trips, outer from Work):
      n     = trips*outer*n_main + outer*n_outer + n_rest                  instructions issued
      F_wg  = trips*outer*F_main + outer*F_outer + F_rest                  wgmma FLOP per warpgroup
      F_w   = the same for mma.sync (HMMA) FLOP per warp
      D     = the same for full wgmma drains (WARPGROUP.DEPBAR.LE gsb0, 0x0: no wgmma left in flight)
    T_cta   = (W/4)*F_wg / TC + W*F_w / (TC*HMMA_EFF)       one CTA's tensor-core cycles (W warps per CTA)
    tensor  = max(r*T_cta, F_wg / TC + D*DRAIN_CYCLES)      the SM's tensor cores, or one warpgroup's chain
                                                            when it drains its pipeline
    issue   = r * (W/SCHEDULERS) * n                        one instruction per scheduler per cycle
    serial  = max(T_cta, F_wg/TC + D*DRAIN_CYCLES, (W/SCHEDULERS)*n_loop) + (W/SCHEDULERS)*n_rest
              one CTA's critical path: its prologue and epilogue (n_rest) overlap nothing of its own
              main loop, only other resident CTAs' work (so with r = 1 they add to the loop's time)
    memory  = Work.bytes * min(grid, SMS*CTAs per SM) / grid / BW          seconds per wave
    time    = waves * max(max(r*T_cta, issue, serial) / CLOCK, memory) + LAUNCH_S
    floor   = max(Work.flops / PEAK, Work.bytes / BW);  % of floor = floor / time

Per ATen op (torch glue around the kernels, and every kernel of eager PyTorch):
    matrix product: max(flops / (CUBLAS_EFF * PEAK), bytes / BW) + LAUNCH_S
    anything else:  bytes / BW + LAUNCH_S

Constants (H100 SXM and the H200 lent to this project; docs/design.md, "Where the time goes"):
    SMS = 132; PEAK = 790e12 FLOP/s (dense bf16, measured with an 8192^3 matmul); TC = 4096 dense bf16
    FLOP per SM cycle (tf32 counts double, in ops/_sass.py); CLOCK = PEAK / (SMS * TC) = 1.461 GHz, the
    clock at which the measured peak is reached; SCHEDULERS = 4 per SM; BW = 3.0e12 B/s (H100) or
    4.3e12 (H200), measured device-to-device copy.
    Assumed, not measured (the pessimistic end where in doubt; the first GPU run's ratio column
    calibrates them): HMMA_EFF = 0.5 (mma.sync reaches half the wgmma rate on Hopper); DRAIN_CYCLES = 64
    (pipeline latency exposed by each full drain); LAUNCH_S = 1 us per launch (stream back-to-back);
    CUBLAS_EFF = 0.80 of PEAK for cuBLAS GEMMs (high, so eager is modelled fast: the speedups err low).
What it leaves out: L2 hit rates and re-reads from L2 (bytes are compulsory traffic), latency stalls
other than drains, bank conflicts, tail effects inside a wave, clock changes, and overlap between
kernels. Static counts take both sides of every branch.
"""
from __future__ import annotations

import math

SMS = 132
PEAK = 790e12
TC = 4096
CLOCK = PEAK / (SMS * TC)
SCHEDULERS = 4
BW = {"H100": 3.0e12, "H200": 4.3e12}
HMMA_EFF = 0.5
DRAIN_CYCLES = 64
LAUNCH_S = 1e-6
CUBLAS_EFF = 0.80
CONSTANTS = dict(SMS=SMS, PEAK=PEAK, TC=TC, CLOCK=CLOCK, SCHEDULERS=SCHEDULERS, BW=BW, HMMA_EFF=HMMA_EFF,
                 DRAIN_CYCLES=DRAIN_CYCLES, LAUNCH_S=LAUNCH_S, CUBLAS_EFF=CUBLAS_EFF)


def _get(region, key):
    return region[key] if region else 0


def kernel_time(row: dict, work, grid: int, card: str) -> dict:
    """The modelled time of one launch (seconds) and its parts. row: a compile_kernel row (sm_90)."""
    sass = row["sass"]
    warps = row["num_warps"]
    occ = max(1, row["ctas_per_sm"])
    main, outer, rest = sass["main"], sass["outer"], sass["rest"]
    t, o = work.trips, work.outer

    def loop(key):     # inside the main loop and the loop around it
        return t * o * _get(main, key) + o * _get(outer, key)
    n_loop, n_rest = loop("instructions"), _get(rest, "instructions")
    f_wg = loop("wgmma_flop") + _get(rest, "wgmma_flop")
    f_w = loop("hmma_flop") + _get(rest, "hmma_flop")
    drains = loop("drains") + _get(rest, "drains")
    r = min(occ, math.ceil(grid / SMS))
    waves = math.ceil(grid / (SMS * occ))
    cta_tensor = (warps / 4) * f_wg / TC + warps * f_w / (TC * HMMA_EFF)
    per_sched = warps / SCHEDULERS
    chain = max(cta_tensor, f_wg / TC + drains * DRAIN_CYCLES, per_sched * n_loop) + per_sched * n_rest
    tensor = max(r * cta_tensor, f_wg / TC + drains * DRAIN_CYCLES)
    issue = r * per_sched * (n_loop + n_rest)
    sm_cycles = max(r * cta_tensor, issue, chain)
    memory = work.bytes * min(grid, SMS * occ) / grid / BW[card]
    parts = dict(tensor=waves * tensor / CLOCK, issue=waves * issue / CLOCK, memory=waves * memory,
                 serial=waves * chain / CLOCK)
    time = waves * max(sm_cycles / CLOCK, memory) + LAUNCH_S
    floor = max(work.flops / PEAK, work.bytes / BW[card])
    bound = max(parts, key=parts.get)
    main_tc = (warps / 4) * _get(main, "wgmma_flop") / TC + warps * _get(main, "hmma_flop") / (TC * HMMA_EFF)
    issue_ratio = (warps * _get(main, "instructions") / SCHEDULERS) / main_tc if main_tc else None
    return dict(time_s=time, floor_s=floor, waves=waves, resident=r, bound=bound, issue_ratio=issue_ratio,
                **{f"{k}_s": v for k, v in parts.items()})


def aten_time(op, card: str) -> float:
    """The modelled time of one ATen op (seconds)."""
    if op.flops:
        return max(op.flops / (CUBLAS_EFF * PEAK), op.bytes / BW[card]) + LAUNCH_S
    return op.bytes / BW[card] + LAUNCH_S


def floor_time(flops: float, nbytes: float, card: str) -> float:
    return max(flops / PEAK, nbytes / BW[card])


# --------------------------------------------------------------------------------------------------
# Stable entry points (issue 22): model any launch, ours or anyone's, and the cuBLAS / ATen sides.


def _as_work(work):
    from mixer_kernels.ops._registry import Work
    if isinstance(work, Work):
        return work
    return Work(flops=float(work.get("flops", 0.0)), bytes=float(work.get("bytes", 0.0)),
                trips=int(work.get("trips", 1)), outer=int(work.get("outer", 1)))


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
                        **options) -> dict:
    """The modelled time of one Triton launch: `fn` a @triton.jit function, `args` parameter name -> torch
    dtype (pointer) or Python value (scalar, constexpr), `grid` an int or a tuple, `work` a registry Work
    or a mapping with flops, bytes, trips, outer; `options` other compile options (num_ctas,
    enable_fp_fusion, maxnreg). Returns kernel_time's dict (time_s, ...) plus the compile row."""
    import math as _m
    row = compile_launch(fn, args, num_warps, num_stages, **options)
    if row["error"]:
        raise RuntimeError(f"{getattr(fn, '__name__', fn)}: {row['error']}")
    g = grid if isinstance(grid, int) else _m.prod(int(v) for v in grid)
    out = kernel_time(row, _as_work(work), g, card)
    out["row"] = row
    return out


def model_gemm(M: int, N: int, K: int, dtype=None, card: str = "H100", *, batch: int = 1) -> float:
    """The modelled time (seconds) of one cuBLAS matrix product [batch] x [M, K] @ [K, N] in `dtype`."""
    import torch
    e = (dtype or torch.bfloat16).itemsize
    flops = 2.0 * batch * M * N * K
    nbytes = batch * (M * K + K * N + M * N) * e
    return max(flops / (CUBLAS_EFF * PEAK), nbytes / BW[card]) + LAUNCH_S


def model_elementwise(nbytes: float, card: str = "H100") -> float:
    """The modelled time (seconds) of one memory-bound ATen or generated kernel moving `nbytes`."""
    return nbytes / BW[card] + LAUNCH_S
