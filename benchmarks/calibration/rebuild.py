"""Per anchor, what the speed model needs to model it (one function per `Anchor.rebuild` name).

A spec is one of
    ("triton", fn, args, grid, num_warps, num_stages, work, options)   one Triton launch (model_triton_launch)
    [spec, ...]                                                        an autotuner's candidates: the fastest counts
    ("gemm", M, N, K, dtype, batch)                                    one cuBLAS matrix product (model_gemm)
    ("elementwise", nbytes)                                            one memory-bound ATen kernel (model_elementwise)
    ("sequence", [spec, ...])                                          launches in a row: their times add
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
