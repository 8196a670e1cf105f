"""The GEMM kernels of channel mixing (ops/channel_mixing.py holds the op glue around them).

Notation: M = B*S rows, C channels, DC hidden width; "compute dtype" = the dtype of fc1/fc2 weights,
the dtype of every dot operand (normalised tiles and hidden activations are cast to it on chip).

Three kernels, each used twice:

* `_channel_hidden_kernel`: [M, C] x [C, DC] -> [M, DC], K = C. The A tile is read from a strided
  [B, S, C] tensor and touched on chip only for a dtype change (a plain main loop); the epilogue
  writes [M, DC] tiles.
  - forward (BACKWARD=False): A = y, the LayerNorm output the statistics kernel wrote (compute dtype),
    B = fc1_weight^T; epilogue z = acc + fc1_bias, writes z (the saved pre-activation) and/or GELU(z).
  - backward (BACKWARD=True): A = grad_out, B = fc2_weight; epilogue dz = s[b] * acc * GELU'(z) with z
    loaded from the saved (or recomputed) pre-activation; also writes s[b] * GELU(z) (the fc2 weight
    gradient's operand, recomputed instead of saved) and per-row-tile column sums of dz (db1 partials).
* `_channel_out_kernel`: [M, DC] x [DC, C] -> [M, C], K = DC, A a contiguous hidden tensor.
  - forward: out = x + sample_scale[b] * (act @ fc2_weight^T + fc2_bias), in x's dtype.
  - backward: dn = dz @ fc1_weight (the gradient reaching the LayerNorm output).
* `_channel_wgrad_kernel`: weight gradients, [C, M] x [M, DC] -> [C, DC], K = M, one plain loop,
  split-K over fixed row ranges into fp32 partial buffers summed afterwards in a fixed order
  (deterministic, no atomics).
  - fc2: dW2 = grad_out^T @ (s * GELU(z)); db2 is a torch reduction of grad_out (ops/channel_mixing.py).
  - fc1: dW1^T = y^T @ dz (y recomputed by the statistics kernel from the saved statistics), stored
    transposed into dW1; db1 comes from the hidden-backward epilogue's partials.

Every dot goes through `_dot.dot` (interpreter upcast; input precision for fp32). Offsets into [M, *]
tensors are 64-bit (B*S*DC may pass 2^31); weight offsets stay 32-bit (DC*C < 2^31).

Tile choices (sm_90, bf16/fp16; compile cases at the end; all 0 spills with wgmma, measured with
the compile check on triton 3.8):
* GEMM 1: 64x128x64 with 4 warps (66-72 KB of shared memory, 2-3 CTAs per SM) or 128x128x64 with 8
  warps (two warpgroups, wgmma m64 each), 3 stages; with 64x128x64 one CTA's
  epilogue overlaps the others' main loops: with K = C = 768 the main loop is only 12 steps, and the
  erf-GELU epilogue (~1,700-1,850 SASS instructions per warp with the branch-free erf) is the larger
  part of a tile's issue work; the speed model ranks 64x128x64 first at B/16 and L/16. The backward
  epilogue (z load, GELU and GELU', two stores) runs on two column halves in turn: as one [128, 128]
  piece it spilled 124-236 bytes with the LayerNorm prologue of earlier versions.
* GEMM 2: 128x256x64, 8 warps, 3 stages (Triton's best H100 matmul tile; 235 registers with the
  residual epilogue, again done on two column halves: 204 bytes of spills in one piece), or
  128x128x64 with 4 stages.
* Weight gradients: 128x128x64 (178-182 registers) or 128x256x64 (229-238), 8 warps, 3 stages.
* fp32 (tf32) operands: BLOCK_K = 32 keeps a 3-stage pipeline under the 228 KB of shared memory.
* Program order: grouped (GROUP_M = 8 row tiles share their column sweep), so the A row panel and
  the weight column panel of concurrently running programs stay in L2 (the whole fc weight, 4.7 MB
  at B/16, fits in the 50 MB L2 anyway; x panels are what must not be re-read from HBM).
* Weight gradients: the [C, DC] output has only 144 tiles at B/16 (1.1 waves on 132 SMs), so K = M is
  split into `split` contiguous row ranges chosen to fill whole waves (_wgrad_split).

Autotuning (GPU only): two or three configs per kernel and dtype, keyed on C, DC, the mode and M_BUCKET = next
power of two of M, never the exact batch. Under the interpreter: one config. MIXER_KERNELS_AUTOTUNE=0
(as for token mixing): the first config of each list, no benchmarking.

These launchers are the first alternative of each GEMM choice of ops/_channel_routes.py (the other: cuBLAS
plus a pass, taken where it measures faster on the GPU at hand; ops/_choice.py).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .._config import empty, input_precision, triton_interpret
from . import _tuning
from ._act import glu, glu_and_grad
from ._device import tma_scratch
from ._dot import dot
from ._gelu import gelu_and_grad_fast, gelu_fast
from ._registry import CompileCase, Work, nbytes, register_kernel
from ._round import to_dtype
from ._tuning import LAUNCH_OPTIONS

# --------------------------------------------------------------------------------------------------
# Configurations


def _bench(kernel_call, quantiles):
    # Short benchmarking: two configs of sub-ms to ms kernels separate clearly in 25 ms; compiles
    # (~1-2 s per config) dominate first-call tuning.
    import triton.testing
    return triton.testing.do_bench(kernel_call, warmup=5, rep=25, quantiles=quantiles)


def _cfg(bm, bn, bk, warps, stages, group_m=8):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m},
                         num_warps=warps, num_stages=stages)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) per kernel and operand width (16-bit operands use
# BLOCK_K = 64, fp32 32). All are compile cases (fp32: the first only).
GPU_CONFIGS = {
    # hidden, 16-bit: the speed model's first choice first (it is MIXER_KERNELS_AUTOTUNE=0's); 64x256x64
    # went with the LayerNorm prologue (it halved that work per FLOP) and was serialised on triton 3.6
    "hidden": {16: [(64, 128, 64, 4, 3), (128, 128, 64, 8, 3)],
               32: [(128, 128, 32, 8, 3), (64, 128, 32, 4, 3)]},
    # gMixer's SiLU-gated GLU (GLU != 0): BLOCK_N hidden units per half, two accumulators, so 64 gives the
    # GELU tile's 64x128 (128x128) accumulator registers and FLOPs per k-step
    "hidden_glu": {16: [(64, 64, 64, 4, 3), (128, 64, 64, 8, 3)],
                   32: [(128, 64, 32, 8, 3), (64, 64, 32, 4, 3)]},
    "out": {16: [(128, 256, 64, 8, 3), (128, 128, 64, 8, 4)],
            32: [(128, 128, 32, 8, 3), (64, 128, 32, 4, 3)]},
    "wgrad": {16: [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3)],
              32: [(128, 128, 32, 8, 3), (64, 128, 32, 4, 3)]},
}
INTERPRET_CONFIG = (32, 32, 32, 4, 1)


def _configs(kind):
    if triton_interpret():
        bm, bn, bk, w, s = INTERPRET_CONFIG
        return [_cfg(bm, bn, bk, w, s, group_m=2)]
    kinds = [kind] + ([kind + "_glu"] if kind + "_glu" in GPU_CONFIGS else [])
    return [_cfg(*c) for k in kinds for bits in (16, 32) for c in GPU_CONFIGS[k][bits]]


def _table_of(kind, named_args):
    """The table of a launch: the GLU table ("hidden_glu") when the launch passes GLU != 0."""
    return kind + "_glu" if named_args.get("GLU", 0) and kind + "_glu" in GPU_CONFIGS else kind


def _prune(weight_arg, kind):
    """Keep the configs made for the operand width (BLOCK_K 64 for fp16/bf16, 32 for fp32). (Tiles that
    spill on the card, e.g. 128x256 on sm_120, go in ops/_tuning, from the compiled kernel.) With
    MIXER_KERNELS_AUTOTUNE=0 ops/_tuning keeps only the first that fits the card (no benchmarking: the
    same config in every process, hence bitwise-equal results across processes, not only within one)."""
    def prune(configs, named_args, **kwargs):
        if len(configs) <= 1:
            return configs
        w = named_args[weight_arg]
        bits = 32 if w.element_size() >= 4 else 16
        table = GPU_CONFIGS[_table_of(kind, {**kwargs, **named_args})][bits]
        keep = [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps,
                                       c.num_stages) in table]
        return keep or configs
    return prune


def _autotune(kind, weight_arg, key):
    """GPU: the short config list of `kind`, tuned once per key (the two GEMM sizes other than M, the M
    bucket and the mode constexpr, so forward and backward launches of one kernel tune separately) and
    tensor dtypes (Triton adds those). ops/_tuning.autotuner: after _prune, the configs that fit the card's
    shared memory (MIXER_KERNELS_AUTOTUNE=0: the first of them, no benchmarking), the timings kept in
    Triton's on-disk cache (a new process does not re-benchmark), no benchmarking inside a CUDA-graph
    capture."""
    return _tuning.autotuner(_configs(kind), key, early_config_prune=_prune(weight_arg, kind), do_bench=_bench)


# Arguments that change with the batch size: the JIT does not specialise on them (no divisibility-by-16
# or ==1 variants), so a new batch size (a last partial batch, a benchmark at another batch) reuses the
# compiled kernels instead of compiling every config again. They only bound masks and loops.
_BATCH_ARGS = ["M", "M_BUCKET"]


def m_bucket(M: int) -> int:
    """Autotuning key for the row count: the next power of two, so a new batch size does not retune."""
    return triton.next_power_of_2(max(int(M), 1))


# --------------------------------------------------------------------------------------------------
# Shared pieces


@triton.jit
def _tile_ids(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Grouped program order: GROUP_M consecutive row tiles sweep the column tiles together."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * num_pid_n
    group_id = pid // width
    first_m = group_id * GROUP_M
    group_size = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % group_size
    pid_n = (pid % width) // group_size
    return pid_m, pid_n


# TMA (sm_90 on): the main loops read their A and weight tiles through tensor descriptors built on the
# device, so each k-step is a TMA copy into shared memory and wgmmas from there, with no address math or
# masks in the loop (out-of-range rows and columns arrive as zeros, as the masked loads give). TMA=False
# (below sm_90, or a tensor whose rows are not 16-byte aligned: ops/_channel_gemm.tma_ok) keeps the
# pointer loads.


@triton.jit
def _a_desc(A, rows, cols, stride_row, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """A [rows, cols] matrix with unit column stride, read in [BLOCK_M, BLOCK_K] tiles."""
    return tl.make_tensor_descriptor(A, shape=[rows, cols], strides=[stride_row, 1], block_shape=[BLOCK_M, BLOCK_K])


@triton.jit
def _w_desc(W, k_size, n_size, stride_wk, stride_wn, K_ROWS: tl.constexpr, BLOCK_K: tl.constexpr,
            BLOCK_N: tl.constexpr):
    """The weight as stored: K_ROWS, rows k of n_size contiguous columns ([K, N] tiles); else rows n of
    k_size contiguous values ([N, K] tiles, transposed on chip by _w_tile)."""
    if K_ROWS:
        return tl.make_tensor_descriptor(W, shape=[k_size, n_size], strides=[stride_wk, 1],
                                         block_shape=[BLOCK_K, BLOCK_N])
    else:
        return tl.make_tensor_descriptor(W, shape=[n_size, k_size], strides=[stride_wn, 1],
                                         block_shape=[BLOCK_N, BLOCK_K])


@triton.jit
def _w_tile(desc, k0, n0, K_ROWS: tl.constexpr):
    """The [BLOCK_K, BLOCK_N] weight tile at (k0, n0) (a transposed view of an [N, K] tile: wgmma reads
    either layout from shared memory)."""
    if K_ROWS:
        return desc.load([k0, n0])
    else:
        return tl.trans(desc.load([n0, k0]))


@triton.jit
def _hidden_bwd_epilogue(acc, Z, DZ, Act, DB, pid_m, row_scale, rows64, rmask, cols, N_SIZE,
                         HAS_SCALE: tl.constexpr, WRITE_ACT: tl.constexpr, WRITE_DB: tl.constexpr,
                         APPROX_TANH: tl.constexpr, INTERPRET: tl.constexpr):
    """dz = s * acc * GELU'(z); s * GELU(z) (fc2's weight-gradient operand); this row tile's column
    sums of the rounded dz (fc1's bias gradient, partial)."""
    cmask = cols < N_SIZE
    offs = rows64[:, None] * N_SIZE + cols[None, :]
    omask = rmask[:, None] & cmask[None, :]
    z = tl.load(Z + offs, mask=omask, other=0.0).to(tl.float32)
    act, dact = gelu_and_grad_fast(z, APPROX_TANH, INTERPRET)   # one erf and one exp for both
    dz = acc * dact
    if HAS_SCALE:
        dz = dz * row_scale[:, None]
        act = act * row_scale[:, None]
    dz = to_dtype(dz, DZ.dtype.element_ty, INTERPRET)
    tl.store(DZ + offs, dz, mask=omask)
    if WRITE_ACT:
        tl.store(Act + offs, to_dtype(act, Act.dtype.element_ty, INTERPRET), mask=omask)
    if WRITE_DB:
        # no select: dz is exactly 0 outside the matrix (the masked A rows / W columns load as 0, so acc is 0)
        db = tl.sum(dz.to(tl.float32), axis=0)
        tl.store(DB + pid_m.to(tl.int64) * N_SIZE + cols, db, mask=cmask)


@triton.jit
def _glu_bwd_epilogue(acc, Z, DZ, Act, DB, pid_m, row_scale, rows64, rmask, cols, N_SIZE,
                      HAS_SCALE: tl.constexpr, WRITE_ACT: tl.constexpr, WRITE_DB: tl.constexpr,
                      GLU: tl.constexpr, INTERPRET: tl.constexpr):
    """gMixer's GLU: acc = dg [BM, len(cols)] for hidden units cols < H = N_SIZE. z = [x1 | x2] rows of 2H;
    dz = s * [dx1 | dx2] (recomputed from the saved or recomputed z), s * g (fc2's weight-gradient operand,
    [M, H]), and this row tile's column sums of both dz halves ([tiles, 2H] partials)."""
    cmask = cols < N_SIZE
    omask = rmask[:, None] & cmask[None, :]
    offs1 = rows64[:, None] * (2 * N_SIZE) + cols[None, :]
    x1 = tl.load(Z + offs1, mask=omask, other=0.0).to(tl.float32)
    x2 = tl.load(Z + offs1 + N_SIZE, mask=omask, other=0.0).to(tl.float32)
    g, dx1, dx2 = glu_and_grad(x1, x2, acc, GLU, INTERPRET)
    if HAS_SCALE:
        dx1 = dx1 * row_scale[:, None]
        dx2 = dx2 * row_scale[:, None]
        g = g * row_scale[:, None]
    dx1 = to_dtype(dx1, DZ.dtype.element_ty, INTERPRET)
    dx2 = to_dtype(dx2, DZ.dtype.element_ty, INTERPRET)
    tl.store(DZ + offs1, dx1, mask=omask)
    tl.store(DZ + offs1 + N_SIZE, dx2, mask=omask)
    if WRITE_ACT:
        tl.store(Act + rows64[:, None] * N_SIZE + cols[None, :], to_dtype(g, Act.dtype.element_ty, INTERPRET),
                 mask=omask)
    if WRITE_DB:
        # dz is exactly 0 outside the matrix (acc = 0 on masked rows, the loads of z are 0 there)
        db = DB + pid_m.to(tl.int64) * (2 * N_SIZE) + cols
        tl.store(db, tl.sum(dx1.to(tl.float32), axis=0), mask=cmask)
        tl.store(db + N_SIZE, tl.sum(dx2.to(tl.float32), axis=0), mask=cmask)


# --------------------------------------------------------------------------------------------------
# GEMM 1 (K = C): forward fc1 + bias + GELU on the LayerNorm output y; backward hidden gradient
#
# gMixer (GLU != 0; fc1 [DC, C] = [2H, C], fc2 [C, H]): N_SIZE = H, and the forward runs two accumulators
# over the paired fc1 rows n and n + H (the x1 and x2 halves of one hidden unit), so the gate is one
# epilogue: z = [x1 | x2] rows of 2H (timm's chunk order, saved as is), g = x1 * SiLU(x2) [M, H]. Two
# accumulators rather than a per-call interleaved weight copy (rows n, n + H side by side in one BLOCK_N
# tile): the copy would tie z's column order to BLOCK_N (the autotuned configs and the cuBLAS composition
# would disagree on it) and cost a pass over W1 per call; the two dots read the same A tile, so the
# k-step does the FLOPs of a GELU tile twice as wide (the GLU table halves BLOCK_N: same registers).


@_autotune("hidden", "W", ["N_SIZE", "K_SIZE", "M_BUCKET", "BACKWARD", "GLU"])
@triton.jit(do_not_specialize=_BATCH_ARGS)
def _channel_hidden_kernel(
    X,               # [B, S, C] any strides: forward the LayerNorm output y (compute dtype), backward grad_out
    Scale,           # [B] per-sample branch scale (backward, HAS_SCALE)
    W,               # forward fc1_weight [DC, C] (stride_wk=1, stride_wn=C); backward fc2_weight [C, DC]
                     # (GLU: fc2_weight [C, H])
    Bias,            # [DC] fc1_bias (forward)
    Z,               # [M, DC] pre-activation: forward output (WRITE_Z), backward input
    Act,             # [M, DC] forward: GELU(z) (WRITE_ACT); backward: s * GELU(z) for fc2's weight gradient
                     # (GLU: [M, H], the gate g = x1 * SiLU(x2); backward s * g)
    DZ,              # [M, DC] backward output: grad w.r.t. z
    DB,              # [>= cdiv(M, BLOCK_M), DC] fp32 backward output (WRITE_DB): row tile pid_m's column sums of dz
    M, S,            # rows (B*S), tokens per sample
    N_SIZE,          # DC (output columns); GLU: H = DC / 2 (hidden units after the gate)
    K_SIZE,          # C (reduction)
    M_BUCKET,        # autotuning key only
    stride_xb, stride_xs, stride_xc,
    stride_wk, stride_wn,
    BACKWARD: tl.constexpr, HAS_SCALE: tl.constexpr, WRITE_Z: tl.constexpr, WRITE_ACT: tl.constexpr,
    WRITE_DB: tl.constexpr,
    A_CAST: tl.constexpr,   # X's dtype is not the compute dtype: round the A tiles to it on chip
    APPROX_TANH: tl.constexpr, INTERPRET: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    GLU: tl.constexpr,      # 0: GELU; gMixer's SiLU-gated GLU: 1 gate last (x1 * SiLU(x2)), 2 gate first
    TMA: tl.constexpr,      # X rows (stride_xs apart, stride_xc = 1) and W by tensor descriptors
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = _tile_ids(tl.program_id(0), M, N_SIZE, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    rows64 = rows.to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N_SIZE
    ks = tl.arange(0, BLOCK_K)

    x_ptrs = X + ((rows // S).to(tl.int64) * stride_xb + (rows % S).to(tl.int64) * stride_xs)[:, None] \
        + ks[None, :].to(tl.int64) * stride_xc
    w_ptrs = W + ks[:, None] * stride_wk + cols[None, :] * stride_wn
    if HAS_SCALE:
        row_scale = tl.load(Scale + rows // S, mask=rmask, other=0.0).to(tl.float32)

    # A plain main loop: the forward's A is the LayerNorm output already in the compute dtype (the
    # LayerNorm prologue made the loop issue-bound: 365 SASS instructions per k-step against 512
    # tensor-core cycles, A from registers), and the backward's drop_path scale s is applied in the
    # epilogue (scaling the A tiles made ptxas serialise the wgmmas). Only a dtype change touches A.
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if GLU and not BACKWARD:
        acc2 = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)     # x2: fc1 rows n + H
    if TMA:
        # forward: fc1 rows n of C (GLU: all 2H rows, the x2 tile at n + H); backward: fc2 rows k of DC (H)
        x_desc = _a_desc(X, M, K_SIZE, stride_xs, BLOCK_M, BLOCK_K)
        w_desc = _w_desc(W, K_SIZE, N_SIZE * 2 if GLU and not BACKWARD else N_SIZE, stride_wk, stride_wn,
                         BACKWARD, BLOCK_K, BLOCK_N)
        m0 = pid_m * BLOCK_M
        n0 = pid_n * BLOCK_N
        for k0 in range(0, K_SIZE, BLOCK_K):
            a = x_desc.load([m0, k0])
            if A_CAST:
                a = to_dtype(a.to(tl.float32), W.dtype.element_ty, INTERPRET)
            acc = dot(a, _w_tile(w_desc, k0, n0, BACKWARD), acc, INTERPRET, INPUT_PRECISION)
            if GLU and not BACKWARD:
                acc2 = dot(a, _w_tile(w_desc, k0, n0 + N_SIZE, BACKWARD), acc2, INTERPRET, INPUT_PRECISION)
    else:
        for k0 in range(0, K_SIZE, BLOCK_K):
            kmask = (k0 + ks) < K_SIZE
            a = tl.load(x_ptrs, mask=rmask[:, None] & kmask[None, :], other=0.0)
            if A_CAST:
                a = to_dtype(a.to(tl.float32), W.dtype.element_ty, INTERPRET)
            w = tl.load(w_ptrs, mask=kmask[:, None] & cmask[None, :], other=0.0)
            acc = dot(a, w, acc, INTERPRET, INPUT_PRECISION)
            if GLU and not BACKWARD:
                w2 = tl.load(w_ptrs + N_SIZE * stride_wn, mask=kmask[:, None] & cmask[None, :], other=0.0)
                acc2 = dot(a, w2, acc2, INTERPRET, INPUT_PRECISION)
            x_ptrs += BLOCK_K * stride_xc
            w_ptrs += BLOCK_K * stride_wk

    offs = rows64[:, None] * N_SIZE + cols[None, :]
    omask = rmask[:, None] & cmask[None, :]
    if BACKWARD:
        # Two column halves, one after the other: the whole-tile epilogue (z, GELU, GELU', two
        # stores) spilled 124 bytes at 128x128 on sm_90.
        acc_lo, acc_hi = tl.split(tl.permute(tl.reshape(acc, [BLOCK_M, 2, BLOCK_N // 2]), [0, 2, 1]))
        cols_lo = pid_n * BLOCK_N + tl.arange(0, BLOCK_N // 2)
        if not HAS_SCALE:
            row_scale = tl.zeros([BLOCK_M], dtype=tl.float32)
        if GLU:
            _glu_bwd_epilogue(acc_lo, Z, DZ, Act, DB, pid_m, row_scale, rows64, rmask, cols_lo, N_SIZE, HAS_SCALE,
                              WRITE_ACT, WRITE_DB, GLU, INTERPRET)
            _glu_bwd_epilogue(acc_hi, Z, DZ, Act, DB, pid_m, row_scale, rows64, rmask, cols_lo + BLOCK_N // 2,
                              N_SIZE, HAS_SCALE, WRITE_ACT, WRITE_DB, GLU, INTERPRET)
        else:
            _hidden_bwd_epilogue(acc_lo, Z, DZ, Act, DB, pid_m, row_scale, rows64, rmask, cols_lo, N_SIZE,
                                 HAS_SCALE, WRITE_ACT, WRITE_DB, APPROX_TANH, INTERPRET)
            _hidden_bwd_epilogue(acc_hi, Z, DZ, Act, DB, pid_m, row_scale, rows64, rmask, cols_lo + BLOCK_N // 2,
                                 N_SIZE, HAS_SCALE, WRITE_ACT, WRITE_DB, APPROX_TANH, INTERPRET)
    elif GLU:
        # z = [x1 | x2] rounded to the compute dtype (saved as is), the gate g from the rounded halves (the
        # backward recomputes it from the same bits)
        bias1 = tl.load(Bias + cols, mask=cmask, other=0.0).to(tl.float32)
        bias2 = tl.load(Bias + N_SIZE + cols, mask=cmask, other=0.0).to(tl.float32)
        x1 = to_dtype(tl.where(omask, acc + bias1[None, :], 0.0), Act.dtype.element_ty, INTERPRET)
        x2 = to_dtype(tl.where(omask, acc2 + bias2[None, :], 0.0), Act.dtype.element_ty, INTERPRET)
        zoffs = rows64[:, None] * (2 * N_SIZE) + cols[None, :]
        if WRITE_Z:
            tl.store(Z + zoffs, x1, mask=omask)
            tl.store(Z + zoffs + N_SIZE, x2, mask=omask)
        if WRITE_ACT:
            tl.store(Act + offs, to_dtype(glu(x1.to(tl.float32), x2.to(tl.float32), GLU, INTERPRET),
                                          Act.dtype.element_ty, INTERPRET), mask=omask)
    else:
        bias = tl.load(Bias + cols, mask=cmask, other=0.0).to(tl.float32)
        # z rounded to the compute dtype first: the saved z, the activation used here and the one the
        # backward recomputes from z are then bitwise the same (and equal eager's GELU(linear(.))).
        # The select keeps triton 3.6 from serialising the main loop's wgmmas with fp32 operands (and did
        # at 64x256); 16-bit tiles go without it (no hazard on 3.6 or 3.8; one instruction per element less:
        # the stores are masked anyway).
        if Act.dtype.element_ty == tl.float32:
            z = to_dtype(tl.where(omask, acc + bias[None, :], 0.0), Act.dtype.element_ty, INTERPRET)
        else:
            z = to_dtype(acc + bias[None, :], Act.dtype.element_ty, INTERPRET)
        if WRITE_Z:
            tl.store(Z + offs, z, mask=omask)
        if WRITE_ACT:
            tl.store(Act + offs, to_dtype(gelu_fast(z.to(tl.float32), APPROX_TANH, INTERPRET), Act.dtype.element_ty,
                                          INTERPRET), mask=omask)


# --------------------------------------------------------------------------------------------------
# GEMM 2 (K = DC): forward fc2 + bias + sample scale + residual; backward gradient of the LN output


@triton.jit
def _out_epilogue(acc, Bias, Res, Out, rows64, rmask, r_row, row_scale, cols, N_SIZE, stride_rc,
                  HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RES: tl.constexpr, INTERPRET: tl.constexpr):
    cmask = cols < N_SIZE
    omask = rmask[:, None] & cmask[None, :]
    if HAS_BIAS:
        acc += tl.load(Bias + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if HAS_SCALE:
        acc = acc * row_scale[:, None]
    if HAS_RES:
        acc += tl.load(Res + r_row[:, None] + cols[None, :].to(tl.int64) * stride_rc, mask=omask,
                       other=0.0).to(tl.float32)
    tl.store(Out + rows64[:, None] * N_SIZE + cols[None, :], to_dtype(acc, Out.dtype.element_ty, INTERPRET), mask=omask)


@_autotune("out", "W", ["N_SIZE", "K_SIZE", "M_BUCKET", "HAS_RES"])
@triton.jit(do_not_specialize=_BATCH_ARGS)
def _channel_out_kernel(
    A,               # [M, DC] contiguous, compute dtype: forward GELU activation, backward dz
    W,               # forward fc2_weight [C, DC] (stride_wk=1, stride_wn=DC); backward fc1_weight [DC, C]
    Bias,            # [C] fc2_bias (HAS_BIAS)
    Scale,           # [B] per-sample branch scale (HAS_SCALE)
    Res,             # [B, S, C] residual, any strides (HAS_RES)
    Out,             # [M, C] contiguous output
    M, S,
    N_SIZE,          # C
    K_SIZE,          # DC
    M_BUCKET,        # autotuning key only
    stride_wk, stride_wn,
    stride_rb, stride_rs, stride_rc,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RES: tl.constexpr,
    INTERPRET: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    TMA: tl.constexpr,      # A and W by tensor descriptors
    W_KN: tl.constexpr,     # W stored as rows k of N contiguous values (backward's fc1_weight); else rows n
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = _tile_ids(tl.program_id(0), M, N_SIZE, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    rows64 = rows.to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N_SIZE
    ks = tl.arange(0, BLOCK_K)

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if TMA:
        a_desc = _a_desc(A, M, K_SIZE, K_SIZE, BLOCK_M, BLOCK_K)
        w_desc = _w_desc(W, K_SIZE, N_SIZE, stride_wk, stride_wn, W_KN, BLOCK_K, BLOCK_N)
        m0 = pid_m * BLOCK_M
        n0 = pid_n * BLOCK_N
        for k0 in range(0, K_SIZE, BLOCK_K):
            acc = dot(a_desc.load([m0, k0]), _w_tile(w_desc, k0, n0, W_KN), acc, INTERPRET, INPUT_PRECISION)
    else:
        a_ptrs = A + rows64[:, None] * K_SIZE + ks[None, :]
        w_ptrs = W + ks[:, None] * stride_wk + cols[None, :] * stride_wn
        for k0 in range(0, K_SIZE, BLOCK_K):
            kmask = (k0 + ks) < K_SIZE
            a = tl.load(a_ptrs, mask=rmask[:, None] & kmask[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=kmask[:, None] & cmask[None, :], other=0.0)
            acc = dot(a, w, acc, INTERPRET, INPUT_PRECISION)
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K * stride_wk

    if HAS_SCALE:
        row_scale = tl.load(Scale + rows // S, mask=rmask, other=0.0).to(tl.float32)
    else:
        row_scale = tl.zeros([BLOCK_M], dtype=tl.float32)
    r_row = (rows // S).to(tl.int64) * stride_rb + (rows % S).to(tl.int64) * stride_rs
    # Two column halves, one after the other: the residual tile beside a 128x256 accumulator
    # spilled 204 bytes on sm_90 as one piece.
    acc_lo, acc_hi = tl.split(tl.permute(tl.reshape(acc, [BLOCK_M, 2, BLOCK_N // 2]), [0, 2, 1]))
    cols_lo = pid_n * BLOCK_N + tl.arange(0, BLOCK_N // 2)
    _out_epilogue(acc_lo, Bias, Res, Out, rows64, rmask, r_row, row_scale, cols_lo, N_SIZE, stride_rc,
                  HAS_BIAS, HAS_SCALE, HAS_RES, INTERPRET)
    _out_epilogue(acc_hi, Bias, Res, Out, rows64, rmask, r_row, row_scale, cols_lo + BLOCK_N // 2, N_SIZE, stride_rc,
                  HAS_BIAS, HAS_SCALE, HAS_RES, INTERPRET)


# --------------------------------------------------------------------------------------------------
# Weight gradients (K = M, split-K): dW2 = grad_out^T @ (s * act), dW1^T = y^T @ dz


@_autotune("wgrad", "Q", ["M_SIZE", "N_SIZE", "M_BUCKET"])
@triton.jit(do_not_specialize=_BATCH_ARGS)
def _channel_wgrad_kernel(
    P,               # [B, S, C] any strides, compute dtype: grad_out (fc2) or the LayerNorm output y (fc1)
    Q,               # [M, DC] contiguous, compute dtype: s * act (fc2) or dz (fc1)
    DW,              # output tile (i, j) of split s at s*stride_dws + i*stride_dwi + j*stride_dwj
    M, S,
    M_SIZE,          # C (output rows i)
    N_SIZE,          # DC (output columns j)
    M_BUCKET,        # autotuning key only
    ROWS_PER_SPLIT,  # rows of the K = M reduction per split
    stride_pb, stride_ps, stride_pc,
    stride_dws, stride_dwi, stride_dwj,
    P_FLAT: tl.constexpr,   # rows of P evenly spaced (viewable as [M, C])
    P_CAST: tl.constexpr,   # P's dtype is not the compute dtype
    INTERPRET: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # One plain K loop: no bias sums (db1 comes from the hidden-backward epilogue, db2 from a reduction
    # of grad_out) and no per-row scale (folded into Q = s * act by the hidden-backward epilogue). The
    # three loop copies that computed the sums in the first tile row / column made ptxas serialise
    # every wgmma (C7515), on triton 3.6 and 3.8.
    pid_m, pid_n = _tile_ids(tl.program_id(0), M_SIZE, N_SIZE, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)
    offs_i = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    imask = offs_i < M_SIZE
    offs_j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    jmask = offs_j < N_SIZE
    k_start = pid_k * ROWS_PER_SPLIT
    k_end = tl.minimum(M, k_start + ROWS_PER_SPLIT)
    ks = tl.arange(0, BLOCK_K)
    p_col = offs_i.to(tl.int64)[:, None] * stride_pc
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        m = k0 + ks
        mmask = m < k_end
        if P_FLAT:
            p_row = m.to(tl.int64) * stride_ps
        else:
            p_row = (m // S).to(tl.int64) * stride_pb + (m % S).to(tl.int64) * stride_ps
        p = tl.load(P + p_col + p_row[None, :], mask=imask[:, None] & mmask[None, :], other=0.0)
        if P_CAST:
            p = to_dtype(p.to(tl.float32), Q.dtype.element_ty, INTERPRET)
        q = tl.load(Q + m.to(tl.int64)[:, None] * N_SIZE + offs_j[None, :], mask=mmask[:, None] & jmask[None, :],
                    other=0.0)
        acc = dot(p, q, acc, INTERPRET, INPUT_PRECISION)
    omask = imask[:, None] & jmask[None, :]
    # the select keeps triton 3.6 from serialising the loop's wgmmas (it did when the fp32 accumulator
    # was stored as it is: tests/planted_kernels.py)
    acc = tl.where(omask, acc, 0.0)
    base = pid_k.to(tl.int64) * stride_dws
    tl.store(DW + base + offs_i[:, None] * stride_dwi + offs_j[None, :] * stride_dwj,
             to_dtype(acc, DW.dtype.element_ty, INTERPRET), mask=omask)


# --------------------------------------------------------------------------------------------------
# Launchers (internal: callers pass checked tensors on one Triton device)


def _grid_2d(M, N):
    return lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)


def _strides3(t):
    return t.stride(0), t.stride(1), t.stride(2)


def _x_strides(x):
    """x [B, S, C]'s strides for the hidden kernel's stride_xb, stride_xs, stride_xc; with S = 1 the rows
    are stride_xb apart, and that is the row stride the kernel's descriptor takes (stride_xs is unused then)."""
    sb, ss, sc = x.stride()
    return sb, (sb if x.shape[1] == 1 else ss), sc


def _row_stride(t):
    """The row stride of t as a matrix of unit-stride rows ([B, S, C] as [B*S, C], or 2-D), or None when
    its rows are not evenly spaced or not contiguous."""
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        return None
    if t.dim() == 2:
        return t.stride(0)
    B, S, _ = t.shape
    sb, ss, _ = _x_strides(t)
    return ss if B == 1 or S == 1 or sb == S * ss else None


@functools.lru_cache(maxsize=16)
def _has_tma(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def tma_ok(*mats: torch.Tensor) -> bool:
    """Whether a launch over these operands reads them by TMA: an sm_90+ card (the interpreter and meta
    tensors, the speed model's, count as one) and, for each, unit-stride rows evenly spaced, with a
    16-byte-aligned start and row stride (TMA's rule)."""
    dev = mats[0].device
    if dev.type == "cuda" and not triton_interpret() and \
            not _has_tma(dev.index if dev.index is not None else torch.cuda.current_device()):
        return False
    for t in mats:
        rs = _row_stride(t)
        if rs is None or (rs * t.element_size()) % 16 or t.data_ptr() % 16:
            return False
    return True


# The hidden activation of a launch, as ops/channel_mixing.py names it (its `approximate` argument):
# GELU "none" (erf) / "tanh", or gMixer's SiLU-gated GLU "glu_silu" (gate last, timm's default) /
# "glu_silu_first" (gate_last=False).
GLU_ACTS = {"glu_silu": 1, "glu_silu_first": 2}


def glu_of(approximate: str) -> int:
    """The GLU constexpr of an activation name (0: GELU)."""
    return GLU_ACTS.get(approximate, 0)


def hidden_forward(y, fc1_weight, fc1_bias, *, approximate, write_z: bool, write_act: bool):
    """z = y @ fc1_weight^T + fc1_bias [M, DC] and/or act = GELU(z) [M, DC] in the compute dtype, from the
    LayerNorm output y [B, S, C] (compute dtype); with a GLU activation act = x1 * SiLU(x2) [M, DC/2]
    (x1, x2 = z's halves). Returns (z or None, act or None)."""
    B, S, C = y.shape
    M, DC = B * S, fc1_weight.shape[0]
    glu = glu_of(approximate)
    N = DC // 2 if glu else DC
    dt = fc1_weight.dtype
    z = empty((M, DC), device=y.device, dtype=dt) if write_z else None
    act = empty((M, N), device=y.device, dtype=dt) if write_act else None
    any_out = z if z is not None else act
    tma = tma_ok(y, fc1_weight)
    with tma_scratch(tma, y.device):
        _channel_hidden_kernel[_grid_2d(M, N)](
            y, fc1_bias, fc1_weight, fc1_bias,
            any_out, act if act is not None else any_out, any_out, any_out,
            M, S, N, C, m_bucket(M), *_x_strides(y), fc1_weight.stride(1), fc1_weight.stride(0),
            BACKWARD=False, HAS_SCALE=False, WRITE_Z=write_z, WRITE_ACT=write_act, WRITE_DB=False,
            A_CAST=y.dtype != dt, APPROX_TANH=approximate == "tanh", INTERPRET=triton_interpret(),
            INPUT_PRECISION=input_precision(dt), GLU=glu, TMA=tma, **LAUNCH_OPTIONS,
        )
    return z, act


def hidden_backward(grad_out, sample_scale, fc2_weight, z, *, approximate, write_act=True, write_db=True):
    """(dz, act_s, db1): dz = s * (grad_out @ fc2_weight) * GELU'(z) [M, DC] in the compute dtype (s the
    per-sample scale, 1 without one); act_s = s * GELU(z), fc2's weight-gradient operand (None unless
    write_act); db1 = the fp32 column sums of dz (fc1_bias's gradient; None unless write_db), from
    per-row-tile partials summed in a fixed order. GLU activation: dz = s * [dg * SiLU(x2) | dg * x1 * SiLU'(x2)]
    [M, DC] with dg = grad_out @ fc2_weight [M, DC/2], act_s = s * g [M, DC/2]."""
    B, S, C = grad_out.shape
    M, DC = z.shape
    glu = glu_of(approximate)
    N = fc2_weight.shape[1]                      # DC, or DC/2 with a GLU
    dt = fc2_weight.dtype
    dz = empty((M, DC), device=z.device, dtype=dt)
    act = empty((M, N), device=z.device, dtype=dt) if write_act else None
    # one row per row tile of the smallest BLOCK_M the kernel may run with; with larger tiles the unused rows
    # stay zero, so the fixed-order sum is the same for every config of a launch
    dbp = torch.zeros((triton.cdiv(M, _min_hidden_block_m()), DC), device=z.device, dtype=torch.float32) \
        if write_db else dz
    sc = sample_scale if sample_scale is not None else z
    tma = tma_ok(grad_out, fc2_weight)
    with tma_scratch(tma, z.device):
        _channel_hidden_kernel[_grid_2d(M, N)](
            grad_out, sc, fc2_weight, z, z, act if write_act else dz, dz, dbp,
            M, S, N, C, m_bucket(M), *_x_strides(grad_out), fc2_weight.stride(0), fc2_weight.stride(1),
            BACKWARD=True, HAS_SCALE=sample_scale is not None, WRITE_Z=False, WRITE_ACT=write_act,
            WRITE_DB=write_db, A_CAST=grad_out.dtype != dt, APPROX_TANH=approximate == "tanh",
            INTERPRET=triton_interpret(), INPUT_PRECISION=input_precision(dt), GLU=glu, TMA=tma, **LAUNCH_OPTIONS,
        )
    return dz, act, (dbp.sum(0) if write_db else None)


def out_forward(act, x, fc2_weight, fc2_bias, sample_scale):
    """x + sample_scale[b] * (act @ fc2_weight^T + fc2_bias): contiguous [B, S, C] in x's dtype."""
    B, S, C = x.shape
    M, DC = act.shape
    out = empty((B, S, C), device=x.device, dtype=x.dtype)
    sc = sample_scale if sample_scale is not None else fc2_bias
    tma = tma_ok(act, fc2_weight)
    with tma_scratch(tma, x.device):
        _channel_out_kernel[_grid_2d(M, C)](
            act, fc2_weight, fc2_bias, sc, x, out, M, S, C, DC, m_bucket(M),
            fc2_weight.stride(1), fc2_weight.stride(0), *_strides3(x),
            HAS_BIAS=True, HAS_SCALE=sample_scale is not None, HAS_RES=True,
            INTERPRET=triton_interpret(), INPUT_PRECISION=input_precision(act.dtype), TMA=tma, W_KN=False,
            **LAUNCH_OPTIONS,
        )
    return out


def out_backward(dz, fc1_weight, B, S):
    """dn = dz @ fc1_weight: the gradient reaching the LayerNorm output, [B, S, C] in the compute dtype."""
    M, DC = dz.shape
    C = fc1_weight.shape[1]
    dn = empty((B, S, C), device=dz.device, dtype=dz.dtype)
    tma = tma_ok(dz, fc1_weight)
    with tma_scratch(tma, dz.device):
        _channel_out_kernel[_grid_2d(M, C)](
            dz, fc1_weight, dz, dz, dz, dn, M, S, C, DC, m_bucket(M),
            fc1_weight.stride(0), fc1_weight.stride(1), 0, 0, 0,
            HAS_BIAS=False, HAS_SCALE=False, HAS_RES=False,
            INTERPRET=triton_interpret(), INPUT_PRECISION=input_precision(dz.dtype), TMA=tma, W_KN=True,
            **LAUNCH_OPTIONS,
        )
    return dn


def _min_hidden_block_m() -> int:
    """The smallest BLOCK_M the hidden kernel may run with (rows of the dz column-sum partials)."""
    if triton_interpret():
        return INTERPRET_CONFIG[0]
    return min(c[0] for k in ("hidden", "hidden_glu") for b in GPU_CONFIGS[k].values() for c in b)


# split-K of the weight gradients
_MIN_ROWS_PER_SPLIT = 2048      # GPU: >= 32 K steps of 64 per program
_INTERPRET_ROWS_PER_SPLIT = 64  # interpreter: small test shapes still exercise the split path
_MAX_SPLIT = 16


@functools.lru_cache(maxsize=16)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _wgrad_split(M: int, tiles: int, device: torch.device) -> tuple[int, int]:
    """(split, rows_per_split): the fewest splits whose tiles*split programs fill >= 90% of their last
    wave (of one 128x128 program per SM), within _MAX_SPLIT and >= _MIN_ROWS_PER_SPLIT rows each.
    Depends only on M, the tile count and the SM count: the reduction order is fixed per shape."""
    if triton_interpret():
        rows = _INTERPRET_ROWS_PER_SPLIT
        return triton.cdiv(M, rows), rows
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    max_split = max(1, min(_MAX_SPLIT, M // _MIN_ROWS_PER_SPLIT))
    best, best_eff = 1, 0.0
    for s in range(1, max_split + 1):
        waves = tiles * s / sms
        eff = waves / triton.cdiv(tiles * s, sms)
        if eff > best_eff + 1e-9:
            best, best_eff = s, eff
        if eff >= 0.9:
            break
    rows = triton.cdiv(triton.cdiv(M, best), 256) * 256
    return triton.cdiv(M, rows), rows


def wgrad(p, q, *, transpose_out: bool, out_dtype):
    """dW = P^T @ Q over all M = B*S rows, P [B, S, C] (any strides), Q [M, DC] contiguous in the compute
    dtype. Returns dW as [C, DC], or [DC, C] when transpose_out, in out_dtype."""
    B, S, C = p.shape
    M, DC = q.shape
    dev = q.device
    tiles = triton.cdiv(C, 128) * triton.cdiv(DC, 128)
    split, rows = _wgrad_split(M, tiles, dev)
    shape = (DC, C) if transpose_out else (C, DC)
    if split == 1:
        dw = empty(shape, device=dev, dtype=out_dtype)
        dws = 0
    else:
        dw = empty((split,) + shape, device=dev, dtype=torch.float32)
        dws = dw.stride(0)
    sti, stj = (1, C) if transpose_out else (DC, 1)
    pb, ps, pc = _strides3(p)
    flat = pb == S * ps or B == 1
    _channel_wgrad_kernel[lambda meta: (triton.cdiv(C, meta["BLOCK_M"]) * triton.cdiv(DC, meta["BLOCK_N"]), split)](
        p, q, dw, M, S, C, DC, m_bucket(M), rows, pb, ps, pc, dws, sti, stj,
        P_FLAT=flat, P_CAST=p.dtype != q.dtype, INTERPRET=triton_interpret(), INPUT_PRECISION=input_precision(q.dtype),
        **LAUNCH_OPTIONS,
    )
    if split > 1:
        dw = dw.sum(0).to(out_dtype)      # fixed-order reduction of the split partials
    return dw


# --------------------------------------------------------------------------------------------------
# Compile cases: B/16 and L/16 at every GPU config, bf16 and fp32 (tf32), both modes of each kernel.

_SIZES = [("B/16", 196, 768, 3072), ("L/16", 196, 1024, 4096)]


def _case_dtypes(size_name):
    # bf16 (the training dtype) at both sizes; fp32 (tf32 dots) at B/16 only: the sizes differ in no
    # specialisation (all multiples of 16), this keeps the CI compile test short.
    return ((torch.bfloat16, 16), (torch.float32, 32)) if size_name == "B/16" else ((torch.bfloat16, 16),)


def _cases(kind, variants, kernel_args, sizes=_SIZES):
    """Every (size, dtype, GPU config, variant) launch of one kernel. kernel_args(dt, S, C, DC, M, variant)
    gives the kernel-specific arguments; the tile meta-parameters are added here."""
    cases = []
    for name, S, C, DC in sizes:
        M = 256 * S
        for dt, bits in _case_dtypes(name):
            configs = GPU_CONFIGS[kind][bits] if bits == 16 else GPU_CONFIGS[kind][bits][:1]
            for (bm, bn, bk, w, st) in configs:
                for label, variant in variants:
                    args = dict(kernel_args(dt, S, C, DC, M, variant), M=M, S=S, M_BUCKET=m_bucket(M),
                                INTERPRET=False, INPUT_PRECISION="tf32" if bits == 32 else "ieee",
                                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8)
                    cases.append(CompileCase(f"{name} {label} {str(dt)[6:]} {bm}x{bn}x{bk}/{st}", args,
                                             num_warps=w, num_stages=st, group=f"{name} {label} {str(dt)[6:]}"))
    return cases


def _hidden_args(dt, S, C, DC, M, variant):
    bwd, scale = variant
    return dict(X=dt, Scale=dt, W=dt, Bias=dt, Z=dt, Act=dt, DZ=dt, DB=torch.float32,
                N_SIZE=DC, K_SIZE=C, stride_xb=S * C, stride_xs=C, stride_xc=1,
                stride_wk=DC if bwd else 1, stride_wn=1 if bwd else C,
                BACKWARD=bwd, HAS_SCALE=scale, WRITE_Z=not bwd, WRITE_ACT=True, WRITE_DB=bwd, A_CAST=False,
                APPROX_TANH=False, GLU=0, TMA=True)


# gMixer-24 (timm's gmixer_24_224: S = 196, C = 384, DC = 1536 = 2 x 768): the GLU launches of the hidden
# kernel, bf16 and fp32 (tf32), every config of the GLU table ("B/16" is only _case_dtypes' key for both dtypes).
_GMIXER_SIZES = [("B/16", 196, 384, 1536)]


def _glu_hidden_args(dt, S, C, DC, M, variant):
    bwd, scale = variant
    return dict(_hidden_args(dt, S, C, DC // 2, M, variant), stride_wk=DC // 2 if bwd else 1, GLU=1)


def _glu_hidden_cases():
    cases = _cases("hidden_glu", _HIDDEN_MODES, _glu_hidden_args, _GMIXER_SIZES)
    for c in cases:
        c.name = "gmixer_24 glu " + c.name[len("B/16 "):]
    return cases


def _out_args(dt, S, C, DC, M, bwd):
    return dict(A=dt, W=dt, Bias=dt, Scale=dt, Res=dt, Out=dt, N_SIZE=C, K_SIZE=DC,
                stride_wk=C if bwd else 1, stride_wn=1 if bwd else DC, stride_rb=S * C, stride_rs=C, stride_rc=1,
                HAS_BIAS=not bwd, HAS_SCALE=not bwd, HAS_RES=not bwd, TMA=True, W_KN=bwd)


def _wgrad_args(dt, S, C, DC, M, fc1):
    return dict(P=dt, Q=dt, DW=torch.float32, M_SIZE=C, N_SIZE=DC, ROWS_PER_SPLIT=10240,
                stride_pb=S * C, stride_ps=C, stride_pc=1, stride_dws=C * DC,
                stride_dwi=1 if fc1 else DC, stride_dwj=C if fc1 else 1, P_FLAT=True, P_CAST=False)


_MODES = [("fwd", False), ("bwd", True)]
def _hidden_work(a) -> Work:
    """2*M*DC*C FLOPs; the A rows (x or grad_out) and the weight read once, z / GELU(z) / dz as written
    (backward: z read). Main loop: the K loop. GLU (N_SIZE = H, z and dz [M, 2H], act [M, H]): the forward
    does two dots per k-step (4*M*H*C), the backward one (2*M*H*C)."""
    M, N, K = a["M"], a["N_SIZE"], a["K_SIZE"]
    mn = M * N * a["Z"].element_size()
    zn = 2 * mn if a.get("GLU", 0) else mn                  # z and dz bytes
    moved = M * K * a["X"].element_size() + nbytes(a["W"])
    if a["BACKWARD"]:
        moved += 2 * zn + (mn if a["WRITE_ACT"] else 0)
        flops = 2.0 * M * N * K
    else:
        moved += (zn if a["WRITE_Z"] else 0) + (mn if a["WRITE_ACT"] else 0)
        flops = (4.0 if a.get("GLU", 0) else 2.0) * M * N * K
    return Work(flops, moved, triton.cdiv(K, a["BLOCK_K"]))


def _out_work(a) -> Work:
    """2*M*C*DC FLOPs; A [M, DC] and the weight read once, the output (and the residual) once."""
    M, N, K = a["M"], a["N_SIZE"], a["K_SIZE"]
    moved = M * K * a["A"].element_size() + nbytes(a["W"]) + M * N * a["Out"].element_size()
    if a["HAS_RES"]:
        moved += M * N * a["Res"].element_size()
    return Work(2.0 * M * N * K, moved, triton.cdiv(K, a["BLOCK_K"]))


def _wgrad_work(a) -> Work:
    """2*M*C*DC FLOPs; P [M, C] and Q [M, DC] read once, the (split-K partial) weight gradient written.
    Main loop: the K loop over one split's rows."""
    M, Mi, Nj = a["M"], a["M_SIZE"], a["N_SIZE"]
    moved = M * Mi * a["P"].element_size() + nbytes(a["Q"]) + nbytes(a["DW"])
    return Work(2.0 * M * Mi * Nj, moved, triton.cdiv(a["ROWS_PER_SPLIT"], a["BLOCK_K"]))


_HIDDEN_MODES = [("fwd", (False, False)), ("bwd", (True, False)), ("bwd drop_path", (True, True))]
register_kernel(_channel_hidden_kernel, lambda: _cases("hidden", _HIDDEN_MODES, _hidden_args) + _glu_hidden_cases(),
                _hidden_work)
register_kernel(_channel_out_kernel, lambda: _cases("out", _MODES, _out_args), _out_work)
register_kernel(_channel_wgrad_kernel, lambda: _cases("wgrad", [("fc1", True), ("fc2", False)], _wgrad_args),
                _wgrad_work)
