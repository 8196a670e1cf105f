"""The large-S token-mixing kernels (S > 256: 384 px fine-tuning, S = 576; patch 8, S = 784; and ieee fp32
at every S, S <= 256 included) and their tile tables; ops/token_mixing.py holds the op glue
(`_token_mixing_fwd_large`, `_token_mixing_bwd_large`).

Design: "LN(x) once + token-major GEMMs". At S > 256 a channel-major program can no longer keep its
[channels, S] output accumulator on chip, so the resident kernels would recompute the first matmul once
per output-token tile (ceil(S/128) times). Instead the token dimension becomes the GEMMs' M or K and
every (sample, channel) pair one of N = B*C columns: the LayerNorm output is materialised once, token-major,

    T_t[s, b*C + c] = LN(x)[b, s, c]              [S, N] in the compute dtype (the fc weights' dtype)

and the token MLP is two plain GEMMs with fused epilogues:

    forward   A   = GELU(W1 @ T_t + b1)           [DS, N]   `_token_large_gemm_kernel`, GELU_OUT
              y   = x + scale[b] * (W2 @ A + b2)  [B, S, C] `_token_large_gemm_kernel`, [B, S, C] out
    backward  T_t, G_t = scale[b] * dy            [S, N]    `_token_large_ln_kernel` (saved stats)
              H = W1 @ T_t + b1, dA = W2^T @ G_t  one dual GEMM: `_token_large_dual_kernel`, epilogue
              A = GELU(H), dH = dA * GELU'(H)     [DS, N]   (the fc2 weight gradient's operand and dH)
              dT = W1^T @ dH                      [B, S, C] `_token_large_gemm_kernel`, [B, S, C] out
    (then the LayerNorm backward, and the weight gradients as cuBLAS GEMMs over K = N in the launcher)

The trade-off: T_t and A (forward), T_t, G_t, A and dH (backward) make one round trip through device
memory each (transient: allocated and freed inside the launcher; ~0.38 GB forward, ~0.76 GB backward at
B/16@384 batch 256 bf16) against zero recomputation of the first matmul: every GEMM is a plain
tensor-core main loop over K (the weights as A from shared memory, the activations as an N-contiguous B
operand), so each runs near its own floor, and the extra traffic costs less than one recomputed GEMM.
The LayerNorm is done once, in a memory-bound row kernel that writes the token-major copy directly
(no separate transpose). Saved between forward and backward: x and the fp32 mean/rstd only.

Dots: fp16/bf16 and fp32 with tf32 dots run wgmma (the weights from shared memory as A); ieee fp32 the same
kernels with FMA dots on small tiles (exact, slow: no tensor-core form), at every S: ops/token_mixing.py
routes ieee fp32 here at S <= 256 too (the fast path's tiles spilled 36 KB with FMA dots).

The weight gradients are cuBLAS GEMMs (torch.matmul, fp32 accumulation, deterministic), not a Triton
split-K kernel: by the speed model each is compute-bound at CUBLAS_EFF of peak (0.139 ms at B/16@384
batch 256 bf16; 87 GFLOP), so a Triton kernel at full tensor-core rate would save at most 0.03 ms per
GEMM, minus its fp32 partials' reduction pass, and would need GELU(H) stored transposed ([N, DS]) as
its K-major operand. The fast path (S <= 256) makes the same choice.

Offsets: rows of the [*, N] buffers and of x are 64-bit (B*S*C passes 2^31 at S = 784 and large
batches); column offsets within a row stay 32-bit (N = B*C < 2^31). Every dot goes through `_dot.dot`.

Tile choices (sm_90; compile cases below; `python -m mixer_kernels.ops._compile_check --only token_large`):
see GPU_CONFIGS, ranked by the speed model (benchmarks/speed_model.py, shape B/16@384).
"""
import torch
import triton
import triton.language as tl

from .._config import triton_interpret
from ._channel_gemm import _tile_ids
from ._dot import dot
from ._gelu import gelu_and_grad_fast, gelu_fast
from ._registry import CompileCase, Work, nbytes, register_kernel
from ._round import to_dtype

# --------------------------------------------------------------------------------------------------
# LayerNorm, token-major


@triton.jit(do_not_specialize=["M"])   # M = B*S: no recompile per batch size (it only bounds masks)
def _token_large_ln_kernel(
    # pointers
    X,            # [B, S, C] input, any strides
    Mean, Rstd,   # [B*S] fp32: outputs (STATS) or the saved statistics
    NW, NB,       # [C] LayerNorm weight and bias
    DY,           # [B, S, C] output gradient, any strides (WRITE_G)
    Scale,        # [B] fp32 per-sample branch scale (WRITE_G and HAS_SCALE)
    T,            # [S, N] output: T_t[s, b*C + c] = LN(x)[b, s, c], compute dtype (row stride N = B*C)
    G,            # [S, N] output (WRITE_G): scale[b] * dy[b, s, c], compute dtype
    # sizes
    M,            # rows of x, B*S (row m = b*S + s)
    S, C,
    N,            # B*C: the row stride of T and G
    # strides (elements)
    s_xb, s_xs, s_xc,
    s_gb, s_gs, s_gc,
    # scalars
    eps,
    # meta-parameters
    STATS: tl.constexpr,     # compute and store mean, rstd (forward); else load them (backward)
    WRITE_G: tl.constexpr,   # also write G (backward)
    HAS_SCALE: tl.constexpr,
    INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr,   # rows per program
    BLOCK_C: tl.constexpr,   # next power of two >= C: a row is loaded once and kept in registers
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    rows64 = rows.to(tl.int64)
    b = rows // S                                                      # rows < M < 2^31: 32-bit split
    s = rows % S
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    mask = rmask[:, None] & cmask[None, :]
    x_row = b.to(tl.int64) * s_xb + s.to(tl.int64) * s_xs
    x = tl.load(X + x_row[:, None] + cols[None, :].to(tl.int64) * s_xc, mask=mask, other=0.0).to(tl.float32)
    if STATS:
        mean = tl.sum(x, axis=1) / C
        d = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / C + eps)
        tl.store(Mean + rows64, mean, mask=rmask)
        tl.store(Rstd + rows64, rstd, mask=rmask)
    else:
        mean = tl.load(Mean + rows64, mask=rmask, other=0.0)
        rstd = tl.load(Rstd + rows64, mask=rmask, other=0.0)
    nw = tl.load(NW + cols, mask=cmask, other=0.0).to(tl.float32)
    nb = tl.load(NB + cols, mask=cmask, other=0.0).to(tl.float32)
    t = (x - mean[:, None]) * rstd[:, None] * nw[None, :] + nb[None, :]
    t_off = (s.to(tl.int64) * N + b.to(tl.int64) * C)[:, None] + cols[None, :]
    tl.store(T + t_off, to_dtype(t, T.dtype.element_ty, INTERPRET), mask=mask)
    if WRITE_G:
        g_row = b.to(tl.int64) * s_gb + s.to(tl.int64) * s_gs
        g = tl.load(DY + g_row[:, None] + cols[None, :].to(tl.int64) * s_gc, mask=mask, other=0.0).to(tl.float32)
        if HAS_SCALE:
            g = g * tl.load(Scale + b, mask=rmask, other=0.0)[:, None]
        tl.store(G + t_off, to_dtype(g, G.dtype.element_ty, INTERPRET), mask=mask)


# --------------------------------------------------------------------------------------------------
# GEMMs: [M, K] weights (row-major, rows LDA-aligned) x [K, N] token-major activations (row stride N)


@triton.jit
def _bsc_epilogue(acc, Bias, Scale, Res, Out, rows, rmask, cols, M, N, C, s_rb, s_rs, s_rc,
                  HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RES: tl.constexpr, INTERPRET: tl.constexpr):
    """Out[b, m, c] = (acc + bias[m]) * scale[b] + Res[b, m, c] for the tile's rows m and columns n = b*C + c."""
    cmask = cols < N
    omask = rmask[:, None] & cmask[None, :]
    b = (cols // C).to(tl.int64)
    c = (cols % C).to(tl.int64)
    if HAS_BIAS:
        acc += tl.load(Bias + rows, mask=rmask, other=0.0).to(tl.float32)[:, None]
    if HAS_SCALE:
        acc = acc * tl.load(Scale + b, mask=cmask, other=0.0)[None, :]
    rows64 = rows.to(tl.int64)
    if HAS_RES:
        r_off = rows64[:, None] * s_rs + (b * s_rb + c * s_rc)[None, :]
        acc += tl.load(Res + r_off, mask=omask, other=0.0).to(tl.float32)
    o_off = rows64[:, None] * C + (b * M * C + c)[None, :]
    tl.store(Out + o_off, to_dtype(acc, Out.dtype.element_ty, INTERPRET), mask=omask)


@triton.jit
def _act_epilogue(acc, Bias, Out, rows, rmask, cols, N, APPROX_TANH: tl.constexpr, INTERPRET: tl.constexpr):
    """Out[m, n] = GELU(round(acc + bias[m])) in the compute dtype (z rounded first, as eager's linear
    output is, so the GELU sees what eager's does)."""
    omask = rmask[:, None] & (cols < N)[None, :]
    bias = tl.load(Bias + rows, mask=rmask, other=0.0).to(tl.float32)
    z = to_dtype(acc + bias[:, None], Out.dtype.element_ty, INTERPRET).to(tl.float32)
    a = to_dtype(gelu_fast(z, APPROX_TANH, INTERPRET), Out.dtype.element_ty, INTERPRET)
    tl.store(Out + rows.to(tl.int64)[:, None] * N + cols[None, :], a, mask=omask)


@triton.jit
def _token_large_gemm_kernel(
    # pointers
    A,            # [M, K] weights, row stride LDA (16-byte aligned rows), compute dtype
    Bm,           # [K, N] activations, row stride N, compute dtype: T_t (fwd GEMM1), GELU(H) (fwd GEMM2), dH (dT)
    Bias,         # [M] (GELU_OUT, or HAS_BIAS)
    Scale,        # [B] fp32 per-sample branch scale (HAS_SCALE)
    Res,          # [B, M, C] residual x, any strides (HAS_RES)
    Out,          # GELU_OUT: [M, N] compute dtype; else [B, M, C] contiguous (column n = b*C + c)
    # sizes
    M, N, K,      # GEMM sizes: M in {DS, S}, N = B*C, K in {S, DS}
    C,            # channels (column n = b*C + c)
    LDA,          # row stride of A
    # strides (elements) of Res
    s_rb, s_rs, s_rc,
    # meta-parameters
    GELU_OUT: tl.constexpr,      # epilogue GELU(acc + bias[m]) -> [M, N]; else (acc + bias) * scale + Res -> [B, M, C]
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RES: tl.constexpr,   # the [B, M, C] epilogue's terms
    APPROX_TANH: tl.constexpr,   # GELU tanh approximation (GELU_OUT)
    INTERPRET: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,       # row tiles sweeping the columns together (>= cdiv(M, BLOCK_M): all of them)
):
    pid_m, pid_n = _tile_ids(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = A + rows.to(tl.int64)[:, None] * LDA + ks[None, :]
    b_ptrs = Bm + ks.to(tl.int64)[:, None] * N + cols[None, :]
    b_step = tl.cast(N, tl.int64) * BLOCK_K     # 64-bit: BLOCK_K * N may pass 2^31 at large batches
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kmask = (k0 + ks) < K
        a = tl.load(a_ptrs, mask=rmask[:, None] & kmask[None, :], other=0.0)
        bt = tl.load(b_ptrs, mask=kmask[:, None] & cmask[None, :], other=0.0)
        acc = dot(a, bt, acc, INTERPRET, INPUT_PRECISION)
        a_ptrs += BLOCK_K
        b_ptrs += b_step
    # Two column halves, one after the other (as the channel GEMMs' epilogues: a whole 128x256 tile's
    # epilogue beside the accumulator spilled there).
    acc_lo, acc_hi = tl.split(tl.permute(tl.reshape(acc, [BLOCK_M, 2, BLOCK_N // 2]), [0, 2, 1]))
    cols_lo = pid_n * BLOCK_N + tl.arange(0, BLOCK_N // 2)
    if GELU_OUT:
        _act_epilogue(acc_lo, Bias, Out, rows, rmask, cols_lo, N, APPROX_TANH, INTERPRET)
        _act_epilogue(acc_hi, Bias, Out, rows, rmask, cols_lo + BLOCK_N // 2, N, APPROX_TANH, INTERPRET)
    else:
        _bsc_epilogue(acc_lo, Bias, Scale, Res, Out, rows, rmask, cols_lo, M, N, C, s_rb, s_rs, s_rc,
                      HAS_BIAS, HAS_SCALE, HAS_RES, INTERPRET)
        _bsc_epilogue(acc_hi, Bias, Scale, Res, Out, rows, rmask, cols_lo + BLOCK_N // 2, M, N, C, s_rb, s_rs,
                      s_rc, HAS_BIAS, HAS_SCALE, HAS_RES, INTERPRET)


@triton.jit
def _dual_epilogue(hacc, dacc, B1, Act, DH, rows, rmask, cols, N, WRITE_ACT: tl.constexpr,
                   APPROX_TANH: tl.constexpr, INTERPRET: tl.constexpr):
    """A = GELU(z), dH = dA * GELU'(z), z = round(H + b1) as the forward's epilogue rounds it."""
    omask = rmask[:, None] & (cols < N)[None, :]
    b1 = tl.load(B1 + rows, mask=rmask, other=0.0).to(tl.float32)
    z = to_dtype(hacc + b1[:, None], DH.dtype.element_ty, INTERPRET).to(tl.float32)
    a, da = gelu_and_grad_fast(z, APPROX_TANH, INTERPRET)
    offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
    if WRITE_ACT:
        tl.store(Act + offs, to_dtype(a, Act.dtype.element_ty, INTERPRET), mask=omask)
    tl.store(DH + offs, to_dtype(dacc * da, DH.dtype.element_ty, INTERPRET), mask=omask)


@triton.jit
def _token_large_dual_kernel(
    # pointers
    W1,           # [DS, S] fc1 weight, row stride LDA, compute dtype
    W2t,          # [DS, S] fc2 weight transposed, row stride LDA, compute dtype
    B1,           # [DS] fc1 bias
    T,            # [S, N] T_t (row stride N), compute dtype
    G,            # [S, N] G_t = scale * dy, token-major, compute dtype
    Act,          # [DS, N] output: GELU(H) (the fc2 weight gradient's operand), compute dtype
    DH,           # [DS, N] output: dA * GELU'(H), compute dtype
    # sizes
    M, N, K,      # DS, B*C, S
    LDA,          # row stride of W1 and W2t
    # meta-parameters
    WRITE_ACT: tl.constexpr,     # store GELU(H) (only the fc2 weight gradient reads it)
    APPROX_TANH: tl.constexpr, INTERPRET: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Both products share the tile and the K loop: H = W1 @ T_t and dA = W2^T @ G_t, so GELU'(H) meets
    # dA in registers (H never reaches memory).
    pid_m, pid_n = _tile_ids(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    ks = tl.arange(0, BLOCK_K)
    a_off = rows.to(tl.int64)[:, None] * LDA + ks[None, :]
    b_off = ks.to(tl.int64)[:, None] * N + cols[None, :]
    w1_ptrs, w2_ptrs = W1 + a_off, W2t + a_off
    t_ptrs, g_ptrs = T + b_off, G + b_off
    b_step = tl.cast(N, tl.int64) * BLOCK_K     # 64-bit: BLOCK_K * N may pass 2^31 at large batches
    hacc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    dacc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kmask = (k0 + ks) < K
        amask = rmask[:, None] & kmask[None, :]
        bmask = kmask[:, None] & cmask[None, :]
        hacc = dot(tl.load(w1_ptrs, mask=amask, other=0.0), tl.load(t_ptrs, mask=bmask, other=0.0), hacc,
                   INTERPRET, INPUT_PRECISION)
        dacc = dot(tl.load(w2_ptrs, mask=amask, other=0.0), tl.load(g_ptrs, mask=bmask, other=0.0), dacc,
                   INTERPRET, INPUT_PRECISION)
        w1_ptrs += BLOCK_K
        w2_ptrs += BLOCK_K
        t_ptrs += b_step
        g_ptrs += b_step
    h_lo, h_hi = tl.split(tl.permute(tl.reshape(hacc, [BLOCK_M, 2, BLOCK_N // 2]), [0, 2, 1]))
    d_lo, d_hi = tl.split(tl.permute(tl.reshape(dacc, [BLOCK_M, 2, BLOCK_N // 2]), [0, 2, 1]))
    cols_lo = pid_n * BLOCK_N + tl.arange(0, BLOCK_N // 2)
    _dual_epilogue(h_lo, d_lo, B1, Act, DH, rows, rmask, cols_lo, N, WRITE_ACT, APPROX_TANH, INTERPRET)
    _dual_epilogue(h_hi, d_hi, B1, Act, DH, rows, rmask, cols_lo + BLOCK_N // 2, N, WRITE_ACT, APPROX_TANH,
                   INTERPRET)


# --------------------------------------------------------------------------------------------------
# Tile tables

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) per kernel and operands: "16" (bf16/fp16), "tf32" (fp32
# with tf32 dots), "ieee" (exact fp32: FMA dots, no tensor cores; small tiles, which compile without spills).
# The first of each list is MIXER_KERNELS_AUTOTUNE=0's (ops/_tuning keeps the entries that fit the card);
# every entry is a compile case at B/16@384 and B/8, batch 256 (0 spills, no hazard on triton 3.6 and 3.8).
# Ranked by the speed model (H100, B/16@384, bf16):
#   gemm 128x128x64, 8 warps, 3 stages: 96 KB of shared memory and <= 128 registers, so 2 CTAs per SM and one
#     CTA's GELU / store epilogue overlaps the other's main loop: fc1 0.140 ms (90% of floor), dT 0.131
#     (96%); 128x256x64 (1 CTA per SM) left the epilogue exposed: fc1 0.185 (68%), dT 0.159. 64x256x64 on
#     4 warps is the fc2 pick (0.205, 98%: memory-bound, the residual read and y write).
#   dual 64x128x32, 4 warps, 3 stages: 222-254 registers (triton 3.8 / 3.6), 2 CTAs per SM: 0.254 ms (99%,
#     memory-bound); the 8-warp 128x128 tiles ran one CTA per SM with the GELU + GELU' epilogue exposed
#     (0.316-0.322, 78-80%; 128x128x32 also spilled 144 B on sm_80), 128x64 tiles were issue-bound (0.315).
#   ieee: 32x64x16 on 4 warps, 2 stages, for both: 0 spills on sm_90, sm_80, sm_86 and sm_120 (64x64x16
#     spilled 4 B on sm_120 with triton 3.8, 64x64x32's dT GEMM 4 B on sm_90 with 3.6, 64x128x16 and
#     128x128x16 duals 72-136 B).
GPU_CONFIGS = {
    "gemm": {"16": [(128, 128, 64, 8, 3), (64, 256, 64, 4, 3)],
             "tf32": [(128, 128, 32, 8, 3)],
             "ieee": [(32, 64, 16, 4, 2)]},
    "dual": {"16": [(64, 128, 32, 4, 3)],
             "tf32": [(128, 64, 32, 8, 3), (64, 64, 32, 4, 2)],
             "ieee": [(32, 64, 16, 4, 2)]},
}
INTERPRET_CONFIG = (32, 32, 32, 4, 1)
GROUP_M = 8          # covers every row tile at DS, S <= 1024 (BLOCK_M 128): one column panel's programs together
LN_BLOCK_M = 4       # LayerNorm rows per program
LN_WARPS = 4


def operands(dtype: torch.dtype, precision: str) -> str:
    """The GPU_CONFIGS column of a launch: "16", "tf32" or "ieee"."""
    return precision if dtype == torch.float32 else "16"


def tuning_table(kind: str, dtype: torch.dtype, precision: str) -> list[dict]:
    """The launch configs of `kind` ("gemm" or "dual") for these operands, for ops/_tuning (the first is
    MIXER_KERNELS_AUTOTUNE=0's where it fits the card); under the interpreter one small tile."""
    rows = [INTERPRET_CONFIG] if triton_interpret() else GPU_CONFIGS[kind][operands(dtype, precision)]
    return [dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=GROUP_M, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in rows]


def ln_meta(C: int) -> dict:
    return dict(BLOCK_M=LN_BLOCK_M, BLOCK_C=triton.next_power_of_2(C), num_warps=LN_WARPS)


# --------------------------------------------------------------------------------------------------
# Compile cases (tests/test_compile.py) and the work of one launch (the speed model)

SHAPES = [("B/16@384", 576, 768, 384), ("B/8", 784, 768, 384)]   # (tag, S, C, DS); batch 256
IEEE_SHAPES = [("B/16", 196, 768, 384)]   # ieee fp32 only: S <= 256 takes this path in that dtype alone
BATCH = 256


def _cases(kernel: str):
    def cases():
        out = []
        every = ((torch.bfloat16, "ieee"), (torch.float32, "tf32"), (torch.float32, "ieee"))
        ieee = ((torch.float32, "ieee"),)
        for tag, S, C, DS, operand_sets in [(*sh, every) for sh in SHAPES] + [(*sh, ieee) for sh in IEEE_SHAPES]:
            N = BATCH * C
            lda = triton.cdiv(S, 8) * 8   # _aligned_rows: [*, S] weight rows padded to 16 bytes (S = 196: 200)
            for dtype, prec in operand_sets:
                name = str(dtype)[6:] + (f" {prec}" if dtype == torch.float32 else "")
                if kernel == "ln":
                    if prec == "ieee" and dtype == torch.float32 and len(operand_sets) > 1:   # tf32's kernel
                        continue
                    for stats in (True, False):
                        args = dict(X=dtype, Mean=torch.float32, Rstd=torch.float32, NW=dtype, NB=dtype, DY=dtype,
                                    Scale=torch.float32, T=dtype, G=dtype, M=BATCH * S, S=S, C=C, N=N,
                                    s_xb=S * C, s_xs=C, s_xc=1, s_gb=S * C, s_gs=C, s_gc=1, eps=1e-6, STATS=stats,
                                    WRITE_G=not stats, HAS_SCALE=True, INTERPRET=False, BLOCK_M=LN_BLOCK_M,
                                    BLOCK_C=triton.next_power_of_2(C))
                        out.append(CompileCase(f"{tag} {name} {'fwd' if stats else 'bwd'}", args, num_warps=LN_WARPS))
                    continue
                kind = "dual" if kernel == "dual" else "gemm"
                for bm, bn, bk, w, st in GPU_CONFIGS[kind][operands(dtype, prec)]:
                    tile = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=GROUP_M)
                    label = f"{tag} {name} {bm}x{bn}x{bk}w{w}s{st}"
                    if kernel == "dual":
                        args = dict(W1=dtype, W2t=dtype, B1=dtype, T=dtype, G=dtype, Act=dtype, DH=dtype, M=DS, N=N,
                                    K=S, LDA=lda, WRITE_ACT=True, APPROX_TANH=False, INTERPRET=False,
                                    INPUT_PRECISION=prec, **tile)
                        out.append(CompileCase(label, args, num_warps=w, num_stages=st,
                                               group=f"{tag} {name}"))   # the launch: its table's entries
                        continue
                    # the three launches: forward GEMM1 (GELU), forward GEMM2 (residual), backward dT
                    for role, M, K, act, bias, scale, res in (("fc1", DS, S, True, True, False, False),
                                                              ("fc2", S, DS, False, True, True, True),
                                                              ("dT", S, DS, False, False, False, False)):
                        args = dict(A=dtype, Bm=dtype, Bias=dtype, Scale=torch.float32, Res=dtype, Out=dtype,
                                    M=M, N=N, K=K, C=C, LDA=lda if K == S else K, s_rb=S * C, s_rs=C, s_rc=1,
                                    GELU_OUT=act,
                                    HAS_BIAS=bias, HAS_SCALE=scale, HAS_RES=res, APPROX_TANH=False, INTERPRET=False,
                                    INPUT_PRECISION=prec, **tile)
                        out.append(CompileCase(f"{label} {role}", args, num_warps=w, num_stages=st,
                                               group=f"{tag} {name} {role}"))
        return out
    return cases


def _work(kernel: str):
    """Work of one launch: the GEMM FLOPs (2*M*N*K per product), each operand read once and each output
    written once (compulsory traffic); main loop: the K loop (the LayerNorm kernel: no loop, 1)."""
    def work(a) -> Work:
        if kernel == "ln":
            moved = nbytes(a["X"]) + nbytes(a["Mean"]) + nbytes(a["Rstd"]) + a["M"] * a["C"] * a["T"].element_size()
            if a["WRITE_G"]:
                moved += nbytes(a["DY"]) + a["M"] * a["C"] * a["G"].element_size()
            return Work(0.0, moved, 1)
        M, N, K = a["M"], a["N"], a["K"]
        trips = triton.cdiv(K, a["BLOCK_K"])
        if kernel == "dual":
            moved = nbytes(a["W1"]) + nbytes(a["W2t"]) + nbytes(a["B1"]) + nbytes(a["T"]) + nbytes(a["G"]) \
                + M * N * a["DH"].element_size() * (2 if a["WRITE_ACT"] else 1)
            return Work(4.0 * M * N * K, moved, trips)
        moved = nbytes(a["A"]) + K * N * a["Bm"].element_size() + M * N * a["Out"].element_size()
        if a["HAS_RES"]:
            moved += M * N * a["Res"].element_size()
        return Work(2.0 * M * N * K, moved, trips)
    return work


register_kernel(_token_large_ln_kernel, _cases("ln"), _work("ln"))
register_kernel(_token_large_gemm_kernel, _cases("gemm"), _work("gemm"))
register_kernel(_token_large_dual_kernel, _cases("dual"), _work("dual"))
