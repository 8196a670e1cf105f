"""Per anchor, what the speed model needs to model it (one function per `Anchor.rebuild` name).

A spec is one of
    ("triton", fn, args, grid, num_warps, num_stages, work, options)   one Triton launch (model_triton_launch)
    [spec, ...]                                                        an autotuner's candidates: the fastest counts
    ("gemm", M, N, K, dtype, batch)                                    one cuBLAS matrix product (model_gemm)
    ("elementwise", nbytes)                                            one memory-bound ATen kernel (model_elementwise)
    ("sequence", [spec, ...])                                          launches in a row: their times add
    ("sync",)                                     in a sequence: a host sync (.item()); the next launch is timed alone
    ("tuned", [spec, ...], [spec, ...])           an autotuner that ran at another shape: the fastest of the first
                                                  list picks the candidate of the second (same order) that counts
`work` = dict(flops, bytes (compulsory DRAM traffic: inputs read once, outputs written once), trips (main-loop
iterations per program), outer (iterations of the loop around it)). Nothing here compiles: rebuild functions are
cheap and pure; Liger anchors import the measured kernels from the liger-kernel package (PyPI, BSD-2)."""
from __future__ import annotations

import math
import re

import torch

from . import kernels

SMS = 132   # H100 SXM: the persistent kernels' grid (min(SMs, tiles)) as launched on the measured card
_DT = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
       "float8_e4m3fn": torch.float8_e4m3fn}


def _liger_settings(n: int):
    from liger_kernel.ops.utils import calculate_settings
    return calculate_settings(n)


def liger_layer_norm(a):
    """Liger-Kernel layer_norm_forward: one program per row, BLOCK_SIZE and num_warps from calculate_settings."""
    from liger_kernel.ops.layer_norm import _layer_norm_forward_kernel as fn
    M, N, dt = a.shape["M"], a.shape["N"], _DT[a.dtype]
    block, warps = _liger_settings(N)
    args = dict(Y_ptr=dt, Y_row_stride=N, X_ptr=dt, X_row_stride=N, W_ptr=dt, W_row_stride=1, B_ptr=dt,
                B_row_stride=1, Mean_ptr=dt, Mean_row_stride=1, RSTD_ptr=dt, RSTD_row_stride=1, n_cols=N, eps=1e-6,
                BLOCK_SIZE=block)
    e = dt.itemsize
    work = dict(flops=0.0, bytes=(2 * M * N + 2 * N + 2 * M) * e, trips=1, outer=1)
    return ("triton", fn, args, M, warps, 3, work, {})


def liger_relu_squared(a):
    """Liger-Kernel relu_squared_forward: one program per row."""
    from liger_kernel.ops.relu_squared import _relu_squared_forward_kernel as fn
    M, N, dt = a.shape["M"], a.shape["N"], _DT[a.dtype]
    block, warps = _liger_settings(N)
    args = dict(Y_ptr=dt, Y_stride=N, X_ptr=dt, X_stride=N, n_cols=N, BLOCK_SIZE=block)
    work = dict(flops=0.0, bytes=2 * M * N * dt.itemsize, trips=1, outer=1)
    return ("triton", fn, args, M, warps, 3, work, {})


def liger_rms_norm(a):
    """Liger-Kernel rms_norm_forward as LigerMegatronRMSNorm calls it (casting_mode "llama", offset 0.0, bf16 weight):
    fewer than 4096 * 8 rows, so one program per row (_rms_norm_forward_kernel), settings from calculate_settings."""
    from liger_kernel.ops.rms_norm import _rms_norm_forward_kernel as fn
    from liger_kernel.ops.rms_norm import _str_to_casting_mode
    M, N, dt = a.shape["M"], a.shape["N"], _DT[a.dtype]
    block, warps = _liger_settings(N)
    mode = _str_to_casting_mode["llama"]
    args = dict(Y_ptr=dt, Y_row_stride=N, X_ptr=dt, X_row_stride=N, W_ptr=dt, W_row_stride=1, RSTD_ptr=torch.float32,
                RSTD_row_stride=1, n_cols=N, eps=1e-6, offset=0.0,
                casting_mode=mode, elementwise_affine=True,
                BLOCK_SIZE=block)
    work = dict(flops=0.0, bytes=(2 * M * N + N) * dt.itemsize + 4 * M, trips=1, outer=1)
    return ("triton", fn, args, M, warps, 3, work, {})


def aten_layer_norm(a):
    """torch.nn.LayerNorm forward: one ATen kernel reading x, weight, bias, writing y, mean, rstd."""
    M, N, e = a.shape["M"], a.shape["N"], _DT[a.dtype].itemsize
    return ("elementwise", (2 * M * N + 2 * N) * e + 2 * M * 4, "layer_norm")


def aten_relu_squared(a):
    """relu then square: two ATen elementwise kernels, each reading and writing M x N."""
    M, N, e = a.shape["M"], a.shape["N"], _DT[a.dtype].itemsize
    return ("sequence", [("elementwise", 2 * M * N * e), ("elementwise", 2 * M * N * e)])


def cublas_gemm(a):
    """One cuBLAS matrix product of the anchor's shape and dtype (with its tile where the source names the kernel:
    "..._tilesize128x128x128")."""
    s = a.shape
    m = re.search(r"tilesize(\d+)x(\d+)x\d+", a.note)
    tile = (int(m.group(1)), int(m.group(2))) if m else None
    return ("gemm", s["M"], s["N"], s["K"], _DT[a.dtype], s.get("batch", 1), tile)


_T09 = {torch.float8_e4m3fn: dict(BLOCK_SIZE_M=128, BLOCK_SIZE_N=256, BLOCK_SIZE_K=128, GROUP_SIZE_M=8,
                                  num_stages=4, num_warps=8),
        torch.float16: dict(BLOCK_SIZE_M=128, BLOCK_SIZE_N=256, BLOCK_SIZE_K=64, GROUP_SIZE_M=8,
                            num_stages=3, num_warps=8)}


def _t09(a):
    s, dt = a.shape, _DT[a.dtype]
    M, N, K = s["M"], s["N"], s["K"]
    cfg = dict(_T09[dt])
    warps, stages = cfg.pop("num_warps"), cfg.pop("num_stages")
    tiles = math.ceil(M / cfg["BLOCK_SIZE_M"]) * math.ceil(N / cfg["BLOCK_SIZE_N"])
    e = dt.itemsize
    work = dict(flops=2.0 * M * N * K, bytes=(M * K + N * K + M * N) * e, trips=math.ceil(K / cfg["BLOCK_SIZE_K"]),
                outer=1)
    return M, N, K, dt, cfg, warps, stages, tiles, work


def tutorial09_matmul(a):
    """Tutorial 09 matmul_kernel: one program per 128x256 tile; B passed as b.T of a K-major [N, K] tensor."""
    M, N, K, dt, cfg, warps, stages, tiles, work = _t09(a)
    args = dict(a_ptr=dt, b_ptr=dt, c_ptr=dt, M=M, N=N, K=K, stride_am=K, stride_ak=1, stride_bk=1, stride_bn=K,
                stride_cm=N, stride_cn=1, **cfg)
    return ("triton", kernels.matmul_grouped, args, tiles, warps, stages, work, {})


def tutorial09_persistent(a):
    """Tutorial 09 matmul_kernel_persistent: grid min(SMs, tiles), tiles strided by NUM_SMS."""
    M, N, K, dt, cfg, warps, stages, tiles, work = _t09(a)
    grid = min(SMS, tiles)
    args = dict(a_ptr=dt, b_ptr=dt, c_ptr=dt, M=M, N=N, K=K, stride_am=K, stride_ak=1, stride_bk=1, stride_bn=K,
                stride_cm=N, stride_cn=1, NUM_SMS=SMS, **cfg)
    return ("triton", kernels.matmul_persistent, args, grid, warps, stages, dict(work, outer=math.ceil(tiles / grid)),
            {})


def tutorial09_descriptor_persistent(a):
    """Tutorial 09 matmul_kernel_descriptor_persistent: device-side tensor descriptors (TMA), persistent grid."""
    M, N, K, dt, cfg, warps, stages, tiles, work = _t09(a)
    grid = min(SMS, tiles)
    args = dict(a_ptr=dt, b_ptr=dt, c_ptr=dt, M=M, N=N, K=K, NUM_SMS=SMS, **cfg)
    return ("triton", kernels.matmul_descriptor_persistent, args, grid, warps, stages,
            dict(work, outer=math.ceil(tiles / grid)), {})


def tutorial10_tma_store(a):
    """Triton's 2023 Hopper tutorial 10-experimental-tma-store-matrix-multiplication: block-pointer loads, fp32 C,
    one autotune config (128x128x64, GROUP_SIZE_M 8, 7 stages, 4 warps); B = randn(N, K).T (K-major)."""
    s, dt = a.shape, _DT[a.dtype]
    M, N, K = s["M"], s["N"], s["K"]
    cfg = dict(BLOCK_SIZE_M=128, BLOCK_SIZE_N=128, BLOCK_SIZE_K=64, GROUP_SIZE_M=8)
    args = dict(a_ptr=dt, b_ptr=dt, c_ptr=torch.float32, M=M, N=N, K=K, stride_am=K, stride_ak=1, stride_bk=1,
                stride_bn=K, stride_cm=N, stride_cn=1, **cfg)
    tiles = math.ceil(M / 128) * math.ceil(N / 128)
    work = dict(flops=2.0 * M * N * K, bytes=(M * K + N * K) * dt.itemsize + M * N * 4, trips=math.ceil(K / 64),
                outer=1)
    return ("triton", kernels.matmul_block_ptr_f32out, args, tiles, 4, 7, work, {})


# Candidates for the attention forward (chosen here to span the tutorial's tile range on Hopper; the measured runs
# were autotuned over the tutorial's own list, which this does not reproduce line by line).
_ATTN_CONFIGS = [(bm, bn, s, w) for bm in (64, 128) for bn in (64, 128) for s in (3, 4) for w in (4, 8)]


def tutorial_attention_fwd(a):
    """Fused attention forward (non-causal), autotuned: a list of candidate launches, the fastest counts."""
    s, dt = a.shape, _DT[a.dtype]
    Z, H, N, D = s["Z"], s["H"], s["N_CTX"], s["HEAD_DIM"]
    e = dt.itemsize
    out = []
    for bm, bn, stages, warps in _ATTN_CONFIGS:
        args = dict(Q=dt, K=dt, V=dt, Out=dt, LSE=torch.float32, sm_scale=0.5, stride_z=H * N * D, stride_h=N * D,
                    stride_m=D, H=H, N_CTX=N, HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn)
        work = dict(flops=4.0 * Z * H * N * N * D, bytes=4 * Z * H * N * D * e + Z * H * N * 4,
                    trips=math.ceil(N / bn), outer=1)
        out.append(("triton", kernels.attention_fwd, args, (math.ceil(N / bm), Z * H), warps, stages, work, {}))
    return out


def _expected_m_tiles(T: int, E: int, K: int, block_m: int = 64) -> int:
    """Liger fused_moe's GEMM grid dim 0 (sum over experts of ceil(tokens_e / BLOCK_M_TOKEN)) in expectation under
    the benchmark's routing: top-K of i.i.d. randn logits, so each token picks each expert with probability K/E and
    tokens_e ~ Binomial(T, K/E). The measured run drew one routing (torch.manual_seed(42) on the GPU); the total
    over E experts has a spread of about sqrt(E)/2 tiles (under 1% of the grid at T >= 1024)."""
    p = K / E
    if p >= 1.0:
        return E * math.ceil(T / block_m)
    lp, lq = math.log(p), math.log1p(-p)
    lgt = math.lgamma(T + 1)
    mean = sum(math.exp(lgt - math.lgamma(n + 1) - math.lgamma(T - n + 1) + n * lp + (T - n) * lq)
               * math.ceil(n / block_m) for n in range(T + 1))
    return round(E * mean)


def _moe_gemm_configs():
    """liger-kernel 0.8.1 _get_gemm_autotune_configs (autotune on, as in the measured run): BLOCK_N x BLOCK_K x
    num_warps x num_stages."""
    return [(bn, bk, nw, ns) for bn in (64, 128) for bk in (32, 64) for nw in (4, 8) for ns in (2, 3, 4, 5)]


def _moe_up(T, E, H, I, K, tiles, bn, bk, nw, ns):
    from liger_kernel.ops.fused_moe_kernels import _fused_up_proj_swiglu_kernel as fn
    bf, i32 = torch.bfloat16, torch.int32
    TK = T * K
    args = dict(x_ptr=bf, gate_up_proj_ptr=bf, x_gather_idx_ptr=i32, expert_start_ptr=i32, tile_row_start_ptr=i32,
                tile_expert_ptr=i32, pre_act_ptr=bf, post_act_ptr=bf, H_dim=H, I_dim=I, stride_x_T=H, stride_x_H=1,
                stride_w_E=2 * I * H, stride_w_N=H, stride_w_K=1, stride_pre_TK=2 * I, stride_pre_N=1,
                stride_post_TK=I, stride_post_N=1, BLOCK_M=64, BLOCK_N=bn, BLOCK_K=bk)
    work = dict(flops=2.0 * TK * 2 * I * H, bytes=2.0 * (T * H + E * 2 * I * H + TK * 3 * I) + 12 * TK,
                trips=math.ceil(H / bk), outer=1)
    return ("triton", fn.fn, args, (tiles, math.ceil(I / bn)), nw, ns, work, {})


def _moe_down(T, E, H, I, K, tiles, bn, bk, nw, ns):
    from liger_kernel.ops.fused_moe_kernels import _fused_down_proj_kernel as fn
    bf, i32 = torch.bfloat16, torch.int32
    TK = T * K
    args = dict(post_act_ptr=bf, down_proj_ptr=bf, expert_start_ptr=i32, tile_row_start_ptr=i32, tile_expert_ptr=i32,
                Y_ptr=bf, H_dim=H, I_dim=I, stride_post_TK=I, stride_post_I=1, stride_w_E=H * I, stride_w_H=I,
                stride_w_I=1, stride_Y_TK=H, stride_Y_H=1, BLOCK_M=64, BLOCK_N=bn, BLOCK_K=bk)
    work = dict(flops=2.0 * TK * H * I, bytes=2.0 * (TK * I + E * H * I + TK * H), trips=math.ceil(I / bk), outer=1)
    return ("triton", fn.fn, args, (tiles, math.ceil(H / bn)), nw, ns, work, {})


def _moe_gather(T, H, K, bh, bk, nw):
    from liger_kernel.ops.fused_moe_kernels import _token_gather_weighted_sum_kernel as fn
    bf = torch.bfloat16
    args = dict(Y_ptr=bf, w_ptr=bf, s_rev_ptr=torch.int32, out_ptr=bf, H_dim=H, K_dim=K, stride_Y_TK=H, stride_Y_H=1,
                stride_out_T=H, stride_out_H=1, BLOCK_H=bh, BLOCK_K=bk, w_is_None=False)
    work = dict(flops=0.0, bytes=2.0 * (T * K * H + T * H) + 6 * T * K, trips=math.ceil(K / bk), outer=1)
    return ("triton", fn.fn, args, T, nw, 4, work, {})


def liger_fused_moe_fwd(a):
    """LigerFusedMoEFunction.forward (liger-kernel 0.8.1) as benchmark_fused_moe.py times it (do_bench of the
    forward): routing metadata (histogram kernel, torch sum over tiles, prefix-sum kernel, one .item() host sync,
    scatter kernel), the gather + grouped GEMM with the SwiGLU epilogue (pre- and post-activation stores), the
    grouped down-projection GEMM (K = I = 768) and the weighted token gather. The three autotuned kernels (key
    (H, I) and (H, K): tuned once, at the benchmark's warm-up shape `tuned_T` x `tuned_E`, then reused for the
    whole sweep) are "tuned" specs: the model picks its fastest candidate at the warm-up shape and runs that one
    at the anchor's shape. GEMM grid dim 0 from _expected_m_tiles."""
    from liger_kernel.ops.fused_moe_kernels import (
        _moe_router_histogram_kernel,
        _moe_router_prefix_sum_kernel,
        _moe_router_scatter_kernel,
    )
    s = a.shape
    T, E, H, I, K = s["T"], s["E"], s["H"], s["I"], s["K"]
    i32 = torch.int32
    k_pow2 = 1 << (K - 1).bit_length()
    e_pow2 = 1 << (E - 1).bit_length()
    per_block = max(1, 1024 // k_pow2)
    n_tiles = math.ceil(T / per_block)
    hist = ("triton", _moe_router_histogram_kernel,
            dict(topk_indices_ptr=i32, partial_sum_ptr=i32, T=T, E=E, n_tiles=n_tiles, TOKENS_PER_TILE=per_block,
                 K_POW2=k_pow2, K=K, E_POW2=e_pow2), n_tiles, 4, 3,
            dict(flops=0.0, bytes=4.0 * (T * K + E * n_tiles), trips=1, outer=1), {})
    tile_sum = ("elementwise", 4.0 * (E * n_tiles + E))
    prefix = ("triton", _moe_router_prefix_sum_kernel,
              dict(expert_freq_ptr=i32, expert_freq_offs_ptr=i32, expert_tile_offset_ptr=i32, E=E,
                   partial_sum_ptr=i32, n_tiles=n_tiles, TK=T * K, BLOCK_M=128, BLOCK_N=e_pow2, BLOCK_M_TOKEN=64),
              E + 2, 4, 3, dict(flops=0.0, bytes=4.0 * (2 * E * n_tiles + 3 * E), trips=math.ceil(n_tiles / 128),
                                outer=1), {})
    tiles = _expected_m_tiles(T, E, K)
    scatter = ("triton", _moe_router_scatter_kernel,
               dict(s_scatter_idx_ptr=i32, s_reverse_scatter_idx_ptr=i32, x_gather_idx_ptr=i32,
                    tile_row_start_ptr=i32, tile_expert_ptr=i32, topk_indices_ptr=i32, T=T, partial_sum_ptr=i32,
                    n_tiles=n_tiles, expert_offs_ptr=i32, expert_tile_offset_ptr=i32, K_POW2=k_pow2, K=K,
                    TOKENS_PER_BLOCK=per_block, BLOCK_M_TOKEN=64), n_tiles, 4, 3,
               dict(flops=0.0, bytes=4.0 * (4 * T * K + E * n_tiles + 2 * E + 2 * tiles), trips=1, outer=1), {})
    tT, tE = s["tuned_T"], s["tuned_E"]
    t_tiles = _expected_m_tiles(tT, tE, K)
    cfgs = _moe_gemm_configs()
    gather_cfgs = [(bh, bk, nw) for bh in (64, 128, 256, 512) for bk in (1, 2, 4, 8, 16) for nw in (4, 8)
                   if bk * bh <= 32768]
    up = ("tuned", [_moe_up(tT, tE, H, I, K, t_tiles, *c) for c in cfgs], [_moe_up(T, E, H, I, K, tiles, *c)
                                                                           for c in cfgs])
    down = ("tuned", [_moe_down(tT, tE, H, I, K, t_tiles, *c) for c in cfgs],
            [_moe_down(T, E, H, I, K, tiles, *c) for c in cfgs])
    gather = ("tuned", [_moe_gather(tT, H, K, *c) for c in gather_cfgs], [_moe_gather(T, H, K, *c)
                                                                           for c in gather_cfgs])
    return ("sequence", [hist, tile_sum, prefix, ("sync",), scatter, up, down, gather])


def liger_tvd_fwd(a):
    """LigerTVDLoss forward (reduction batchmean, no labels) as benchmark_tvd.py times it: torch.zeros of the
    per-row loss, _tv_distance_kernel (one program per row, a loop over the vocabulary in BLOCK_SIZE chunks: p and
    q loaded, the gradient stored, the row's loss summed), then the sum of the per-row losses."""
    from liger_kernel.ops.tvd import _tv_distance_kernel as fn
    from liger_kernel.ops.tvd import get_num_warps
    BT, V, f32 = a.shape["BT"], a.shape["V"], torch.float32
    block = min(65536 // 4, 1 << (V - 1).bit_length())
    args = dict(p_ptr=f32, p_stride=V, q_ptr=f32, q_stride=V, loss_ptr=f32, loss_stride=1, grads_ptr=f32,
                grads_stride=V, label_ptr=f32, ignore_index=-100, n_cols=V, scale=1.0 / BT, BLOCK_SIZE=block,
                HAS_LABEL=False, reduction=3)
    work = dict(flops=0.0, bytes=3.0 * BT * V * 4 + 4 * BT, trips=math.ceil(V / block), outer=1)
    return ("sequence", [("elementwise", 4.0 * BT), ("triton", fn, args, BT, get_num_warps(block), 3, work, {}),
                         ("elementwise", 4.0 * BT)])
