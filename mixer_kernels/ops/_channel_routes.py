"""Each channel GEMM as a choice between our fused kernel (ops/_channel_gemm.py, first: what
MIXER_KERNELS_AUTOTUNE=0, the CPU and the speed model run) and the composition it replaces: a cuBLAS
GEMM (torch.addmm / torch.mm) plus a Triton pass for the epilogue cuBLAS cannot fuse. ops/_choice.py
measures them on the first call of a shape on a GPU and keeps the faster (cached on disk with Triton's
autotuning). ops/channel_mixing.py calls the choices below, never the kernels directly.

  choice                 ours                                   composition
  channel.fc1            _channel_hidden_kernel (fwd)           addmm(b1, y, W1^T) -> z; _gelu_pass_kernel: GELU(z)
                                                                (gMixer GLU: _glu_pass_kernel: x1 * SiLU(x2))
  channel.fc2            _channel_out_kernel (fwd)              addmm(b2, act, W2^T) -> h; _residual_pass_kernel:
                                                                x + s[b] * h
  channel.hidden_bwd     _channel_hidden_kernel (BACKWARD)      mm(g, W2) -> dh; _hidden_bwd_pass_kernel: the same
                                                                epilogue (s * dh * GELU'(z), s * GELU(z), db1 partials)
                                                                (GLU: _glu_bwd_pass_kernel, the GLU epilogue's math)
  channel.dn             _channel_out_kernel (bwd)              mm(dz, W1)
  channel.wgrad          _channel_wgrad_kernel                  mm(P^T, Q) (or mm(Q^T, P) when transposed)

Numerics of the compositions: the cuBLAS GEMM rounds its output to the compute dtype before the pass
(eager PyTorch does the same: linear, then GELU / the scale / the residual), and the passes share the
kernels' epilogue code (_gelu.py, _hidden_bwd_epilogue), so both alternatives meet the same accuracy
tests. Both are deterministic: cuBLAS with fixed shapes on one GPU, the passes and the fixed-order sums.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._config import empty, triton_interpret
from . import _channel_gemm as ours
from ._act import glu, glu_and_grad
from ._channel_gemm import _hidden_bwd_epilogue, glu_of, m_bucket
from ._choice import Choice
from ._gelu import gelu_fast
from ._registry import CompileCase, Work, nbytes, register_kernel
from ._round import to_dtype
from ._tuning import LAUNCH_OPTIONS

# --------------------------------------------------------------------------------------------------
# Passes (elementwise, after a cuBLAS GEMM)

_PASS_BLOCK = (32, 32) if triton_interpret() else (64, 128)     # (BLOCK_M, BLOCK_N) of the 2-D passes
_GELU_BLOCK = 1024


@triton.jit
def _gelu_pass_kernel(
    Z,               # [M*DC] pre-activation z (compute dtype), contiguous
    Act,             # [M*DC] output GELU(z), compute dtype
    N,               # M*DC elements
    APPROX_TANH: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    z = tl.load(Z + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Act + offs, to_dtype(gelu_fast(z, APPROX_TANH, INTERPRET), Act.dtype.element_ty, INTERPRET), mask=mask)


@triton.jit
def _residual_pass_kernel(
    H,               # [M, C] branch output fc2(act) + b2 (compute dtype), contiguous
    Scale,           # [B] per-sample branch scale (HAS_SCALE)
    Res,             # [B, S, C] residual x, any strides
    Out,             # [M, C] contiguous output, x's dtype
    M, S,            # rows (B*S), tokens per sample
    N_SIZE,          # C
    stride_rb, stride_rs, stride_rc,
    HAS_SCALE: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < M
    mask = rmask[:, None] & (cols < N_SIZE)[None, :]
    rows64 = rows.to(tl.int64)
    h = tl.load(H + rows64[:, None] * N_SIZE + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_SCALE:
        h = h * tl.load(Scale + rows // S, mask=rmask, other=0.0).to(tl.float32)[:, None]
    r_row = (rows // S).to(tl.int64) * stride_rb + (rows % S).to(tl.int64) * stride_rs
    h += tl.load(Res + r_row[:, None] + cols[None, :].to(tl.int64) * stride_rc, mask=mask, other=0.0).to(tl.float32)
    tl.store(Out + rows64[:, None] * N_SIZE + cols[None, :], to_dtype(h, Out.dtype.element_ty, INTERPRET), mask=mask)


@triton.jit
def _hidden_bwd_pass_kernel(
    DH,              # [M, DC] grad_out @ fc2_weight (compute dtype), contiguous
    Scale,           # [B] per-sample branch scale (HAS_SCALE)
    Z,               # [M, DC] pre-activation
    Act,             # [M, DC] output s * GELU(z) (WRITE_ACT)
    DZ,              # [M, DC] output dz
    DB,              # [cdiv(M, BLOCK_M), DC] fp32 output (WRITE_DB): row tile's column sums of dz
    M, S,            # rows (B*S), tokens per sample
    N_SIZE,          # DC
    HAS_SCALE: tl.constexpr, WRITE_ACT: tl.constexpr, WRITE_DB: tl.constexpr,
    APPROX_TANH: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < M
    rows64 = rows.to(tl.int64)
    dh = tl.load(DH + rows64[:, None] * N_SIZE + cols[None, :], mask=rmask[:, None] & (cols < N_SIZE)[None, :],
                 other=0.0).to(tl.float32)
    if HAS_SCALE:
        row_scale = tl.load(Scale + rows // S, mask=rmask, other=0.0).to(tl.float32)
    else:
        row_scale = tl.zeros([BLOCK_M], dtype=tl.float32)
    _hidden_bwd_epilogue(dh, Z, DZ, Act, DB, pid_m, row_scale, rows64, rmask, cols, N_SIZE, HAS_SCALE, WRITE_ACT,
                         WRITE_DB, APPROX_TANH, INTERPRET)


@triton.jit
def _glu_pass_kernel(
    Z,               # pre-activation holding both halves: x1 of (row r, column n) at _glu_offsets, x2 at + HALF
    DG,              # BACKWARD: [R, N] contiguous gradient of the gate g
    Scale,           # [cdiv(R, SCALE_ROWS)] per-row-group scale (HAS_SCALE: drop_path's s[b], rows r of sample r // S)
    G,               # [R, N] contiguous output: g (forward) or s * g (BACKWARD and WRITE_G)
    DZ,              # BACKWARD: output laid out as Z: s * dx1 at x1's offset, s * dx2 at x2's
    DB,              # BACKWARD and WRITE_DB: [cdiv(R, BLOCK_M), 2N] fp32 row tile column sums of dx1 | dx2
    R, N,            # rows, columns of g
    RH,              # rows per group (Z's row r lies in group r // RH at row r % RH)
    SCALE_ROWS,      # rows per Scale entry (S)
    s_zg, s_zr,      # Z strides of a group, of a row (its columns are contiguous)
    HALF,            # offset of x2 from x1
    GATE: tl.constexpr, BACKWARD: tl.constexpr, HAS_SCALE: tl.constexpr, WRITE_G: tl.constexpr,
    WRITE_DB: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The gate of gMixer's GLU after a cuBLAS GEMM, and its backward: the composition's pass for the channel
    half (Z [M, 2H] rows: RH = M, s_zr = 2H, HALF = H, N = H) and for the token half's large-S path (Z
    [B, DS, C]: rows r = (b, j < H), RH = H, s_zg = DS*C, s_zr = C, HALF = H*C, N = C). The math is the
    kernels' epilogues' (ops/_act.py)."""
    pid_m = tl.program_id(0)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < R
    cmask = cols < N
    mask = rmask[:, None] & cmask[None, :]
    rows64 = rows.to(tl.int64)
    z1 = Z + ((rows64 // RH) * s_zg + (rows64 % RH) * s_zr)[:, None] + cols[None, :]
    x1 = tl.load(z1, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(z1 + HALF, mask=mask, other=0.0).to(tl.float32)
    goffs = rows64[:, None] * N + cols[None, :]
    if BACKWARD:
        dg = tl.load(DG + goffs, mask=mask, other=0.0).to(tl.float32)
        g, dx1, dx2 = glu_and_grad(x1, x2, dg, GATE, INTERPRET)
        if HAS_SCALE:
            s = tl.load(Scale + rows // SCALE_ROWS, mask=rmask, other=0.0).to(tl.float32)[:, None]
            g, dx1, dx2 = g * s, dx1 * s, dx2 * s
        dz1 = DZ + ((rows64 // RH) * s_zg + (rows64 % RH) * s_zr)[:, None] + cols[None, :]
        dx1 = to_dtype(dx1, DZ.dtype.element_ty, INTERPRET)
        dx2 = to_dtype(dx2, DZ.dtype.element_ty, INTERPRET)
        tl.store(dz1, dx1, mask=mask)
        tl.store(dz1 + HALF, dx2, mask=mask)
        if WRITE_G:
            tl.store(G + goffs, to_dtype(g, G.dtype.element_ty, INTERPRET), mask=mask)
        if WRITE_DB:
            db = DB + pid_m.to(tl.int64) * (2 * N) + cols
            tl.store(db, tl.sum(tl.where(mask, dx1.to(tl.float32), 0.0), axis=0), mask=cmask)
            tl.store(db + N, tl.sum(tl.where(mask, dx2.to(tl.float32), 0.0), axis=0), mask=cmask)
    else:
        tl.store(G + goffs, to_dtype(glu(x1, x2, GATE, INTERPRET), G.dtype.element_ty, INTERPRET), mask=mask)


def glu_gate(z, R, N, RH, s_zg, s_zr, half, gate):
    """g [R, N] (z's dtype) of the halves in z (layout as _glu_pass_kernel's docstring)."""
    g = empty((R, N), device=z.device, dtype=z.dtype)
    if R * N:
        _glu_pass_kernel[_grid_pass(R, N)](
            z, z, z, g, z, z, R, N, RH, 1, s_zg, s_zr, half, GATE=gate, BACKWARD=False, HAS_SCALE=False,
            WRITE_G=True, WRITE_DB=False, INTERPRET=triton_interpret(), BLOCK_M=_PASS_BLOCK[0],
            BLOCK_N=_PASS_BLOCK[1], **LAUNCH_OPTIONS)
    return g


def glu_gate_bwd(dg, z, R, N, RH, s_zg, s_zr, half, gate, *, scale=None, scale_rows=1, write_g=False,
                 write_db=False):
    """(dz laid out as z, s * g [R, N] or None, fp32 column sums of dz [2N] or None) from dg [R, N]."""
    dz = empty(z.shape, device=z.device, dtype=dg.dtype)
    g = empty((R, N), device=z.device, dtype=dg.dtype) if write_g else None
    dbp = torch.zeros((triton.cdiv(R, _PASS_BLOCK[0]), 2 * N), device=z.device, dtype=torch.float32) \
        if write_db else None
    if R * N:
        _glu_pass_kernel[_grid_pass(R, N)](
            z, dg, scale if scale is not None else dg, g if write_g else dz, dz, dbp if write_db else dz,
            R, N, RH, scale_rows, s_zg, s_zr, half, GATE=gate, BACKWARD=True, HAS_SCALE=scale is not None,
            WRITE_G=write_g, WRITE_DB=write_db, INTERPRET=triton_interpret(), BLOCK_M=_PASS_BLOCK[0],
            BLOCK_N=_PASS_BLOCK[1], **LAUNCH_OPTIONS)
    return dz, g, (dbp.sum(0) if write_db else None)


def _grid_pass(M, N):
    bm, bn = _PASS_BLOCK
    return (triton.cdiv(M, bm), triton.cdiv(N, bn))


def _rows(t):
    """[B, S, C] -> [M, C] (a view when the rows are evenly spaced, else a copy)."""
    return t.reshape(-1, t.shape[-1])


# --------------------------------------------------------------------------------------------------
# The compositions: same arguments and results as the launchers of ops/_channel_gemm.py


def fc1_composed(y, fc1_weight, fc1_bias, *, approximate, write_z: bool, write_act: bool):
    dt = fc1_weight.dtype
    z = torch.addmm(fc1_bias, _rows(y).to(dt), fc1_weight.t())
    act = None
    gate = glu_of(approximate)
    if gate:
        M, H = z.shape[0], z.shape[1] // 2
        act = glu_gate(z, M, H, M, 0, 2 * H, H, gate) if write_act else None
        return (z if write_z else None), act
    if write_act:
        act = empty(z.shape, device=z.device, dtype=dt)
        _gelu_pass_kernel[(triton.cdiv(z.numel(), _GELU_BLOCK),)](
            z, act, z.numel(), APPROX_TANH=approximate == "tanh", INTERPRET=triton_interpret(), BLOCK=_GELU_BLOCK,
            **LAUNCH_OPTIONS)
    return (z if write_z else None), act


def fc2_composed(act, x, fc2_weight, fc2_bias, sample_scale):
    B, S, C = x.shape
    M = act.shape[0]
    h = torch.addmm(fc2_bias, act, fc2_weight.t())
    out = empty((B, S, C), device=x.device, dtype=x.dtype)
    _residual_pass_kernel[_grid_pass(M, C)](
        h, sample_scale if sample_scale is not None else h, x, out, M, S, C, *x.stride(),
        HAS_SCALE=sample_scale is not None, INTERPRET=triton_interpret(),
        BLOCK_M=_PASS_BLOCK[0], BLOCK_N=_PASS_BLOCK[1], **LAUNCH_OPTIONS)
    return out


def hidden_bwd_composed(grad_out, sample_scale, fc2_weight, z, *, approximate, write_act=True, write_db=True):
    M, DC = z.shape
    dt = fc2_weight.dtype
    dh = torch.mm(_rows(grad_out).to(dt), fc2_weight)
    gate = glu_of(approximate)
    if gate:
        H = DC // 2
        return glu_gate_bwd(dh, z, M, H, M, 0, DC, H, gate, scale=sample_scale, scale_rows=grad_out.shape[1],
                            write_g=write_act, write_db=write_db)
    dz = empty((M, DC), device=z.device, dtype=dt)
    act = empty((M, DC), device=z.device, dtype=dt) if write_act else None
    dbp = torch.zeros((triton.cdiv(M, _PASS_BLOCK[0]), DC), device=z.device, dtype=torch.float32) \
        if write_db else dz
    _hidden_bwd_pass_kernel[_grid_pass(M, DC)](
        dh, sample_scale if sample_scale is not None else dh, z, act if write_act else dz, dz, dbp,
        M, grad_out.shape[1], DC, HAS_SCALE=sample_scale is not None, WRITE_ACT=write_act, WRITE_DB=write_db,
        APPROX_TANH=approximate == "tanh", INTERPRET=triton_interpret(),
        BLOCK_M=_PASS_BLOCK[0], BLOCK_N=_PASS_BLOCK[1], **LAUNCH_OPTIONS)
    return dz, act, (dbp.sum(0) if write_db else None)


def dn_composed(dz, fc1_weight, B, S):
    return torch.mm(dz, fc1_weight).view(B, S, fc1_weight.shape[1])


def wgrad_composed(p, q, *, transpose_out: bool, out_dtype):
    p2 = _rows(p).to(q.dtype)
    dw = torch.mm(q.t(), p2) if transpose_out else torch.mm(p2.t(), q)
    return dw.to(out_dtype)


# --------------------------------------------------------------------------------------------------
# The choices (keys: the sizes other than M, M's bucket, dtypes and flags; _choice adds the GPU)


def _dt(t):
    return str(t.dtype)[6:] if t is not None else "-"


def _fc1_key(y, fc1_weight, fc1_bias, *, approximate, write_z, write_act):
    return (*fc1_weight.shape, m_bucket(y.shape[0] * y.shape[1]), _dt(y), _dt(fc1_weight),
            torch.get_float32_matmul_precision(), approximate, write_z, write_act), y


def _fc2_key(act, x, fc2_weight, fc2_bias, sample_scale):
    return (*fc2_weight.shape, m_bucket(act.shape[0]), _dt(act), _dt(x), torch.get_float32_matmul_precision(),
            sample_scale is not None), act


def _hidden_bwd_key(grad_out, sample_scale, fc2_weight, z, *, approximate, write_act=True, write_db=True):
    return (*fc2_weight.shape, m_bucket(z.shape[0]), _dt(grad_out), _dt(fc2_weight),
            torch.get_float32_matmul_precision(), approximate, sample_scale is not None, write_act, write_db), z


def _dn_key(dz, fc1_weight, B, S):
    return (*fc1_weight.shape, m_bucket(dz.shape[0]), _dt(dz), torch.get_float32_matmul_precision()), dz


def _wgrad_key(p, q, *, transpose_out, out_dtype):
    return (p.shape[-1], q.shape[1], m_bucket(q.shape[0]), _dt(p), _dt(q), torch.get_float32_matmul_precision(),
            transpose_out), q


fc1 = Choice("channel.fc1", [("triton", ours.hidden_forward), ("cublas+pass", fc1_composed)], _fc1_key)
fc2 = Choice("channel.fc2", [("triton", ours.out_forward), ("cublas+pass", fc2_composed)], _fc2_key)
hidden_bwd = Choice("channel.hidden_bwd", [("triton", ours.hidden_backward), ("cublas+pass", hidden_bwd_composed)],
                    _hidden_bwd_key)
dn = Choice("channel.dn", [("triton", ours.out_backward), ("cublas", dn_composed)], _dn_key)
wgrad = Choice("channel.wgrad", [("triton", ours.wgrad), ("cublas", wgrad_composed)], _wgrad_key)


# --------------------------------------------------------------------------------------------------
# Registry: one B/16 bf16 compile case per pass (no dots; they run only when measured faster on a GPU)

_B16 = (196, 768, 3072)


def _pass_cases():
    S, C, DC = _B16
    M = 256 * S
    bm, bn = 64, 128
    bf = torch.bfloat16
    return {
        "gelu": [CompileCase("B/16 bf16", dict(Z=bf, Act=bf, N=M * DC, APPROX_TANH=False, INTERPRET=False,
                                               BLOCK=_GELU_BLOCK))],
        "res": [CompileCase("B/16 bf16 drop_path", dict(H=bf, Scale=bf, Res=bf, Out=bf, M=M, S=S, N_SIZE=C,
                                                        stride_rb=S * C, stride_rs=C, stride_rc=1, HAS_SCALE=True,
                                                        INTERPRET=False, BLOCK_M=bm, BLOCK_N=bn))],
        "glu": [CompileCase(f"gmixer_24 {mode} bf16", dict(
            Z=bf, DG=bf, Scale=bf, G=bf, DZ=bf, DB=torch.float32, R=256 * 196, N=768, RH=256 * 196, SCALE_ROWS=196,
            s_zg=0, s_zr=1536, HALF=768, GATE=1, BACKWARD=mode != "fwd", HAS_SCALE=mode != "fwd",
            WRITE_G=True, WRITE_DB=mode != "fwd", INTERPRET=False, BLOCK_M=bm, BLOCK_N=bn))
            for mode in ("fwd", "bwd drop_path")],
        "hbwd": [CompileCase("B/16 bf16 drop_path", dict(DH=bf, Scale=bf, Z=bf, Act=bf, DZ=bf, DB=torch.float32,
                                                         M=M, S=S, N_SIZE=DC, HAS_SCALE=True, WRITE_ACT=True,
                                                         WRITE_DB=True, APPROX_TANH=False, INTERPRET=False,
                                                         BLOCK_M=bm, BLOCK_N=bn))],
    }


def _gelu_work(a) -> Work:
    return Work(0.0, 2 * a["N"] * a["Z"].element_size(), 1)


def _res_work(a) -> Work:
    return Work(0.0, 3 * a["M"] * a["N_SIZE"] * a["Out"].element_size(), 1)


def _hbwd_work(a) -> Work:
    mn = a["M"] * a["N_SIZE"] * a["Z"].element_size()
    return Work(0.0, (4 if a["WRITE_ACT"] else 3) * mn + (nbytes(a["DB"]) if a["WRITE_DB"] else 0), 1)


register_kernel(_gelu_pass_kernel, lambda: _pass_cases()["gelu"], _gelu_work)
register_kernel(_residual_pass_kernel, lambda: _pass_cases()["res"], _res_work)
register_kernel(_hidden_bwd_pass_kernel, lambda: _pass_cases()["hbwd"], _hbwd_work)


def _glu_work(a) -> Work:
    """Forward: z's two halves read, g written (3 R*N); backward: z and dg read, dz (2) and s * g written."""
    rn = a["R"] * a["N"] * a["Z"].element_size()
    if not a["BACKWARD"]:
        return Work(0.0, 3 * rn, 1)
    return Work(0.0, (5 + (1 if a["WRITE_G"] else 0)) * rn + (nbytes(a["DB"]) if a["WRITE_DB"] else 0), 1)


register_kernel(_glu_pass_kernel, lambda: _pass_cases()["glu"], _glu_work)
