"""The one place kernels multiply tiles.

The Triton interpreter cannot do bf16 arithmetic (bf16 values reach numpy as uint16 bit patterns, so a
bf16 `tl.dot` gives garbage; docs/design.md, "Triton on our machines"). Under the interpreter
(`INTERPRET=True`, a constexpr the
launchers pass) operands are upcast to fp32 first; the compiled kernel keeps bf16/fp16 operands for the
tensor cores. `INPUT_PRECISION` ("ieee" or "tf32") matters only for fp32 operands on the GPU.
"""
import triton
import triton.language as tl


@triton.jit
def dot(a, b, acc, INTERPRET: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """acc + a @ b, accumulated in fp32 (acc's dtype)."""
    if INTERPRET:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    else:
        return tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
