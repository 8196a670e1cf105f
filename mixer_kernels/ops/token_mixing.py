"""Fused token mixing: LayerNorm + token MLP + residual, forward and backward, in Triton.

    y[b] = x[b] + scale[b] * (W2 @ GELU(W1 @ T[b] + b1[:, None]) + b2[:, None]),   T[b] = LN(x[b])  [S, C]

x [B, S, C]; W1 = fc1_weight [DS, S], W2 = fc2_weight [S, DS]; scale = the optional per-sample drop_path
multiplier. Every channel column of T[b] is an independent S-vector, so a (sample, channel tile) is a
self-contained unit of work: no transpose is ever materialised.

Three paths
-----------
* The fast path, S <= 256 (every 224 px model) with fp16/bf16 fc weights, or fp32 ones when
  torch.get_float32_matmul_precision() allows tf32 dots ("high"/"medium"): the token-major kernels of
  ops/_token_kernels.py (weights as the wgmma A operand from shared memory, 4 warps, no duplicated
  warpgroup work, zero-padded 16-byte aligned weight copies, a branch-free erf), and in the backward the
  dT kernel also writes T, G, GELU(H) and dH in the compute dtype ([S or DS, B*C], transient, freed on
  return) so that the fc weight and bias gradients are two cuBLAS GEMMs with K = B*C
  (`_token_mixing_bwd_tm`: deterministic, no atomics; ~0.46 GB of transient buffers at B/16 batch 256).
  That file's docstring has the layout.
* The large-S path, every S > 256 (384 px fine-tuning: S = 576; patch 8: S = 784), every dtype:
  "LN(x) once + token-major GEMMs" (ops/_token_large_kernels.py; `_token_mixing_fwd_large`,
  `_token_mixing_bwd_large`). A LayerNorm kernel writes T_t = LN(x) token-major, [S, B*C], then plain
  tensor-core GEMMs with fused epilogues: GELU(W1 @ T_t + b1), and x + scale * (W2 @ A + b2) written
  straight into [B, S, C]; the backward recomputes T_t (with G_t = scale * dy) from the saved statistics,
  runs H = W1 @ T_t and dA = W2^T @ G_t as one dual GEMM whose epilogue writes GELU(H) and dH, then
  dT = W1^T @ dH, the LayerNorm backward, and the weight gradients as cuBLAS GEMMs over K = B*C (as the
  fast path). The trade-off: the [*, B*C] operands make one trip through device memory (transient:
  ~0.38 GB forward, ~0.76 GB backward at B/16@384 batch 256 bf16) instead of recomputing the first matmul
  per output-token tile as the channel-major tiled kernels that this path replaced did (ceil(S/128) times:
  ~4.9 ms forward there against 0.50 ms here; forward + backward 1.82 ms, eager 1.27 / 2.86 ms; H100
  model, B/16@384 batch 256 bf16). fp16/bf16 and tf32 run wgmma; ieee fp32 runs the same kernels with
  FMA dots on small tiles.
* fp32 weights with exact ("ieee", the default "highest") dots and S <= 256: this file's channel-major
  kernels, described below (FMA dots: ieee fp32 has no tensor-core form, and an FMA dot of the
  token-major tiles spilled 36 KB).

Design of the channel-major kernels (the trade-offs, in the spirit of flash-attention's layer_norm.py)
--------------------------------------------------------------------------------------------------------
Tiles are held channel-major, [BLOCK_C, tokens], so every tl.dot has M = BLOCK_C and N, K in
{tokens, hidden chunk}.

Forward, two launches: `layernorm_stats` (fp32 mean/rstd per row, [B*S]), then
`_token_mixing_fwd_kernel`, one program per (sample, BLOCK_C channels):
  the program (S <= 256: every model of docs/design.md, "The block", at 224 px: S = 49, 196, 256)
    loads its x tile once, normalises it while loading (fp32 stats, LN weight/bias upcast to fp32) and
    keeps T^T [BLOCK_C, next_pow2(S)] in registers in the compute dtype. For each hidden chunk of
    BLOCK_H rows it computes H^T = T^T @ W1[h]^T + b1 in fp32, A = GELU(H) in fp32, casts A to the
    compute dtype and accumulates out^T += A^T @ W2[:, h]^T in an fp32 [BLOCK_C, S_pad] accumulator.
    The epilogue adds b2, scales by sample_scale, adds the residual x and writes y once. The hidden
    activation [B, DS, C] never reaches device memory. Registers: the accumulator is 64x256 fp32
    (64 regs/thread at 8 warps), T^T 32 more at bf16; BLOCK_H = 32 keeps the H/A chunk at 8 regs.
    docs/design.md ("Triton on our machines") measured 12 B of spills at hidden chunk 64 and 744+ B at 4 warps
    or 128 channels (bf16, when these kernels were the bf16 path).

Backward: the saved tensors are x and the fp32 (mean, rstd) only; T, H, A are recomputed.
With G = scale[b] * dy (the branch gradient), per sample and channel column:
    H = W1 T + b1, A = GELU(H), dA = W2^T G, dH = dA * GELU'(H), dT = W1^T dH
    dW2 = sum_{b,c} G A^T,  dW1 = sum_{b,c} dH T^T,  db2 = sum_{b,c} G,  db1 = sum_{b,c} dH
`dT` needs a sum over all hidden units, the weight gradients a sum over all (sample, channel); one grid
cannot own both reductions without atomics or [programs, DS, S] partials per (sample, tile) (1.8 GB at
B/16, batch 256). So the backward is two fused kernels plus the shared LayerNorm backward:
  1. `_token_mixing_bwd_dt_kernel`, one program per (sample, channel tile) (the forward's grid): keeps
     T^T and G^T resident, loops over hidden chunks: H^T = T^T W1^T, dA^T = G^T W2, dH, dT^T += dH^T W1.
     3 matmuls of the forward's size. Writes dT [B, S, C] (x's dtype, as eager's LayerNorm receives it).
  2. `layernorm_backward(dT, x, mean, rstd, norm_weight, dresidual=dy)`: dx (with the residual's dy),
     dnorm_weight, dnorm_bias, deterministic (ops/layernorm_backward.py).
  3. `_token_mixing_bwd_dw_kernel`, one program per (hidden chunk, partition of the B*ceil(C/BLOCK_C)
     (sample, channel tile) work items). The program walks its work items in a fixed order; per item it
     loads and normalises T^T, G^T, recomputes H^T and dA^T for its hidden chunk (2 matmuls, M = BLOCK_C)
     and accumulates dW1[h]^T += T dH^T, dW2[:, h] += G A^T (2 matmuls, M = S_pad: wgmma-sized, K =
     BLOCK_C) in fp32 registers, with db1 and db2 (fp32 sums, db2 from the fp32 G). Each program writes
     its [S, BLOCK_H] partials once to [P, ...] fp32 buffers, which torch sums over P in a fixed order:
     deterministic, no atomics, bitwise equal run to run; P and the tiles depend on the shape only, not
     on the device. The grid runs the hidden chunks of one partition side by side, so the DS/BLOCK_H
     re-reads of each x/dy tile are mostly L2 hits; the weight slices are re-read per item from L1/L2
     (holding them across items spilled).
  Cost: 7 forward-sized matmuls (2 recomputations of H) where eager does 4 (+ the forward's 2), traded
  for never writing or reading a [B, C, DS] hidden tensor: eager saves H and GELU(H), 151 MB each at
  B/16 batch 256 bf16, plus the LayerNorm output and transposed copies. One recomputation of H is
  ~30 GFLOP there (~0.06 ms at 500 TFLOP/s); one hidden tensor's round trip through HBM moves 302 MB
  (~0.1 ms at 3 TB/s): recomputing is not slower and saves all activation memory but x and the stats.
  When no fc weight needs a gradient, kernel 3 is skipped.

Numerics: dot operands in the compute dtype (the fc weights' dtype: bf16/fp16 use tensor cores, fp32
honours torch.get_float32_matmul_precision()), every accumulation, the LayerNorm, GELU and its
derivative in fp32. Casts to bf16 round to nearest even under the interpreter too (ops/_round.py).
Offsets: the sample offset is 64-bit always; token/channel offsets become 64-bit (OFF64) when a strided
view could address past 2^31 elements.

Tiles on GPU (the tables `_CONFIGS` here, in ops/_token_kernels.py and ops/_token_large_kernels.py say
why each): the fast path's and the large-S path's kernels autotune over their tables through ops/_tuning
(the entries that fit the card; keyed on the shape, not the batch, and the dtypes; the first call of a
shape benchmarks them: warm up before CUDA-graph capture; MIXER_KERNELS_AUTOTUNE=0 takes the first
entry that fits); this file's channel-major kernels run one config per shape. Within a process every
kernel is bitwise deterministic; across processes an autotuner may
pick another config (same math, other fp32 summation order) unless MIXER_KERNELS_AUTOTUNE=0. Under the
interpreter every kernel runs one config (multi-config autotune crashes there).
"""

import torch
import triton
import triton.language as tl

from .._config import empty, input_precision, triton_interpret
from . import _guard, _tuning
from . import _token_kernels as tk
from . import _token_large_kernels as lk
from ._dot import dot
from ._gelu import gelu, gelu_grad
from ._registry import Work, nbytes, register_kernel
from ._round import to_dtype
from ._token_kernels import _token_mixing_bwd_dt_tm_kernel, _token_mixing_fwd_tm_kernel
from .layernorm_backward import layernorm_backward
from .layernorm_stats import layernorm_stats

MAX_RESIDENT_S = 256      # S above this takes the large-S path (ops/_token_large_kernels.py)
DW_TARGET_PROGRAMS = 528  # dW kernel: about this many programs (4 full waves on 132 SMs); a constant, not
                          # the device's SM count, so the reduction order depends on the shape only


# ------------------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _norm_tile_t(X, Mean, Rstd, nw, nb, b, s, c, S, C, s_xb, s_xs, s_xc):
    """LN(x[b, s, c])^T as an fp32 [len(c), len(s)] tile, zero outside S and C. nw, nb: fp32 [len(c)]."""
    smask = s < S
    cmask = c < C
    mask = cmask[:, None] & smask[None, :]
    x = tl.load(X + b * s_xb + s[None, :] * s_xs + c[:, None] * s_xc, mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(Mean + b * S + s, mask=smask, other=0.0)
    rstd = tl.load(Rstd + b * S + s, mask=smask, other=0.0)
    t = (x - mean[None, :]) * rstd[None, :] * nw[:, None] + nb[:, None]
    return tl.where(mask, t, 0.0)


@triton.jit
def _tile_t(P, b, s, c, S, C, s_b, s_s, s_c):
    """P[b, s, c]^T as an fp32 [len(c), len(s)] tile, zero outside S and C."""
    mask = (c < C)[:, None] & (s < S)[None, :]
    return tl.load(P + b * s_b + s[None, :] * s_s + c[:, None] * s_c, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _w_tile(W, r, k, R, K):
    """W[r, k] of a row-major [R, K] matrix as an [len(r), len(k)] tile (any index layout), zero outside."""
    return tl.load(W + r * K + k, mask=(r < R) & (k < K), other=0.0)


@triton.jit
def _program_tile(NW, NB, C, OFF64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """The (sample, channel tile) of a program of the forward and dT grids: sample b (int64), channels c,
    the tokens so (all S, padded to BLOCK_S), and the LayerNorm weight and bias of c in fp32 (0 outside C)."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    so = tl.arange(0, BLOCK_S)
    if OFF64:
        c = c.to(tl.int64)
        so = so.to(tl.int64)
    cmask = c < C
    nw = tl.load(NW + c, mask=cmask, other=0.0).to(tl.float32)
    nb = tl.load(NB + c, mask=cmask, other=0.0).to(tl.float32)
    return b, c, so, nw, nb


@triton.jit
def _token_mixing_fwd_kernel(
    # pointers
    X,              # [B, S, C] input, any strides
    Mean, Rstd,     # [B*S] fp32 row statistics of x
    NW, NB,         # [C] LayerNorm weight, bias (any float dtype)
    W1, B1,         # fc1 [DS, S], [DS], contiguous, compute dtype
    W2, B2,         # fc2 [S, DS], [S], contiguous, compute dtype
    Scale,          # [B] per-sample branch multiplier (drop_path); unused unless HAS_SCALE
    Out,            # [B, S, C] output, contiguous, x's dtype
    # sizes
    S, C, DS,
    # x strides (elements)
    s_xb, s_xs, s_xc,
    # meta-parameters
    HAS_SCALE: tl.constexpr,
    APPROX_TANH: tl.constexpr,     # GELU tanh approximation instead of erf
    BLOCK_S: tl.constexpr,         # next power of two >= S: every token in one tile
    OFF64: tl.constexpr,           # 64-bit token/channel offsets
    S_DIV: tl.constexpr,           # a power of two dividing S (alignment of the fc1 weight rows)
    INTERPRET: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_C: tl.constexpr,         # channels per program (dot M)
    BLOCK_H: tl.constexpr,         # hidden units per chunk
):
    b, c, so, nw, nb = _program_tile(NW, NB, C, OFF64, BLOCK_C, BLOCK_S)
    cmask = c < C
    somask = so < S
    cdt = W1.dtype.element_ty
    S_w = (S // S_DIV) * S_DIV   # == S; tells the compiler fc1 rows are S_DIV-aligned (vector loads)
    hh = tl.arange(0, BLOCK_H)
    t = to_dtype(_norm_tile_t(X, Mean, Rstd, nw, nb, b, so, c, S, C, s_xb, s_xs, s_xc), cdt, INTERPRET)   # [BC, BS]
    acc = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
    for h0 in range(0, DS, BLOCK_H):
        h = h0 + hh
        hacc = tl.zeros([BLOCK_C, BLOCK_H], dtype=tl.float32)
        w1t = _w_tile(W1, h[None, :], so[:, None], DS, S_w)                                    # [BS, BH]
        hacc = dot(t, w1t, hacc, INTERPRET, INPUT_PRECISION)
        b1 = tl.load(B1 + h, mask=h < DS, other=0.0).to(tl.float32)
        a = to_dtype(gelu(hacc + b1[None, :], APPROX_TANH), cdt, INTERPRET)                  # [BC, BH]
        w2t = _w_tile(W2, so[None, :], h[:, None], S_w, DS)                                    # [BH, BS]
        acc = dot(a, w2t, acc, INTERPRET, INPUT_PRECISION)
    b2 = tl.load(B2 + so, mask=somask, other=0.0).to(tl.float32)
    branch = acc + b2[None, :]
    if HAS_SCALE:
        branch = branch * tl.load(Scale + b).to(tl.float32)
    xo = _tile_t(X, b, so, c, S, C, s_xb, s_xs, s_xc)
    mask = cmask[:, None] & somask[None, :]
    y = to_dtype(xo + branch, Out.dtype.element_ty, INTERPRET)
    tl.store(Out + b * S * C + so[None, :] * C + c[:, None], y, mask=mask)


@triton.jit
def _token_mixing_bwd_dt_kernel(
    # pointers
    X, Mean, Rstd, NW, NB,    # as in the forward
    W1, B1, W2,               # fc1 [DS, S], [DS]; fc2 [S, DS]
    DY,                       # [B, S, C] gradient of the output, any strides
    Scale,                    # [B]; unused unless HAS_SCALE
    DT,                       # [B, S, C] output: gradient w.r.t. T = LN(x), contiguous
    # sizes
    S, C, DS,
    # strides (elements)
    s_xb, s_xs, s_xc,
    s_gb, s_gs, s_gc,
    # meta-parameters
    HAS_SCALE: tl.constexpr,
    APPROX_TANH: tl.constexpr,
    BLOCK_S: tl.constexpr,
    OFF64: tl.constexpr,
    S_DIV: tl.constexpr,
    INTERPRET: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    b, c, so, nw, nb = _program_tile(NW, NB, C, OFF64, BLOCK_C, BLOCK_S)
    cmask = c < C
    cdt = W1.dtype.element_ty
    S_w = (S // S_DIV) * S_DIV   # == S; tells the compiler fc1 rows are S_DIV-aligned (vector loads)
    scale = 1.0
    if HAS_SCALE:
        scale = tl.load(Scale + b).to(tl.float32)
    hh = tl.arange(0, BLOCK_H)
    t = to_dtype(_norm_tile_t(X, Mean, Rstd, nw, nb, b, so, c, S, C, s_xb, s_xs, s_xc), cdt, INTERPRET)   # [BC, BS]
    g = to_dtype(_tile_t(DY, b, so, c, S, C, s_gb, s_gs, s_gc) * scale, cdt, INTERPRET)                  # [BC, BS]
    acc = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
    for h0 in range(0, DS, BLOCK_H):
        h = h0 + hh
        hacc = tl.zeros([BLOCK_C, BLOCK_H], dtype=tl.float32)
        dacc = tl.zeros([BLOCK_C, BLOCK_H], dtype=tl.float32)
        w1t = _w_tile(W1, h[None, :], so[:, None], DS, S_w)                                    # [BS, BH]
        hacc = dot(t, w1t, hacc, INTERPRET, INPUT_PRECISION)
        w2 = _w_tile(W2, so[:, None], h[None, :], S_w, DS)                                     # [BS, BH]
        dacc = dot(g, w2, dacc, INTERPRET, INPUT_PRECISION)
        b1 = tl.load(B1 + h, mask=h < DS, other=0.0).to(tl.float32)
        dh = to_dtype(dacc * gelu_grad(hacc + b1[None, :], APPROX_TANH), cdt, INTERPRET)                     # [BC, BH]
        # the fc1 slice re-read (L1/L2 hits): its on-chip transpose spilled 476 B with fp32 tiles
        w1 = _w_tile(W1, h[:, None], so[None, :], DS, S_w)                                     # [BH, BS]
        acc = dot(dh, w1, acc, INTERPRET, INPUT_PRECISION)
    mask = cmask[:, None] & (so < S)[None, :]
    tl.store(DT + b * S * C + so[None, :] * C + c[:, None], to_dtype(acc, DT.dtype.element_ty, INTERPRET), mask=mask)


# N_ITEMS and ITEMS_PER_PART change with the batch size: not specialised (no recompile per batch size)
@triton.jit(do_not_specialize=["N_ITEMS", "ITEMS_PER_PART"])
def _token_mixing_bwd_dw_kernel(
    # pointers
    X, Mean, Rstd, NW, NB,    # as in the forward
    W1, B1, W2,               # fc1 [DS, S], [DS]; fc2 [S, DS]
    DY,                       # [B, S, C] gradient of the output, any strides
    Scale,                    # [B]; unused unless HAS_SCALE
    DW1p,                     # [P, DS, S] fp32: per-partition partial dW1
    DW2p,                     # [P, S, DS] fp32: per-partition partial dW2
    DB1p,                     # [P, DS] fp32
    DB2p,                     # [P, S] fp32 (written by the programs of hidden chunk 0)
    # sizes
    S, C, DS,
    N_CT,                     # channel tiles per sample: work item i = (sample i // N_CT, tile i % N_CT)
    N_ITEMS,                  # B * N_CT
    ITEMS_PER_PART,           # work items per partition (the last may have fewer)
    # strides (elements)
    s_xb, s_xs, s_xc,
    s_gb, s_gs, s_gc,
    # meta-parameters
    HAS_SCALE: tl.constexpr,
    APPROX_TANH: tl.constexpr,
    BLOCK_S: tl.constexpr,
    OFF64: tl.constexpr,
    S_DIV: tl.constexpr,
    INTERPRET: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_C: tl.constexpr,    # channels per work item (the K of the weight-gradient dots)
    BLOCK_H: tl.constexpr,
):
    # hidden chunk fastest: the programs of one partition run side by side and share x/dy tiles in L2
    pid_h = tl.program_id(0)
    part = tl.program_id(1)
    cdt = W1.dtype.element_ty
    S_w = (S // S_DIV) * S_DIV   # == S; tells the compiler fc1 rows are S_DIV-aligned (vector loads)
    h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    so = tl.arange(0, BLOCK_S)
    cc = tl.arange(0, BLOCK_C)
    if OFF64:
        so = so.to(tl.int64)
        cc = cc.to(tl.int64)
    hmask = h < DS
    somask = so < S
    b1 = tl.load(B1 + h, mask=hmask, other=0.0).to(tl.float32)
    # token-major accumulators: the weight-gradient dots get M = BLOCK_S
    dw1 = tl.zeros([BLOCK_S, BLOCK_H], dtype=tl.float32)     # dW1[h, so]^T
    dw2 = tl.zeros([BLOCK_S, BLOCK_H], dtype=tl.float32)     # dW2[so, h]
    db1 = tl.zeros([BLOCK_H], dtype=tl.float32)
    db2 = tl.zeros([BLOCK_S], dtype=tl.float32)
    start = part * ITEMS_PER_PART
    end = tl.minimum(start + ITEMS_PER_PART, N_ITEMS)
    for it in range(start, end):
        b = (it // N_CT).to(tl.int64)
        c = (it % N_CT) * BLOCK_C + cc
        cmask = c < C
        nw = tl.load(NW + c, mask=cmask, other=0.0).to(tl.float32)
        nb = tl.load(NB + c, mask=cmask, other=0.0).to(tl.float32)
        scale = 1.0
        if HAS_SCALE:
            scale = tl.load(Scale + b).to(tl.float32)
        hacc = tl.zeros([BLOCK_C, BLOCK_H], dtype=tl.float32)
        dacc = tl.zeros([BLOCK_C, BLOCK_H], dtype=tl.float32)
        t = to_dtype(_norm_tile_t(X, Mean, Rstd, nw, nb, b, so, c, S, C, s_xb, s_xs, s_xc), cdt, INTERPRET)
        gf = _tile_t(DY, b, so, c, S, C, s_gb, s_gs, s_gc) * scale
        db2 += tl.sum(gf, axis=0)       # here, so that the fp32 tile dies early
        g = to_dtype(gf, cdt, INTERPRET)
        # this program's weight slices, re-read per work item (L1/L2 hits): holding them across
        # the loop spilled on sm_90
        w1t = _w_tile(W1, h[None, :], so[:, None], DS, S_w)                                    # [BS, BH]
        w2 = _w_tile(W2, so[:, None], h[None, :], S_w, DS)                                     # [BS, BH]
        hacc = dot(t, w1t, hacc, INTERPRET, INPUT_PRECISION)
        dacc = dot(g, w2, dacc, INTERPRET, INPUT_PRECISION)
        pre = hacc + b1[None, :]
        dh = dacc * gelu_grad(pre, APPROX_TANH)                 # [BC, BH] fp32, zero on padded c/h
        a = to_dtype(gelu(pre, APPROX_TANH), cdt, INTERPRET)                      # padded c columns meet g == 0 below
        dw1 = dot(tl.trans(t), to_dtype(dh, cdt, INTERPRET), dw1, INTERPRET, INPUT_PRECISION)   # [BS, BC] @ [BC, BH]
        dw2 = dot(tl.trans(g), a, dw2, INTERPRET, INPUT_PRECISION)
        db1 += tl.sum(dh, axis=0)
    part64 = part.to(tl.int64)
    mask = somask[:, None] & hmask[None, :]
    tl.store(DW1p + part64 * DS * S + h[None, :] * S + so[:, None], dw1, mask=mask)
    tl.store(DW2p + part64 * S * DS + so[:, None] * DS + h[None, :], dw2, mask=mask)
    tl.store(DB1p + part64 * DS + h, db1, mask=hmask)
    if pid_h == 0:
        tl.store(DB2p + part64 * S + so, db2, mask=somask)


# ------------------------------------------------------------------------------------------------
# Tile choices of the channel-major kernels (ieee fp32, S <= 256 only: FMA dots)


def _block_s(S: int) -> int:
    """The channel-major kernels' token tile: every token (S <= 256), padded to a power of two."""
    return max(16, triton.next_power_of_2(S))


# kernel -> BLOCK_C, BLOCK_H, num_warps, num_stages (fp32 tiles: ieee fp32 is the only dtype these kernels
# see). From `python -m mixer_kernels.ops._compile_check` at B/16 (S = 196, ieee dots, sm_90): fwd 32x32 on
# 8 warps, 0 spills (64x32 spilled 304 B: the fp32 T^T tile); dt 32x32, 1 stage, and dw 16x32 spill 76 B and
# 20-36 B (triton 3.8 / 3.6). These are not compile cases: ieee fp32 has no tensor-core form and is not a
# speed path (the plan: the FMA GEMMs of the large-S path at every S; docs/design.md). BLOCK_H sets how
# often dw re-reads each x/dy tile (DS/BLOCK_H times, from L2), so the channel tile shrinks instead.
_CONFIGS = {"fwd": (32, 32, 8, 2), "dt": (32, 32, 8, 1), "dw": (16, 32, 8, 2)}


def _default_config(kernel: str, S: int, C: int, DS: int) -> dict:
    """The one configuration per (kernel, shape) of the channel-major kernels. Small C or DS shrink the tiles
    (16 is the smallest dot dimension on GPUs)."""
    block_c, block_h, warps, stages = _CONFIGS[kernel]
    block_c = min(block_c, max(16, triton.next_power_of_2(C)))
    block_h = min(block_h, max(16, triton.next_power_of_2(DS)))
    if S <= 64:   # tiles of at most [64, 64]: one warpgroup
        warps = 4
    return dict(BLOCK_C=block_c, BLOCK_H=block_h, num_warps=warps, num_stages=stages)


_AUTOTUNED: dict = {}


def _bench(kernel_call, quantiles):
    # As the channel GEMMs' autotuner (ops/_channel_gemm.py): 5 ms warm-up, 25 ms of repetitions per
    # config instead of Triton's default 25 + 100 ms, so first-call tuning is mostly compilation.
    import triton.testing
    return triton.testing.do_bench(kernel_call, warmup=5, rep=25, quantiles=quantiles)


def _fast_path(S: int, dtype: torch.dtype, precision: str | None = None) -> bool:
    """The token-major resident kernels of ops/_token_kernels.py and the weight gradients from GEMMs:
    S <= 256 with fp16/bf16 fc weights, or fp32 ones with tf32 dots (torch.get_float32_matmul_precision()
    "high" or "medium"; `precision`, when given, stands for _config.input_precision's answer). fp32 with
    exact ("ieee") dots at S <= 256 takes this file's channel-major kernels (ieee fp32 has no tensor-core
    form, and an FMA dot of the token-major tiles spilled 36 KB); S > 256 the large-S path."""
    if S > MAX_RESIDENT_S:
        return False
    if dtype in (torch.float16, torch.bfloat16):
        return True
    return dtype == torch.float32 and (precision or input_precision(dtype)) == "tf32"


def _large_path(S: int) -> bool:
    """The large-S path of ops/_token_large_kernels.py (LayerNorm once into a token-major copy, then GEMMs):
    every S > 256, in every dtype the Triton path takes (fp16/bf16 and tf32: tensor cores; ieee fp32:
    FMA dots)."""
    return S > MAX_RESIDENT_S


_LARGE_TUNED: dict = {}


def _large_kernel_and_meta(kind: str, kernel, dtype: torch.dtype):
    """(callable kernel, launch kwargs) of a large-S GEMM kernel: under the interpreter the one small config;
    on a GPU an ops/_tuning autotuner over ops/_token_large_kernels' table for these operands (the entries
    that fit the card; MIXER_KERNELS_AUTOTUNE=0 or one entry: the first, unmeasured), keyed on the GEMM's
    M, K, C and its epilogue, not on the batch (a new batch size does not re-tune)."""
    table = lk.tuning_table(kind, dtype, input_precision(dtype))
    if triton_interpret():
        return kernel, table[0]
    key = (kind, lk.operands(dtype, input_precision(dtype)))
    if key not in _LARGE_TUNED:
        keys = ["M", "K", "C", "GELU_OUT", "HAS_RES"] if kind == "gemm" else ["M", "K", "WRITE_ACT"]
        _LARGE_TUNED[key] = _tuning.autotuner([_tuning.config(c) for c in table], keys, do_bench=_bench)(kernel)
    return _LARGE_TUNED[key], {}


def _aligned_rows(w: torch.Tensor) -> torch.Tensor:
    """w [R, K] with contiguous rows whose stride is a multiple of 8 elements (16-byte aligned rows for the
    GEMMs' A tiles): w itself when it already is, else a zero-padded copy (at most 0.6 MB: an fc weight)."""
    R, K = w.shape
    if w.stride(1) == 1 and w.stride(0) % 8 == 0 and w.stride(0) >= K:
        return w
    if K % 8 == 0:
        return w.contiguous()
    out = w.new_zeros((R, triton.cdiv(K, 8) * 8))
    out[:, :K] = w
    return out


def _large_gemm(a, bm, out, *, M, N, K, C, bias, scale, res, gelu_out, has_bias, has_scale, has_res,
                approx_tanh, cdt):
    """One launch of _token_large_gemm_kernel: out = epilogue(a [M, K] @ bm [K, N])."""
    kernel, meta = _large_kernel_and_meta("gemm", lk._token_large_gemm_kernel, cdt)
    kernel[lambda m: (triton.cdiv(M, m["BLOCK_M"]) * triton.cdiv(N, m["BLOCK_N"]),)](
        A=a, Bm=bm, Bias=bias, Scale=scale, Res=res, Out=out, M=M, N=N, K=K, C=C, LDA=a.stride(0),
        s_rb=res.stride(0), s_rs=res.stride(1), s_rc=res.stride(2), GELU_OUT=gelu_out, HAS_BIAS=has_bias,
        HAS_SCALE=has_scale, HAS_RES=has_res, APPROX_TANH=approx_tanh, INTERPRET=triton_interpret(),
        INPUT_PRECISION=input_precision(cdt), **meta)


def _large_ln(x, mean, rstd, norm_weight, norm_bias, dy, scale, t, g, eps, *, stats, has_scale):
    """One launch of _token_large_ln_kernel: T_t (and G_t) from x (and dy)."""
    B, S, C = x.shape
    dy = x if dy is None else dy
    meta = lk.ln_meta(C)
    lk._token_large_ln_kernel[(triton.cdiv(B * S, meta["BLOCK_M"]),)](
        X=x, Mean=mean, Rstd=rstd, NW=norm_weight, NB=norm_bias, DY=dy, Scale=scale, T=t,
        G=t if g is None else g, M=B * S, S=S, C=C, N=B * C, s_xb=x.stride(0), s_xs=x.stride(1), s_xc=x.stride(2),
        s_gb=dy.stride(0), s_gs=dy.stride(1), s_gc=dy.stride(2), eps=eps, STATS=stats, WRITE_G=g is not None,
        HAS_SCALE=has_scale, INTERPRET=triton_interpret(), **meta)


def _token_mixing_fwd_large(x, norm_weight, norm_bias, w1, b1, w2, b2, eps, approx_tanh, sample_scale):
    """The large-S forward (ops/_token_large_kernels.py): T_t = LN(x) token-major (the statistics on the
    way), A = GELU(W1 @ T_t + b1), y = x + scale * (W2 @ A + b2). T_t and A are transient."""
    B, S, C = x.shape
    DS, N, cdt = w1.shape[0], B * C, w1.dtype
    mean = empty((B * S,), device=x.device, dtype=torch.float32)
    rstd = empty((B * S,), device=x.device, dtype=torch.float32)
    out = empty((B, S, C), device=x.device, dtype=x.dtype)
    if B * S * C == 0:
        return out, mean, rstd
    scale = _scale_arg(sample_scale, mean)
    t = empty((S, N), device=x.device, dtype=cdt)
    _large_ln(x, mean, rstd, norm_weight, norm_bias, None, scale, t, None, eps, stats=True, has_scale=False)
    a = empty((DS, N), device=x.device, dtype=cdt)
    common = dict(N=N, C=C, scale=scale, res=x, approx_tanh=approx_tanh, cdt=cdt)
    _large_gemm(_aligned_rows(w1), t, a, M=DS, K=S, bias=b1, gelu_out=True, has_bias=True, has_scale=False,
                has_res=False, **common)
    del t
    _large_gemm(_aligned_rows(w2), a, out, M=S, K=DS, bias=b2, gelu_out=False, has_bias=True,
                has_scale=sample_scale is not None, has_res=True, **common)
    return out, mean, rstd


def _token_mixing_bwd_large(dy, x, mean, rstd, norm_weight, norm_bias, w1, b1, w2, approx_tanh, sample_scale, scale,
                            weight_grads, fc1_bias_dtype):
    """The large-S backward (ops/_token_large_kernels.py): T_t and G_t = scale * dy token-major from the
    saved statistics; one dual GEMM for H = W1 @ T_t and dA = W2^T @ G_t whose epilogue writes GELU(H)
    and dH = dA * GELU'(H); dT = W1^T @ dH into [B, S, C]; the LayerNorm backward; and, when the fc weights
    need gradients, dW1|db1 = dH @ [T_t; 1]^T and dW2|db2 = G_t @ [GELU(H); 1]^T through torch.matmul
    (cuBLAS: deterministic, fp32 accumulation; as _token_mixing_bwd_tm). Every [*, B*C] buffer is freed
    on return."""
    B, S, C = x.shape
    DS, N, cdt = w1.shape[0], B * C, w1.dtype
    store = weight_grads and N > 0
    dt = empty((B, S, C), device=x.device, dtype=x.dtype)
    if B * S * C > 0:
        tb = empty((S + 1 if store else S, N), device=x.device, dtype=cdt)    # [T_t; 1]
        gb = empty((S, N), device=x.device, dtype=cdt)
        _large_ln(x, mean, rstd, norm_weight, norm_bias, dy, scale, tb, gb, 0.0, stats=False,
                  has_scale=sample_scale is not None)
        dhb = empty((DS, N), device=x.device, dtype=cdt)
        ab = empty((DS + 1, N), device=x.device, dtype=cdt) if store else dhb   # [GELU(H); 1]
        w1a = _aligned_rows(w1)
        kernel, meta = _large_kernel_and_meta("dual", lk._token_large_dual_kernel, cdt)
        kernel[lambda m: (triton.cdiv(DS, m["BLOCK_M"]) * triton.cdiv(N, m["BLOCK_N"]),)](
            W1=w1a, W2t=_aligned_rows(w2.t()), B1=b1, T=tb, G=gb, Act=ab, DH=dhb, M=DS, N=N, K=S, LDA=w1a.stride(0),
            WRITE_ACT=store, APPROX_TANH=approx_tanh, INTERPRET=triton_interpret(),
            INPUT_PRECISION=input_precision(cdt), **meta)
        if not store:
            del tb, gb, ab
        _large_gemm(_aligned_rows(w1.t()), dhb, dt, M=S, N=N, K=DS, C=C, bias=b1, scale=mean, res=x,
                    gelu_out=False, has_bias=False, has_scale=False, has_res=False, approx_tanh=approx_tanh, cdt=cdt)
    dx, dnw, dnb = layernorm_backward(dt, x, mean, rstd, norm_weight, dresidual=dy)
    del dt
    dnw, dnb = dnw.to(norm_weight.dtype), dnb.to(norm_bias.dtype)
    if not weight_grads:
        return dx, dnw, dnb, None, None, None, None
    if not store:   # B*C == 0: no columns to reduce
        return (dx, dnw, dnb, torch.zeros_like(w1), torch.zeros(DS, device=x.device, dtype=fc1_bias_dtype),
                torch.zeros_like(w2), torch.zeros(S, device=x.device, dtype=cdt))
    tb[S].fill_(1)
    ab[DS].fill_(1)
    ext1 = torch.matmul(dhb, tb.t())                           # [DS, S + 1]: dW1 | db1
    del dhb, tb
    ext2 = torch.matmul(gb, ab.t())                            # [S, DS + 1]: dW2 | db2
    del gb, ab
    cont = torch.contiguous_format
    return (dx, dnw, dnb, ext1[:, :S].clone(memory_format=cont), ext1[:, S].to(fc1_bias_dtype, copy=True),
            ext2[:, :DS].clone(memory_format=cont), ext2[:, DS].clone())


def _tm_kernel_and_meta(name: str, kernel, S: int, C: int, DS: int, dtype: torch.dtype):
    """As _kernel_and_grid_meta, for the token-major kernels and their tables (ops/_token_kernels.py): on a GPU
    an ops/_tuning autotuner over the launch's table (the entries that fit the card; MIXER_KERNELS_AUTOTUNE=0
    or one entry: the first of them, unmeasured; timings cached on disk; none measured inside a CUDA-graph
    capture), keyed on (S, C, DS) and the dtypes."""
    table = tk.tuning_table(name, S, C, DS, dtype)
    if triton_interpret():
        return kernel, table[0]
    key = (name, tuple(tuple(sorted(c.items())) for c in table))
    if key not in _AUTOTUNED:
        _AUTOTUNED[key] = _tuning.autotuner(table, ["S", "C", "DS"], do_bench=_bench)(kernel)
    return _AUTOTUNED[key], {}


def _pow2_divisor(n: int, cap: int = 8) -> int:
    """The largest power of two <= cap dividing n (S = 196 -> 4: 8-byte loads of bf16 fc1 rows; the JIT
    itself only specialises multiples of 16)."""
    d = 1
    while d < cap and n % (2 * d) == 0:
        d *= 2
    return d


def _scale_arg(sample_scale, mean):
    """The Scale pointer: sample_scale in fp32 (the kernels read it as fp32 anyway, so this is exact), or
    the fp32 stats when there is none. One dtype either way: triton.autotune keys on every tensor's
    dtype, and a bf16 scale would re-tune (and compile every config of) the forward and dT kernels."""
    return sample_scale.to(torch.float32).contiguous() if sample_scale is not None else mean


def _off64(*tensors) -> bool:
    """Whether some element offset of these [B, S, C] tensors may reach 2^31."""
    for t in tensors:
        reach = sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride(), strict=True))
        if reach >= 2**31 - 1 or t.numel() >= 2**31 - 1:
            return True
    return False


# ------------------------------------------------------------------------------------------------
# Launchers


def token_mixing_fwd(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps, approx_tanh,
                     sample_scale):
    """(out, mean, rstd): out [B, S, C] in x's dtype, contiguous; fp32 stats [B*S] for the backward."""
    B, S, C = x.shape
    DS = fc1_weight.shape[0]
    if _large_path(S):   # its LayerNorm kernel computes the statistics
        w1, b1, w2, b2 = (t.contiguous() for t in (fc1_weight, fc1_bias, fc2_weight, fc2_bias))
        return _token_mixing_fwd_large(x, norm_weight.contiguous(), norm_bias.contiguous(), w1, b1, w2, b2, eps,
                                       approx_tanh, sample_scale)
    mean, rstd = layernorm_stats(x, eps)
    out = empty((B, S, C), device=x.device, dtype=x.dtype)
    if B * S * C == 0:
        return out, mean, rstd
    w1, b1, w2, b2 = (t.contiguous() for t in (fc1_weight, fc1_bias, fc2_weight, fc2_bias))
    norm_weight, norm_bias = norm_weight.contiguous(), norm_bias.contiguous()   # [C] views may be strided
    scale = _scale_arg(sample_scale, mean)
    if _fast_path(S, w1.dtype):
        BS, dsp = tk.block_s(S), tk.ds_pad(DS)
        w1p, w2tp = tk.padded_weights(w1, w2, BS, dsp)
        kernel, meta = _tm_kernel_and_meta("fwd", _token_mixing_fwd_tm_kernel, S, C, DS, w1.dtype)
        kernel[lambda m: (B, triton.cdiv(C, m["BLOCK_C"]))](
            x, mean, rstd, norm_weight, norm_bias, w1p, b1, w2tp, b2, scale, out, S, C, DS, dsp, *x.stride(),
            HAS_SCALE=sample_scale is not None, APPROX_TANH=approx_tanh, OFF64=_off64(x, out),
            INTERPRET=triton_interpret(), INPUT_PRECISION=input_precision(w1.dtype), BLOCK_S=BS, GLU=0, **meta)
        return out, mean, rstd
    # ieee fp32, S <= 256: the channel-major kernels
    meta = _default_config("fwd", S, C, DS)
    _token_mixing_fwd_kernel[(B, triton.cdiv(C, meta["BLOCK_C"]))](
        x, mean, rstd, norm_weight, norm_bias, w1, b1, w2, b2, scale, out, S, C, DS, *x.stride(),
        HAS_SCALE=sample_scale is not None, APPROX_TANH=approx_tanh, BLOCK_S=_block_s(S), OFF64=_off64(x, out),
        S_DIV=_pow2_divisor(S), INTERPRET=triton_interpret(), INPUT_PRECISION=input_precision(w1.dtype), **meta)
    return out, mean, rstd


def _dw_partitions(B: int, C: int, DS: int, block_c: int, block_h: int):
    n_ct = triton.cdiv(C, block_c)
    n_items = B * n_ct
    per_tile = triton.cdiv(DS, block_h)
    parts = max(1, min(n_items, DW_TARGET_PROGRAMS // per_tile))
    items_per_part = max(1, triton.cdiv(n_items, parts))
    parts = max(1, triton.cdiv(n_items, items_per_part))
    return n_ct, n_items, parts, items_per_part


def token_mixing_bwd(dy, x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, eps,
                     approx_tanh, sample_scale, weight_grads=True):
    """Gradients (dx, dnorm_weight, dnorm_bias, dfc1_weight, dfc1_bias, dfc2_weight, dfc2_bias), each in
    its input's dtype; the fc ones are None when weight_grads is False."""
    B, S, C = x.shape
    DS = fc1_weight.shape[0]
    w1, b1, w2 = (t.contiguous() for t in (fc1_weight, fc1_bias, fc2_weight))
    cdt = w1.dtype
    norm_weight, norm_bias = norm_weight.contiguous(), norm_bias.contiguous()   # [C] views may be strided
    scale = _scale_arg(sample_scale, mean)
    if _fast_path(S, cdt):
        return _token_mixing_bwd_tm(dy, x, mean, rstd, norm_weight, norm_bias, w1, b1, w2, approx_tanh, sample_scale,
                                    scale, weight_grads, fc1_bias.dtype)
    if _large_path(S):
        return _token_mixing_bwd_large(dy, x, mean, rstd, norm_weight, norm_bias, w1, b1, w2, approx_tanh,
                                       sample_scale, scale, weight_grads, fc1_bias.dtype)
    # ieee fp32, S <= 256: the channel-major kernels
    common = dict(HAS_SCALE=sample_scale is not None, APPROX_TANH=approx_tanh, BLOCK_S=_block_s(S),
                  OFF64=_off64(x, dy), S_DIV=_pow2_divisor(S), INTERPRET=triton_interpret(),
                  INPUT_PRECISION=input_precision(cdt))
    dt = empty((B, S, C), device=x.device, dtype=x.dtype)
    if B * S * C > 0:
        meta = _default_config("dt", S, C, DS)
        _token_mixing_bwd_dt_kernel[(B, triton.cdiv(C, meta["BLOCK_C"]))](
            x, mean, rstd, norm_weight, norm_bias, w1, b1, w2, dy, scale, dt, S, C, DS, *x.stride(), *dy.stride(),
            **common, **meta)
    dx, dnw, dnb = layernorm_backward(dt, x, mean, rstd, norm_weight, dresidual=dy)
    dnw, dnb = dnw.to(norm_weight.dtype), dnb.to(norm_bias.dtype)
    if not weight_grads:
        return dx, dnw, dnb, None, None, None, None
    cfg = _default_config("dw", S, C, DS)
    bc, bh = cfg["BLOCK_C"], cfg["BLOCK_H"]
    n_ct, n_items, parts, items_per_part = _dw_partitions(B, C, DS, bc, bh)
    dw1p = empty((parts, DS, S), device=x.device, dtype=torch.float32)
    dw2p = empty((parts, S, DS), device=x.device, dtype=torch.float32)
    db1p = empty((parts, DS), device=x.device, dtype=torch.float32)
    db2p = empty((parts, S), device=x.device, dtype=torch.float32)
    if n_items == 0:
        for p in (dw1p, dw2p, db1p, db2p):
            p.zero_()
    else:
        _token_mixing_bwd_dw_kernel[(triton.cdiv(DS, bh), parts)](
            x, mean, rstd, norm_weight, norm_bias, w1, b1, w2, dy, scale, dw1p, dw2p, db1p, db2p,
            S, C, DS, n_ct, n_items, items_per_part, *x.stride(), *dy.stride(), **common, **cfg)
    # fixed-order sums over the partitions: deterministic
    return (dx, dnw, dnb, dw1p.sum(0).to(cdt), db1p.sum(0).to(fc1_bias.dtype), dw2p.sum(0).to(cdt),
            db2p.sum(0).to(cdt))


def _token_mixing_bwd_tm(dy, x, mean, rstd, norm_weight, norm_bias, w1, b1, w2, approx_tanh, sample_scale, scale,
                         weight_grads, fc1_bias_dtype):
    """The fast path's backward (S <= 256, fp16/bf16): the token-major dT kernel, the LayerNorm backward,
    and, when the fc weights need gradients, two GEMMs over K = B*C on the operands the dT kernel wrote
    (transient, freed on return; ops/_token_kernels.py): dW1|db1 = dH @ [T; 1]^T and dW2|db2 =
    G @ [GELU(H); 1]^T through torch.matmul (cuBLAS: deterministic, fp32 accumulation)."""
    B, S, C = x.shape
    DS = w1.shape[0]
    K = B * C
    cdt = w1.dtype
    BS, dsp = tk.block_s(S), tk.ds_pad(DS)
    w1p, w2tp = tk.padded_weights(w1, w2, BS, dsp)
    dt = empty((B, S, C), device=x.device, dtype=x.dtype)
    store = weight_grads and K > 0
    if store:
        tb = empty((S + 1, K), device=x.device, dtype=cdt)     # [T; 1]: T as [S, B*C], a row of ones
        gb = empty((S, K), device=x.device, dtype=cdt)
        ab = empty((DS + 1, K), device=x.device, dtype=cdt)    # [GELU(H); 1]
        dhb = empty((DS, K), device=x.device, dtype=cdt)
        tb[S].fill_(1)
        ab[DS].fill_(1)
    else:
        tb = gb = ab = dhb = dt
    if B * S * C > 0:
        kernel, meta = _tm_kernel_and_meta("dt", _token_mixing_bwd_dt_tm_kernel, S, C, DS, cdt)
        kernel[lambda m: (B, triton.cdiv(C, m["BLOCK_C"]))](
            x, mean, rstd, norm_weight, norm_bias, w1p, b1, w2tp, dy, scale, dt, tb, gb, ab, dhb, S, C, DS, dsp, K,
            *x.stride(), *dy.stride(), HAS_SCALE=sample_scale is not None, APPROX_TANH=approx_tanh,
            STORE_WGRAD=store, OFF64=_off64(x, dy, tb, ab), INTERPRET=triton_interpret(),
            INPUT_PRECISION=input_precision(cdt), BLOCK_S=BS, GLU=0, **meta)
    dx, dnw, dnb = layernorm_backward(dt, x, mean, rstd, norm_weight, dresidual=dy)
    dnw, dnb = dnw.to(norm_weight.dtype), dnb.to(norm_bias.dtype)
    if not weight_grads:
        return dx, dnw, dnb, None, None, None, None
    if not store:   # B*C == 0: no rows to reduce
        return (dx, dnw, dnb, torch.zeros_like(w1), torch.zeros(DS, device=x.device, dtype=fc1_bias_dtype),
                torch.zeros_like(w2), torch.zeros(S, device=x.device, dtype=cdt))
    ext1 = torch.matmul(dhb, tb.t())                           # [DS, S + 1]: dW1 | db1
    del dhb, tb
    ext2 = torch.matmul(gb, ab.t())                            # [S, DS + 1]: dW2 | db2
    del gb, ab
    # copies (a few hundred KB): a custom op's outputs may not alias each other
    cont = torch.contiguous_format
    return (dx, dnw, dnb, ext1[:, :S].clone(memory_format=cont), ext1[:, S].to(fc1_bias_dtype, copy=True),
            ext2[:, :DS].clone(memory_format=cont), ext2[:, DS].clone())


# ------------------------------------------------------------------------------------------------
# torch.library custom ops: opaque to torch.compile (fake implementations give shapes), with autograd


@torch.library.custom_op("mixer_kernels::token_mixing_fwd", mutates_args=())
def _token_mixing_fwd_op(x: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor,
                         fc1_weight: torch.Tensor, fc1_bias: torch.Tensor, fc2_weight: torch.Tensor,
                         fc2_bias: torch.Tensor, eps: float, approx_tanh: bool,
                         sample_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with _guard.launch_guard("mixer_kernels::token_mixing_fwd", x, fc1_weight=fc1_weight, fc2_weight=fc2_weight,
                             norm_weight=norm_weight, sample_scale=sample_scale):
        return token_mixing_fwd(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps,
                                approx_tanh, sample_scale)


@_token_mixing_fwd_op.register_fake
def _(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps, approx_tanh, sample_scale):
    B, S, C = x.shape
    stats = x.new_empty((B * S,), dtype=torch.float32)
    return x.new_empty((B, S, C)), stats, torch.empty_like(stats)


@torch.library.custom_op("mixer_kernels::token_mixing_bwd", mutates_args=())
def _token_mixing_bwd_op(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                         norm_weight: torch.Tensor, norm_bias: torch.Tensor, fc1_weight: torch.Tensor,
                         fc1_bias: torch.Tensor, fc2_weight: torch.Tensor, eps: float, approx_tanh: bool,
                         sample_scale: torch.Tensor | None, weight_grads: bool) -> list[torch.Tensor]:
    with _guard.launch_guard("mixer_kernels::token_mixing_bwd", x, dy=dy, fc1_weight=fc1_weight,
                             fc2_weight=fc2_weight, norm_weight=norm_weight, sample_scale=sample_scale):
        grads = token_mixing_bwd(dy, x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, eps,
                                 approx_tanh, sample_scale, weight_grads)
    return [g for g in grads if g is not None]


@_token_mixing_bwd_op.register_fake
def _(dy, x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, eps, approx_tanh,
      sample_scale, weight_grads):
    out = [torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(norm_weight),
           torch.empty_like(norm_bias)]
    if weight_grads:
        S = x.shape[1]
        out += [torch.empty_like(fc1_weight, memory_format=torch.contiguous_format), torch.empty_like(fc1_bias),
                torch.empty_like(fc2_weight, memory_format=torch.contiguous_format),
                fc1_weight.new_empty((S,))]
    return out


def _setup_context(ctx, inputs, output):
    x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps, approx_tanh, sample_scale = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, sample_scale)
    ctx.eps, ctx.approx_tanh = eps, approx_tanh
    ctx.fc2_bias_dtype = fc2_bias.dtype
    ctx.mark_non_differentiable(mean, rstd)


def _backward(ctx, dy, _dmean, _drstd):
    x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, sample_scale = ctx.saved_tensors
    _guard.no_double_backward("mixer_kernels.token_mixing", dy, x, norm_weight, norm_bias, fc1_weight, fc1_bias,
                              fc2_weight)
    weight_grads = any(ctx.needs_input_grad[3:7])
    grads = _token_mixing_bwd_op(dy, x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight,
                                 ctx.eps, ctx.approx_tanh, sample_scale, weight_grads)
    if not weight_grads:
        grads = list(grads) + [None] * 4
    dx, dnw, dnb, dw1, db1, dw2, db2 = grads
    if db2 is not None:
        db2 = db2.to(ctx.fc2_bias_dtype)
    return dx, dnw, dnb, dw1, db1, dw2, db2, None, None, None


_token_mixing_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def token_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps: float = 1e-6,
                 approximate: str = "none", sample_scale: torch.Tensor | None = None) -> torch.Tensor:
    """The Triton path of `mixer_kernels.token_mixing` (inputs already checked): x + scale * token MLP.

    Paths: S <= 256 runs the resident kernels (hidden activation on chip only); S > 256 the large-S
    path (LayerNorm once into a token-major copy, then tensor-core GEMMs), ieee fp32 the tiled
    channel-major kernels. See the module docstring."""
    out, _, _ = _token_mixing_fwd_op(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                                     float(eps), approximate == "tanh", sample_scale)
    return out


# ------------------------------------------------------------------------------------------------
# The channel-major kernels' registry entries: no compile cases (ieee fp32 at S <= 256 only, not a speed path:
# their dt and dw configs spill on sm_90, see _CONFIGS), and the work of a launch for the speed model.


def _work(name):
    """Work of one launch: matmul FLOPs at the true S (2*B*C*S*DS per matmul: forward 2, dT 3, dW 4 of
    which 2 recompute H and dA), x and dy read once, the output written once, the weights once. Main
    loop: the hidden-chunk loop (dW: the work-item loop)."""
    def work(a) -> Work:
        x = a["X"]
        B = x.shape[0]
        S, C, DS = a["S"], a["C"], a["DS"]
        act = B * S * C * x.element_size()
        weights = nbytes(a["W1"]) + nbytes(a["W2"])
        stats = nbytes(a["Mean"]) + nbytes(a["Rstd"])
        chunks = triton.cdiv(DS, a["BLOCK_H"])
        if name == "fwd":
            return Work(4.0 * B * C * S * DS, act + nbytes(a["Out"]) + weights + stats, chunks)
        if name == "dt":
            return Work(6.0 * B * C * S * DS, act + nbytes(a["DY"]) + nbytes(a["DT"]) + weights + stats, chunks)
        partials = nbytes(a["DW1p"]) + nbytes(a["DW2p"]) + nbytes(a["DB1p"]) + nbytes(a["DB2p"])
        return Work(8.0 * B * C * S * DS, act + nbytes(a["DY"]) + weights + stats + partials, a["ITEMS_PER_PART"])
    return work


def _no_cases():
    return []


register_kernel(_token_mixing_fwd_kernel, _no_cases, _work("fwd"))
register_kernel(_token_mixing_bwd_dt_kernel, _no_cases, _work("dt"))
register_kernel(_token_mixing_bwd_dw_kernel, _no_cases, _work("dw"))
