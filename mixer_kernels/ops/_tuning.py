"""Launch configurations that fit the card at hand, in one place (issue 15, "every CUDA card a timm user has").

Every tile table of the package (token mixing's, ResMLP's token linear, the channel GEMMs') is an ordered
list: the first entry is MIXER_KERNELS_AUTOTUNE=0's, the autotuner benchmarks the rest. A table was written
for the H100 (227 KB of shared memory per block); an RTX 3090/4090/5090 has 99 KB, an A100 163 KB, and a
config over the card's limit does not launch (Triton: OutOfResources). `keep` decides, per launch and card,
which entries stay, from each entry's compiled kernel, not from an estimate:

    fits      compiled shared memory <= the card's limit per block (SHARED_PER_BLOCK, or the device's own
              shared_memory_per_block_optin at run time)
    clean     fits and spills no registers (ptxas's count; on a GPU the loaded kernel's n_spills)
    primary   an entry not marked `fallback` (fallbacks are entries for smaller cards: a card uses them only
              when no primary entry is clean there, so an H100 never tunes over them)

    kept = clean primaries, else clean fallbacks, else fitting primaries, else fitting fallbacks;
    none fitting is an error naming the kernel, the card and each entry's size.

With autotuning off (MIXER_KERNELS_AUTOTUNE=0, or a table of one entry) the launch takes the first kept entry,
compiling entries in table order only until it is found (on an H100 the first entry: the one compile the
launch needs anyway). The same function judges the compile check's cases for sm_80, sm_86, sm_89 and sm_120
on a machine without a GPU (ops/_compile_check.py, from ptxas), so what tests/test_compile.py checks per card
is what a launch on that card would keep.

`Autotuner` (a subclass of triton's) applies `keep` inside triton.autotune's pruning, caches its timings on
disk (cache_results: Triton's cache manager, as ops/_choice.py does for the GEMM choices), and inside a
CUDA-graph capture never benchmarks (do_bench synchronises, which a capture forbids): a key not tuned yet
runs the first kept entry, not remembered, so the next call outside a capture tunes it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import triton

from .._config import autotune, triton_interpret

# cudaDevAttrMaxSharedMemoryPerBlockOptin by compute capability (bytes): what one program may take.
SHARED_PER_BLOCK = {
    80: 166912,    # A100, A30: 163 KB
    86: 101376,    # RTX 30xx, A10, A40, A6000: 99 KB
    87: 166912,    # Jetson Orin
    89: 101376,    # RTX 40xx, L4, L40: 99 KB
    90: 232448,    # H100, H200, GH200: 227 KB
    100: 232448,   # B200, GB200
    103: 232448,   # B300
    120: 101376,   # RTX 50xx (consumer Blackwell): 99 KB
    121: 101376,   # DGX Spark
}
CARDS = {80: "A100", 86: "RTX 3090", 89: "RTX 4090", 90: "H100/H200", 120: "RTX 5090"}

# Compile options every launch of the package passes (`**LAUNCH_OPTIONS`), and the compile check and the speed
# model compile with (ops/_compile_check.compile_kernel). FP contraction (a * b + c as one fma, in Triton's LLVM
# and in ptxas) stays on: the numerics our accuracy tests and the speed model were measured with, Triton 3.6 to
# 3.9's default. Triton 3.9 warns that the default turns off in 3.10 (ptxas --fmad=false): pinned here, a new
# Triton cannot change our results or speed unannounced, and no launch prints that warning.
FP_FUSION = True
LAUNCH_OPTIONS = {"enable_fp_fusion": FP_FUSION}


def arch_of(device) -> int:
    """Compute capability of a CUDA device as one number (sm_86 -> 86)."""
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def shared_limit(device=None, arch: int | None = None) -> int:
    """Shared memory one program may take on `device` (read from the device), or on a simulated card `arch`
    (the table)."""
    if arch is not None:
        return SHARED_PER_BLOCK[arch]
    optin = getattr(torch.cuda.get_device_properties(device), "shared_memory_per_block_optin", 0)
    return int(optin) if optin else SHARED_PER_BLOCK[arch_of(device)]


class NoConfigFits(RuntimeError):
    pass


_SIMULATED: tuple[int, Callable] | None = None    # tests: (arch, compiled(config) -> (shared, spills))


@contextlib.contextmanager
def simulated(arch: int, compiled: Callable[[Any], tuple[int, int | None]]):
    """Tests without a GPU: every launch (CPU tensors included) prunes as on a card of compute capability
    `arch`, `compiled(config)` standing for the compiled kernel's (shared bytes, spill bytes); `config` is
    a triton.Config (autotuned kernels) or a table dict (plain launches)."""
    global _SIMULATED
    saved, _SIMULATED = _SIMULATED, (arch, compiled)
    try:
        yield
    finally:
        _SIMULATED = saved


@dataclass
class Entry:
    """One table entry as `keep` sees it: the config (any object), whether it is a fallback, and its
    compiled (shared bytes, spill bytes), filled in when first needed."""
    config: Any
    fallback: bool = False
    shared: int | None = None
    spills: int | None = None


def keep(name: str, entries: Iterable[Entry], compiled: Callable[[Any], tuple[int, int | None]], limit: int,
         *, tune: bool, card: str = "this GPU") -> list[Entry]:
    """The entries a card keeps (module docstring). compiled(config) -> (shared bytes, spill bytes; None for
    spills when unknown, i.e. over the limit). tune=False: stop at the first kept entry and return it alone."""
    entries = list(entries)
    if not entries:
        raise ValueError(f"{name}: empty tile table")

    def measure(e: Entry) -> Entry:
        if e.shared is None:
            e.shared, e.spills = compiled(e.config)
        return e

    def fits(e):
        return measure(e).shared <= limit

    def clean(e):
        return fits(e) and not e.spills

    order = [e for e in entries if not e.fallback] + [e for e in entries if e.fallback]
    # the flag first: a fallback is compiled only when no primary entry is clean
    tiers = [lambda e: not e.fallback and clean(e), lambda e: e.fallback and clean(e),
             lambda e: not e.fallback and fits(e), lambda e: e.fallback and fits(e)]
    for tier in tiers:
        if tune:
            kept = [e for e in order if tier(e)]
            if kept:
                return kept
        else:
            for e in order:
                if tier(e):
                    return [e]
    sizes = ", ".join(f"{e.config}: {e.shared} B" for e in order)
    raise NoConfigFits(f"{name}: no tile config fits {card}'s {limit} bytes of shared memory per block ({sizes}); "
                       "please report the card and the shapes")


# ------------------------------------------------------------------------------------------------
# At run time: the kernel compiled for the current device (the compile a launch does anyway, cached)

_PICKED: dict = {}       # (kernel, device, key) -> config dict: plain launches
KEPT: list[dict] = []    # every run-time decision: {kernel, card, limit, kept: [(config, shared, spills)]}


def _record(name, card, limit, kept):
    if len(KEPT) < 10000:
        KEPT.append(dict(kernel=name, card=card, limit=limit, kept=[(str(e.config), e.shared, e.spills) for e in kept]))
    return kept


def _device_compiled(fn, args: tuple, kwargs: dict, meta: dict, limit: int) -> tuple[int, int | None]:
    """(shared, spills) of `fn` compiled for the current device with these launch arguments and meta
    (constexprs, num_warps, num_stages): triton's own compile (JITFunction.warmup, cached in memory and on
    disk, so the launch that follows reuses it); spills from the loaded kernel when it fits."""
    launch = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}   # an autotuner's run passes both
    k = fn.warmup(*args, grid=(1,), **launch, **meta)
    if k is None:                   # a user's jit_cache_hook took the compile over: nothing to read
        return 0, 0
    if hasattr(k, "result"):        # a future under async compilation
        k = k.result()
    shared = int(k.metadata.shared)
    if shared > limit:
        return shared, None
    k._init_handles()
    return shared, int(getattr(k, "n_spills", 0) or 0)


def launch_key(args: tuple, kwargs: dict) -> tuple:
    """pick's key read from a launch's own arguments as Triton specialises them: each tensor's dtype and
    16-byte alignment, each int's (== 1, divisible by 16, 64-bit), the other scalars' types, the constexprs."""
    def spec(a):
        if isinstance(a, torch.Tensor):
            return str(a.dtype), a.data_ptr() % 16 == 0
        if isinstance(a, bool):
            return a
        if isinstance(a, int):
            return a == 1, a % 16 == 0, not -2**31 <= a < 2**31
        return type(a).__name__
    return tuple(spec(a) for a in args) + tuple(sorted(kwargs.items()))


def pick(fn, table: list[dict], key: tuple | None, device, args: tuple, kwargs: dict) -> dict:
    """The config (a dict of constexprs + num_warps + num_stages; a true `fallback` marks a smaller card's
    entry) that a plain launch of `fn` (one config, no autotuning) takes on `device`: the first kept entry of
    `table`, cached per (kernel, device, key). `key` must determine the compiled kernel's size (shapes,
    dtypes, constexprs), with launch_key of the arguments (None: that alone). Off CUDA or under TRITON_INTERPRET (the
    interpreter, meta tensors): the first primary entry, nothing compiled."""
    name = getattr(fn, "__name__", None) or fn.fn.__name__
    entries = [Entry(c, bool(c.get("fallback"))) for c in table]
    if _SIMULATED is not None:
        arch, compiled = _SIMULATED
        return _strip(keep(name, entries, compiled, shared_limit(arch=arch), tune=False,
                           card=CARDS.get(arch, f"sm_{arch}"))[0].config)
    if device.type != "cuda" or triton_interpret():
        return _strip(next(c for c in table if not c.get("fallback")))
    full = (name, device.index, key, launch_key(args, kwargs))
    if full not in _PICKED:
        limit = shared_limit(device)
        card = torch.cuda.get_device_name(device)
        kept = keep(name, entries, lambda c: _device_compiled(fn, args, kwargs, _strip(c), limit), limit, tune=False,
                    card=card)
        _PICKED[full] = _strip(_record(name, card, limit, kept)[0].config)
    return dict(_PICKED[full])


def _strip(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "fallback"}


def simulate(name: str, table: list, compiled: Callable[[Any], tuple[int, int | None]], arch: int,
             tune: bool | None = None) -> list:
    """Tests and the compile check: the configs of `table` a card of compute capability `arch` keeps,
    `compiled(config) -> (shared, spills)` standing for the compiled kernel (no GPU needed); tune=None
    reads MIXER_KERNELS_AUTOTUNE."""
    entries = [Entry(c, bool(c.get("fallback")) if isinstance(c, dict) else bool(getattr(c, "fallback", False)))
               for c in table]
    tune = autotune() if tune is None else tune
    return [e.config for e in keep(name, entries, compiled, shared_limit(arch=arch), tune=tune,
                                   card=CARDS.get(arch, f"sm_{arch}"))]


# ------------------------------------------------------------------------------------------------
# triton.autotune with the card's pruning, the disk cache and CUDA-graph capture


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class Autotuner(triton.runtime.autotuner.Autotuner):
    """triton's Autotuner whose pruning ends with `keep` for the current device (after the table's own
    early_config_prune, e.g. the operand-width filter), and whose first call of a key inside a CUDA-graph
    capture runs the first kept config unmeasured, not remembered."""

    fallbacks: list = []        # the configs that are smaller cards' entries (`keep`)

    def prune_configs(self, kwargs):
        configs = super().prune_configs(kwargs)
        args = tuple(self.nargs.values())
        tensor = next((a for a in args if isinstance(a, torch.Tensor)), None)
        entries = [Entry(c, any(c is f for f in self.fallbacks)) for c in configs]
        tune = autotune() and not _capturing()
        if _SIMULATED is not None:
            arch, compiled = _SIMULATED
            limit, card = shared_limit(arch=arch), CARDS.get(arch, f"sm_{arch}")
        elif tensor is None or tensor.device.type != "cuda":
            return [e.config for e in entries if not e.fallback][:None if tune else 1]
        else:
            limit, card = shared_limit(tensor.device), torch.cuda.get_device_name(tensor.device)

            def compiled(c):
                return _device_compiled(self.fn, args, kwargs, c.all_kwargs(), limit)
        kept = keep(self.base_fn.__name__, entries, compiled, limit, tune=tune, card=card)
        return [e.config for e in _record(self.base_fn.__name__, card, limit, kept)]

    def run(self, *args, **kwargs):
        key = self._key(args, kwargs)
        config = self.cache.get(key)
        if config is None:
            capturing = _capturing()
            self.nargs = dict(zip(self.arg_names, args, strict=False))
            try:
                pruned = self.prune_configs(kwargs)
            except NoConfigFits:
                raise
            except Exception as e:
                if capturing:   # compiling or loading the kernel is what failed: say what to do
                    raise RuntimeError(
                        f"mixer_kernels: {self.base_fn.__name__} was first called for these shapes inside a CUDA "
                        f"graph capture, and compiling or loading it there failed ({type(e).__name__}: {e}); warm "
                        "up with one call outside the capture first (as torch.cuda.graph's documentation asks)"
                    ) from e
                raise
            finally:
                self.nargs = None
            if len(pruned) > 1 and not capturing:
                return super().run(*args, **kwargs)     # benchmarks them (or reads the disk cache) and keeps one
            # one config left (triton 3.6 would still benchmark it), or a capture, where nothing can be timed:
            # the first kept config; not remembered inside a capture
            config = pruned[0]
            if not capturing:
                self.cache[key] = config
        return self.fn.run(*args, **kwargs, **config.all_kwargs())

    def _key(self, args, kwargs) -> tuple:
        """The tuning key exactly as triton's Autotuner.run forms it (3.6 and 3.8): the key arguments, then
        the dtype of every tensor argument."""
        all_args = {**dict(zip(self.arg_names, args, strict=False)), **kwargs}
        named = {k: v for k, v in all_args.items() if k in self.arg_names}
        key = [named[k] for k in self.keys if k in named]
        key += [str(v.dtype) for v in named.values() if hasattr(v, "dtype")]
        return tuple(key)


def autotuner(configs: list, key: list[str], *, early_config_prune=None, do_bench=None):
    """Decorator like triton.autotune(configs, key, prune_configs_by={"early_config_prune": ...},
    do_bench=..., cache_results=True), returning this module's Autotuner. `configs`: triton.Configs, or table
    dicts (BLOCK_* constexprs, num_warps, num_stages; a true `fallback` marks a smaller card's entry, see
    `keep`)."""
    cfgs = [config(c) if isinstance(c, dict) else c for c in configs]
    fallbacks = [cfg for c, cfg in zip(configs, cfgs, strict=True) if isinstance(c, dict) and c.get("fallback")]

    def decorate(fn):
        tuner = triton.autotune(cfgs, key=key, do_bench=do_bench, cache_results=True,
                                prune_configs_by={"early_config_prune": early_config_prune}
                                if early_config_prune else None)(fn)
        tuner.__class__ = Autotuner
        tuner.fallbacks = fallbacks
        return tuner
    return decorate


def config(c: dict) -> triton.Config:
    """A triton.Config from a table dict (BLOCK_* constexprs, num_warps, num_stages; `fallback` is not part of
    it: the autotuner keeps that flag beside the config)."""
    meta = {k: v for k, v in c.items() if k not in ("num_warps", "num_stages", "fallback")}
    return triton.Config(meta, num_warps=c["num_warps"], num_stages=c["num_stages"])
