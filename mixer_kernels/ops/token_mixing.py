"""Fused token mixing: LayerNorm + token MLP + residual, forward and backward, in Triton.

    y[b] = x[b] + scale[b] * (W2 @ GELU(W1 @ T[b] + b1[:, None]) + b2[:, None]),   T[b] = LN(x[b])  [S, C]

x [B, S, C]; W1 = fc1_weight [DS, S], W2 = fc2_weight [S, DS]; scale = the optional per-sample drop_path
multiplier. Every channel column of T[b] is an independent S-vector.

Two paths (the routing: `_fast_path` / `_large_path`)
-----------------------------------------------------
* The fast path, S <= 256 (every 224 px model) with fp16/bf16 fc weights, or fp32 ones when
  torch.get_float32_matmul_precision() allows tf32 dots ("high"/"medium"): the token-major kernels of
  ops/_token_kernels.py, one program per (sample, channel tile), a self-contained unit of work (no
  transpose is materialised; weights as the wgmma A operand from shared memory, 4 warps, no duplicated
  warpgroup work, zero-padded 16-byte aligned weight copies, a branch-free erf). Forward: `layernorm_stats`
  (fp32 mean/rstd per row), then the fused LN + fc1 + GELU + fc2 + residual kernel; the hidden activation
  [B, DS, C] never reaches device memory. In the backward the dT kernel also writes T, G, GELU(H) and dH in
  the compute dtype ([S or DS, B*C], transient, freed on return) so that the fc weight and bias gradients
  are two cuBLAS GEMMs with K = B*C (`_token_mixing_bwd_tm`: deterministic, no atomics; ~0.46 GB of
  transient buffers at B/16 batch 256). That file's docstring has the layout.
* The large-S GEMM path, every S > 256 (384 px fine-tuning: S = 576; patch 8: S = 784) in every dtype, and
  fp32 with exact ("ieee", the default "highest") dots at every S: "LN(x) once + token-major GEMMs"
  (ops/_token_large_kernels.py; `_token_mixing_fwd_large`, `_token_mixing_bwd_large`). A LayerNorm kernel
  writes T_t = LN(x) token-major, [S, B*C], then plain GEMMs with fused epilogues: GELU(W1 @ T_t + b1),
  and x + scale * (W2 @ A + b2) written straight into [B, S, C]; the backward recomputes T_t (with
  G_t = scale * dy) from the saved statistics, runs H = W1 @ T_t and dA = W2^T @ G_t as one dual GEMM
  whose epilogue writes GELU(H) and dH, then dT = W1^T @ dH, the LayerNorm backward, and the weight
  gradients as cuBLAS GEMMs over K = B*C (as the fast path). The trade-off: the [*, B*C] operands make one
  trip through device memory (transient: ~0.38 GB forward, ~0.76 GB backward at B/16@384 batch 256 bf16)
  instead of recomputing the first matmul per output-token tile as the channel-major tiled kernels that
  this path replaced did (ceil(S/128) times: ~4.9 ms forward there against 0.50 ms here; forward +
  backward 1.82 ms, eager 1.27 / 2.86 ms; H100 model, B/16@384 batch 256 bf16). fp16/bf16 and tf32 run
  wgmma; ieee fp32 runs the same kernels with FMA dots (INPUT_PRECISION="ieee") on small tiles that
  compile without spills on every card (ieee fp32 has no tensor-core form; the channel-major FMA kernels
  that ran it at S <= 256 before spilled on sm_90, and an FMA dot of the fast path's tiles spilled 36 KB).

Backward: the saved tensors are x and the fp32 (mean, rstd) only on both paths; T, H, GELU(H) are
recomputed. With G = scale[b] * dy (the branch gradient), per sample and channel column:
    H = W1 T + b1, A = GELU(H), dA = W2^T G, dH = dA * GELU'(H), dT = W1^T dH
    dW2 = sum_{b,c} G A^T,  dW1 = sum_{b,c} dH T^T,  db2 = sum_{b,c} G,  db1 = sum_{b,c} dH
and dx from `layernorm_backward(dT, x, mean, rstd, norm_weight, dresidual=dy)` (ops/layernorm_backward.py,
deterministic). When no fc weight needs a gradient, the weight-gradient GEMMs (and the buffers they read)
are skipped.

Numerics: dot operands in the compute dtype (the fc weights' dtype: bf16/fp16 use tensor cores, fp32
honours torch.get_float32_matmul_precision()), every accumulation, the LayerNorm, GELU and its
derivative in fp32. Casts to bf16 round to nearest even under the interpreter too (ops/_round.py).
Offsets: the sample offset is 64-bit always; token/channel offsets become 64-bit (OFF64) when a strided
view could address past 2^31 elements (the large-S path's [*, B*C] rows are 64-bit always).

Tiles on GPU (the tables in ops/_token_kernels.py and ops/_token_large_kernels.py say why each): every
kernel autotunes over its table through ops/_tuning (the entries that fit the card; keyed on the shape,
not the batch, and the dtypes; the first call of a shape benchmarks them: warm up before CUDA-graph
capture; MIXER_KERNELS_AUTOTUNE=0 takes the first entry that fits). Within a process every kernel is
bitwise deterministic; across processes an autotuner may pick another config (same math, other fp32
summation order) unless MIXER_KERNELS_AUTOTUNE=0. Under the interpreter every kernel runs one config
(multi-config autotune crashes there).
"""

import torch
import triton

from .._config import empty, input_precision, triton_interpret
from . import _guard, _tuning
from . import _token_kernels as tk
from . import _token_large_kernels as lk
from ._token_kernels import _token_mixing_bwd_dt_tm_kernel, _token_mixing_fwd_tm_kernel
from ._tuning import LAUNCH_OPTIONS
from .layernorm_backward import layernorm_backward
from .layernorm_stats import layernorm_stats

MAX_RESIDENT_S = 256      # S above this takes the large-S path (ops/_token_large_kernels.py)


# ------------------------------------------------------------------------------------------------
# Routing and launch helpers

_AUTOTUNED: dict = {}


def _bench(kernel_call, quantiles):
    # As the channel GEMMs' autotuner (ops/_channel_gemm.py): 5 ms warm-up, 25 ms of repetitions per
    # config instead of Triton's default 25 + 100 ms, so first-call tuning is mostly compilation.
    import triton.testing
    return triton.testing.do_bench(kernel_call, warmup=5, rep=25, quantiles=quantiles)


def _fast_path(S: int, dtype: torch.dtype, precision: str | None = None) -> bool:
    """The token-major resident kernels of ops/_token_kernels.py and the weight gradients from GEMMs:
    S <= 256 with fp16/bf16 fc weights, or fp32 ones with tf32 dots (torch.get_float32_matmul_precision()
    "high" or "medium"; `precision`, when given, stands for _config.input_precision's answer). Everything
    else takes the large-S path (_large_path): S > 256, and fp32 with exact ("ieee") dots at every S (ieee
    fp32 has no tensor-core form, and an FMA dot of the token-major tiles spilled 36 KB)."""
    if S > MAX_RESIDENT_S:
        return False
    if dtype in (torch.float16, torch.bfloat16):
        return True
    return dtype == torch.float32 and (precision or input_precision(dtype)) == "tf32"


def _large_path(S: int, dtype: torch.dtype, precision: str | None = None) -> bool:
    """The large-S path of ops/_token_large_kernels.py (LayerNorm once into a token-major copy, then GEMMs):
    every launch the fast path does not take: every S > 256, in every dtype the Triton path takes (fp16/bf16
    and tf32: tensor cores), and ieee fp32 at every S (FMA dots on small tiles, spill-free on every card)."""
    return not _fast_path(S, dtype, precision)


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
        INPUT_PRECISION=input_precision(cdt), **meta, **LAUNCH_OPTIONS)


def _large_ln(x, mean, rstd, norm_weight, norm_bias, dy, scale, t, g, eps, *, stats, has_scale):
    """One launch of _token_large_ln_kernel: T_t (and G_t) from x (and dy)."""
    B, S, C = x.shape
    dy = x if dy is None else dy
    meta = lk.ln_meta(C)
    lk._token_large_ln_kernel[(triton.cdiv(B * S, meta["BLOCK_M"]),)](
        X=x, Mean=mean, Rstd=rstd, NW=norm_weight, NB=norm_bias, DY=dy, Scale=scale, T=t,
        G=t if g is None else g, M=B * S, S=S, C=C, N=B * C, s_xb=x.stride(0), s_xs=x.stride(1), s_xc=x.stride(2),
        s_gb=dy.stride(0), s_gs=dy.stride(1), s_gc=dy.stride(2), eps=eps, STATS=stats, WRITE_G=g is not None,
        HAS_SCALE=has_scale, INTERPRET=triton_interpret(), **meta, **LAUNCH_OPTIONS)


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
            INPUT_PRECISION=input_precision(cdt), **meta, **LAUNCH_OPTIONS)
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
    if _large_path(S, fc1_weight.dtype):   # its LayerNorm kernel computes the statistics
        w1, b1, w2, b2 = (t.contiguous() for t in (fc1_weight, fc1_bias, fc2_weight, fc2_bias))
        return _token_mixing_fwd_large(x, norm_weight.contiguous(), norm_bias.contiguous(), w1, b1, w2, b2, eps,
                                       approx_tanh, sample_scale)
    # the fast path: S <= 256, fp16/bf16 or tf32
    mean, rstd = layernorm_stats(x, eps)
    out = empty((B, S, C), device=x.device, dtype=x.dtype)
    if B * S * C == 0:
        return out, mean, rstd
    w1, b1, w2, b2 = (t.contiguous() for t in (fc1_weight, fc1_bias, fc2_weight, fc2_bias))
    norm_weight, norm_bias = norm_weight.contiguous(), norm_bias.contiguous()   # [C] views may be strided
    scale = _scale_arg(sample_scale, mean)
    BS, dsp = tk.block_s(S), tk.ds_pad(DS)
    w1p, w2tp = tk.padded_weights(w1, w2, BS, dsp)
    kernel, meta = _tm_kernel_and_meta("fwd", _token_mixing_fwd_tm_kernel, S, C, DS, w1.dtype)
    kernel[lambda m: (B, triton.cdiv(C, m["BLOCK_C"]))](
        x, mean, rstd, norm_weight, norm_bias, w1p, b1, w2tp, b2, scale, out, S, C, DS, dsp, *x.stride(),
        HAS_SCALE=sample_scale is not None, APPROX_TANH=approx_tanh, OFF64=_off64(x, out),
        INTERPRET=triton_interpret(), INPUT_PRECISION=input_precision(w1.dtype), BLOCK_S=BS, GLU=0, **meta,
        **LAUNCH_OPTIONS)
    return out, mean, rstd


def token_mixing_bwd(dy, x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, eps,
                     approx_tanh, sample_scale, weight_grads=True):
    """Gradients (dx, dnorm_weight, dnorm_bias, dfc1_weight, dfc1_bias, dfc2_weight, dfc2_bias), each in
    its input's dtype; the fc ones are None when weight_grads is False."""
    S = x.shape[1]
    w1, b1, w2 = (t.contiguous() for t in (fc1_weight, fc1_bias, fc2_weight))
    cdt = w1.dtype
    norm_weight, norm_bias = norm_weight.contiguous(), norm_bias.contiguous()   # [C] views may be strided
    scale = _scale_arg(sample_scale, mean)
    if _fast_path(S, cdt):
        return _token_mixing_bwd_tm(dy, x, mean, rstd, norm_weight, norm_bias, w1, b1, w2, approx_tanh, sample_scale,
                                    scale, weight_grads, fc1_bias.dtype)
    return _token_mixing_bwd_large(dy, x, mean, rstd, norm_weight, norm_bias, w1, b1, w2, approx_tanh, sample_scale,
                                   scale, weight_grads, fc1_bias.dtype)


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
            INPUT_PRECISION=input_precision(cdt), BLOCK_S=BS, GLU=0, **meta, **LAUNCH_OPTIONS)
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


def fake_fwd_outputs(x):
    """The fake forward outputs of a token op (this file's and ops/gmixer_token_mixing.py's): out, mean, rstd."""
    B, S, C = x.shape
    stats = x.new_empty((B * S,), dtype=torch.float32)
    return x.new_empty((B, S, C)), stats, torch.empty_like(stats)


def fake_bwd_outputs(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, weight_grads):
    """The fake backward outputs of a token op: dx, dnw, dnb and, with weight_grads, dW1, db1, dW2, db2."""
    out = [torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(norm_weight),
           torch.empty_like(norm_bias)]
    if weight_grads:
        S = x.shape[1]
        out += [torch.empty_like(fc1_weight, memory_format=torch.contiguous_format), torch.empty_like(fc1_bias),
                torch.empty_like(fc2_weight, memory_format=torch.contiguous_format),
                fc1_weight.new_empty((S,))]
    return out


def input_grads(grads, weight_grads: bool, fc2_bias_dtype):
    """dx, dnw, dnb, dW1, db1, dW2, db2 from a backward op's list (None for the weights without weight_grads),
    db2 in fc2's bias dtype."""
    if not weight_grads:
        grads = list(grads) + [None] * 4
    dx, dnw, dnb, dw1, db1, dw2, db2 = grads
    if db2 is not None:
        db2 = db2.to(fc2_bias_dtype)
    return dx, dnw, dnb, dw1, db1, dw2, db2


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
    return fake_fwd_outputs(x)


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
    return fake_bwd_outputs(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, weight_grads)


def _setup_context(ctx, inputs, output):
    x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps, approx_tanh, sample_scale = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, sample_scale)
    ctx.eps, ctx.approx_tanh = eps, approx_tanh
    ctx.fc2_bias_dtype = fc2_bias.dtype
    ctx.mark_non_differentiable(mean, rstd)


def _backward(ctx, dy, _dmean, _drstd):
    x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, sample_scale = ctx.saved_tensors
    weight_grads = any(ctx.needs_input_grad[3:7])
    grads = _token_mixing_bwd_op(dy, x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight,
                                 ctx.eps, ctx.approx_tanh, sample_scale, weight_grads)
    return (*input_grads(grads, weight_grads, ctx.fc2_bias_dtype), None, None, None)


_token_mixing_fwd_op.register_autograd(_backward, setup_context=_setup_context)
_guard.guard_autograd(_token_mixing_fwd_op, "mixer_kernels.token_mixing")
_guard.guard_autograd(_token_mixing_bwd_op, "mixer_kernels.token_mixing", backward=True)


def token_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps: float = 1e-6,
                 approximate: str = "none", sample_scale: torch.Tensor | None = None) -> torch.Tensor:
    """The Triton path of `mixer_kernels.token_mixing` (inputs already checked): x + scale * token MLP.

    Paths: S <= 256 with fp16/bf16 or tf32 runs the resident token-major kernels (hidden activation on chip
    only); S > 256, and ieee fp32 at every S, the large-S path (LayerNorm once into a token-major copy, then
    GEMMs: tensor cores, FMA dots for ieee fp32). See the module docstring."""
    out, _, _ = _token_mixing_fwd_op(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                                     float(eps), approximate == "tanh", sample_scale)
    return out
