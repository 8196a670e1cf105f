"""gMLP's spatial gating unit (timm's SpatialGatingUnit inside GatedMlp) as Triton kernels; the custom op
and launchers live in ops/gmlp_block.py.

With act = GELU(fc1(LN(x))) [M, DC] (M = B*S rows, H = DC/2), u = act[:, :H], v = act[:, H:], per sample b:

    n = LN_v(v)                    (over the H channels of each token; fp32 statistics mean_v, rstd_v [M])
    p_b = W_p @ n_b + b_p[:, None]   (the spatial projection along S: W_p [S, S], b_p [S])
    gate = u * p                   [M, H], fc2's input

backward, with dg = s[b] * (g @ W2) (g the block's output gradient, s the drop_path scale):

    du = dg * p,   dp = dg * u,   dn_b = W_p^T @ dp_b,   dW_p | db_p = sum_b dp_b @ [n_b; 1]^T
    dz_u = du * GELU'(z_u),   dv = LN_v backward(dn),   dz_v = dv * GELU'(z_v)

The design trade-off (speed model, gmlp_s16: S = 196, H = 768, batch 256, bf16): LN_v's per-token scale
rstd[k] lies along the GEMM's K (the tokens), so it cannot fold into the epilogue the way the Mixer's
channel LayerNorm folds (that one scales the output rows). Two ways remain: write n = LN_v(v) once in the
compute dtype (one more pass of M*H elements written and read back: 2 * 77 MB, ~50 us at 3 TB/s against a
~25 us GEMM) or normalise the v tile while loading it. We normalise in the load: the v tile is the dot's
B operand (it goes through shared memory either way), and with BLOCK_S = 256 (all of S in one program:
the v panel is read from DRAM once) the prologue is 16 elements per thread and k-step against 512
tensor-core cycles: the compiled main loop issues 218 SASS instructions per warp and k-step (issue ratio
0.85), and the kernel is memory-bound at 96% of its floor (0.081 ms, H100 model). The W_p tile is the A
operand, read from a zero-padded copy (16-byte aligned rows, no masks), as ops/_token_linear_kernels.py
does for ResMLP.

Kernels (one program per (sample b, BLOCK_C channels, BLOCK_S output tokens), K = S in BLOCK_K steps):
* `_sgu_fwd_kernel`: gate = u * (W_p @ LN_v(v) + b_p), written [M, H] contiguous (fc2's A operand).
* `_sgu_bwd_kernel`: recomputes p = W_p @ LN_v(v) + b_p (cheaper than saving it: a ~25 us GEMM against
  77 MB written and read) and in the epilogue writes dz_u = dg * p * GELU'(z_u) into dz's u half, dp =
  dg * u into [S, B*H] (the next kernel's operand and the weight gradient's), s * gate for fc2's weight
  gradient (WRITE_GATE) and n into [S + 1, B*H] (STORE_WGRAD; a ones row gives db_p from the same cuBLAS
  GEMM, dW_p | db_p = dp @ [n; 1]^T over K = B*H, deterministic, as ResMLP's token op).
* `_sgu_dn_kernel`: dn = W_p^T @ dp, a plain main loop (dp already scaled and rounded), [M, H] in the
  compute dtype; LN_v's backward (ops/layernorm_backward.py) then gives dv, d gamma_v, d beta_v.
* `_sgu_norm_bwd_kernel`: LN_v's backward and GELU's in one pass over the rows: reads dn and z_v (v
  recomputed), writes dz_v into dz's v half and fixed-order partials of d gamma_v, d beta_v and fc1's bias
  gradient (the u half's come from `_sgu_bwd_kernel`'s epilogue): against ops/layernorm_backward.py then a
  GELU' pass it saves 3 * M*H elements of traffic (~0.08 ms at gmlp_s16, H100 model). Rows up to H = 2048.
* `_sgu_gelu_pass_kernel`: the elementwise passes of the v half: GELU(z_v) -> v for `_sgu_bwd_kernel`'s
  loads (only z is saved), and (H > 2048 only) dz_v = dv * GELU'(z_v) after ops/layernorm_backward.py.
"""
import torch
import triton
import triton.language as tl

from ._dot import dot
from ._gelu import gelu_and_grad_fast, gelu_fast
from ._registry import CompileCase, Work, nbytes, register_kernel
from ._round import to_dtype
from ._token_linear_kernels import config_in, k_pad


@triton.jit
def _ids(b, s, c, OFF64: tl.constexpr):
    if OFF64:
        b = b.to(tl.int64)
        s = s.to(tl.int64)
        c = c.to(tl.int64)
    return b, s, c


@triton.jit
def _proj_loop(W, K_PAD: tl.constexpr, V, Mean, Rstd, NW, NB, b, s, c, cmask, S, s_vb, s_vs,
               NORM: tl.constexpr, INTERPRET: tl.constexpr, INPUT_PRECISION: tl.constexpr,
               BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc[s, c] = sum_k W[s, k] * op[k, c] over K = S in BLOCK_K steps: op = LN_v(v) normalised while
    loaded (NORM; statistics of row b*S + k, gamma/beta of channel c), else the tile as loaded (already in
    the compute dtype). Padded k (>= S) meets zero weight columns."""
    k0 = tl.arange(0, BLOCK_K)
    if NORM:
        gamma = tl.load(NW + c, mask=cmask, other=0.0).to(tl.float32)
        beta = tl.load(NB + c, mask=cmask, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK_S, BLOCK_C], dtype=tl.float32)
    for kk in range(0, K_PAD, BLOCK_K):
        k = kk + k0
        kin = k < S
        w = tl.load(W + s[:, None] * K_PAD + k[None, :])                               # [BLOCK_S, BLOCK_K]
        t = tl.load(V + b * s_vb + k[:, None] * s_vs + c[None, :], mask=kin[:, None] & cmask[None, :], other=0.0)
        if NORM:
            mu = tl.load(Mean + b * S + k, mask=kin, other=0.0)
            rs = tl.load(Rstd + b * S + k, mask=kin, other=0.0)
            n = (t.to(tl.float32) - mu[:, None]) * (rs[:, None] * gamma[None, :]) + beta[None, :]
            t = to_dtype(n, W.dtype.element_ty, INTERPRET)
        acc = dot(w, t, acc, INTERPRET, INPUT_PRECISION)
    return acc


@triton.jit
def _sgu_fwd_kernel(
    # pointers
    W,            # [S_rows, K_pad] zero-padded proj weight W_p (rows: output tokens), compute dtype
    PBias,        # [S] proj bias b_p
    Act,          # [M, DC] GELU(fc1(.)), row stride s_am: u = columns [0, H), v = columns [H, DC)
    Mean, Rstd,   # [M] fp32 LN_v statistics of v
    NW, NB,       # [H] LN_v weight and bias
    Out,          # [M, H] contiguous output gate = u * p, compute dtype
    # sizes
    S, H,
    K_PAD: tl.constexpr,       # W's row stride: S rounded up to BLOCK_K
    # strides (elements)
    s_am,
    # meta-parameters
    OFF64: tl.constexpr,       # 64-bit offsets (M*DC >= 2^31)
    INTERPRET: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_S: tl.constexpr,     # output tokens per program
    BLOCK_C: tl.constexpr,     # channels (of H) per program
    BLOCK_K: tl.constexpr,     # input tokens per loop step
):
    b, s, c = _ids(tl.program_id(0), tl.program_id(2) * BLOCK_S + tl.arange(0, BLOCK_S),
                   tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C), OFF64)
    cmask = c < H
    mask = (s < S)[:, None] & cmask[None, :]
    acc = _proj_loop(W, K_PAD, Act + H, Mean, Rstd, NW, NB, b, s, c, cmask, S, S * s_am, s_am, True, INTERPRET,
                     INPUT_PRECISION, BLOCK_S, BLOCK_C, BLOCK_K)
    p = acc + tl.load(PBias + s, mask=s < S, other=0.0).to(tl.float32)[:, None]
    rows = b * S + s
    u = tl.load(Act + rows[:, None] * s_am + c[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(Out + rows[:, None] * H + c[None, :], to_dtype(u * p, Out.dtype.element_ty, INTERPRET), mask=mask)


@triton.jit
def _sgu_bwd_kernel(
    # pointers
    W,            # [S_rows, K_pad] zero-padded W_p, compute dtype
    PBias,        # [S] b_p
    V,            # [M, H] contiguous v = GELU(z_v), compute dtype
    Mean, Rstd,   # [M] fp32 LN_v statistics
    NW, NB,       # [H] LN_v weight and bias
    Z,            # [M, DC] saved pre-activation (row stride s_zm): z_u = columns [0, H)
    DG,           # [M, H] contiguous g @ W2 (before the sample scale), compute dtype
    Scale,        # [B] per-sample branch scale; unused unless HAS_SCALE
    DZ,           # [M, DC] output (row stride s_zm): this kernel writes the u half dz_u
    GateS,        # [M, H] output s * gate (WRITE_GATE): fc2's weight-gradient operand
    DP,           # [S, B*H] output dp = s * (g @ W2) * u, compute dtype
    NT,           # [S + 1, B*H] output n = LN_v(v) (STORE_WGRAD); its last row holds ones
    DBp,          # [B * S-tiles, H] fp32 output (WRITE_DB): this program's column sums of dz_u (fc1's bias gradient)
    # sizes
    S, H,
    K_PAD: tl.constexpr,
    # strides (elements)
    s_zm,
    # meta-parameters
    HAS_SCALE: tl.constexpr,
    WRITE_GATE: tl.constexpr,
    STORE_WGRAD: tl.constexpr,
    WRITE_DB: tl.constexpr,
    APPROX_TANH: tl.constexpr,
    OFF64: tl.constexpr,
    INTERPRET: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    b, s, c = _ids(tl.program_id(0), tl.program_id(2) * BLOCK_S + tl.arange(0, BLOCK_S),
                   tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C), OFF64)
    cmask = c < H
    smask = s < S
    mask = smask[:, None] & cmask[None, :]
    acc = _proj_loop(W, K_PAD, V, Mean, Rstd, NW, NB, b, s, c, cmask, S, S * H, H, True, INTERPRET,
                     INPUT_PRECISION, BLOCK_S, BLOCK_C, BLOCK_K)
    p = acc + tl.load(PBias + s, mask=smask, other=0.0).to(tl.float32)[:, None]
    rows = b * S + s
    zoff = rows[:, None] * s_zm + c[None, :]
    z = tl.load(Z + zoff, mask=mask, other=0.0).to(tl.float32)
    act, dact = gelu_and_grad_fast(z, APPROX_TANH, INTERPRET)
    u = to_dtype(act, DZ.dtype.element_ty, INTERPRET).to(tl.float32)        # the forward's u, bitwise
    dg = tl.load(DG + rows[:, None] * H + c[None, :], mask=mask, other=0.0).to(tl.float32)
    scale = 1.0
    if HAS_SCALE:
        scale = tl.load(Scale + b).to(tl.float32)
    dg = dg * scale
    dz = to_dtype(dg * p * dact, DZ.dtype.element_ty, INTERPRET)
    tl.store(DZ + zoff, dz, mask=mask)
    if WRITE_DB:
        tl.store(DBp + (b * tl.num_programs(2) + tl.program_id(2)) * H + c,
                 tl.sum(tl.where(mask, dz.to(tl.float32), 0.0), axis=0), mask=cmask)
    if WRITE_GATE:
        tl.store(GateS + rows[:, None] * H + c[None, :], to_dtype(scale * (u * p), GateS.dtype.element_ty, INTERPRET),
                 mask=mask)
    col = b * H + c                                                          # column of [S, B*H]
    off = s[:, None] * (tl.num_programs(0) * H) + col[None, :]
    tl.store(DP + off, to_dtype(dg * u, DP.dtype.element_ty, INTERPRET), mask=mask)
    if STORE_WGRAD:
        v = tl.load(V + rows[:, None] * H + c[None, :], mask=mask, other=0.0).to(tl.float32)
        mu = tl.load(Mean + rows, mask=smask, other=0.0)
        rs = tl.load(Rstd + rows, mask=smask, other=0.0)
        gamma = tl.load(NW + c, mask=cmask, other=0.0).to(tl.float32)
        beta = tl.load(NB + c, mask=cmask, other=0.0).to(tl.float32)
        n = (v - mu[:, None]) * (rs[:, None] * gamma[None, :]) + beta[None, :]
        tl.store(NT + off, to_dtype(n, NT.dtype.element_ty, INTERPRET), mask=mask)


@triton.jit
def _sgu_dn_kernel(
    # pointers
    WT,           # [S_rows, K_pad] zero-padded W_p^T (rows: input tokens k; columns: output tokens s)
    DP,           # [S, B*H] dp (compute dtype), from _sgu_bwd_kernel
    DN,           # [M, H] contiguous output dn = W_p^T @ dp, compute dtype
    # sizes
    S, H,
    K_PAD: tl.constexpr,
    # meta-parameters
    OFF64: tl.constexpr,
    INTERPRET: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_S: tl.constexpr,     # input tokens k per program
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,     # output tokens s per loop step
):
    b, k, c = _ids(tl.program_id(0), tl.program_id(2) * BLOCK_S + tl.arange(0, BLOCK_S),
                   tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C), OFF64)
    cmask = c < H
    acc = _proj_loop(WT, K_PAD, DP, DP, DP, DP, DP, b, k, c, cmask, S, H, tl.num_programs(0) * H, False, INTERPRET,
                     INPUT_PRECISION, BLOCK_S, BLOCK_C, BLOCK_K)
    mask = (k < S)[:, None] & cmask[None, :]
    tl.store(DN + (b * S + k)[:, None] * H + c[None, :], to_dtype(acc, DN.dtype.element_ty, INTERPRET), mask=mask)


@triton.jit
def _sgu_gelu_pass_kernel(
    # pointers
    Z,            # [M, DC] pre-activation (row stride s_zm); the v half starts at column H
    DV,           # [M, H] contiguous dv from LN_v's backward (GRAD), else unused
    Out,          # GRAD: dz [M, DC] (row stride s_zm), its v half written; else v = GELU(z_v) [M, H] contiguous
    # sizes
    M, H,
    # strides (elements)
    s_zm,
    # meta-parameters
    GRAD: tl.constexpr,        # dz_v = dv * GELU'(z_v); else GELU(z_v)
    APPROX_TANH: tl.constexpr,
    INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < M)[:, None] & (cols < H)[None, :]
    zoff = rows[:, None] * s_zm + H + cols[None, :]
    z = tl.load(Z + zoff, mask=mask, other=0.0).to(tl.float32)
    hoff = rows[:, None] * H + cols[None, :]
    if GRAD:
        _, dact = gelu_and_grad_fast(z, APPROX_TANH, INTERPRET)
        dv = tl.load(DV + hoff, mask=mask, other=0.0).to(tl.float32)
        tl.store(Out + zoff, to_dtype(dv * dact, Out.dtype.element_ty, INTERPRET), mask=mask)
    else:
        tl.store(Out + hoff, to_dtype(gelu_fast(z, APPROX_TANH, INTERPRET), Out.dtype.element_ty, INTERPRET),
                 mask=mask)


@triton.jit(do_not_specialize=["M"])   # M = B*S: no recompile per batch size (it only bounds masks, loops)
def _sgu_norm_bwd_kernel(
    # pointers
    DN,           # [M, H] contiguous gradient at LN_v's output (from _sgu_dn_kernel)
    Z,            # [M, DC] pre-activation (row stride s_zm); v = GELU(z[:, H:]) recomputed here
    Mean, Rstd,   # [M] fp32 LN_v statistics
    NW,           # [H] LN_v weight
    DZ,           # [M, DC] output (row stride s_zm): this kernel writes the v half dz_v
    DWp, DBp,     # [G, H] fp32 output: per-program partial d gamma_v, d beta_v
    DB1p,         # [G, H] fp32 output: per-program partial column sums of dz_v (fc1's bias gradient)
    # sizes
    M, H,
    # strides (elements)
    s_zm,
    # meta-parameters
    APPROX_TANH: tl.constexpr,
    INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr,     # rows per block
    BLOCK_H: tl.constexpr,     # >= H: a row is loaded once
):
    """LN_v's backward and GELU's in one pass over the rows (a fixed grid of G programs, program p takes
    row blocks p, p+G, ...; partial sums in registers, stored once: deterministic, as
    ops/layernorm_backward.py): v = GELU(z_v) (rounded as the forward's), vhat = (v - mean) * rstd,
    g = dn * gamma, dv = rstd * (g - mean_H(g) - vhat * mean_H(g * vhat)), dz_v = dv * GELU'(z_v)."""
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    c = tl.arange(0, BLOCK_H)
    cmask = c < H
    w = tl.load(NW + c, mask=cmask, other=0.0).to(tl.float32)
    # [BLOCK_M, BLOCK_H] partials summed over the rows once, after the loop: no cross-warp reduction per
    # row block (the fixed order is the same for every launch of a shape)
    dw_acc = tl.zeros([BLOCK_M, BLOCK_H], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_M, BLOCK_H], dtype=tl.float32)
    db1_acc = tl.zeros([BLOCK_M, BLOCK_H], dtype=tl.float32)
    for rb in range(pid, tl.cdiv(M, BLOCK_M), G):
        rows = (rb * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rmask = rows < M
        mask = rmask[:, None] & cmask[None, :]
        mean = tl.load(Mean + rows, mask=rmask, other=0.0)
        rstd = tl.load(Rstd + rows, mask=rmask, other=0.0)
        dn = tl.load(DN + rows[:, None] * H + c[None, :], mask=mask, other=0.0).to(tl.float32)
        zoff = rows[:, None] * s_zm + H + c[None, :]
        z = tl.load(Z + zoff, mask=mask, other=0.0).to(tl.float32)
        act, dact = gelu_and_grad_fast(z, APPROX_TANH, INTERPRET)
        v = to_dtype(act, DZ.dtype.element_ty, INTERPRET).to(tl.float32)
        vhat = tl.where(mask, (v - mean[:, None]) * rstd[:, None], 0.0)
        g = dn * w[None, :]
        mean_g = tl.sum(g, axis=1) / H
        mean_gv = tl.sum(g * vhat, axis=1) / H
        dv = rstd[:, None] * (g - mean_g[:, None] - vhat * mean_gv[:, None])
        dz = to_dtype(dv * dact, DZ.dtype.element_ty, INTERPRET)
        tl.store(DZ + zoff, dz, mask=mask)
        dw_acc += dn * vhat
        db_acc += dn
        db1_acc += tl.where(mask, dz.to(tl.float32), 0.0)
    part = pid.to(tl.int64) * H + c
    tl.store(DWp + part, tl.sum(dw_acc, axis=0), mask=cmask)
    tl.store(DBp + part, tl.sum(db_acc, axis=0), mask=cmask)
    tl.store(DB1p + part, tl.sum(db1_acc, axis=0), mask=cmask)


# ------------------------------------------------------------------------------------------------
# Tiles

def block_s(S: int, kernel: str) -> int:
    """Output tokens per program: all of S up to 256 (the v / dp panel read from DRAM once), else 128.
    The backward's epilogue holds more fp32 tiles (p, z, GELU', dg, u): at most 128 tokens there."""
    cap = 256 if kernel in ("fwd", "dn") else 128
    return max(16, triton.next_power_of_2(S)) if triton.next_power_of_2(S) <= cap else min(cap, 128)


# (BLOCK_C, BLOCK_K, num_warps, num_stages) by kernel and compute dtype on a GPU; compiled for sm_90 at
# gmlp_s16 (the compile cases below; 0 spills, wgmma, no hazard on triton 3.6 and 3.8). The interpreter takes
# config_in's INTERPRET_CONFIG. The backward's 16-bit tile runs 4 warps: at 8 warps it took 130 registers (one CTA per
# SM, issue-bound: 0.209 ms, H100 model at gmlp_s16 batch 256), at 4 warps 252 with 2 CTAs per SM, 0.183 ms
# at 98% of its memory floor; fp32 stays at 8 warps (4 spilled). 64 channels or 256 tokens spilled.
GPU_CONFIGS = {
    ("fwd", "fp16"): (64, 64, 8, 2),
    ("fwd", "fp32"): (32, 32, 8, 2),
    ("bwd", "fp16"): (32, 64, 4, 2),
    ("bwd", "fp32"): (32, 32, 8, 2),
    ("dn", "fp16"): (64, 64, 8, 2),
    ("dn", "fp32"): (32, 32, 8, 2),
}
PASS_BLOCK = (32, 128)     # (BLOCK_M, BLOCK_N) of the GELU passes
NORM_MAX_H = 2048          # _sgu_norm_bwd_kernel loads a row once up to this H (gmlp_b16: 1536); above, LN_v's
                           # backward runs ops/layernorm_backward.py and then the dz_v pass
NORM_MAX_PROGRAMS = 1024   # its fixed grid cap (G): the reduction order depends only on the shape


def norm_block(H: int) -> tuple[int, int, int]:
    """BLOCK_M, BLOCK_H, num_warps of _sgu_norm_bwd_kernel: 2048-element tiles (2 rows at H = 768, padded to
    1024), 8 warps for the larger ones. H100 model, gmlp_s16 batch 256 (the kernel is issue-bound: the erf
    GELU and GELU' per element): 2 rows 0.109 ms, 4 rows 0.111, 8 rows 0.119 (255 registers), 2 rows on 4
    warps 0.120; a row split into 512 + 256 columns (no lane on padding) took more instructions, not fewer
    (0.127 at 4 rows), and per-row-block column sums instead of [BLOCK_M, BLOCK_H] partials 0.124."""
    block_h = triton.next_power_of_2(H)
    block_m = max(1, min(2, 2048 // block_h))
    return block_m, block_h, 8 if block_m * block_h >= 2048 else 4


def config(kernel: str, dtype: torch.dtype, interpret: bool) -> tuple[int, int, int, int]:
    return config_in(GPU_CONFIGS, kernel, dtype, interpret)


# ------------------------------------------------------------------------------------------------
# compile cases and work (ops/_registry.py): gmlp_s16 (C = 256, DC = 1536, S = 196) at batch 256

_SIZES = (("gmlp_s16", 196, 768),)
_B = 256


def _args(kernel: str, dt, S, H):
    bc, bk, _, _ = config(kernel, dt, False)
    common = dict(S=S, H=H, K_PAD=k_pad(S, bk), OFF64=False, INTERPRET=False,
                  INPUT_PRECISION="tf32" if dt == torch.float32 else "ieee", BLOCK_S=block_s(S, kernel),
                  BLOCK_C=bc, BLOCK_K=bk)
    f32 = torch.float32
    if kernel == "fwd":
        return dict(common, W=dt, PBias=dt, Act=dt, Mean=f32, Rstd=f32, NW=dt, NB=dt, Out=dt, s_am=2 * H)
    if kernel == "bwd":
        return dict(common, W=dt, PBias=dt, V=dt, Mean=f32, Rstd=f32, NW=dt, NB=dt, Z=dt, DG=dt, Scale=dt, DZ=dt,
                    GateS=dt, DP=dt, NT=dt, DBp=f32, s_zm=2 * H, HAS_SCALE=True, WRITE_GATE=True, STORE_WGRAD=True,
                    WRITE_DB=True, APPROX_TANH=False)
    return dict(common, WT=dt, DP=dt, DN=dt)


def _cases(kernel: str):
    def cases():
        out = []
        for name, S, H in _SIZES:
            for dt in (torch.bfloat16, torch.float32):
                bc, bk, warps, stages = config(kernel, dt, False)
                out.append(CompileCase(f"{name} {str(dt)[6:]} s{block_s(S, kernel)}c{bc}k{bk}w{warps}s{stages}",
                                       _args(kernel, dt, S, H), num_warps=warps, num_stages=stages))
        return out
    return cases


def _norm_cases():
    out = []
    f32 = torch.float32
    for name, S, H in _SIZES + (("gmlp_b16", 196, 1536),):
        for dt in (torch.bfloat16, torch.float32):
            bm, bh, warps = norm_block(H)
            out.append(CompileCase(f"{name} {str(dt)[6:]} {bm}x{bh}",
                                   dict(DN=dt, Z=dt, Mean=f32, Rstd=f32, NW=dt, DZ=dt, DWp=f32, DBp=f32, DB1p=f32,
                                        M=_B * S, H=H, s_zm=2 * H, APPROX_TANH=False, INTERPRET=False, BLOCK_M=bm,
                                        BLOCK_H=bh), num_warps=warps, num_stages=1))
    return out


def _pass_cases():
    out = []
    for name, S, H in _SIZES:
        for grad in (False, True):
            out.append(CompileCase(f"{name} bf16 {'dz_v' if grad else 'gelu'}",
                                   dict(Z=torch.bfloat16, DV=torch.bfloat16, Out=torch.bfloat16, M=_B * S, H=H,
                                        s_zm=2 * H, GRAD=grad, APPROX_TANH=False, INTERPRET=False,
                                        BLOCK_M=PASS_BLOCK[0], BLOCK_N=PASS_BLOCK[1]), num_warps=4, num_stages=1))
    return out


def _mh(a, name) -> tuple[int, int]:
    """(B*S*H elements, B*S rows) of a launch, from its [M, H] tensor `name` (the speed model records
    launches on meta tensors)."""
    t = a[name]
    return t.numel(), t.shape[0]


def _fwd_work(a) -> Work:
    """2*B*S*S*H FLOPs (the projection over K = S, unpadded); u and v read once (act), the gate written
    once, the fp32 statistics read; the padded weight (L2-resident) not counted."""
    mh, M = _mh(a, "Out")
    return Work(2.0 * M * a["S"] * a["H"], 3 * mh * a["Out"].element_size() + 8 * M, a["K_PAD"] // a["BLOCK_K"])


def _bwd_work(a) -> Work:
    """2*B*S*S*H FLOPs (p recomputed); v, z_u, dg read; dz_u, dp (and s * gate, n) written."""
    mh, M = _mh(a, "DG")
    n_out = 2 + int(a["WRITE_GATE"]) + int(a["STORE_WGRAD"])
    return Work(2.0 * M * a["S"] * a["H"], (3 + n_out) * mh * a["DG"].element_size() + 8 * M,
                a["K_PAD"] // a["BLOCK_K"])


def _dn_work(a) -> Work:
    """2*B*S*S*H FLOPs; dp read once, dn written once."""
    mh, M = _mh(a, "DN")
    return Work(2.0 * M * a["S"] * a["H"], 2 * nbytes(a["DN"]), a["K_PAD"] // a["BLOCK_K"])


def _norm_work(a) -> Work:
    """dn and z_v read, dz_v written once, the statistics read; the [G, H] partials written once. Main loop:
    the row blocks of one program."""
    M, H = a["M"], a["H"]
    moved = M * H * (a["DN"].element_size() + a["Z"].element_size() + a["DZ"].element_size()) + 8 * M
    moved += 3 * nbytes(a["DWp"])
    return Work(0.0, moved, triton.cdiv(triton.cdiv(M, a["BLOCK_M"]), a["DWp"].shape[0]))


def _pass_work(a) -> Work:
    """z_v read, v written (GELU); z_v and dv read, dz_v written (GRAD)."""
    mh = a["M"] * a["H"] * a["Z"].element_size()
    return Work(0.0, (3 if a["GRAD"] else 2) * mh, 1)


register_kernel(_sgu_fwd_kernel, _cases("fwd"), _fwd_work)
register_kernel(_sgu_bwd_kernel, _cases("bwd"), _bwd_work)
register_kernel(_sgu_dn_kernel, _cases("dn"), _dn_work)
register_kernel(_sgu_norm_bwd_kernel, _norm_cases, _norm_work)
register_kernel(_sgu_gelu_pass_kernel, _pass_cases, _pass_work)
