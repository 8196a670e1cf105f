"""Measuring one case: first call (compile, autotune) checked against the reference provider, warm-up,
then interleaved rounds of timed steps, and peak memory.

On CUDA each step is timed by a pair of CUDA events (device time between the two records, so host
launch overhead counts when the device waits for it, as a user would see). The providers of a case are
measured in the same process in rounds, round-robin with the starting provider rotated, so drift in
clocks or temperature spreads over all of them. Statistics: median, 20th and 80th percentiles over all
timed steps. The CPU smoke run goes through the same loop with a host clock and throws the numbers away.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch

WARMUP_STEPS = 2


@dataclass
class ProviderResult:
    status: str = "ok"               # ok | skipped | error
    reason: str = ""
    rel_err: float | None = None     # max over outputs/gradients of ||out - ref|| / ||ref|| (fp64 norms)
    triton_launches: int | None = None
    times_ms: list[float] = field(default_factory=list)
    peak_mib: float | None = None    # peak memory of one step above what was allocated before it
    kernels: dict | None = None      # kernel_times.kernel_times() of the provider, when asked for
    n_sets: int | None = None        # input sets its steps rotated through


def _sync(cuda: bool):
    if cuda:
        torch.cuda.synchronize()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.detach().double(), b.detach().double()
    return ((a64 - b64).norm() / b64.norm().clamp_min(1e-300)).item()


def max_rel_err(outs, refs) -> float:
    """Largest ||out - ref|| / max(||ref||, 1% of the largest ||ref|| of the set) over the outputs and
    gradients of a step. The floor keeps gradients that are zero in exact arithmetic (in a whole model,
    mlp_tokens.fc2.bias: every later LayerNorm removes a per-token constant) from reading rounding
    noise as a 100% error. A sanity check; the GPU tests judge accuracy against float64."""
    if len(outs) != len(refs):
        raise ValueError(f"{len(outs)} outputs against the reference's {len(refs)}")
    norms = [r.detach().double().norm().item() for r in refs]
    floor = 1e-2 * max(norms, default=0.0)
    errs = [(o.detach().double() - r.detach().double()).norm().item() / max(n, floor, 1e-300)
            for o, r, n in zip(outs, refs, norms, strict=True)]
    return max(errs, default=0.0)


def first_call(step, provider: str, count_launches: bool, cuda: bool):
    """The first step (compilation, autotuning happen here; never timed). Returns its outputs and how
    many launches of registered Triton kernels it made (on a GPU that includes the autotuner's
    benchmark launches: the count proves the kernels ran, it is not the launches per step)."""
    launches = None
    if count_launches:
        from mixer_kernels.ops._registry import count_launches as launch_counter
        with launch_counter() as n:
            outs = step(0)
            _sync(cuda)
        launches = sum(n.values())
    else:
        outs = step(0)
        _sync(cuda)
    return tuple(t.detach() for t in outs), launches      # no autograd graph kept alive for the check


def _timed(step, start: int, iters: int, cuda: bool):
    """Run `iters` steps; return a function giving their times in ms (after a synchronize)."""
    if cuda:
        evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for k, (a, b) in enumerate(evs):
            a.record()
            step(start + k)
            b.record()
        return lambda: [a.elapsed_time(b) for a, b in evs]
    times = []
    for k in range(iters):
        t0 = time.perf_counter()
        step(start + k)
        times.append((time.perf_counter() - t0) * 1e3)
    return lambda: times


def measure(steps: dict, names: list[str], *, rounds: int, round_ms: float, cuda: bool, on_error,
            max_iters: int = 50, deadline: float | None = None) -> dict[str, list[float]]:
    """Warm up, then time the providers `names` in `rounds` interleaved rounds. A provider that raises
    is reported through on_error(provider, exception) and dropped; the others go on. Past `deadline`
    (a time.perf_counter() value) no new round starts after the first: the run's time budget holds
    inside a case too, at the cost of fewer samples (said on stderr)."""
    iters = {}
    for p in list(names):
        try:
            for i in range(WARMUP_STEPS):
                steps[p](1 + i)
            _sync(cuda)
            t0 = time.perf_counter()                   # a rough per-step estimate sets the round length
            for i in range(3):
                steps[p](WARMUP_STEPS + 1 + i)
            _sync(cuda)
        except Exception as e:
            on_error(p, e)
            continue
        est_ms = (time.perf_counter() - t0) * 1e3 / 3
        iters[p] = int(min(max_iters, max(2, round_ms / max(est_ms, 1e-3))))
    alive = [p for p in names if p in iters]
    pending = {p: [] for p in alive}
    idx = {p: 0 for p in alive}
    for r in range(rounds):
        if r > 0 and deadline is not None and time.perf_counter() > deadline:
            print(f"  time budget spent: {r} of {rounds} rounds timed", file=sys.stderr, flush=True)
            break
        k = r % max(len(alive), 1)
        for p in alive[k:] + alive[:k]:
            if p not in pending:
                continue
            try:
                pending[p].append(_timed(steps[p], idx[p], iters[p], cuda))
                _sync(cuda)
            except Exception as e:
                on_error(p, e)
                del pending[p]
                continue
            idx[p] += iters[p]
    return {p: [t for get in gets for t in get()] for p, gets in pending.items()}


def peak_memory_mib(step) -> float:
    """Peak CUDA memory of one step above what was allocated before it (activations saved for backward,
    gradients, workspaces), in MiB."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step(0)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def quantiles(times_ms: list[float]) -> tuple[float, float, float] | None:
    """(median, p20, p80) in ms."""
    if not times_ms:
        return None
    t = torch.tensor(times_ms, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor([0.5, 0.2, 0.8], dtype=torch.float64))
    return tuple(float(v) for v in q)
