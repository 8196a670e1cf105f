"""LayerNorm backward from saved fp32 row statistics, shared by both fused ops.

Given dn = dL/d LN(x) (the gradient reaching the normalised input, any float dtype, any strides),
x, mean and rstd of every row, and the LayerNorm weight w:

    xhat = (x - mean) * rstd,   g = dn * w
    dx   = rstd * (g - mean_C(g) - xhat * mean_C(g * xhat)) + dresidual
    dw   = sum_rows dn * xhat,  db = sum_rows dn

Design: a fixed grid of G programs; program p takes row blocks p, p+G, ... When C fits one chunk
(ONE_CHUNK, every Mixer width up to 1024) a block's rows are loaded once and the program's dw/db
partials stay in registers until its last block; otherwise each block makes two passes over C in
BLOCK_C chunks (row sums, then dx), so any C works with bounded registers. Weight and
bias gradients accumulate in fp32 into row p of a [G, C] scratch that only program p touches (a CTA
barrier after each update orders its threads' read-modify-writes), then one ordered sum over G:
deterministic, no atomics. The read-modify-write of that row costs C*8 bytes per
BLOCK_M rows, against 3*BLOCK_M*C*itemsize for the row data. Row offsets are 64-bit.
"""
import torch
import triton
import triton.language as tl

from .._config import empty, triton_interpret
from . import _tuning
from ._registry import CompileCase, Work, nbytes, register_kernel
from ._round import to_dtype
from ._tuning import LAUNCH_OPTIONS


@triton.jit(do_not_specialize=["M"])   # M = B*S: no recompile per batch size (it only bounds masks, loops)
def _layernorm_bwd_kernel(
    # pointers
    DN,           # [B, S, C] gradient w.r.t. the LayerNorm output
    X,            # [B, S, C] LayerNorm input
    Mean, Rstd,   # [B*S] fp32 row statistics
    W,            # [C] LayerNorm weight
    DRes,         # [B, S, C] gradient added to dx (the residual path); unused unless HAS_DRES
    DX,           # [B, S, C] output, contiguous
    DWp, DBp,     # [G, C] fp32 scratch, zero-filled: per-program partial weight/bias gradients
    # sizes
    M, S, C,      # rows (B*S), tokens per sample, channels
    # strides (elements); DX is contiguous
    s_dn_b, s_dn_s, s_dn_c,
    s_x_b, s_x_s, s_x_c,
    s_r_b, s_r_s, s_r_c,
    # meta-parameters
    HAS_DRES: tl.constexpr,   # add DRes to dx
    BLOCK_M: tl.constexpr,    # rows per block
    BLOCK_C: tl.constexpr,    # channels per chunk
    INTERPRET: tl.constexpr,  # under the interpreter: round dx to bf16 by hand (ops/_round.py)
    ONE_CHUNK: tl.constexpr,  # C <= BLOCK_C: rows loaded once, dw/db partials kept in registers
):
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_C)
    n_blocks = tl.cdiv(M, BLOCK_M)
    if ONE_CHUNK:
        # Every Mixer width up to 1024: dn, x (and the residual gradient) loaded once per row block, and
        # this program's dw/db partials summed in registers in the same order as the looping form's
        # read-modify-writes (bitwise the same result), stored once.
        c = cols.to(tl.int64)
        cmask = c < C
        w = tl.load(W + c, mask=cmask, other=0.0).to(tl.float32)
        dw_acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        db_acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        for rb in range(pid, n_blocks, G):
            rows = (rb * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
            rmask = rows < M
            b = rows // S
            s = rows % S
            mask = rmask[:, None] & cmask[None, :]
            mean = tl.load(Mean + rows, mask=rmask, other=0.0)
            rstd = tl.load(Rstd + rows, mask=rmask, other=0.0)
            dn = tl.load(DN + (b * s_dn_b + s * s_dn_s)[:, None] + c[None, :] * s_dn_c, mask=mask,
                         other=0.0).to(tl.float32)
            x = tl.load(X + (b * s_x_b + s * s_x_s)[:, None] + c[None, :] * s_x_c, mask=mask, other=0.0)
            xhat = tl.where(mask, (x.to(tl.float32) - mean[:, None]) * rstd[:, None], 0.0)
            g = dn * w[None, :]
            mean_g = tl.sum(g, axis=1) / C
            mean_gx = tl.sum(g * xhat, axis=1) / C
            dx = rstd[:, None] * (g - mean_g[:, None] - xhat * mean_gx[:, None])
            if HAS_DRES:
                r = tl.load(DRes + (b * s_r_b + s * s_r_s)[:, None] + c[None, :] * s_r_c, mask=mask, other=0.0)
                dx += r.to(tl.float32)
            tl.store(DX + rows[:, None] * C + c[None, :], to_dtype(dx, DX.dtype.element_ty, INTERPRET), mask=mask)
            dw_acc += tl.sum(dn * xhat, axis=0)
            db_acc += tl.sum(dn, axis=0)
        part = pid.to(tl.int64) * C + c
        tl.store(DWp + part, dw_acc, mask=cmask)
        tl.store(DBp + part, db_acc, mask=cmask)
    else:
        for rb in range(pid, n_blocks, G):
            rows = (rb * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
            rmask = rows < M
            b = rows // S
            s = rows % S
            mean = tl.load(Mean + rows, mask=rmask, other=0.0)
            rstd = tl.load(Rstd + rows, mask=rmask, other=0.0)
            # pass 1: row sums of g and g * xhat
            sum_g = tl.zeros([BLOCK_M], dtype=tl.float32)
            sum_gx = tl.zeros([BLOCK_M], dtype=tl.float32)
            for c0 in range(0, C, BLOCK_C):
                c = (c0 + cols).to(tl.int64)
                cmask = c < C
                mask = rmask[:, None] & cmask[None, :]
                dn = tl.load(DN + (b * s_dn_b + s * s_dn_s)[:, None] + c[None, :] * s_dn_c, mask=mask, other=0.0)
                x = tl.load(X + (b * s_x_b + s * s_x_s)[:, None] + c[None, :] * s_x_c, mask=mask, other=0.0)
                w = tl.load(W + c, mask=cmask, other=0.0).to(tl.float32)
                xhat = (x.to(tl.float32) - mean[:, None]) * rstd[:, None]
                g = dn.to(tl.float32) * w[None, :]
                sum_g += tl.sum(g, axis=1)
                sum_gx += tl.sum(tl.where(mask, g * xhat, 0.0), axis=1)
            mean_g = sum_g / C
            mean_gx = sum_gx / C
            # pass 2: dx, and this block's contribution to dw, db
            for c0 in range(0, C, BLOCK_C):
                c = (c0 + cols).to(tl.int64)
                cmask = c < C
                mask = rmask[:, None] & cmask[None, :]
                dn = tl.load(DN + (b * s_dn_b + s * s_dn_s)[:, None] + c[None, :] * s_dn_c, mask=mask, other=0.0)
                dn = dn.to(tl.float32)
                x = tl.load(X + (b * s_x_b + s * s_x_s)[:, None] + c[None, :] * s_x_c, mask=mask, other=0.0)
                w = tl.load(W + c, mask=cmask, other=0.0).to(tl.float32)
                xhat = tl.where(mask, (x.to(tl.float32) - mean[:, None]) * rstd[:, None], 0.0)
                dx = rstd[:, None] * (dn * w[None, :] - mean_g[:, None] - xhat * mean_gx[:, None])
                if HAS_DRES:
                    r = tl.load(DRes + (b * s_r_b + s * s_r_s)[:, None] + c[None, :] * s_r_c, mask=mask, other=0.0)
                    dx += r.to(tl.float32)
                tl.store(DX + rows[:, None] * C + c[None, :], to_dtype(dx, DX.dtype.element_ty, INTERPRET), mask=mask)
                part = pid.to(tl.int64) * C + c
                tl.store(DWp + part, tl.load(DWp + part, mask=cmask) + tl.sum(dn * xhat, axis=0), mask=cmask)
                tl.store(DBp + part, tl.load(DBp + part, mask=cmask) + tl.sum(dn, axis=0), mask=cmask)
                # The [BLOCK_C] sums may be replicated across threads, and the thread that stores an
                # element need not be the one that loads it on the next row block: a CTA barrier makes
                # this block's stores visible before any thread reads the row again.
                tl.debug_barrier()


def _block_sizes(C: int) -> tuple[int, int, int]:
    """BLOCK_M, BLOCK_C, num_warps: at most 4096-element tiles (4 rows at C = 768 or 1024), 8 warps for
    the larger ones (4 warps spilled at fp32 on sm_90, and so did 8 rows x 256 channels). Speed model,
    H100, B/16 batch 256: 2 rows with the looping form 0.140 ms; loaded once with register partials
    (ONE_CHUNK) 0.120 ms at 2 rows, 0.107 ms at 4 against a 0.103 ms memory floor."""
    block_c = min(triton.next_power_of_2(C), 1024)
    block_m = max(1, min(4, 4096 // block_c))
    return block_m, block_c, 8 if block_m * block_c >= 2048 else 4


MAX_PROGRAMS = 1024   # G: fixed cap, so the reduction order depends only on the shape


def layernorm_backward(dn, x, mean, rstd, weight, dresidual=None):
    """dx (x's dtype, contiguous [B, S, C]), dweight and dbias (fp32 [C]) of a LayerNorm whose fp32
    row statistics were saved. dn, x, dresidual: [B, S, C] (or [M, C]), any strides."""
    squeeze = x.dim() == 2
    dn3, x3 = (dn.unsqueeze(0), x.unsqueeze(0)) if squeeze else (dn, x)
    r3 = None if dresidual is None else (dresidual.unsqueeze(0) if squeeze else dresidual)
    B, S, C = x3.shape
    M = B * S
    BLOCK_M, BLOCK_C, num_warps = _block_sizes(C)
    G = max(1, min(triton.cdiv(M, BLOCK_M), MAX_PROGRAMS))
    dx = empty((B, S, C), device=x.device, dtype=x.dtype)
    dwp = torch.zeros((G, C), device=x.device, dtype=torch.float32)
    dbp = torch.zeros((G, C), device=x.device, dtype=torch.float32)
    if M > 0:
        rr = r3 if r3 is not None else x3
        args = (dn3, x3, mean, rstd, weight, rr, dx, dwp, dbp, M, S, C, *dn3.stride(), *x3.stride(), *rr.stride())
        kwargs = dict(HAS_DRES=r3 is not None, INTERPRET=triton_interpret(), ONE_CHUNK=C <= BLOCK_C, **LAUNCH_OPTIONS)
        # one entry (G depends on BLOCK_M): ops/_tuning.pick checks it fits the card, else names the kernel
        meta = _tuning.pick(_layernorm_bwd_kernel, [dict(BLOCK_M=BLOCK_M, BLOCK_C=BLOCK_C, num_warps=num_warps)],
                            None, x3.device, args, kwargs)
        _layernorm_bwd_kernel[(G,)](*args, **kwargs, **meta)
    dx = dx.squeeze(0) if squeeze else dx
    return dx, dwp.sum(0), dbp.sum(0)


def _compile_cases() -> list[CompileCase]:
    cases = []
    for name, S, C in [("B/16", 196, 768), ("L/16", 196, 1024), ("odd", 197, 130)]:
        for dtype in (torch.bfloat16, torch.float32):
            BLOCK_M, BLOCK_C, num_warps = _block_sizes(C)
            strides = dict(s_dn_b=S * C, s_dn_s=C, s_dn_c=1, s_x_b=S * C, s_x_s=C, s_x_c=1,
                           s_r_b=S * C, s_r_s=C, s_r_c=1)
            cases.append(CompileCase(
                f"{name} {str(dtype)[6:]}",
                dict(DN=torch.float32, X=dtype, Mean=torch.float32, Rstd=torch.float32, W=dtype, DRes=dtype,
                     DX=dtype, DWp=torch.float32, DBp=torch.float32, M=256 * S, S=S, C=C, **strides,
                     HAS_DRES=True, BLOCK_M=BLOCK_M, BLOCK_C=BLOCK_C, INTERPRET=False, ONE_CHUNK=C <= BLOCK_C),
                num_warps=num_warps, num_stages=1))
    return cases


def _work(a) -> Work:
    """dn, x, the residual gradient read and dx written once, the statistics read; the [G, C] partials'
    read-modify-writes stay in L2 (the zero fill and the final sum are torch ops of their own). Main
    loop: the row blocks of one program."""
    M, C = a["M"], a["C"]
    rows = M * C
    moved = rows * (a["DN"].element_size() + a["X"].element_size() + a["DX"].element_size())
    if a["HAS_DRES"]:
        moved += rows * a["DRes"].element_size()
    G = a["DWp"].shape[0]
    return Work(flops=0.0, bytes=moved + nbytes(a["Mean"]) + nbytes(a["Rstd"]),
                trips=triton.cdiv(triton.cdiv(M, a["BLOCK_M"]), G))


register_kernel(_layernorm_bwd_kernel, _compile_cases, _work)
