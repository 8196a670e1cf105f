"""ResMLP's Affine "norm", y = alpha * x + beta over C (no statistics), and its backward.

Forward (`affine_forward`): y [B*S, C] in the compute dtype, contiguous, rounded once from fp32 as eager's
fused `torch.addcmul` rounds it: the A operand of the channel GEMMs (ops/resmlp_channel_mixing.py), as
the LayerNorm output y is for the Mixer's channel op.
Backward (`affine_backward`): given dn = dL/dy,

    dx = dresidual + alpha * dn,   dalpha = sum_rows dn * x,   dbeta = sum_rows dn

Design: a fixed grid of G programs; program p takes row blocks p, p+G, ... for each chunk of C and keeps
its dalpha/dbeta partials in registers, stored once into row p of a [G, C] fp32 scratch; one ordered
sum over G gives the result: deterministic, no atomics, every row read once. Row offsets are 64-bit.
"""
import itertools

import torch
import triton
import triton.language as tl

from .._config import empty, triton_interpret
from . import _tuning
from ._registry import CompileCase, Work, nbytes, register_kernel
from ._round import to_dtype
from ._tuning import LAUNCH_OPTIONS
from .layernorm_backward import MAX_PROGRAMS


@triton.jit(do_not_specialize=["M"])   # M = B*S: no recompile per batch size
def _affine_fwd_kernel(
    # pointers
    X,            # [B, S, C] input, any float dtype and strides
    Alpha, Beta,  # [C] affine scale and shift
    Y,            # [B*S, C] contiguous output in the compute dtype
    # sizes
    M, S, C,      # rows (B*S), tokens per sample, channels
    # strides (elements)
    stride_xb, stride_xs, stride_xc,
    # meta-parameters
    INTERPRET: tl.constexpr,   # round to bf16 by hand under the interpreter (ops/_round.py)
    BLOCK_M: tl.constexpr,     # rows per program
    BLOCK_C: tl.constexpr,     # channels per loop step
):
    pid = tl.program_id(0)
    rows = (pid * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rmask = rows < M
    row_off = (rows // S) * stride_xb + (rows % S) * stride_xs
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        mask = rmask[:, None] & cmask[None, :]
        x = tl.load(X + row_off[:, None] + c[None, :].to(tl.int64) * stride_xc, mask=mask, other=0.0)
        a = tl.load(Alpha + c, mask=cmask, other=0.0).to(tl.float32)
        b = tl.load(Beta + c, mask=cmask, other=0.0).to(tl.float32)
        y = x.to(tl.float32) * a[None, :] + b[None, :]
        tl.store(Y + rows[:, None] * C + c[None, :], to_dtype(y, Y.dtype.element_ty, INTERPRET), mask=mask)


@triton.jit(do_not_specialize=["M"])
def _affine_bwd_kernel(
    # pointers
    DN,           # [B*S, C] contiguous gradient w.r.t. y
    X,            # [B, S, C] the affine input, any strides
    Alpha,        # [C]
    DRes,         # [B, S, C] gradient added to dx (the residual path), any strides
    DX,           # [B*S, C] contiguous output, in x's dtype
    DAp, DBp,     # [G, C] fp32 per-program partials of dalpha, dbeta
    # sizes
    M, S, C,
    # strides (elements)
    stride_xb, stride_xs, stride_xc,
    stride_rb, stride_rs, stride_rc,
    # meta-parameters
    INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    n_blocks = tl.cdiv(M, BLOCK_M)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        c64 = c.to(tl.int64)
        a = tl.load(Alpha + c, mask=cmask, other=0.0).to(tl.float32)
        da = tl.zeros([BLOCK_C], dtype=tl.float32)
        db = tl.zeros([BLOCK_C], dtype=tl.float32)
        for blk in range(pid, n_blocks, G):
            rows = (blk * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
            rmask = rows < M
            mask = rmask[:, None] & cmask[None, :]
            bi, si = rows // S, rows % S
            dn = tl.load(DN + rows[:, None] * C + c64[None, :], mask=mask, other=0.0).to(tl.float32)
            x = tl.load(X + (bi * stride_xb + si * stride_xs)[:, None] + c64[None, :] * stride_xc, mask=mask,
                        other=0.0).to(tl.float32)
            r = tl.load(DRes + (bi * stride_rb + si * stride_rs)[:, None] + c64[None, :] * stride_rc, mask=mask,
                        other=0.0).to(tl.float32)
            tl.store(DX + rows[:, None] * C + c64[None, :], to_dtype(r + a[None, :] * dn, DX.dtype.element_ty,
                                                                     INTERPRET), mask=mask)
            da += tl.sum(dn * x, axis=0)
            db += tl.sum(dn, axis=0)
        tl.store(DAp + pid * C + c64, da, mask=cmask)
        tl.store(DBp + pid * C + c64, db, mask=cmask)


def _block_sizes(C: int) -> tuple[int, int, int]:
    """BLOCK_M, BLOCK_C, num_warps: 8192-element tiles (the row data is streamed once)."""
    block_c = min(triton.next_power_of_2(C), 512)
    block_m = max(1, min(32, 8192 // block_c))
    return block_m, block_c, 8 if block_m * block_c >= 4096 else 4


def _table(C: int, kernel: str) -> list[dict]:
    """A launch's tile table for ops/_tuning.pick: _block_sizes' tile, and for the forward over 256 channels a
    fallback of the same 8192 elements as 32 rows x 256 channels (resmlp_big_24 bf16, triton 3.8: the 16 x 512
    tile spilled 8 B on sm_86 (64 registers), 32 x 256 none on sm_80, sm_86, sm_120; identical on sm_90)."""
    block_m, block_c, num_warps = _block_sizes(C)
    table = [dict(BLOCK_M=block_m, BLOCK_C=block_c, num_warps=num_warps)]
    if kernel == "fwd" and block_c > 256:
        table.append(dict(BLOCK_M=32, BLOCK_C=256, num_warps=8, fallback=True))
    return table


def _pick(kernel, name: str, x: torch.Tensor, args: tuple, kwargs: dict) -> dict:
    """ops/_tuning.pick over _table: the config this card keeps (keyed on C and the arguments' specialisation)."""
    C = x.shape[2]
    return _tuning.pick(kernel, _table(C, name), (C,), x.device, args, kwargs)


def _programs(M: int, block_m: int) -> int:
    """G of the backward: the LayerNorm backward's fixed program count (independent of the card, so the
    partials' order - and the bits - are the same everywhere), never more than row blocks."""
    return max(1, min(triton.cdiv(M, block_m), MAX_PROGRAMS))


def affine_forward(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """y = alpha * x + beta: [B, S, C] contiguous in `dtype`. x [B, S, C] any strides; alpha, beta contiguous [C]."""
    B, S, C = x.shape
    M = B * S
    y = empty((M, C), device=x.device, dtype=dtype)
    if M:
        args, kwargs = (x, alpha, beta, y, M, S, C, *x.stride()), dict(INTERPRET=triton_interpret(), **LAUNCH_OPTIONS)
        meta = _pick(_affine_fwd_kernel, "fwd", x, args, kwargs)
        _affine_fwd_kernel[(triton.cdiv(M, meta["BLOCK_M"]),)](*args, **kwargs, **meta)
    return y.view(B, S, C)


def affine_backward(dn: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, dresidual: torch.Tensor):
    """(dx, dalpha, dbeta): dx = dresidual + alpha * dn as [B, S, C] in x's dtype, dalpha and dbeta [C] fp32.
    dn [B*S, C] (or [B, S, C]) contiguous; x, dresidual [B, S, C] any strides; alpha contiguous [C]."""
    B, S, C = x.shape
    M = B * S
    dx = empty((B, S, C), device=x.device, dtype=x.dtype)
    if M == 0:
        zero = torch.zeros((C,), device=x.device, dtype=torch.float32)
        return dx, zero, zero.clone()
    G = _programs(M, _block_sizes(C)[0])    # the table's one entry: G does not depend on the card
    dap = empty((G, C), device=x.device, dtype=torch.float32)
    dbp = empty((G, C), device=x.device, dtype=torch.float32)
    args = (dn, x, alpha, dresidual, dx, dap, dbp, M, S, C, *x.stride(), *dresidual.stride())
    kwargs = dict(INTERPRET=triton_interpret(), **LAUNCH_OPTIONS)
    meta = _pick(_affine_bwd_kernel, "bwd", x, args, kwargs)
    _affine_bwd_kernel[(G,)](*args, **kwargs, **meta)
    return dx, dap.sum(0), dbp.sum(0)     # fixed-order sums of the partials


# ResMLP sizes (resmlp_24: C = 384, resmlp_big_24: patch 8, S = 784, C = 768), batch 256
_SIZES = (("resmlp_24", 196, 384), ("resmlp_big_24", 784, 768))


def _fwd_cases() -> list[CompileCase]:
    cases = []
    for name, S, C in _SIZES:
        for dt, cfg in itertools.product((torch.bfloat16, torch.float32), _table(C, "fwd")):
            group = f"{name} {str(dt)[6:]}"     # the launch: its table's entries
            fb = cfg.get("fallback", False)
            label = group + (f" m{cfg['BLOCK_M']}c{cfg['BLOCK_C']}w{cfg['num_warps']} fallback" if fb else "")
            cases.append(CompileCase(label, dict(
                X=dt, Alpha=dt, Beta=dt, Y=torch.bfloat16 if dt == torch.bfloat16 else dt, M=256 * S, S=S, C=C,
                stride_xb=S * C, stride_xs=C, stride_xc=1, INTERPRET=False, BLOCK_M=cfg["BLOCK_M"],
                BLOCK_C=cfg["BLOCK_C"]), num_warps=cfg["num_warps"], num_stages=1, group=group, fallback=fb))
    return cases


def _bwd_cases() -> list[CompileCase]:
    cases = []
    for name, S, C in _SIZES:
        for dt in (torch.bfloat16, torch.float32):
            BLOCK_M, BLOCK_C, w = _block_sizes(C)
            cases.append(CompileCase(f"{name} {str(dt)[6:]}", dict(
                DN=dt, X=dt, Alpha=dt, DRes=dt, DX=dt, DAp=torch.float32, DBp=torch.float32, M=256 * S, S=S, C=C,
                stride_xb=S * C, stride_xs=C, stride_xc=1, stride_rb=S * C, stride_rs=C, stride_rc=1,
                INTERPRET=False, BLOCK_M=BLOCK_M, BLOCK_C=BLOCK_C), num_warps=w, num_stages=1))
    return cases


def _fwd_work(a) -> Work:
    """x read once, y written once."""
    M, C = a["M"], a["C"]
    return Work(0.0, M * C * (a["X"].element_size() + a["Y"].element_size()), triton.cdiv(C, a["BLOCK_C"]))


def _bwd_work(a) -> Work:
    """dn, x and the residual gradient read once, dx written once, the partials written; main loop: the
    row blocks of one program (outer: the chunks of C)."""
    M, C = a["M"], a["C"]
    rows = M * C * (a["DN"].element_size() + a["X"].element_size() + a["DRes"].element_size()
                    + a["DX"].element_size())
    G = a["DAp"].shape[0]
    return Work(0.0, rows + 2 * nbytes(a["DAp"]), triton.cdiv(triton.cdiv(M, a["BLOCK_M"]), G),
                triton.cdiv(C, a["BLOCK_C"]))


register_kernel(_affine_fwd_kernel, _fwd_cases, _fwd_work)
register_kernel(_affine_bwd_kernel, _bwd_cases, _bwd_work)
