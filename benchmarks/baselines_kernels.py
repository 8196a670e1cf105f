"""Inductor's Triton mm template (torch 2.14, torch/_inductor/kernel/templates/triton_mm.py.jinja, the
`mm_template` of torch/_inductor/kernel/mm.py) rendered as a plain @triton.jit kernel, for the speed model's
torch.compile max-autotune baseline (benchmarks/baselines.py). Nothing here runs: it is compiled for sm_90a
and read.

Faithful to the template as Inductor renders it for static shapes, with one change that keeps the number of
compiles down: Inductor renders M, N, K and the strides as literal constants (`{{size("A", 0)}}`); here they
are integer arguments, which the JIT specialises the same way for what the code generation uses (1 becomes a
constant, multiples of 16 carry tt.divisibility = 16), and the template's contiguity tests on them, which the
literal constants fold at compile time, are the constexprs A_CONTIG and B_CONTIG (template_args computes them
with the template's own condition). Grouped program ordering with
GROUP_M, `tl.max_contiguous(tl.multiple_of(...))` on the row offsets when the operand is contiguous along one
dimension and the tile fits, masks on K only when K is not a multiple of BLOCK_K (EVEN_K), `acc += tl.dot`
(USE_FAST_ACCUM off), fp32 accumulator, one output tile per program (mm_grid: cdiv(M, BM) * cdiv(N, BN)).
Batched products (the bmm template, triton_bmm.py.jinja) add program_id(1) over the batch with batch strides.
The suffix `store_output` generates is the fused epilogue: here the kinds Inductor fuses into a GEMM in the
Mixer-family blocks, chosen by constexprs (bias along N, `N_EXTRA` further [M, N] tensors read and added
(residual, the second GLU half, the GELU-backward multiplicand), GELU (erf) or its derivative product, the
output dtype, and a second output when the GEMM result itself is also saved).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def triton_mm_template(A, B, Bias, E1, E2, Out, Out2, M, N, K, stride_am, stride_ak, stride_ab,
                       stride_bk, stride_bn, stride_bb, A_CONTIG: tl.constexpr, B_CONTIG: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                       EVEN_K: tl.constexpr, HAS_BIAS: tl.constexpr, N_EXTRA: tl.constexpr, ACT: tl.constexpr,
                       OUT2: tl.constexpr):
    # ACT: 0 none, 1 GELU(erf) of the sum, 2 the sum times GELU'(E2) (gelu_backward)
    pid = tl.program_id(0).to(tl.int32)
    bid = tl.program_id(1).to(tl.int64)
    A = A + bid * stride_ab
    B = B + bid * stride_bb
    grid_m = (M + BLOCK_M - 1) // BLOCK_M
    grid_n = (N + BLOCK_N - 1) // BLOCK_N
    width = GROUP_M * grid_n
    group_id = pid // width
    group_size = min(grid_m - group_id * GROUP_M, GROUP_M)
    pid_m = group_id * GROUP_M + (pid % group_size)
    pid_n = (pid % width) // (group_size)
    tl.assume(pid_m >= 0)
    tl.assume(pid_n >= 0)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if A_CONTIG:
        offs_a_m = tl.max_contiguous(tl.multiple_of(rm % M, BLOCK_M), BLOCK_M)
    else:
        offs_a_m = rm % M
    if B_CONTIG:
        offs_b_n = tl.max_contiguous(tl.multiple_of(rn % N, BLOCK_N), BLOCK_N)
    else:
        offs_b_n = rn % N
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k_idx in range(0, tl.cdiv(K, BLOCK_K)):
        a_k = offs_k[None, :] + (k_idx * BLOCK_K)
        b_k = offs_k[:, None] + (k_idx * BLOCK_K)
        if EVEN_K:
            a = tl.load(A + offs_a_m[:, None] * stride_am + a_k * stride_ak)
            b = tl.load(B + b_k * stride_bk + offs_b_n[None, :] * stride_bn)
        else:
            a = tl.load(A + offs_a_m[:, None] * stride_am + a_k * stride_ak,
                        mask=offs_k[None, :] < (K - k_idx * BLOCK_K), other=0.0)
            b = tl.load(B + b_k * stride_bk + offs_b_n[None, :] * stride_bn,
                        mask=offs_k[:, None] < (K - k_idx * BLOCK_K), other=0.0)
        acc += tl.dot(a, b, allow_tf32=False, out_dtype=tl.float32)
    # rematerialize rm and rn to save registers; the suffix store_output generates (the fused epilogue)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    idx_m = rm[:, None]
    idx_n = rn[None, :]
    mask = (idx_m < M) & (idx_n < N)
    off = bid * M * N + idx_m * N + idx_n
    if OUT2:
        tl.store(Out2 + off, acc.to(Out2.dtype.element_ty), mask)
    v = acc
    if HAS_BIAS:
        v = v + tl.load(Bias + idx_n, mask=idx_n < N, other=0.0).to(tl.float32)
    if N_EXTRA >= 1:
        v = v + tl.load(E1 + off, mask=mask, other=0.0).to(tl.float32)
    if ACT == 1:
        v = 0.5 * v * (1.0 + tl.math.erf(v * 0.7071067811865476))
    if ACT == 2:
        z = tl.load(E2 + off, mask=mask, other=0.0).to(tl.float32)
        cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
        pdf = tl.exp(-0.5 * z * z) * 0.3989422804014327
        v = v * (cdf + z * pdf)
    if N_EXTRA >= 2 and ACT != 2:
        v = v + tl.load(E2 + off, mask=mask, other=0.0).to(tl.float32)
    tl.store(Out + off, v.to(Out.dtype.element_ty), mask)


def template_args(M: int, N: int, K: int, dtype, out_dtype, a_strides, b_strides, cfg: dict, *, bias: bool,
                  n_extra: int, act: int, out2: bool, extra_dtype=None) -> dict:
    """model_triton_launch's args for one rendered template: a_strides (m, k, batch), b_strides (k, n, batch);
    cfg: Inductor's TritonConfig kwargs plus num_warps/num_stages."""
    (sam, sak, _), (sbk, sbn, _) = a_strides, b_strides
    a_contig = ((sam == 1 and sak == M) or (sam == K and sak == 1)) and (M >= cfg["BLOCK_M"] and K > 1)
    b_contig = ((sbk == 1 and sbn == K) or (sbk == N and sbn == 1)) and (N >= cfg["BLOCK_N"] and K > 1)
    return dict(A_CONTIG=a_contig, B_CONTIG=b_contig, A=dtype, B=dtype, Bias=dtype, E1=extra_dtype or out_dtype,
                E2=extra_dtype or out_dtype, Out=out_dtype, Out2=dtype, M=M, N=N, K=K,
                stride_am=a_strides[0], stride_ak=a_strides[1], stride_ab=a_strides[2],
                stride_bk=b_strides[0], stride_bn=b_strides[1], stride_bb=b_strides[2],
                BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], GROUP_M=cfg.get("GROUP_M", 8),
                EVEN_K=K % cfg["BLOCK_K"] == 0, HAS_BIAS=bias, N_EXTRA=n_extra, ACT=act, OUT2=out2)


__all__ = ["triton_mm_template", "template_args"]
