"""Every Triton kernel of the package registers itself here with the launch configurations it meets at
real Mixer sizes and a description of the work one launch does. Three consumers: the compile test
(tests/test_compile.py builds each case for sm_90 and sm_80 on a CPU machine and reports registers,
spills and speed hazards), the launch counter of the tests and benchmarks (`count_launches`, which
wraps each kernel's `run` to prove the Triton path answered, not a PyTorch fallback), and the speed
model (benchmarks/speed_model.py, which needs each launch's `Work`). Kernels register when their
module is imported: `import_all_ops()` imports every one.
"""
from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class CompileCase:
    """One launch to compile ahead of time. `args` maps every kernel parameter to an example value:
    a torch.dtype stands for a pointer (assumed 16-byte aligned, as the caching allocator gives),
    ints/floats/bools for scalars and constexprs, as a real launch would pass them."""

    name: str
    args: dict[str, Any]
    num_warps: int = 4
    num_stages: int = 3
    # the launch this case is one tile config of (cases of one group: the entries of its tile table, in table
    # order; ops/_tuning.keep decides per card which a launch keeps); None: a launch of its own
    group: str | None = None
    fallback: bool = False      # an entry for smaller cards (ops/_tuning.keep)

    def args_for(self, arch: int) -> dict[str, Any]:
        """The arguments of this launch on an sm_`arch` card: a kernel with a TMA constexpr takes its
        pointer loads below sm_90 (no TMA there), as its launcher decides (ops/_channel_gemm.tma_ok)."""
        if "TMA" in self.args and arch < 90:
            return {**self.args, "TMA": False}
        return self.args


@dataclass
class Work:
    """What one launch must do, as the kernel's source says (for the speed model):
    flops: the matrix-product FLOPs of the algorithm as written (no padding, no duplicated warps);
    bytes: the device-memory traffic it cannot avoid (each input read once, each output written once);
    trips: iterations of the main loop (the innermost loop holding the dots; for a kernel without dots,
    its outermost loop) per program; outer: how often a program runs that loop (the trips of the loop
    around it, 1 if none)."""

    flops: float
    bytes: float
    trips: int
    outer: int = 1


@dataclass
class KernelEntry:
    name: str
    kernel: Any                                   # the triton JITFunction (or InterpretedFunction)
    cases: Callable[[], list[CompileCase]] = field(default=lambda: [])
    work: Callable[[dict], Work] | None = None    # named launch arguments (meta tensors allowed) -> Work


KERNELS: dict[str, KernelEntry] = {}


def jit_function(kernel):
    """The @triton.jit function inside `kernel` (unwraps triton.autotune / triton.heuristics)."""
    from triton.runtime.jit import JITFunction
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover
        InterpretedFunction = JITFunction
    while not isinstance(kernel, (JITFunction, InterpretedFunction)) and hasattr(kernel, "fn"):
        kernel = kernel.fn
    return kernel


def register_kernel(kernel, cases: Callable[[], list[CompileCase]], work: Callable[[dict], Work] | None = None):
    """Record `kernel` (a @triton.jit function, possibly autotuned: register the outermost object, whose
    `run` the launchers call), a callable giving its compile cases, and one giving the Work of a launch
    from its named arguments (tensors, scalars and the config's constexprs)."""
    name = jit_function(kernel).fn.__name__
    KERNELS[name] = KernelEntry(name, kernel, cases, work)
    return kernel


def import_all_ops():
    """Import every kernel module of mixer_kernels.ops, so that each of its kernels is in KERNELS."""
    import mixer_kernels.ops as ops
    for m in pkgutil.iter_modules(ops.__path__):
        if not m.name.startswith("_"):
            importlib.import_module(f"mixer_kernels.ops.{m.name}")


@contextlib.contextmanager
def count_launches():
    """`with count_launches() as n: ...` then `n["_token_mixing_fwd_tm_kernel"]` is how many times that
    registered Triton kernel was launched inside the block (wraps each kernel object's `run`; on a GPU
    the autotuner's benchmark launches count too). The tests and benchmarks use it to prove that the
    kernels ran, not a PyTorch fallback."""
    import_all_ops()
    counts: Counter = Counter()
    patched = []
    for name, entry in KERNELS.items():
        def run(*args, _orig=entry.kernel.run, _name=name, **kwargs):
            counts[_name] += 1
            return _orig(*args, **kwargs)

        entry.kernel.run = run
        patched.append(entry.kernel)
    try:
        yield counts
    finally:
        for k in patched:
            del k.run


def nbytes(t) -> int:
    """Bytes of a tensor argument (for Work.bytes)."""
    return t.numel() * t.element_size()


_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
                torch.int32: "i32", torch.int64: "i64", torch.int8: "i8", torch.uint8: "u8",
                torch.float8_e4m3fn: "fp8e4nv", torch.float8_e5m2: "fp8e5"}


def signature_of(kernel, args: dict[str, Any]):
    """Signature, constexprs and attrs as the JIT would specialise a launch with these arguments:
    integer arguments equal to 1 become constants; pointers and integers divisible by 16 carry
    tt.divisibility=16 (docs/design.md, "Triton on our machines"); integers named in the kernel's
    do_not_specialize get neither."""
    import inspect
    kernel = jit_function(kernel)
    fn = kernel.fn
    params = list(inspect.signature(fn).parameters)
    constexpr_names = {p.name for p in kernel.params if p.is_constexpr}
    unspecialised = {p.name for p in kernel.params if getattr(p, "do_not_specialize", False)}
    missing = [p for p in params if p not in args]
    extra = [a for a in args if a not in params]
    if missing or extra:
        raise ValueError(f"compile case for {fn.__name__}: missing {missing}, unknown {extra}")
    signature, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(params):
        v = args[p]
        if p in constexpr_names:
            signature[p] = "constexpr"
            constexprs[p] = v
        elif isinstance(v, torch.dtype):
            signature[p] = "*" + _DTYPE_NAMES[v]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(v, bool):
            signature[p] = "i1"
        elif isinstance(v, int) and p in unspecialised:
            signature[p] = "i64" if abs(v) >= 2**31 else "i32"
        elif isinstance(v, int):
            if v == 1:
                signature[p] = "constexpr"
                constexprs[p] = 1
            else:
                signature[p] = "i64" if abs(v) >= 2**31 else "i32"
                if v % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(v, float):
            signature[p] = "fp32"
        else:
            raise TypeError(f"compile case for {fn.__name__}: unsupported value for {p}: {v!r}")
    return signature, constexprs, attrs
