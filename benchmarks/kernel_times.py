"""Where a step's device time goes: per-kernel device time from torch.profiler, so one GEMM of a fused
op can be set against the matmul anchor (e.g. channel mixing's "each GEMM at >= 70% of matmul").
Profiled after the timed rounds, never during them. The CPU smoke run profiles CPU operators only to
exercise this code, and keeps names and call counts, no times. Beside the kernels: which alternative each
GEMM choice of the profiled steps took (ours or the cuBLAS composition, mixer_kernels/ops/_choice.py),
and why (measured, read from the disk cache, MIXER_KERNELS_AUTOTUNE=0, nothing to measure on a CPU)."""
from __future__ import annotations

import torch

PROFILED_STEPS = 3
TOP = 10


def kernel_times(step, cuda: bool) -> dict:
    """{"kernels": [{kernel, calls_per_step, us_per_step, share}], "total_us_per_step", "choices": [{choice,
    key, pick, reason, timings_ms}]}: the TOP kernels by device time over PROFILED_STEPS steps, and the
    GEMM choices those steps made (empty for providers without them)."""
    from torch.profiler import ProfilerActivity, profile

    from mixer_kernels.ops import _choice
    _choice.clear_picks()
    acts = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=acts) as prof:
        for i in range(PROFILED_STEPS):
            step(i)
        if cuda:
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        if cuda:
            if e.device_type != torch.autograd.DeviceType.CUDA:
                continue
            t = e.self_device_time_total
        else:
            t = e.self_cpu_time_total
        if t > 0:
            rows.append(dict(kernel=e.key, calls_per_step=e.count / PROFILED_STEPS, us_per_step=t / PROFILED_STEPS))
    rows.sort(key=lambda r: -r["us_per_step"])
    total = sum(r["us_per_step"] for r in rows)
    for r in rows:
        r["share"] = r["us_per_step"] / total if total else None
    out = dict(kernels=rows[:TOP], total_us_per_step=total, choices=_choice.picks())
    if not cuda:     # no speed claims from a CPU run
        out["total_us_per_step"] = None
        for r in out["kernels"]:
            r["us_per_step"] = r["share"] = None
    return out
