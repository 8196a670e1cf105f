"""Token mixing's resident kernels (S <= 256; fp16/bf16, or fp32 with tf32 dots) and their tile tables; the
custom ops and launchers live in ops/token_mixing.py; S > 256 and ieee fp32 at every S take the large-S
GEMM path (ops/_token_large_kernels.py).

Token-major tiles, the fc weights as the A operand. One program per (sample b, BLOCK_C channels) holds
T = LN(x[b])[:, c] as a [BLOCK_S, BLOCK_C] tile (rows: tokens, padded to a power of two; columns:
channels, so x's [S, C] layout makes every load and store of x, dy, y and dT coalesced along C) and
walks the hidden units in chunks of BLOCK_H:

    forward:  H = W1[h, :] @ T        [BLOCK_H, BLOCK_S] x [BLOCK_S, BLOCK_C]
              out += W2[:, h] @ GELU(H + b1[h])   [BLOCK_S, BLOCK_H] x [BLOCK_H, BLOCK_C]
    dT:       H = W1[h, :] @ T,  dA = W2[:, h]^T @ G,  dH = dA * GELU'(H + b1[h]),
              dT += W1[h, :]^T @ dH                  (G = scale[b] * dy[b][:, c])

Both matmuls take their A operand (a weight slice) from shared memory and their B operand (T, G:
loop-invariant, or this chunk's GELU(H) / dH) from shared memory, with wgmma N = BLOCK_C. The
chained dots (H feeds the second matmul) put every warp along M (Triton's warpsPerTileV3), so with 4
warps (one warpgroup) M = BLOCK_H = 64 is one warpgroup's rows: no duplicated tensor work. The
accumulator [BLOCK_S, BLOCK_C] is 64 fp32 registers per thread at 4 warps and BLOCK_C = 32 (128 at
64 channels, which spilled: see the tile table). GELU uses the branch-free erf of ops/_gelu.py.

The fc weights arrive as zero-padded copies, fc1 and fc2^T both [DS_pad, BLOCK_S] (DS_pad a multiple of
every BLOCK_H; `padded_weights`, ~0.4 MB at B/16, made per call): constexpr row strides, 16-byte aligned
rows (S = 196 is not), no masks in the hidden loop, and padded tokens/hidden units contribute exact zeros.

dT kernel, STORE_WGRAD: it also writes the operands of the two weight-gradient GEMMs (run by
ops/token_mixing.py through torch.matmul, K = B*C): T and G as [S, B*C] (TB, GB) and GELU(H), dH as
[DS, B*C] (AB, DHB), in the compute dtype; every store is contiguous along the channels. With a row of
ones appended to TB and AB (by the launcher), the same GEMMs give the bias gradients:
dW1|db1 = dH @ [T; 1]^T, dW2|db2 = G @ [A; 1]^T.

gMixer (GLU != 0: timm's GluMlp with SiLU; fc1 [DS, S] = [2H, S], fc2 [S, H]): the size argument DS is H, the
hidden units after the gate, and the fc1 copy is [2 * DS_pad, BLOCK_S], x1's rows at 0.., x2's at DS_pad..
(`padded_glu_weights`). Per chunk h the two slices rows h and DS_pad + h give two dots on the same T,
the gate g = x1 * SiLU(x2) (ops/_act.py) is the epilogue, GEMM 2 takes g. dT recomputes both halves:
dG = W2[:, h]^T @ G, dX1 = dG * SiLU(X2), dX2 = dG * X1 * SiLU'(X2), dT += W1a^T dX1 + W1b^T dX2; with
STORE_WGRAD, AB holds g [H, B*C] and DHB [dX1; dX2] [2H, B*C] (timm's row order), so the launcher's two
GEMMs give dW1|db1 [2H, S+1] and dW2|db2 [S, H+1] unchanged. The hidden activations stay on chip.
"""
import itertools

import torch
import triton
import triton.language as tl

from ._act import glu, glu_and_grad
from ._dot import dot
from ._gelu import gelu_and_grad_fast, gelu_fast
from ._registry import CompileCase, Work, nbytes, register_kernel
from ._round import to_dtype


@triton.jit
def _tm_tile(b, s, c, S, C, BLOCK_C: tl.constexpr, OFF64: tl.constexpr):
    """Tokens s, channels c of this program, and the [len(s), len(c)] mask inside S and C."""
    if OFF64:
        s = s.to(tl.int64)
        c = c.to(tl.int64)
    mask = (s < S)[:, None] & (c < C)[None, :]
    return s, c, mask


@triton.jit
def _tm_program(X, Mean, Rstd, NW, NB, W1, S, C, s_xb, s_xs, s_xc, OFF64: tl.constexpr, INTERPRET: tl.constexpr,
                BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    """The prologue of both kernels: this program's sample b (int64), tokens s, channels c, their mask,
    and T = LN(x[b])[s, c] as a [BLOCK_S, BLOCK_C] tile in the compute dtype (W1's), zero outside S and C."""
    b = tl.program_id(0).to(tl.int64)
    s, c, mask = _tm_tile(b, tl.arange(0, BLOCK_S), tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C), S, C,
                          BLOCK_C, OFF64)
    t = to_dtype(_tm_norm(X, Mean, Rstd, NW, NB, b, s, c, mask, S, C, s_xb, s_xs, s_xc), W1.dtype.element_ty,
                 INTERPRET)
    return b, s, c, mask, t


@triton.jit
def _tm_rows(W, h, BLOCK_S: tl.constexpr):
    """Rows h of a zero-padded [DS_pad, BLOCK_S] weight copy: a [len(h), BLOCK_S] tile (no mask needed)."""
    return tl.load(W + h[:, None] * BLOCK_S + tl.arange(0, BLOCK_S)[None, :])


@triton.jit
def _tm_norm(X, Mean, Rstd, NW, NB, b, s, c, mask, S, C, s_xb, s_xs, s_xc):
    """LN(x[b, s, c]) as an fp32 [len(s), len(c)] tile, zero outside S and C."""
    cmask = c < C
    # evict_last: the forward re-reads this tile for the residual. (Also keeps the compiler from merging the
    # two loads, which would hold the fp32 tile in registers across the hidden loop.)
    x = tl.load(X + b * s_xb + s[:, None] * s_xs + c[None, :] * s_xc, mask=mask, other=0.0,
                eviction_policy="evict_last").to(tl.float32)
    mean = tl.load(Mean + b * S + s, mask=s < S, other=0.0)
    rstd = tl.load(Rstd + b * S + s, mask=s < S, other=0.0)
    nw = tl.load(NW + c, mask=cmask, other=0.0).to(tl.float32)
    nb = tl.load(NB + c, mask=cmask, other=0.0).to(tl.float32)
    t = (x - mean[:, None]) * rstd[:, None] * nw[None, :] + nb[None, :]
    return tl.where(mask, t, 0.0)


@triton.jit
def _token_mixing_fwd_tm_kernel(
    # pointers
    X,              # [B, S, C] input, any strides
    Mean, Rstd,     # [B*S] fp32 row statistics of x
    NW, NB,         # [C] LayerNorm weight, bias
    W1,             # [DS_pad, BLOCK_S] zero-padded fc1 weight, compute dtype (padded_weights); GLU:
                    # [2 * DS_pad, BLOCK_S], x1's rows then x2's (padded_glu_weights)
    B1,             # [DS] fc1 bias (GLU: [2 * DS])
    W2T,            # [DS_pad, BLOCK_S] zero-padded fc2 weight, transposed, compute dtype
    B2,             # [S] fc2 bias
    Scale,          # [B] fp32 per-sample branch multiplier; unused unless HAS_SCALE
    Out,            # [B, S, C] output, contiguous, x's dtype
    # sizes
    S, C, DS, DS_pad,         # DS: hidden units (GLU: after the gate, fc1's rows / 2)
    # x strides (elements)
    s_xb, s_xs, s_xc,
    # meta-parameters
    HAS_SCALE: tl.constexpr,
    APPROX_TANH: tl.constexpr,
    OFF64: tl.constexpr,
    INTERPRET: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_S: tl.constexpr,    # tokens, padded: next power of two >= S (the weight copies' padding)
    BLOCK_C: tl.constexpr,    # channels per program (wgmma N)
    BLOCK_H: tl.constexpr,    # hidden units per chunk (the first matmul's M)
    GLU: tl.constexpr = 0,    # 0: GELU; gMixer's SiLU-gated GLU: 1 gate last (x1 * SiLU(x2)), 2 gate first
):
    b, s, c, mask, t = _tm_program(X, Mean, Rstd, NW, NB, W1, S, C, s_xb, s_xs, s_xc, OFF64, INTERPRET, BLOCK_S,
                                   BLOCK_C)
    cdt = W1.dtype.element_ty
    ss = tl.arange(0, BLOCK_S)
    hh = tl.arange(0, BLOCK_H)
    acc = tl.zeros([BLOCK_S, BLOCK_C], dtype=tl.float32)
    for h0 in range(0, DS_pad, BLOCK_H):
        h = h0 + hh
        w1 = _tm_rows(W1, h, BLOCK_S)                                           # [BH, BS]
        hacc = dot(w1, t, tl.zeros([BLOCK_H, BLOCK_C], dtype=tl.float32), INTERPRET, INPUT_PRECISION)
        b1 = tl.load(B1 + h, mask=h < DS, other=0.0).to(tl.float32)
        if GLU:
            w1b = _tm_rows(W1, DS_pad + h, BLOCK_S)                             # x2's rows: [BH, BS]
            hacc2 = dot(w1b, t, tl.zeros([BLOCK_H, BLOCK_C], dtype=tl.float32), INTERPRET, INPUT_PRECISION)
            b1b = tl.load(B1 + DS + h, mask=h < DS, other=0.0).to(tl.float32)
            a = to_dtype(glu(hacc + b1[:, None], hacc2 + b1b[:, None], GLU, INTERPRET), cdt, INTERPRET)
        else:
            a = to_dtype(gelu_fast(hacc + b1[:, None], APPROX_TANH, INTERPRET), cdt, INTERPRET)     # [BH, BC]
        w2 = tl.load(W2T + h[None, :] * BLOCK_S + ss[:, None])                  # W2[:, h]: [BS, BH]
        acc = dot(w2, a, acc, INTERPRET, INPUT_PRECISION)
    b2 = tl.load(B2 + s, mask=s < S, other=0.0).to(tl.float32)
    branch = acc + b2[:, None]
    if HAS_SCALE:
        branch = branch * tl.load(Scale + b)
    x = tl.load(X + b * s_xb + s[:, None] * s_xs + c[None, :] * s_xc, mask=mask, other=0.0).to(tl.float32)
    tl.store(Out + b * S * C + s[:, None] * C + c[None, :], to_dtype(x + branch, Out.dtype.element_ty, INTERPRET),
             mask=mask)


@triton.jit
def _token_mixing_bwd_dt_tm_kernel(
    # pointers
    X, Mean, Rstd, NW, NB,    # as in the forward
    W1, B1, W2T,              # as in the forward: fc1 [DS_pad, BLOCK_S], fc1 bias [DS], fc2^T [DS_pad, BLOCK_S]
    DY,                       # [B, S, C] gradient of the output, any strides
    Scale,                    # [B] fp32; unused unless HAS_SCALE
    DT,                       # [B, S, C] output: gradient w.r.t. T = LN(x), contiguous, x's dtype
    TB, GB,                   # STORE_WGRAD: T and G as [S, B*C] (row stride K), compute dtype
    AB, DHB,                  # STORE_WGRAD: GELU(H) and dH as [DS, B*C] (row stride K), compute dtype
                              # (GLU: g [DS, B*C] and [dX1; dX2] [2 * DS, B*C])
    # sizes
    S, C, DS, DS_pad, K,      # K = B*C: the row stride of TB, GB, AB, DHB
    # strides (elements)
    s_xb, s_xs, s_xc,
    s_gb, s_gs, s_gc,
    # meta-parameters
    HAS_SCALE: tl.constexpr,
    APPROX_TANH: tl.constexpr,
    STORE_WGRAD: tl.constexpr,
    OFF64: tl.constexpr,
    INTERPRET: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_H: tl.constexpr,
    GLU: tl.constexpr = 0,    # as in the forward
):
    b, s, c, mask, t = _tm_program(X, Mean, Rstd, NW, NB, W1, S, C, s_xb, s_xs, s_xc, OFF64, INTERPRET, BLOCK_S,
                                   BLOCK_C)
    cdt = W1.dtype.element_ty
    scale = 1.0
    if HAS_SCALE:
        scale = tl.load(Scale + b)
    g = tl.load(DY + b * s_gb + s[:, None] * s_gs + c[None, :] * s_gc, mask=mask, other=0.0).to(tl.float32)
    g = to_dtype(g * scale, cdt, INTERPRET)
    col = b * C + c                                  # column of this program's channels in the [*, B*C] stores
    if STORE_WGRAD:
        tl.store(TB + s[:, None] * K + col[None, :], t, mask=mask)
        tl.store(GB + s[:, None] * K + col[None, :], g, mask=mask)
    hh = tl.arange(0, BLOCK_H)
    acc = tl.zeros([BLOCK_S, BLOCK_C], dtype=tl.float32)
    for h0 in range(0, DS_pad, BLOCK_H):
        h = h0 + hh
        w1 = _tm_rows(W1, h, BLOCK_S)                                           # [BH, BS]
        w2t = _tm_rows(W2T, h, BLOCK_S)                                         # W2[:, h]^T: [BH, BS]
        hacc = dot(w1, t, tl.zeros([BLOCK_H, BLOCK_C], dtype=tl.float32), INTERPRET, INPUT_PRECISION)
        dacc = dot(w2t, g, tl.zeros([BLOCK_H, BLOCK_C], dtype=tl.float32), INTERPRET, INPUT_PRECISION)
        pre = hacc + tl.load(B1 + h, mask=h < DS, other=0.0).to(tl.float32)[:, None]
        if GLU:
            w1b = _tm_rows(W1, DS_pad + h, BLOCK_S)                             # x2's rows: [BH, BS]
            hacc2 = dot(w1b, t, tl.zeros([BLOCK_H, BLOCK_C], dtype=tl.float32), INTERPRET, INPUT_PRECISION)
            pre2 = hacc2 + tl.load(B1 + DS + h, mask=h < DS, other=0.0).to(tl.float32)[:, None]
            act, dx1, dx2 = glu_and_grad(pre, pre2, dacc, GLU, INTERPRET)
            dh = to_dtype(dx1, cdt, INTERPRET)
            dh2 = to_dtype(dx2, cdt, INTERPRET)
        else:
            act, dact = gelu_and_grad_fast(pre, APPROX_TANH, INTERPRET)
            dh = to_dtype(dacc * dact, cdt, INTERPRET)                         # [BH, BC]
        if STORE_WGRAD:
            if OFF64:
                h = h.to(tl.int64)
            hmask = (h < DS)[:, None] & (c < C)[None, :]
            tl.store(DHB + h[:, None] * K + col[None, :], dh, mask=hmask)
            if GLU:
                tl.store(DHB + (DS + h)[:, None] * K + col[None, :], dh2, mask=hmask)
            tl.store(AB + h[:, None] * K + col[None, :], to_dtype(act, cdt, INTERPRET), mask=hmask)
        acc = dot(tl.trans(w1), dh, acc, INTERPRET, INPUT_PRECISION)
        if GLU:
            acc = dot(tl.trans(w1b), dh2, acc, INTERPRET, INPUT_PRECISION)
    tl.store(DT + b * S * C + s[:, None] * C + c[None, :], to_dtype(acc, DT.dtype.element_ty, INTERPRET), mask=mask)


# ------------------------------------------------------------------------------------------------
# Tile tables


def block_s(S: int) -> int:
    """Tokens per resident tile: the next power of two >= S (at least 16, the smallest dot dimension)."""
    return max(16, triton.next_power_of_2(S))


# (kernel, fp32 operands) -> BLOCK_C, BLOCK_H, num_warps, num_stages. 4 warps: one warpgroup, so the chained
# dots' M = BLOCK_H = 64 is one warpgroup's tile (8 warps would duplicate it or need M = 128). Compiled for
# sm_90 at B/16 (`python -m mixer_kernels.ops._compile_check --only token`), triton 3.6 and 3.8:
#   fwd 32x64, 2 stages: 168 registers, 0 spills, wgmma 64x32x16, 151 KB shared (cp.async double-buffers
#     the two [64 x 256] weight slices); 64x64 needs 255 registers and spilled 32 B on 3.8 (0 on 3.6).
#   dt 32x64, 2 stages: 206-231 registers, 0 spills with the weight-gradient stores; 64x64 spilled 264-452 B.
#   1 stage loads the weight slices through registers (LDG + STS) and spilled at 64 channels; at 32
#     channels the forward compiles with 190 registers, 0 spills, 52 KB of shared memory: 2 CTAs per SM,
#     so one program's prologue and epilogue overlap the other's hidden loop. The speed model ranks it
#     first (H100, B/16 batch 256: 0.157 ms against 0.169 at 2 stages; it does not model the exposed
#     latency of the synchronous weight loads, so the 2-stage config stays in the tuning list).
# fp32 operands with tf32 dots (wgmma 64xNx8; ieee fp32 takes the large-S GEMM path at every S,
# ops/_token_large_kernels.py: an FMA dot of these tiles spilled 36 KB), twice the bytes per weight slice:
#   fwd 32x64, 1 stage: wgmma 64x32x8, 255 registers, 0 spills, 104 KB shared, 2 CTAs per SM (2 stages:
#     296 KB of shared memory, over the limit).
#   dt 16x64, 8 warps, 1 stage: wgmma 64x8x8 (the two warpgroups split N), 232 registers, 0 spills, 224 KB
#     shared (160 KB on sm_80). At 4 warps the [64, 256] fp32 weight slices loaded through registers
#     (128 each per thread) spilled 8 B on triton 3.6 at 16 channels, 8-36 B at 32; 2 stages need
#     288-328 KB.
_CONFIGS = {("fwd", False): (32, 64, 4, 1), ("dt", False): (32, 64, 4, 2),
            ("fwd", True): (32, 64, 4, 1), ("dt", True): (16, 64, 8, 1)}

# GPU autotune lists (every entry compiled for sm_90 without hazards on triton 3.6 and 3.8), by (kernel,
# fp32 operands).
GPU_CONFIGS = {
    ("fwd", False): [dict(BLOCK_C=32, BLOCK_H=64, num_warps=4, num_stages=1),
                     dict(BLOCK_C=32, BLOCK_H=64, num_warps=4, num_stages=2)],
    ("dt", False): [dict(BLOCK_C=32, BLOCK_H=64, num_warps=4, num_stages=2)],
    ("fwd", True): [dict(BLOCK_C=32, BLOCK_H=64, num_warps=4, num_stages=1)],
    ("dt", True): [dict(BLOCK_C=16, BLOCK_H=64, num_warps=8, num_stages=1)],
}

# Entries for smaller cards (ops/_tuning.keep: a launch takes them only where no entry above fits the card's
# shared memory and compiles without spills). Compiled at B/16 (S = 196) for sm_80, sm_86 and sm_120, triton 3.8:
#   fwd fp32 16x64, 4 warps, 1 stage: 84 KB, 0 spills (32x64 takes 104 KB, over the 99 KB of sm_86/89/120, and
#     spilled 144 B on sm_80; 32x32 and 16x32 fit but run mma.sync on sm_90).
#   dt 16-bit 16x64, 4 warps, 2 stages: 84 KB, 0 spills (32x64 takes 100 KB at 2 stages and spilled 20 B on
#     sm_80; at 1 stage 96 KB and 12-24 B of spills).
#   dt fp32 16x32, 8 warps, 1 stage: 96 KB, 0 spills (16x64: 160 KB; at 4 warps 16x64 spilled 488-560 B).
# Triton 3.9 (CUDA 13 ptxas, Triton's own flags) on sm_90: every fp32 (tf32) tile with BLOCK_H = 64 spills (fwd
# 32x64 and 16x64 on 4 warps 356-364 B, on 8 warps 84-212 B; 2 stages need 276 KB and more; dt 16x64 on 8 warps
# 548-624 B); with BLOCK_H = 32 none spills, but the first dot (M = BLOCK_H) runs mma.sync:
#   fwd fp32 32x32, 4 warps, 1 stage: 182 registers, 0 spills, 68 KB, 2 CTAs per SM (16x32 at 2 stages: 114 KB, 1).
#   dt fp32: the 16x32 entry above (122 registers, 0 spills). A wgmma fp32 tile on 3.9 needs a kernel change.
FALLBACK_CONFIGS = {
    ("fwd", False): [],
    ("dt", False): [dict(BLOCK_C=16, BLOCK_H=64, num_warps=4, num_stages=2)],
    ("fwd", True): [dict(BLOCK_C=16, BLOCK_H=64, num_warps=4, num_stages=1),
                    dict(BLOCK_C=32, BLOCK_H=32, num_warps=4, num_stages=1)],
    ("dt", True): [dict(BLOCK_C=16, BLOCK_H=32, num_warps=8, num_stages=1)],
}

# gMixer's GLU (GLU != 0), fp16/bf16 only, the primary entry per kernel (compiled at gmixer_24, triton 3.8, sm_90):
#   fwd 32x64, 4 warps, 1 stage: wgmma, 232 registers, 0 spills, 80 KB shared, 2 CTAs per SM.
#   dt 16x64, 4 warps, 2 stages: wgmma, 128 registers, 0 spills, 214 KB shared (three [64, 256] weight slices,
#     double-buffered); the GELU tile 32x64 needs 236 KB (over the 227 KB an SM has), at 1 stage it spilled.
#   The speed model (H100, gmixer_24 batch 256) ranks these first: fwd at 2 stages 0.072 ms (0.057 at 1; the
#   model's 'serial' bound), dT 16x64 on 8 warps at 1 stage 0.242 ms (0.122).
# fp32 (tf32) GLU tiles spilled (fwd 32x64: 48 B; dT 16x64 at 8 warps: 624 B; BLOCK_H = 32 runs mma.sync), so fp32
# gMixer token mixing takes the composition of ops/gmixer_token_mixing.py.
# (The interpreter tests also run fp32 through these tiles, to check the kernels' math at fp32 accuracy.)
GLU_CONFIGS = {"fwd": (32, 64, 4, 1), "dt": (16, 64, 4, 2)}
# Entries for smaller cards (ops/_tuning.keep), compiled at gmixer_24 bf16 for sm_80, sm_86 and sm_120, triton 3.6
# and 3.8, with and without the weight-gradient stores (the forward's 32x64 takes 80 KB and spills on no card):
#   dt 16x64, 8 warps, 2 stages: 84 KB, 0 spills on sm_80 (at 4 warps 16x64 spilled 48-276 B at 1 stage, 8-24 B
#     at 2; it spills 8-24 B on sm_86/120 too).
#   dt 16x32, 8 warps, 1 stage: 48 KB, 0 spills on sm_80, sm_86 and sm_120 (4 warps: 12-24 B on sm_86/120).
# Triton 3.9 on sm_90: the forward's 32x64 spills 132 B (Triton's own ptxas flags); its fallback there:
#   fwd 16x64, 4 warps, 1 stage: wgmma, 200 registers, 0 spills, 72 KB, 2 CTAs per SM (32x64 on 8 warps: 254
#     registers, 0 spills, 1 CTA per SM).
GLU_FALLBACK_CONFIGS = {"fwd": [dict(BLOCK_C=16, BLOCK_H=64, num_warps=4, num_stages=1)],
                        "dt": [dict(BLOCK_C=16, BLOCK_H=64, num_warps=8, num_stages=2),
                               dict(BLOCK_C=16, BLOCK_H=32, num_warps=8, num_stages=1)]}

MAX_BLOCK_H = 64


def ds_pad(DS: int) -> int:
    """Hidden units of the padded weight copies: a multiple of every BLOCK_H a config may take."""
    return triton.cdiv(DS, MAX_BLOCK_H) * MAX_BLOCK_H if DS > 32 else max(16, triton.next_power_of_2(DS))


def padded_weights(fc1_weight, fc2_weight, BS: int, dsp: int):
    """Zero-padded copies of fc1 [DS, S] -> [dsp, BS] and fc2^T [DS, S] -> [dsp, BS], contiguous, 16-byte
    aligned rows (two small allocations and copies per call: 0.4 MB at B/16)."""
    DS, S = fc1_weight.shape
    w1p = fc1_weight.new_zeros((dsp, BS))
    w1p[:DS, :S] = fc1_weight
    w2tp = fc2_weight.new_zeros((dsp, BS))
    w2tp[:DS, :S] = fc2_weight.t()
    return w1p, w2tp


def padded_glu_weights(fc1_weight, fc2_weight, BS: int, dsp: int):
    """gMixer: fc1 [2H, S] -> [2 * dsp, BS] (x1's rows at 0, x2's at dsp) and fc2^T [H, S] -> [dsp, BS]."""
    DS2, S = fc1_weight.shape
    H = DS2 // 2
    w1p = fc1_weight.new_zeros((2 * dsp, BS))
    w1p[:H, :S] = fc1_weight[:H]
    w1p[dsp:dsp + H, :S] = fc1_weight[H:]
    w2tp = fc2_weight.new_zeros((dsp, BS))
    w2tp[:H, :S] = fc2_weight.t()
    return w1p, w2tp


def default_config(kernel: str, S: int, C: int, DS: int, dtype: torch.dtype, glu: bool = False) -> dict:
    """The one configuration of the interpreter and of MIXER_KERNELS_AUTOTUNE=0 (gMixer's GLU: GLU_CONFIGS, the
    first entry of glu_table). Small C or DS shrink the tiles (16 is the smallest dot dimension on GPUs)."""
    block_c, block_h, warps, stages = GLU_CONFIGS[kernel] if glu else _CONFIGS[(kernel, dtype == torch.float32)]
    block_c = min(block_c, max(16, triton.next_power_of_2(C)))
    block_h = min(block_h, ds_pad(DS))
    return dict(BLOCK_C=block_c, BLOCK_H=block_h, num_warps=warps, num_stages=stages)


def glu_table(kernel: str, S: int, C: int, DS: int, dtype: torch.dtype) -> list[dict]:
    """gMixer's GLU launches' tile table for ops/_tuning.pick: GLU_CONFIGS' entry (every card where it fits and
    compiles without spills: the H100's), then the smaller cards' fallbacks, shrunk for small C or DS."""
    out = [default_config(kernel, S, C, DS, dtype, glu=True)]
    for cfg in GLU_FALLBACK_CONFIGS[kernel]:
        cfg = dict(cfg, BLOCK_C=min(cfg["BLOCK_C"], max(16, triton.next_power_of_2(C))),
                   BLOCK_H=min(cfg["BLOCK_H"], ds_pad(DS)))
        if all({k: v for k, v in c.items() if k != "fallback"} != cfg for c in out):
            out.append(dict(cfg, fallback=True))
    return out


def tuning_table(kernel: str, S: int, C: int, DS: int, dtype: torch.dtype) -> list[dict]:
    """The tile table of one launch for ops/_tuning: default_config first (MIXER_KERNELS_AUTOTUNE=0's on a card
    where it fits), the GPU autotune list, then the smaller cards' fallbacks (marked `fallback`), each shrunk
    for small C or DS as default_config shrinks it, without repeats."""
    fp32 = dtype == torch.float32
    out = [default_config(kernel, S, C, DS, dtype)]
    for cfg, fallback in ([(c, False) for c in GPU_CONFIGS[(kernel, fp32)]]
                          + [(c, True) for c in FALLBACK_CONFIGS[(kernel, fp32)]]):
        cfg = dict(cfg, BLOCK_C=min(cfg["BLOCK_C"], max(16, triton.next_power_of_2(C))),
                   BLOCK_H=min(cfg["BLOCK_H"], ds_pad(DS)))
        if all({k: v for k, v in c.items() if k != "fallback"} != cfg for c in out):
            out.append(dict(cfg, fallback=True) if fallback else cfg)
    return out


# ------------------------------------------------------------------------------------------------
# Compile cases (tests/test_compile.py) and the work of a launch (the speed model): B/16 and L/16 at
# batch 256 (S = 196), B/32 (S = 49), bf16 and fp32 (tf32 dots); the default config and the GPU autotune
# list; the dT kernel with and without the weight-gradient stores.


def _compile_cases(name):
    def cases():
        out = []
        # gmixer_24: S = 196, C = 384, fc1 [384, 196] (DS = H = 192 gated units), the GLU launches' table
        for (tag, S, C, DS), dtype in itertools.product(
                [("B/16", 196, 768, 384), ("L/16", 196, 1024, 512), ("B/32", 49, 768, 384),
                 ("gmixer_24 glu", 196, 384, 192)],
                (torch.bfloat16, torch.float32)):
            glu = tag.endswith("glu")
            if glu and dtype == torch.float32:
                continue
            cfgs = glu_table(name, S, C, DS, dtype) if glu else tuning_table(name, S, C, DS, dtype)
            for cfg in cfgs:
                args = dict(X=dtype, Mean=torch.float32, Rstd=torch.float32, NW=torch.float32, NB=torch.float32,
                            W1=dtype, B1=dtype, W2T=dtype, Scale=torch.float32, S=S, C=C, DS=DS, DS_pad=ds_pad(DS),
                            s_xb=S * C, s_xs=C, s_xc=1, HAS_SCALE=True, APPROX_TANH=False, OFF64=False,
                            INTERPRET=False, INPUT_PRECISION="tf32" if dtype == torch.float32 else "ieee",
                            BLOCK_S=block_s(S), BLOCK_C=cfg["BLOCK_C"],
                            BLOCK_H=cfg["BLOCK_H"], GLU=1 if glu else 0)
                label = (f"{tag} {str(dtype)[6:]} c{cfg['BLOCK_C']}h{cfg['BLOCK_H']}w{cfg['num_warps']}"
                         f"s{cfg['num_stages']}")
                variants = [(label, {})]
                if name == "fwd":
                    args.update(B2=dtype, Out=dtype)
                else:
                    args.update(DY=dtype, DT=dtype, TB=dtype, GB=dtype, AB=dtype, DHB=dtype, K=256 * C,
                                s_gb=S * C, s_gs=C, s_gc=1, STORE_WGRAD=True)
                    variants.append((label + " no-wgrad", dict(STORE_WGRAD=False)))
                for lab, extra in variants:
                    group = f"{tag} {str(dtype)[6:]}" + (" no-wgrad" if extra else "")   # the launch
                    out.append(CompileCase(lab + (" fallback" if cfg.get("fallback") else ""), dict(args, **extra),
                                           num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], group=group,
                                           fallback=bool(cfg.get("fallback"))))
        return out
    return cases


def _work(name):
    """Matmul FLOPs at the true S and DS (forward 2, dT 3 matmuls of 2*B*C*S*DS); x (and dy) read once,
    the outputs written once (dT: also the weight-gradient operands when stored), the padded weights and
    the statistics read once. Main loop: the hidden-chunk loop."""
    def work(a) -> Work:
        x = a["X"]
        B = x.shape[0]
        S, C, DS = a["S"], a["C"], a["DS"]
        act = B * S * C * x.element_size()
        moved = act + nbytes(a["W1"]) + nbytes(a["W2T"]) + nbytes(a["Mean"]) + nbytes(a["Rstd"])
        trips = triton.cdiv(a["DS_pad"], a["BLOCK_H"])
        glu = 1 if a.get("GLU", 0) else 0      # GLU: fc1 has 2 * DS rows (one more fc1 matmul, fwd; two, dT)
        if name == "fwd":
            return Work((4.0 + 2.0 * glu) * B * C * S * DS, moved + nbytes(a["Out"]), trips)
        moved += nbytes(a["DY"]) + nbytes(a["DT"])
        if a["STORE_WGRAD"]:
            e = a["TB"].element_size()
            moved += (2 * S + (2 + glu) * DS) * B * C * e
        return Work((6.0 + 4.0 * glu) * B * C * S * DS, moved, trips)
    return work


register_kernel(_token_mixing_fwd_tm_kernel, _compile_cases("fwd"), _work("fwd"))
register_kernel(_token_mixing_bwd_dt_tm_kernel, _compile_cases("dt"), _work("dt"))
