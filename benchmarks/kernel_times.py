"""Where a step's device time goes: per-kernel device time from torch.profiler, so one GEMM of a fused
op can be set against the matmul anchor (e.g. channel mixing's "each GEMM at >= 70% of matmul").
Profiled after the timed rounds, never during them. The CPU smoke run profiles CPU operators only to
exercise this code, and keeps names and call counts, no times."""
from __future__ import annotations

import torch

PROFILED_STEPS = 3
TOP = 10


def kernel_times(step, cuda: bool) -> dict:
    """{"kernels": [{kernel, calls_per_step, us_per_step, share}], "total_us_per_step"}: the TOP kernels
    by device time over PROFILED_STEPS steps."""
    from torch.profiler import ProfilerActivity, profile
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
    out = dict(kernels=rows[:TOP], total_us_per_step=total)
    if not cuda:     # no speed claims from a CPU run
        out["total_us_per_step"] = None
        for r in out["kernels"]:
            r["us_per_step"] = r["share"] = None
    return out
