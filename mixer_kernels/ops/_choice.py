"""Choosing between ways of computing one GEMM by measurement: our fused Triton kernel or the
composition it replaces (cuBLAS plus a pass for what cuBLAS cannot fuse), so that on a card where our
kernel loses the op is still as fast as the composition (issue 13, "never slower than the composition").

A `Choice` holds an ordered list of alternatives, our kernel first; every alternative takes the same
arguments and returns the same results (ops/_channel_routes.py defines them for channel mixing). On the
first call of a key (the shapes other than the row count, whose next power of two stands in, the dtypes,
the flags and the GPU), on a CUDA device with MIXER_KERNELS_AUTOTUNE on, each alternative is timed as
Triton's autotuner times configs (triton.testing.do_bench, after its own first call, which autotunes our
kernel's configs) and the fastest kept. The timings go where Triton's autotuner keeps its own
(cache_results=True): Triton's cache manager, TRITON_CACHE_DIR (default ~/.triton/cache), one JSON file per
key, named `<choice>.choice.json` in a directory hashed from the Triton version, the GPU, the key and
the alternatives; a new process reads the choice back instead of measuring again.

Without measurement the first alternative (our kernel) runs: MIXER_KERNELS_AUTOTUNE=0 (the choice is
then the same in every process, as the tile configs are), the interpreter, the CPU and meta tensors (the
speed model's launch recording). `picks()` says what each choice took and why (the benchmark's
--kernels table shows it). Tests replace the timer (`timed_by`), which also lets a CPU run measure, or
force one alternative (`forced`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any, Callable

import torch

from .._config import autotune

_TIMER: Callable[[str, Callable[[], Any]], float] | None = None    # tests: (label, fn) -> ms
_FORCED: str | None = None          # tests: every choice takes the alternative of this label
_PICKS: dict[str, dict] = {}        # "<choice> <key>" -> {choice, key, pick, reason, timings_ms}
_ALL: list[Choice] = []


def _do_bench(label: str, fn: Callable[[], Any]) -> float:
    import triton.testing
    return triton.testing.do_bench(fn, warmup=5, rep=25)


@contextlib.contextmanager
def timed_by(timer: Callable[[str, Callable[[], Any]], float]):
    """Tests: measure every choice with `timer(label, fn) -> ms` (on any device), in-memory choices
    forgotten before and after (the disk cache is kept: point TRITON_CACHE_DIR at a temporary folder)."""
    global _TIMER, _FORCED
    forget()
    saved, _TIMER, _FORCED = _FORCED, timer, None
    try:
        yield
    finally:
        _TIMER, _FORCED = None, saved
        forget()


@contextlib.contextmanager
def forced(label: str):
    """Tests of one alternative's kernels (launch counts on a GPU): every choice takes `label`, unmeasured."""
    global _FORCED
    saved, _FORCED = _FORCED, label
    try:
        yield
    finally:
        _FORCED = saved


def forget():
    """Drop the choices made in this process (not the disk cache)."""
    for c in _ALL:
        c.cache.clear()
    _PICKS.clear()


def picks() -> list[dict]:
    """What each choice took since the last clear_picks(): [{choice, key, pick, reason, timings_ms}], one
    per choice and key, in first-call order."""
    return [dict(p) for p in _PICKS.values()]


def clear_picks():
    """Start a new record of picks (the choices themselves are kept)."""
    _PICKS.clear()


def _device_tag(t: torch.Tensor) -> str:
    if t.device.type == "cuda":
        p = torch.cuda.get_device_properties(t.device)
        return f"{p.name} sm_{p.major}{p.minor} {p.multi_processor_count} SMs"
    return t.device.type


class Choice:
    """`Choice(name, [(label, fn), ...], key)`: calling it runs the chosen fn. key(*args, **kwargs) gives
    the tuning key (a tuple of plain values) and the tensor whose device decides whether to measure."""

    def __init__(self, name: str, alternatives: list[tuple[str, Callable]], key: Callable):
        if len({label for label, _ in alternatives}) != len(alternatives):
            raise ValueError(f"choice {name}: duplicate alternative labels")
        self.name = name
        self.alternatives = alternatives
        self.key = key
        self.cache: dict[tuple, tuple] = {}     # full key -> (index, reason, timings)
        _ALL.append(self)

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.alternatives]

    def __call__(self, *args, **kwargs):
        return self.alternatives[self.pick(*args, **kwargs)][1](*args, **kwargs)

    def pick(self, *args, **kwargs) -> int:
        """Index of the alternative to run for these arguments (measuring on the first call of a key)."""
        key, tensor = self.key(*args, **kwargs)
        if _FORCED is not None:
            return self._record(key, self.labels.index(_FORCED), "forced (tests)", None)
        measurable = _TIMER is not None or tensor.device.type == "cuda"
        if not (measurable and autotune()):
            reason = "MIXER_KERNELS_AUTOTUNE=0: first entry" if measurable else \
                f"first entry (nothing to measure on {tensor.device.type})"
            return self._record(key, 0, reason, None)
        full_key = key + (_device_tag(tensor),)
        if full_key not in self.cache and tensor.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            # nothing can be timed inside a CUDA graph capture (do_bench synchronises): our kernel, not kept
            return self._record(key, 0, "first entry (CUDA graph capture: not measured)", None)
        if full_key not in self.cache:
            timings, where = self._load(full_key), "disk cache"
            if timings is None:
                timer = _TIMER or _do_bench
                timings = [float(timer(label, lambda fn=fn: fn(*args, **kwargs))) for label, fn in self.alternatives]
                where = "measured"
                self._store(full_key, timings)
            best = min(range(len(timings)), key=timings.__getitem__)
            self.cache[full_key] = (best, f"fastest ({where})", timings)
        return self._record(key, *self.cache[full_key])

    def _record(self, key, index, reason, timings):
        _PICKS[f"{self.name} {key}"] = dict(choice=self.name, key=str(key), pick=self.alternatives[index][0],
                                            reason=reason, timings_ms=None if timings is None else
                                            dict(zip(self.labels, timings, strict=True)))
        return index

    def _cache_file(self, full_key):
        from triton.runtime.cache import get_cache_manager, triton_key
        h = hashlib.sha256("-".join([triton_key(), self.name, str(full_key), *self.labels]).encode()).hexdigest()
        return get_cache_manager(h), f"{self.name}.choice.json"

    def _load(self, full_key) -> list[float] | None:
        cache, name = self._cache_file(full_key)
        path = cache.get_file(name)
        if not path:
            return None
        with open(path) as f:
            saved = json.load(f)
        if saved.get("labels") != self.labels:
            return None
        return [float(t) for t in saved["timings_ms"]]

    def _store(self, full_key, timings):
        cache, name = self._cache_file(full_key)
        cache.put(json.dumps(dict(choice=self.name, key=str(full_key), labels=self.labels, timings_ms=timings)),
                  name, binary=False)
