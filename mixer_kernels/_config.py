"""Run-time switches read from the environment, in one place: every variable the package, its tests
and its benchmarks read is read here, one function each (the README's table lists them).

    TRITON_INTERPRET            Triton's own switch: kernels run under its CPU interpreter
    MIXER_KERNELS_AUTOTUNE      0: no GPU autotuning, one fixed config per kernel (default 1)
    MIXER_KERNELS_NVTX          1: NVTX ranges around each fused op (default 0; the [nvtx] extra)
    MIXER_KERNELS_POISON        1: launchers NaN-fill the outputs they allocate (default 0; the tests set 1)
    MIXER_KERNELS_BOUNDS_CHECK  0: the tests' interpreter bounds check off (default 1)

Our own switches take 1/true/yes/on or 0/false/no/off (any case); anything else is an error naming the
variable. TRITON_INTERPRET is read exactly as Triton reads it, so that this package and Triton never
disagree on whether kernels are interpreted.
"""
import os

import torch

_TRUE = ("1", "true", "yes", "on", "y")    # Triton's getenv_bool (triton 3.6 and 3.8) accepts these, any case
_FALSE = ("0", "false", "no", "off", "n")


def env_true(value: str | None) -> bool:
    """A variable's value read as Triton reads TRITON_INTERPRET: true for 1/true/yes/on/y (any case),
    false for anything else, unset included."""
    return value is not None and value.lower() in _TRUE


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    v = value.lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{name}={value!r}: expected 1/true/yes/on or 0/false/no/off")


def triton_interpret() -> bool:
    """True when Triton kernels run under its CPU interpreter: TRITON_INTERPRET set to 1, true, yes, on or y
    (any case), exactly Triton's rule; it must be set before the kernel modules are imported (@triton.jit
    reads it when it decorates)."""
    return env_true(os.environ.get("TRITON_INTERPRET"))


def use_triton(t: torch.Tensor) -> bool:
    """Dispatch rule (docs/design.md, "The user contract"): CUDA tensors run the compiled Triton kernels;
    CPU tensors run them under the interpreter when TRITON_INTERPRET is on, else the plain PyTorch path."""
    if t.device.type == "cuda":
        return True
    return t.device.type == "cpu" and triton_interpret()


def input_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision for fp32 operands, honouring torch.get_float32_matmul_precision():
    "highest" -> exact fp32 ("ieee"), "high"/"medium" -> tf32. Other dtypes ignore it."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


def autotune() -> bool:
    """MIXER_KERNELS_AUTOTUNE (default on): GPU launches benchmark their short config lists on the first
    call of each shape, and each GEMM choice (ops/_choice.py: our kernel or cuBLAS + a pass) measures its
    alternatives. Off (0): the first config of each list and the first alternative (our kernel), no
    benchmarking, so results are bitwise equal across processes too. Read at every launch."""
    return _flag("MIXER_KERNELS_AUTOTUNE", True)


def poison_outputs() -> bool:
    """MIXER_KERNELS_POISON=1 (the tests set it): launchers NaN-fill the outputs they allocate, so an
    element a kernel forgot to write fails every accuracy check instead of passing by luck."""
    return _flag("MIXER_KERNELS_POISON", False)


def nvtx_enabled() -> bool:
    """MIXER_KERNELS_NVTX=1: NVTX ranges around each fused op (mixer_kernels/_nvtx.py; needs the `nvtx`
    package, the `[nvtx]` extra). Read once, when mixer_kernels is imported."""
    return _flag("MIXER_KERNELS_NVTX", False)


def bounds_check() -> bool:
    """Whether the tests check every interpreted load and store against the launch's tensors
    (tests/bounds_check.py): under the interpreter, unless MIXER_KERNELS_BOUNDS_CHECK=0."""
    return triton_interpret() and _flag("MIXER_KERNELS_BOUNDS_CHECK", True)


def compile_archs() -> tuple[int, ...]:
    """The compute capabilities tests/test_compile.py compiles for: MIXER_KERNELS_COMPILE_ARCHS (space
    separated, default "90 80 86 120"); CI's stages for the other torch / Triton pairs take "90"."""
    return tuple(int(a) for a in os.environ.get("MIXER_KERNELS_COMPILE_ARCHS", "90 80 86 120").split())


def empty(shape, *, device, dtype) -> torch.Tensor:
    """torch.empty for kernel outputs; NaN-filled when poisoning is on (floating dtypes)."""
    if poison_outputs() and dtype.is_floating_point:
        return torch.full(shape, float("nan"), device=device, dtype=dtype)
    return torch.empty(shape, device=device, dtype=dtype)
