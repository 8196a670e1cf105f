"""ResMLP's token mixing kernels: one linear layer along S with the Affine prologue and the layer-scaled
residual epilogue; the custom op and launchers live in ops/resmlp_token_mixing.py.

For one sample b, with A = alpha * x_b + beta (the Affine "norm", [S, C]) and the token weight W [S, S]:

    forward:  out_b = x_b + scale[b] * ls[c] * (W @ A + bias[:, None])
    backward: P = scale[b] * dy_b,  dA = ls[c] * (W^T @ P),  dx_b = dy_b + alpha * dA,
              dalpha = sum dA * x,  dbeta = sum dA,
              dls[c] = sum_k A[k, c] (W^T P)[k, c] + sum_s P[s, c] bias[s]   (= sum P * (W @ A + bias))

One program per (sample b, BLOCK_C channels, BLOCK_S output tokens) runs a plain GEMM over K = S in
BLOCK_K steps: the weight tile (A operand) from a zero-padded copy (16-byte aligned rows, no masks), the
x (or dy) tile (B operand) loaded along C, coalesced, and fed to the dot as loaded. The Affine is folded
into the epilogue, W @ (alpha x + beta) = alpha (W @ x) + beta rowsum(W) (a sum of two terms, no
cancellation that eager's form avoids; x enters the dot unrounded where eager rounds alpha x + beta
first), and the sample scale of the backward multiplies W^T @ dy once: applied to the tiles in the loop
they made the main loop issue-bound (resmlp_big_24, S = 784: 0.62 ms at 49% of the tensor floor, H100
model). The op is memory-bound at ResMLP sizes (2*B*S*S*C FLOPs
against reading x and writing out once: ~10 us of tensor work and ~26 us of traffic for resmlp_24,
H100 model), so BLOCK_S covers S up to 256 in one tile: x is read from DRAM once for the GEMM and its
residual re-read hits L2; padding S = 196 to 256 costs tensor work the memory bound hides.

The backward's epilogue also writes the two operands of the weight-gradient GEMM (STORE_WGRAD, run by
the launcher through torch.matmul over K = B*C, as the Mixer's token op does): GB = ls * P and AB = A,
both [S, B*C] in the compute dtype, contiguous along the channels; with a row of ones appended to AB
the same GEMM gives the bias gradient, dW | db = GB @ [AB; 1]^T. The dalpha, dbeta, dls partials of
every program go to [B * S-tiles, C] fp32 rows summed in a fixed order: deterministic.
"""
import torch
import triton
import triton.language as tl

from ._dot import dot
from ._registry import CompileCase, Work, nbytes, register_kernel
from ._round import to_dtype


@triton.jit
def _tile(b, s, c, S, C, OFF64: tl.constexpr):
    """Tokens s and channels c (64-bit when OFF64) and their mask inside S and C."""
    if OFF64:
        b = b.to(tl.int64)
        s = s.to(tl.int64)
        c = c.to(tl.int64)
    return b, s, c, (s < S)[:, None] & (c < C)[None, :]


@triton.jit
def _operand(t, dtype: tl.constexpr, INTERPRET: tl.constexpr):
    """A loaded x / dy tile as the dot's B operand: as loaded when already in the compute dtype (a plain
    main loop: no arithmetic between the load and the wgmma), else rounded to it (fp32 x under autocast)."""
    if t.dtype == dtype:
        return t
    return to_dtype(t.to(tl.float32), dtype, INTERPRET)


@triton.jit
def _token_linear_fwd_kernel(
    # pointers
    X,            # [B, S, C] input, any strides
    Alpha, Beta,  # [C] the Affine "norm"
    W,            # [S_rows, K_pad] zero-padded token weight (rows: output tokens), compute dtype
    RowSum,       # [S_rows] fp32 row sums of W (as rounded to the compute dtype): the Affine's beta term
    Bias,         # [S] token bias
    LS,           # [C] layer scale of the branch
    Scale,        # [B] per-sample branch scale (drop_path); unused unless HAS_SCALE
    Out,          # [B, S, C] contiguous output, x's dtype
    # sizes
    S, C,
    K_PAD: tl.constexpr,       # W's row stride: S rounded up to BLOCK_K
    # strides (elements)
    s_xb, s_xs, s_xc,
    # meta-parameters
    HAS_SCALE: tl.constexpr,
    OFF64: tl.constexpr,       # 64-bit offsets (B*S*C >= 2^31)
    INTERPRET: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_S: tl.constexpr,     # output tokens per program
    BLOCK_C: tl.constexpr,     # channels per program
    BLOCK_K: tl.constexpr,     # input tokens per loop step
):
    b, pid_c, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, s, c, mask = _tile(b, pid_s * BLOCK_S + tl.arange(0, BLOCK_S), pid_c * BLOCK_C + tl.arange(0, BLOCK_C),
                          S, C, OFF64)
    cmask = c < C
    alpha = tl.load(Alpha + c, mask=cmask, other=0.0).to(tl.float32)
    beta = tl.load(Beta + c, mask=cmask, other=0.0).to(tl.float32)
    k0 = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_S, BLOCK_C], dtype=tl.float32)
    for kk in range(0, K_PAD, BLOCK_K):
        k = kk + k0
        kmask = (k < S)[:, None] & cmask[None, :]
        w = tl.load(W + s[:, None] * K_PAD + k[None, :])                                  # [BLOCK_S, BLOCK_K]
        x = tl.load(X + b * s_xb + k[:, None] * s_xs + c[None, :] * s_xc, mask=kmask, other=0.0)
        acc = dot(w, _operand(x, W.dtype.element_ty, INTERPRET), acc, INTERPRET, INPUT_PRECISION)
    # the Affine, folded: W @ (alpha x + beta) = alpha * (W @ x) + beta * rowsum(W)
    rowsum = tl.load(RowSum + s, mask=s < S, other=0.0)
    acc = acc * alpha[None, :] + rowsum[:, None] * beta[None, :]
    bias = tl.load(Bias + s, mask=s < S, other=0.0).to(tl.float32)
    gain = tl.load(LS + c, mask=cmask, other=0.0).to(tl.float32)
    if HAS_SCALE:
        gain = gain * tl.load(Scale + b).to(tl.float32)
    x = tl.load(X + b * s_xb + s[:, None] * s_xs + c[None, :] * s_xc, mask=mask, other=0.0).to(tl.float32)
    out = x + gain[None, :] * (acc + bias[:, None])
    tl.store(Out + (b * S + s)[:, None] * C + c[None, :], to_dtype(out, Out.dtype.element_ty, INTERPRET), mask=mask)


@triton.jit
def _token_linear_bwd_kernel(
    # pointers
    DY,           # [B, S, C] gradient of the output, any strides
    X,            # [B, S, C] input, any strides
    Alpha, Beta,  # [C]
    WT,           # [S_rows, K_pad] zero-padded W^T (rows: input tokens k; columns: output tokens s)
    Bias,         # [S] token bias
    LS,           # [C] layer scale
    Scale,        # [B] per-sample branch scale; unused unless HAS_SCALE
    DX,           # [B, S, C] contiguous output, x's dtype
    DAp, DBp, DLp,  # [B * S-tiles, C] fp32 partials of dalpha, dbeta, dls
    GB, AB,       # [S, B*C] weight-gradient operands ls * P and A (STORE_WGRAD), compute dtype
    # sizes
    S, C,
    K_PAD: tl.constexpr,       # WT's row stride: S rounded up to BLOCK_K
    # strides (elements)
    s_xb, s_xs, s_xc,
    s_gb, s_gs, s_gc,
    # meta-parameters
    HAS_SCALE: tl.constexpr,
    STORE_WGRAD: tl.constexpr,  # write GB and AB
    OFF64: tl.constexpr,
    INTERPRET: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_S: tl.constexpr,     # input tokens k per program
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,     # output tokens s per loop step
):
    b, pid_c, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, k, c, mask = _tile(b, pid_s * BLOCK_S + tl.arange(0, BLOCK_S), pid_c * BLOCK_C + tl.arange(0, BLOCK_C),
                          S, C, OFF64)
    cmask = c < C
    scale = 1.0
    if HAS_SCALE:
        scale = tl.load(Scale + b).to(tl.float32)
    s0 = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_S, BLOCK_C], dtype=tl.float32)                   # (W^T @ P)[k, c]
    for ss in range(0, K_PAD, BLOCK_K):
        s = ss + s0
        smask = (s < S)[:, None] & cmask[None, :]
        wt = tl.load(WT + k[:, None] * K_PAD + s[None, :])                 # [BLOCK_S, BLOCK_K]
        g = tl.load(DY + b * s_gb + s[:, None] * s_gs + c[None, :] * s_gc, mask=smask, other=0.0)
        acc = dot(wt, _operand(g, WT.dtype.element_ty, INTERPRET), acc, INTERPRET, INPUT_PRECISION)
    acc = acc * scale                                   # W^T @ (scale * dy) = scale * (W^T @ dy): one multiply
    # epilogue on this program's tokens k
    alpha = tl.load(Alpha + c, mask=cmask, other=0.0).to(tl.float32)
    beta = tl.load(Beta + c, mask=cmask, other=0.0).to(tl.float32)
    gain = tl.load(LS + c, mask=cmask, other=0.0).to(tl.float32)
    bias = tl.load(Bias + k, mask=k < S, other=0.0).to(tl.float32)
    x = tl.load(X + b * s_xb + k[:, None] * s_xs + c[None, :] * s_xc, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(DY + b * s_gb + k[:, None] * s_gs + c[None, :] * s_gc, mask=mask, other=0.0).to(tl.float32)
    a = to_dtype(tl.where(mask, x * alpha[None, :] + beta[None, :], 0.0), WT.dtype.element_ty, INTERPRET)
    p = g * scale
    da = gain[None, :] * acc
    tl.store(DX + (b * S + k)[:, None] * C + c[None, :], to_dtype(g + alpha[None, :] * da, DX.dtype.element_ty,
                                                                  INTERPRET), mask=mask)
    row = b * tl.num_programs(2) + pid_s
    tl.store(DAp + row * C + c, tl.sum(da * x, axis=0), mask=cmask)
    tl.store(DBp + row * C + c, tl.sum(da, axis=0), mask=cmask)
    tl.store(DLp + row * C + c, tl.sum(a.to(tl.float32) * acc + p * bias[:, None], axis=0), mask=cmask)
    if STORE_WGRAD:
        col = b * C + c                                                     # column of [S, B*C]
        off = k[:, None] * (tl.num_programs(0) * C) + col[None, :]
        tl.store(GB + off, to_dtype(p * gain[None, :], GB.dtype.element_ty, INTERPRET), mask=mask)
        tl.store(AB + off, a, mask=mask)


def block_s(S: int, kernel: str) -> int:
    """Tokens per program: the forward takes all of S up to 256 (x read once), else 128; the backward at
    most 64 (its epilogue holds five [BLOCK_S, BLOCK_C] fp32 tiles: at 256 tokens it spilled 32-64 B on
    sm_90; 64 tokens on 8 warps compile with 0 spills at resmlp_24 and resmlp_big_24, triton 3.6 and 3.8;
    the backward's model time is in the speed report)."""
    cap = 256 if kernel == "fwd" else 64
    return max(16, triton.next_power_of_2(S)) if triton.next_power_of_2(S) <= cap else 128


# (BLOCK_C, BLOCK_K, num_warps, num_stages) by kernel and compute dtype on a GPU; the interpreter takes
# INTERPRET_CONFIG. Compiled for sm_90 at resmlp_24 / resmlp_big_24 (the compile cases below): 2 stages
# keep 2 CTAs per SM at S <= 256 (3 stages: 120 KB, one CTA); the backward's epilogue holds five
# [BLOCK_S, BLOCK_C] fp32 tiles, so it takes 32 channels and 64 tokens on 8 warps (4 warps spilled with
# HAS_SCALE; 64 channels spilled 2 KB, and 1.2 KB at 256 tokens).
GPU_CONFIGS = {
    ("fwd", "fp16"): (64, 64, 8, 2),
    ("fwd", "fp32"): (32, 32, 8, 2),
    ("bwd", "fp16"): (32, 64, 8, 2),
    ("bwd", "fp32"): (32, 32, 8, 2),
}
INTERPRET_CONFIG = (32, 32, 4, 1)


def config_in(table: dict, kernel: str, dtype: torch.dtype, interpret: bool) -> tuple[int, int, int, int]:
    """A launch's row of a GPU_CONFIGS-shaped table (this file's, or ops/_spatial_gating_kernels.py's, whose
    kernels take the same padded S x S weight and the same interpreter tile)."""
    if interpret:
        return INTERPRET_CONFIG
    return table[kernel, "fp32" if dtype == torch.float32 else "fp16"]


def config(kernel: str, dtype: torch.dtype, interpret: bool) -> tuple[int, int, int, int]:
    return config_in(GPU_CONFIGS, kernel, dtype, interpret)


def k_pad(S: int, block_k: int) -> int:
    return triton.cdiv(S, block_k) * block_k


def padded_weight(w: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A zero-padded contiguous copy of w [S, S] as [rows, cols] (16-byte aligned rows, no masks)."""
    p = w.new_zeros((rows, cols))
    p[:w.shape[0], :w.shape[1]] = w
    return p


def launch_weight(weight: torch.Tensor, S: int, bs: int, block_k: int, transpose: bool) -> torch.Tensor:
    """The weight operand of a launch: weight (or its transpose) padded to whole BLOCK_S rows and K_PAD columns."""
    w = weight.t() if transpose else weight
    return padded_weight(w, triton.cdiv(S, bs) * bs, k_pad(S, block_k))


def off64(*tensors) -> bool:
    """OFF64 of a launch: 64-bit offsets once a tensor reaches 2**31 elements."""
    return any(t.numel() >= 2**31 for t in tensors)


# ------------------------------------------------------------------------------------------------
# compile cases and work (ops/_registry.py): ResMLP at batch 256

_SIZES = (("resmlp_24", 196, 384), ("resmlp_big_24", 784, 768))


def _args(kernel: str, dt, S, C):
    bc, bk, _, _ = config(kernel, dt, False)
    bs = block_s(S, kernel)
    common = dict(X=dt, Alpha=dt, Beta=dt, Bias=dt, LS=dt, Scale=dt, S=S, C=C, K_PAD=k_pad(S, bk),
                  s_xb=S * C, s_xs=C, s_xc=1, HAS_SCALE=True, OFF64=False, INTERPRET=False,
                  INPUT_PRECISION="tf32" if dt == torch.float32 else "ieee", BLOCK_S=bs, BLOCK_C=bc, BLOCK_K=bk)
    if kernel == "fwd":
        return dict(common, W=dt, RowSum=torch.float32, Out=dt)
    return dict(common, DY=dt, WT=dt, DX=dt, DAp=torch.float32, DBp=torch.float32, DLp=torch.float32, GB=dt,
                AB=dt, s_gb=S * C, s_gs=C, s_gc=1, STORE_WGRAD=True)


def _cases(kernel: str):
    def cases():
        out = []
        for name, S, C in _SIZES:
            for dt in (torch.bfloat16, torch.float32):
                bc, bk, warps, stages = config(kernel, dt, False)
                out.append(CompileCase(f"{name} {str(dt)[6:]} c{bc}k{bk}w{warps}s{stages}", _args(kernel, dt, S, C),
                                       num_warps=warps, num_stages=stages))
        return out
    return cases


def _fwd_work(a) -> Work:
    """2*B*S*S*C FLOPs (the GEMM over K = S), x read once and the output written once (the residual
    re-read of x hits L2), the padded weight read once per program from L2 (not counted)."""
    B, S, C = a["X"].shape if hasattr(a["X"], "shape") else (256, a["S"], a["C"])
    moved = nbytes(a["X"]) + nbytes(a["Out"])
    return Work(2.0 * B * S * S * C, moved, a["K_PAD"] // a["BLOCK_K"])


def _bwd_work(a) -> Work:
    """2*B*S*S*C FLOPs; dy and x read once, dx written, the weight-gradient operands written (STORE_WGRAD)."""
    B, S, C = a["X"].shape if hasattr(a["X"], "shape") else (256, a["S"], a["C"])
    moved = nbytes(a["DY"]) + nbytes(a["X"]) + nbytes(a["DX"])
    if a["STORE_WGRAD"]:
        moved += nbytes(a["GB"]) + nbytes(a["AB"])
    return Work(2.0 * B * S * S * C, moved, a["K_PAD"] // a["BLOCK_K"])


register_kernel(_token_linear_fwd_kernel, _cases("fwd"), _fwd_work)
register_kernel(_token_linear_bwd_kernel, _cases("bwd"), _bwd_work)
