"""LayerNorm row statistics: mean and rstd = 1/sqrt(var + eps) of every row of x [B, S, C] (or an
[M, C] view), in fp32, never rounded to the input dtype. Both fused ops normalise their tiles from
these and their backward passes reuse them, so they are computed once per LayerNorm.

Design: one program per BLOCK_M rows, looping over C in BLOCK_C chunks, two passes (sum, then the
sum of squared deviations, whose re-read hits the cache). Two-pass is exact where the one-pass
E[x^2] - E[x]^2 form cancels catastrophically for rows with a large mean. Any strides; row offsets
are 64-bit, so B*S*C may pass 2^31 elements.

The same kernel also writes the LayerNorm output y = (x - mean) * rstd * w + b in the compute dtype
(WRITE_Y, a third pass over the cached row), from statistics it computes or (STATS=False) from saved
ones: channel mixing's fc1 GEMMs then run plain main loops on y instead of normalising every A tile
(ops/channel_mixing.py says why), and y rounds exactly as eager's LayerNorm output does.
"""
import torch
import triton
import triton.language as tl

from .._config import empty, triton_interpret
from . import _tuning
from ._registry import CompileCase, Work, nbytes, register_kernel
from ._round import to_dtype
from ._tuning import LAUNCH_OPTIONS


@triton.jit(do_not_specialize=["M"])   # M = B*S: no recompile per batch size (it only bounds masks)
def _layernorm_stats_kernel(
    # pointers
    X,            # input  [B, S, C], any dtype
    Mean,         # [B*S] fp32: output (STATS) or input
    Rstd,         # [B*S] fp32: output (STATS) or input
    NW, NB,       # [C] LayerNorm weight and bias (WRITE_Y)
    Y,            # [B*S, C] contiguous output in the compute dtype (WRITE_Y)
    # sizes
    M,            # rows, B*S
    S,            # tokens per sample (rows m = b*S + s)
    C,            # channels, the normalised dimension
    # strides (elements)
    stride_xb, stride_xs, stride_xc,
    # scalars
    eps,          # added to the variance
    # meta-parameters
    STATS: tl.constexpr,     # compute and store mean, rstd (else load them)
    WRITE_Y: tl.constexpr,   # write the normalised output y
    INTERPRET: tl.constexpr,
    ONE_CHUNK: tl.constexpr,  # C <= BLOCK_C: the row tile is loaded once and kept in registers
    BLOCK_M: tl.constexpr,   # rows per program
    BLOCK_C: tl.constexpr,   # channels per loop step (BLOCK_C2 > 0: the first chunk, all inside C)
    BLOCK_C2: tl.constexpr,  # > 0 (statistics only): a second chunk, channels BLOCK_C .. C-1; 0: one chunk or loops
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)                     # [BLOCK_M]
    row_mask = rows < M
    rows64 = rows.to(tl.int64)
    if STATS and not WRITE_Y:
        # rows < M < 2^31: the sample/token split in 32-bit (a 64-bit division is a ~35-instruction call
        # per row), the offsets in 64-bit. (The modes that write y keep the 64-bit split: the 32-bit one
        # spilled 20 B at fp32 stats+y on triton 3.6.)
        row_off = (rows // S).to(tl.int64) * stride_xb + (rows % S).to(tl.int64) * stride_xs
    else:
        row_off = (rows64 // S) * stride_xb + (rows64 % S) * stride_xs    # [BLOCK_M] int64
    cols = tl.arange(0, BLOCK_C)

    if STATS and not WRITE_Y and BLOCK_C2 > 0:
        # statistics only, C <= 1024 not a power of two (_block_sizes): the row as two power-of-two tiles,
        # BLOCK_C (inside C, no column mask) + BLOCK_C2, so no lane works on padding (C = 768: 512 + 256
        # instead of 1024 with a quarter masked); the same two passes from registers
        c2 = BLOCK_C + tl.arange(0, BLOCK_C2)
        mask1 = row_mask[:, None] & (cols < BLOCK_C)[None, :]
        mask2 = row_mask[:, None] & (c2 < C)[None, :]
        x1 = tl.load(X + row_off[:, None] + cols[None, :].to(tl.int64) * stride_xc, mask=mask1, other=0.0)
        x2 = tl.load(X + row_off[:, None] + c2[None, :].to(tl.int64) * stride_xc, mask=mask2, other=0.0)
        x1 = x1.to(tl.float32)
        x2 = x2.to(tl.float32)
        mean = (tl.sum(x1, axis=1) + tl.sum(x2, axis=1)) / C
        d1 = x1 - mean[:, None]
        d2 = tl.where(mask2, x2 - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt((tl.sum(d1 * d1, axis=1) + tl.sum(d2 * d2, axis=1)) / C + eps)
        tl.store(Mean + rows64, mean, mask=row_mask)
        tl.store(Rstd + rows64, rstd, mask=row_mask)
    elif ONE_CHUNK:
        # Mixer widths up to 1024 (H/14's 1280 takes the loops): one load, then mean, variance and y
        # from registers (the looping form re-loads the row for each pass)
        cmask = cols < C
        mask = row_mask[:, None] & cmask[None, :]
        x = tl.load(X + row_off[:, None] + cols[None, :].to(tl.int64) * stride_xc, mask=mask, other=0.0)
        x = x.to(tl.float32)
        if STATS:
            mean = tl.sum(x, axis=1) / C
            d = tl.where(mask, x - mean[:, None], 0.0)
            rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / C + eps)
            tl.store(Mean + rows64, mean, mask=row_mask)
            tl.store(Rstd + rows64, rstd, mask=row_mask)
        else:
            mean = tl.load(Mean + rows64, mask=row_mask, other=0.0)
            rstd = tl.load(Rstd + rows64, mask=row_mask, other=0.0)
            d = x - mean[:, None]
        if WRITE_Y:
            w = tl.load(NW + cols, mask=cmask, other=0.0).to(tl.float32)
            b = tl.load(NB + cols, mask=cmask, other=0.0).to(tl.float32)
            y = d * rstd[:, None] * w[None, :] + b[None, :]
            tl.store(Y + rows64[:, None] * C + cols[None, :], to_dtype(y, Y.dtype.element_ty, INTERPRET), mask=mask)
    elif STATS:
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
    else:
        mean = tl.load(Mean + rows64, mask=row_mask, other=0.0)
        rstd = tl.load(Rstd + rows64, mask=row_mask, other=0.0)

    if WRITE_Y and not ONE_CHUNK:
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cols
            cmask = c < C
            mask = row_mask[:, None] & cmask[None, :]
            x = tl.load(X + row_off[:, None] + c[None, :].to(tl.int64) * stride_xc, mask=mask, other=0.0)
            w = tl.load(NW + c, mask=cmask, other=0.0).to(tl.float32)
            b = tl.load(NB + c, mask=cmask, other=0.0).to(tl.float32)
            y = (x.to(tl.float32) - mean[:, None]) * rstd[:, None] * w[None, :] + b[None, :]
            tl.store(Y + rows64[:, None] * C + c[None, :], to_dtype(y, Y.dtype.element_ty, INTERPRET), mask=mask)


def _block_sizes(C: int, stats_only: bool = False) -> tuple[int, int, int, int]:
    """BLOCK_M, BLOCK_C, BLOCK_C2, num_warps: 16384-element tiles (16 rows at C <= 1024), 8 warps. The speed
    model (H100, B/16 batch 256) had the 4096-element tiles of earlier versions issue-bound at 0.076 ms for
    the statistics against a 0.026 ms memory floor; 16 rows, loaded once (ONE_CHUNK): 0.045 ms, and 0.055 ms
    with y against 0.052. (4 warps at 4096 elements spilled 8 bytes at bf16 with triton 3.6 on sm_90.)
    Statistics only, the row split in 32-bit: 0.045 -> 0.035 ms (L/16: 0.036, memory-bound).
    Statistics only (token mixing's launch) with C <= 1024 not a power of two: two chunks (BLOCK_C2 > 0)
    and up to 32 rows (24576-element tiles): B/16, C = 768: 0.028 ms against 0.026, memory-bound (one
    1024 chunk: 0.035, issue-bound; 16 rows of two chunks: 0.028, 5 CTAs per SM). The modes that write y
    (channel mixing's) keep one chunk: their numerics and tiles are unchanged."""
    if stats_only and C <= 1024 and C & (C - 1):
        block_c = 1 << (C.bit_length() - 1)                 # the largest power of two below C
        block_c2 = triton.next_power_of_2(C - block_c)
        block_m = max(1, min(32, 1 << ((24576 // (block_c + block_c2)).bit_length() - 1)))
        return block_m, block_c, block_c2, 8 if block_m * (block_c + block_c2) >= 4096 else 4
    block_c = min(triton.next_power_of_2(C), 1024)
    block_m = max(1, min(16, 16384 // block_c))
    return block_m, block_c, 0, 8 if block_m * block_c >= 4096 else 4


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
    _launch(x3, mean, rstd, mean, mean, mean, eps, stats=True, write_y=False)
    return mean, rstd


def _launch(x3, mean, rstd, weight, bias, y, eps, *, stats: bool, write_y: bool):
    B, S, C = x3.shape
    M = B * S
    BLOCK_M, BLOCK_C, BLOCK_C2, num_warps = _block_sizes(C, stats_only=stats and not write_y)
    args = (x3, mean, rstd, weight, bias, y, M, S, C, x3.stride(0), x3.stride(1), x3.stride(2), eps)
    kwargs = dict(STATS=stats, WRITE_Y=write_y, INTERPRET=triton_interpret(), ONE_CHUNK=C <= BLOCK_C, **LAUNCH_OPTIONS)
    # one entry: ops/_tuning.pick checks it fits the card (else an error naming the kernel and the card)
    meta = _tuning.pick(_layernorm_stats_kernel, [dict(BLOCK_M=BLOCK_M, BLOCK_C=BLOCK_C, BLOCK_C2=BLOCK_C2,
                                                       num_warps=num_warps)], None, x3.device, args, kwargs)
    _layernorm_stats_kernel[(triton.cdiv(M, meta["BLOCK_M"]),)](*args, **kwargs, **meta)


def layernorm_forward(x: torch.Tensor, eps: float, weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype):
    """(y, mean, rstd): the LayerNorm output y [B, S, C] (contiguous, in `dtype`) of x [B, S, C], and its
    fp32 row statistics [B*S]. weight, bias: contiguous [C]."""
    B, S, C = x.shape
    M = B * S
    mean = empty((M,), device=x.device, dtype=torch.float32)
    rstd = empty((M,), device=x.device, dtype=torch.float32)
    y = empty((B, S, C), device=x.device, dtype=dtype)
    if M:
        _launch(x, mean, rstd, weight, bias, y, eps, stats=True, write_y=True)
    return y, mean, rstd


def layernorm_apply(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """y = (x - mean) * rstd * weight + bias from saved fp32 statistics: [B, S, C] contiguous in `dtype`,
    bitwise equal to layernorm_forward's y (the backward's recomputation)."""
    B, S, C = x.shape
    y = empty((B, S, C), device=x.device, dtype=dtype)
    if B * S:
        _launch(x, mean, rstd, weight, bias, y, 0.0, stats=False, write_y=True)
    return y


def _compile_cases() -> list[CompileCase]:
    cases = []
    for name, S, C in [("B/16", 196, 768), ("L/16", 196, 1024), ("H/14", 256, 1280), ("odd", 197, 130)]:
        for dtype in (torch.bfloat16, torch.float32):
            for mode, stats, write_y in (("stats", True, False), ("stats+y", True, True), ("y", False, True)):
                if mode != "stats" and name in ("H/14", "odd"):
                    continue
                BLOCK_M, BLOCK_C, BLOCK_C2, num_warps = _block_sizes(C, stats_only=stats and not write_y)
                cases.append(CompileCase(
                    f"{name} {str(dtype)[6:]} {mode}",
                    dict(X=dtype, Mean=torch.float32, Rstd=torch.float32, NW=dtype, NB=dtype, Y=torch.bfloat16,
                         M=256 * S, S=S, C=C, stride_xb=S * C, stride_xs=C, stride_xc=1, eps=1e-6, STATS=stats,
                         WRITE_Y=write_y, INTERPRET=False, ONE_CHUNK=C <= BLOCK_C, BLOCK_M=BLOCK_M,
                         BLOCK_C=BLOCK_C, BLOCK_C2=BLOCK_C2),
                    num_warps=num_warps, num_stages=1))
    return cases


def _work(a) -> Work:
    """x read once (the later passes re-read it from L2), the two fp32 statistics written (or read), y
    written."""
    M, C = a["M"], a["C"]
    moved = M * C * a["X"].element_size() + nbytes(a["Mean"]) + nbytes(a["Rstd"])
    if a["WRITE_Y"]:
        moved += M * C * a["Y"].element_size()
    return Work(flops=0.0, bytes=moved, trips=triton.cdiv(C, a["BLOCK_C"]))


register_kernel(_layernorm_stats_kernel, _compile_cases, _work)
