"""Rounding fp32 values to a kernel's storage/operand dtype, the same under the interpreter as on the GPU.

The Triton interpreter converts fp32 to bf16 by truncation (round toward zero: its `cast_impl` passes
no rounding mode to `_convert_float`), while compiled kernels round to nearest even. Truncation
doubles the rounding error of every bf16 result, so interpreter tests judged against eager bf16
(docs/design.md, "Accuracy: how the tests judge": within 2x eager's error) fail for no fault of the kernel.
`to_dtype` rounds to nearest
even by hand before the cast when interpreted; the compiled kernel is a plain `.to(dtype)`.
(fp16 needs nothing: the interpreter's numpy astype rounds to nearest even.)
"""
import triton
import triton.language as tl


@triton.jit
def to_dtype(x, dtype: tl.constexpr, INTERPRET: tl.constexpr):
    """x (fp32) converted to `dtype` with round-to-nearest-even, interpreter or not."""
    if INTERPRET:
        if dtype == tl.bfloat16:
            u = x.to(tl.uint32, bitcast=True)
            u = (u + (0x7FFF + ((u >> 16) & 1))) & 0xFFFF0000
            x = u.to(tl.float32, bitcast=True)
    return x.to(dtype)
