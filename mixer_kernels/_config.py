"""Run-time switches read from the environment, in one place."""
import os

import torch


def triton_interpret() -> bool:
    """True when Triton kernels run under the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


def use_triton(t: torch.Tensor) -> bool:
    """Dispatch rule (docs/design.md, "The user contract"): CUDA tensors run the compiled Triton kernels; CPU
    tensors run them
    under the interpreter when TRITON_INTERPRET=1, else the plain PyTorch path."""
    if t.device.type == "cuda":
        return True
    return t.device.type == "cpu" and triton_interpret()


def input_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision for fp32 operands, honouring torch.get_float32_matmul_precision():
    "highest" -> exact fp32 ("ieee"), "high"/"medium" -> tf32. Other dtypes ignore it."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


def poison_outputs() -> bool:
    """MIXER_KERNELS_POISON=1 (the tests set it): launchers NaN-fill the outputs they allocate, so an
    element a kernel forgot to write fails every accuracy check instead of passing by luck."""
    return os.environ.get("MIXER_KERNELS_POISON", "0") == "1"


def nvtx_enabled() -> bool:
    """MIXER_KERNELS_NVTX=1: NVTX ranges around each fused op (mixer_kernels/_nvtx.py; needs the `nvtx`
    package, the `[nvtx]` extra). Read once, when mixer_kernels is imported."""
    return os.environ.get("MIXER_KERNELS_NVTX", "0") == "1"


def empty(shape, *, device, dtype) -> torch.Tensor:
    """torch.empty for kernel outputs; NaN-filled when poisoning is on (floating dtypes)."""
    if poison_outputs() and dtype.is_floating_point:
        return torch.full(shape, float("nan"), device=device, dtype=dtype)
    return torch.empty(shape, device=device, dtype=dtype)
