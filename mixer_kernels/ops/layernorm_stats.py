"""LayerNorm row statistics: mean and rstd = 1/sqrt(var + eps) of every row of x [B, S, C] (or an
[M, C] view), in fp32, never rounded to the input dtype. Both fused ops normalise their tiles from
these and their backward passes reuse them, so they are computed once per LayerNorm.

Design: one program per BLOCK_M rows, looping over C in BLOCK_C chunks, two passes (sum, then the
sum of squared deviations, whose re-read hits the cache). Two-pass is exact where the one-pass
E[x^2] - E[x]^2 form cancels catastrophically for rows with a large mean. Any strides; row offsets
are 64-bit, so B*S*C may pass 2^31 elements.
"""
import torch
import triton
import triton.language as tl

from .._config import empty
from ._registry import CompileCase, Work, nbytes, register_kernel


@triton.jit(do_not_specialize=["M"])   # M = B*S: no recompile per batch size (it only bounds masks)
def _layernorm_stats_kernel(
    # pointers
    X,            # input  [B, S, C], any dtype
    Mean,         # output [B*S] fp32
    Rstd,         # output [B*S] fp32
    # sizes
    M,            # rows, B*S
    S,            # tokens per sample (rows m = b*S + s)
    C,            # channels, the normalised dimension
    # strides (elements)
    stride_xb, stride_xs, stride_xc,
    # scalars
    eps,          # added to the variance
    # meta-parameters
    BLOCK_M: tl.constexpr,   # rows per program
    BLOCK_C: tl.constexpr,   # channels per loop step
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)                     # [BLOCK_M]
    row_mask = rows < M
    rows64 = rows.to(tl.int64)
    row_off = (rows64 // S) * stride_xb + (rows64 % S) * stride_xs    # [BLOCK_M] int64
    cols = tl.arange(0, BLOCK_C)

    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cols
        mask = row_mask[:, None] & (c < C)[None, :]
        x = tl.load(X + row_off[:, None] + c[None, :].to(tl.int64) * stride_xc, mask=mask, other=0.0)
        acc += x.to(tl.float32)
    mean = tl.sum(acc, axis=1) / C                                     # [BLOCK_M]

    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cols
        mask = row_mask[:, None] & (c < C)[None, :]
        x = tl.load(X + row_off[:, None] + c[None, :].to(tl.int64) * stride_xc, mask=mask, other=0.0)
        d = tl.where(mask, x.to(tl.float32) - mean[:, None], 0.0)
        acc += d * d
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=1) / C + eps)

    tl.store(Mean + rows64, mean, mask=row_mask)
    tl.store(Rstd + rows64, rstd, mask=row_mask)


def _block_sizes(C: int) -> tuple[int, int, int]:
    """BLOCK_M, BLOCK_C, num_warps: 4096-element tiles; 8 warps for them (4 warps spilled 8 bytes at
    bf16, C=768..1280, with triton 3.6 on sm_90)."""
    block_c = min(triton.next_power_of_2(C), 1024)
    block_m = max(1, min(16, 4096 // block_c))
    return block_m, block_c, 8 if block_m * block_c >= 4096 else 4


def layernorm_stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mean, rstd (fp32, shape [B*S] or [M]) of x [B, S, C] or [M, C] along its last dimension.
    An internal launcher: callers have checked x (floating, on a Triton device)."""
    x3 = x if x.dim() == 3 else x.unsqueeze(0)
    B, S, C = x3.shape
    M = B * S
    mean = empty((M,), device=x.device, dtype=torch.float32)
    rstd = empty((M,), device=x.device, dtype=torch.float32)
    if M == 0:
        return mean, rstd
    BLOCK_M, BLOCK_C, num_warps = _block_sizes(C)
    grid = (triton.cdiv(M, BLOCK_M),)
    _layernorm_stats_kernel[grid](
        x3, mean, rstd, M, S, C, x3.stride(0), x3.stride(1), x3.stride(2), eps,
        BLOCK_M=BLOCK_M, BLOCK_C=BLOCK_C, num_warps=num_warps,
    )
    return mean, rstd


def _compile_cases() -> list[CompileCase]:
    cases = []
    for name, S, C in [("B/16", 196, 768), ("L/16", 196, 1024), ("H/14", 256, 1280), ("odd", 197, 130)]:
        for dtype in (torch.bfloat16, torch.float32):
            BLOCK_M, BLOCK_C, num_warps = _block_sizes(C)
            cases.append(CompileCase(
                f"{name} {str(dtype)[6:]}",
                dict(X=dtype, Mean=torch.float32, Rstd=torch.float32, M=256 * S, S=S, C=C,
                     stride_xb=S * C, stride_xs=C, stride_xc=1, eps=1e-6, BLOCK_M=BLOCK_M, BLOCK_C=BLOCK_C),
                num_warps=num_warps, num_stages=1))
    return cases


def _work(a) -> Work:
    """x read once (the second pass re-reads it from L2), the two fp32 statistics written."""
    M, C = a["M"], a["C"]
    return Work(flops=0.0, bytes=M * C * a["X"].element_size() + nbytes(a["Mean"]) + nbytes(a["Rstd"]),
                trips=triton.cdiv(C, a["BLOCK_C"]))


register_kernel(_layernorm_stats_kernel, _compile_cases, _work)
