"""The kernel sequence of an op, recorded on meta tensors: no device, no kernel runs, no data.

`record(fn)` runs `fn` (the fused ops' real launchers, or eager PyTorch modules and autograd) with every
tensor on the meta device and returns its steps in order:
- `TritonLaunch`: a Triton kernel launch, caught in `JITFunction.run` / `Autotuner.run` before anything
  compiles: the kernel, its named arguments, the grid, and the configs its autotuner may pick (after
  the autotuner's own pruning), so the speed model compiles exactly what a launch would;
- `AtenOp`: every other ATen op that moves data (views, allocations and metadata cost nothing), with the
  bytes it reads and writes and, for matrix products, its FLOPs.
The SM count the launchers read from the device (the channel weight-gradient split) is the modelled
card's, 132 (H100 SXM / H200).
"""
from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

MODEL_SMS = 132


@dataclass
class TritonLaunch:
    kernel: str                    # the @triton.jit function's name
    fn: Any                        # the JITFunction
    args: dict[str, Any]           # every named argument (tensors on the meta device) and constexpr
    grid: Any                      # a tuple, or a callable of the launch meta-parameters
    configs: list[dict]            # candidates: dict(kwargs={...}, num_warps=, num_stages=)

    def grid_size(self, config: dict) -> int:
        g = self.grid
        if callable(g):
            g = g({**self.args, **config["kwargs"]})
        return math.prod(int(v) for v in g)


@dataclass
class AtenOp:
    name: str
    bytes: float
    flops: float = 0.0


@dataclass
class Recording:
    steps: list = field(default_factory=list)

    @property
    def launches(self) -> list[TritonLaunch]:
        return [s for s in self.steps if isinstance(s, TritonLaunch)]


def _extent_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements a (possibly broadcast) tensor addresses."""
    n = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride != 0:
            n *= size
    return n * t.element_size() if t.numel() else 0


_FREE = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach", "lift_fresh",
         "_to_copy_meta", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size",
         "_local_scalar_dense", "set_", "resize_"}
_MATMUL = {"mm", "addmm", "bmm", "baddbmm", "_addmm_activation"}


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)


def _aten_cost(func, args, kwargs, out) -> AtenOp | None:
    name = func._schema.name.split("::")[-1]
    if name in _FREE:
        return None
    rets = func._schema.returns
    if rets and all(r.alias_info is not None and not r.alias_info.is_write for r in rets):
        return None     # a view
    ins = list(_tensors(args)) + list(_tensors(kwargs))
    outs = list(_tensors(out))
    inplace = bool(rets) and all(r.alias_info is not None and r.alias_info.is_write for r in rets)
    if name in ("zero_", "fill_", "zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "normal_",
                "uniform_", "bernoulli_"):
        return AtenOp(name, float(sum(_extent_bytes(t) for t in outs)))
    if name == "copy_":
        return AtenOp(name, float(_extent_bytes(args[0]) + _extent_bytes(args[1])))
    seen, nbytes = set(), 0
    for t in ins + ([] if inplace else outs):
        if id(t) not in seen:
            seen.add(id(t))
            nbytes += _extent_bytes(t)
    if inplace:
        nbytes += sum(_extent_bytes(t) for t in outs)     # written back
    flops = 0.0
    if name in _MATMUL:
        o = outs[0]
        a = args[1] if name in ("addmm", "baddbmm", "_addmm_activation") else args[0]
        flops = 2.0 * o.numel() * a.shape[-1]
    return AtenOp(name, float(nbytes), flops)


class _AtenRecorder(TorchDispatchMode):
    def __init__(self, rec: Recording):
        super().__init__()
        self.rec = rec

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        op = _aten_cost(func, args, kwargs, out)
        if op is not None:
            self.rec.steps.append(op)
        return out


def _split_options(kwargs: dict) -> tuple[dict, dict]:
    opts = {k: kwargs[k] for k in ("num_warps", "num_stages") if k in kwargs}
    rest = {k: v for k, v in kwargs.items() if k not in ("num_warps", "num_stages", "num_ctas", "grid", "warmup",
                                                         "maxnreg", "enable_fp_fusion", "launch_cooperative_grid")}
    return opts, rest


def _with_defaults(fn, named: dict) -> dict:
    """`named` plus the defaults of the kernel's parameters the launcher left out (a launch binds them too;
    the speed model recompiles from these arguments alone). `fn` is the JITFunction or, under
    TRITON_INTERPRET=1, the InterpretedFunction; both keep the Python function as `.fn`."""
    defaults = {p.name: p.default for p in inspect.signature(fn.fn).parameters.values()
                if p.default is not inspect.Parameter.empty and p.name not in named}
    return defaults | named


@contextlib.contextmanager
def _catch_launches(rec: Recording):
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    import mixer_kernels.ops._channel_gemm as cg
    from mixer_kernels.ops import _tuning
    orig_jit, orig_interp, orig_tune = JITFunction.run, InterpretedFunction.run, Autotuner.run
    orig_ours = _tuning.Autotuner.run       # our subclass's run (card pruning, capture) is caught the same way
    orig_sms, orig_cur = cg._sm_count, torch.cuda.current_device

    def jit_run(self, *args, grid, warmup, **kwargs):
        opts, rest = _split_options(kwargs)
        named = _with_defaults(self, dict(zip(self.arg_names, args, strict=False)) | rest)
        cfg = dict(kwargs={}, num_warps=opts.get("num_warps", 4), num_stages=opts.get("num_stages", 3))
        rec.steps.append(TritonLaunch(self.fn.__name__, self, named, grid, [cfg]))

    def tune_run(self, *args, **kwargs):
        grid = kwargs["grid"]
        opts, rest = _split_options(kwargs)
        named = dict(zip(self.arg_names, args, strict=False))
        # a smaller card's entries (ops/_tuning: fallbacks) are never tuned over on the modelled sm_90
        configs = [c for c in self.configs if not any(c is f for f in getattr(self, "fallbacks", []))]
        if self.early_config_prune and len(configs) > 1:
            self.nargs = named
            configs = self.early_config_prune(configs, named, **rest)
            self.nargs = None
        cands = [dict(kwargs=dict(c.kwargs), num_warps=c.num_warps, num_stages=c.num_stages) for c in configs]
        fn = self.fn
        while not isinstance(fn, (JITFunction, InterpretedFunction)):
            fn = fn.fn
        given = named | rest
        tuned = {k for c in cands for k in c["kwargs"]}    # set by the config, not by the parameter's default
        args = {k: v for k, v in _with_defaults(fn, given).items() if k in given or k not in tuned}
        rec.steps.append(TritonLaunch(fn.fn.__name__, fn, args, grid, cands))

    # under TRITON_INTERPRET=1 (the tests) @triton.jit gives InterpretedFunctions: caught the same way
    JITFunction.run = InterpretedFunction.run = jit_run
    Autotuner.run = _tuning.Autotuner.run = tune_run
    cg._sm_count = lambda index: MODEL_SMS
    torch.cuda.current_device = lambda: 0
    try:
        yield
    finally:
        JITFunction.run, InterpretedFunction.run, Autotuner.run = orig_jit, orig_interp, orig_tune
        _tuning.Autotuner.run = orig_ours
        cg._sm_count, torch.cuda.current_device = orig_sms, orig_cur


def record(fn: Callable[[], Any]) -> tuple[Recording, Any]:
    """(the steps `fn` launches, fn's result). fn must build its tensors on the meta device."""
    rec = Recording()
    with _catch_launches(rec), _AtenRecorder(rec):
        result = fn()
    return rec, result
