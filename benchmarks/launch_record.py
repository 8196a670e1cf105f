"""The kernel sequence of an op, recorded on meta tensors: no device, no kernel runs, no data.

`record(fn)` runs `fn` (the fused ops' real launchers, or eager PyTorch modules and autograd) with every
tensor on the meta device and returns its steps in order:
- `TritonLaunch`: a Triton kernel launch, caught in `JITFunction.run` / `Autotuner.run` before anything
  compiles: the kernel, its named arguments, the grid, and the configs its autotuner may pick (after
  the autotuner's own pruning), so the speed model compiles exactly what a launch would;
- `AtenOp`: every other ATen op that moves data (views, allocations and metadata cost nothing), with the
  bytes it reads and writes and, for matrix products, its FLOPs and GEMM shape (M, N, K, batch, dtype, and
  whether every operand's leading dimension and base are 16-byte aligned, as TMA and 16-byte loads need).
  Alias-free reshapes cost nothing: ops whose schema returns an alias (`view`, `t`, `transpose`, `expand`,
  `alias`, ...) and `_unsafe_view`, which ATen uses where a reshape result shares its input's storage
  (matmul's folding of batch dimensions, `reshape` of a contiguous tensor): it launches no kernel.
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
    configs: list[dict]            # candidates: dict(kwargs={...}, num_warps=, num_stages=, options={...}), options
    #                                the launch's other compile options (enable_fp_fusion, maxnreg, num_ctas)

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
    # matrix products only (None otherwise): [batch] x [M, K] @ [K, N] in dtype; aligned: every operand's
    # non-unit strides and storage offset are multiples of 16 bytes (K = 196 bf16 rows are not)
    M: int | None = None
    N: int | None = None
    K: int | None = None
    batch: int = 1
    dtype: torch.dtype | None = None
    aligned: bool | None = None

    @property
    def gemm(self) -> tuple[int, int, int, int] | None:
        """(M, N, K, batch) of a matrix product, None for other ops."""
        return None if self.M is None else (self.M, self.N, self.K, self.batch)


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
# no alias_info in their schema, yet their result shares the input's storage: no kernel, no traffic
_STORAGE_SHARING = {"_unsafe_view"}


def _aligned16(t: torch.Tensor) -> bool:
    """Every stride of a dimension longer than 1, other than the unit one, and the storage offset are
    multiples of 16 bytes (what TMA descriptors and 16-byte vector loads need)."""
    e = t.element_size()
    if (t.storage_offset() * e) % 16:
        return False
    return all((st * e) % 16 == 0 for size, st in zip(t.shape, t.stride(), strict=True) if size > 1 and st != 1)


def gemm_shape(name: str, args, out: torch.Tensor) -> dict:
    """M, N, K, batch, dtype, aligned of one ATen matrix product (mm, addmm, bmm, baddbmm,
    _addmm_activation): [batch] x [M, K] @ [K, N] -> [M, N]."""
    a, b = (args[1], args[2]) if name in ("addmm", "baddbmm", "_addmm_activation") else (args[0], args[1])
    batch = a.shape[0] if a.dim() == 3 else 1
    return dict(M=int(a.shape[-2]), N=int(b.shape[-1]), K=int(a.shape[-1]), batch=int(batch), dtype=a.dtype,
                aligned=_aligned16(a) and _aligned16(b) and _aligned16(out))


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
    if name in _FREE or name in _STORAGE_SHARING:
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
    if name in _MATMUL:
        o = outs[0]
        shape = gemm_shape(name, args, o)
        return AtenOp(name, float(nbytes), 2.0 * o.numel() * shape["K"], **shape)
    return AtenOp(name, float(nbytes))


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


# compile options a launch may pass beside num_warps and num_stages: recorded in each candidate's "options", so
# that a model compiles what the launch compiles (hopper_model.compile_launch(..., **config["options"]))
_COMPILE_OPTIONS = ("enable_fp_fusion", "maxnreg", "num_ctas")


def _split_options(kwargs: dict) -> tuple[dict, dict, dict]:
    """(num_warps/num_stages, the other compile options of _COMPILE_OPTIONS, the kernel's arguments) of a
    launch's keyword arguments."""
    opts = {k: kwargs[k] for k in ("num_warps", "num_stages") if k in kwargs}
    compile_opts = {k: kwargs[k] for k in _COMPILE_OPTIONS if k in kwargs}
    rest = {k: v for k, v in kwargs.items() if k not in ("num_warps", "num_stages", "num_ctas", "grid", "warmup",
                                                         "maxnreg", "enable_fp_fusion", "launch_cooperative_grid")}
    return opts, compile_opts, rest


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
        opts, compile_opts, rest = _split_options(kwargs)
        named = _with_defaults(self, dict(zip(self.arg_names, args, strict=False)) | rest)
        cfg = dict(kwargs={}, num_warps=opts.get("num_warps", 4), num_stages=opts.get("num_stages", 3),
                   options=compile_opts)
        rec.steps.append(TritonLaunch(self.fn.__name__, self, named, grid, [cfg]))

    def tune_run(self, *args, **kwargs):
        grid = kwargs["grid"]
        _, compile_opts, rest = _split_options(kwargs)
        named = dict(zip(self.arg_names, args, strict=False))
        # a smaller card's entries (ops/_tuning: fallbacks) are never tuned over on the modelled sm_90
        configs = [c for c in self.configs if not any(c is f for f in getattr(self, "fallbacks", []))]
        if self.early_config_prune and len(configs) > 1:
            self.nargs = named
            configs = self.early_config_prune(configs, named, **rest)
            self.nargs = None
        cands = [dict(kwargs=dict(c.kwargs), num_warps=c.num_warps, num_stages=c.num_stages, options=dict(compile_opts))
                 for c in configs]
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
