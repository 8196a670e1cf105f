"""gMixer's token half, fused: LayerNorm + the SiLU-gated GLU MLP along S + residual, forward and backward.

    y[b] = x[b] + scale[b] * (W2 @ g(W1 @ T[b] + b1[:, None]) + b2[:, None]),   T[b] = LN(x[b])  [S, C]
    g(h) = x1 * SiLU(x2) (timm's gate_last) or SiLU(x1) * x2,  x1, x2 = h[:H], h[H:]  (h.chunk(2) along DS)

x [B, S, C]; W1 = fc1_weight [DS, S] (DS = 2H; gmixer_24: DS = C = 384, H = 192), W2 = fc2_weight [S, H]
(timm's GluMlp with act_layer=nn.SiLU, mlp_ratio 1.0 for the tokens).

Two paths
---------
* The fast path, S <= 256 (every gMixer at 224 px: S = 196) with fp16/bf16 fc weights: the token-major
  kernels of ops/_token_kernels.py with GLU as a parameter (their docstring has the layout). Forward: the
  row statistics, then one kernel per (sample, 32 channels): per hidden chunk h, two dots over fc1 rows h and
  h + H on the resident LN(x) tile, the gate in the epilogue, GEMM 2 with fc2: the hidden activations
  ([B, DS, C] and the gate [B, H, C]) never reach device memory. Backward: the dT kernel (recomputes both
  halves; with weight gradients it writes T, G, g and [dX1; dX2] transiently, [S or DS, B*C]), the LayerNorm
  backward, two cuBLAS GEMMs (dW1|db1 = dX @ [T; 1]^T, dW2|db2 = G @ [g; 1]^T), as token mixing's fast path.
  Only x and the fp32 row statistics are saved.
* The large-S path for now, S > 256, and fp32 fc weights (the fp32 GLU tiles spilled: ops/_token_kernels.py,
  GLU_CONFIGS): a composition, honest and plainly not fused: PyTorch's LayerNorm, fc1 as torch.matmul
  (cuBLAS) to h [B, DS, C] in device memory, our Triton gate kernel (_glu_pass_kernel of
  ops/_channel_routes.py, as the custom op `mixer_kernels::glu_gate` with its backward kernel), fc2 as
  torch.matmul, the residual; autograd differentiates it (saves h, the gate and LN(x)). A tiled fused
  path for S > 256 would follow token mixing's (ops/token_mixing.py) once that one is rebuilt.

Numerics: dot operands in the compute dtype (the fc weights'), accumulation, the LayerNorm, the gate and
its derivative in fp32 (ops/_act.py: branch-free sigmoid); the weight-gradient GEMMs accumulate in fp32.
Deterministic (no atomics; fixed-order sums).
"""
# No `from __future__ import annotations`: torch.library infers the op schemas from real annotation objects.
from typing import Optional

import torch
import triton

from .._config import empty, input_precision, triton_interpret
from . import _guard, _tuning
from . import _token_kernels as tk
from ._act import glu_mode
from ._channel_routes import glu_gate, glu_gate_bwd
from ._token_kernels import _token_mixing_bwd_dt_tm_kernel, _token_mixing_fwd_tm_kernel
from ._tuning import LAUNCH_OPTIONS
from .layernorm_backward import layernorm_backward
from .layernorm_stats import layernorm_stats
from .token_mixing import MAX_RESIDENT_S, _off64, _scale_arg, fake_bwd_outputs, fake_fwd_outputs, input_grads

_OP = "mixer_kernels::gmixer_token_mixing"


def fast_path(S: int, dtype: torch.dtype) -> bool:
    """The fused token-major kernels: S <= 256 and fp16/bf16 fc weights (else the composition)."""
    return S <= MAX_RESIDENT_S and dtype in (torch.float16, torch.bfloat16)


# ------------------------------------------------------------------------------------------------
# Launchers of the fast path


def gmixer_token_mixing_fwd(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps, gate,
                            sample_scale):
    """(out, mean, rstd): out [B, S, C] in x's dtype, contiguous; fp32 stats [B*S] for the backward."""
    B, S, C = x.shape
    H = fc1_weight.shape[0] // 2
    mean, rstd = layernorm_stats(x, eps)
    out = empty((B, S, C), device=x.device, dtype=x.dtype)
    if B * S * C == 0:
        return out, mean, rstd
    w1, b1, w2, b2 = (t.contiguous() for t in (fc1_weight, fc1_bias, fc2_weight, fc2_bias))
    norm_weight, norm_bias = norm_weight.contiguous(), norm_bias.contiguous()
    scale = _scale_arg(sample_scale, mean)
    BS, dsp = tk.block_s(S), tk.ds_pad(H)
    w1p, w2tp = tk.padded_glu_weights(w1, w2, BS, dsp)
    args = (x, mean, rstd, norm_weight, norm_bias, w1p, b1, w2tp, b2, scale, out, S, C, H, dsp, *x.stride())
    kwargs = dict(HAS_SCALE=sample_scale is not None, APPROX_TANH=False, OFF64=_off64(x, out),
                  INTERPRET=triton_interpret(), INPUT_PRECISION=input_precision(w1.dtype), BLOCK_S=BS, GLU=gate,
                  **LAUNCH_OPTIONS)
    meta = _tuning.pick(_token_mixing_fwd_tm_kernel, tk.glu_table("fwd", S, C, H, w1.dtype), (S, C, H),
                        x.device, args, kwargs)
    _token_mixing_fwd_tm_kernel[(B, triton.cdiv(C, meta["BLOCK_C"]))](*args, **kwargs, **meta)
    return out, mean, rstd


def gmixer_token_mixing_bwd(dy, x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, gate,
                            sample_scale, weight_grads):
    """Gradients (dx, dnorm_weight, dnorm_bias, dfc1_weight, dfc1_bias, dfc2_weight, dfc2_bias); the fc ones
    None when weight_grads is False."""
    B, S, C = x.shape
    DS = fc1_weight.shape[0]
    H = DS // 2
    K = B * C
    w1, b1, w2 = (t.contiguous() for t in (fc1_weight, fc1_bias, fc2_weight))
    cdt = w1.dtype
    norm_weight, norm_bias = norm_weight.contiguous(), norm_bias.contiguous()
    scale = _scale_arg(sample_scale, mean)
    BS, dsp = tk.block_s(S), tk.ds_pad(H)
    w1p, w2tp = tk.padded_glu_weights(w1, w2, BS, dsp)
    dt = empty((B, S, C), device=x.device, dtype=x.dtype)
    store = weight_grads and K > 0
    if store:
        tb = empty((S + 1, K), device=x.device, dtype=cdt)     # [T; 1]: T as [S, B*C], a row of ones
        gb = empty((S, K), device=x.device, dtype=cdt)         # G = s * dy
        ab = empty((H + 1, K), device=x.device, dtype=cdt)     # [g; 1]: the gate
        dhb = empty((DS, K), device=x.device, dtype=cdt)       # [dX1; dX2]
        tb[S].fill_(1)
        ab[H].fill_(1)
    else:
        tb = gb = ab = dhb = dt
    if B * S * C > 0:
        args = (x, mean, rstd, norm_weight, norm_bias, w1p, b1, w2tp, dy, scale, dt, tb, gb, ab, dhb, S, C, H, dsp, K,
                *x.stride(), *dy.stride())
        kwargs = dict(HAS_SCALE=sample_scale is not None, APPROX_TANH=False, STORE_WGRAD=store,
                      OFF64=_off64(x, dy, tb, dhb), INTERPRET=triton_interpret(), INPUT_PRECISION=input_precision(cdt),
                      BLOCK_S=BS, GLU=gate, **LAUNCH_OPTIONS)
        meta = _tuning.pick(_token_mixing_bwd_dt_tm_kernel, tk.glu_table("dt", S, C, H, cdt), (S, C, H),
                            x.device, args, kwargs)
        _token_mixing_bwd_dt_tm_kernel[(B, triton.cdiv(C, meta["BLOCK_C"]))](*args, **kwargs, **meta)
    dx, dnw, dnb = layernorm_backward(dt, x, mean, rstd, norm_weight, dresidual=dy)
    dnw, dnb = dnw.to(norm_weight.dtype), dnb.to(norm_bias.dtype)
    if not weight_grads:
        return dx, dnw, dnb, None, None, None, None
    if not store:   # B*C == 0: no columns to reduce
        return (dx, dnw, dnb, torch.zeros_like(w1), torch.zeros_like(b1), torch.zeros_like(w2),
                torch.zeros(S, device=x.device, dtype=cdt))
    ext1 = torch.matmul(dhb, tb.t())                           # [DS, S + 1]: dW1 | db1
    del dhb, tb
    ext2 = torch.matmul(gb, ab.t())                            # [S, H + 1]: dW2 | db2
    del gb, ab
    cont = torch.contiguous_format                             # custom-op outputs may not alias each other
    return (dx, dnw, dnb, ext1[:, :S].clone(memory_format=cont), ext1[:, S].to(fc1_bias.dtype, copy=True),
            ext2[:, :H].clone(memory_format=cont), ext2[:, H].clone())


# ------------------------------------------------------------------------------------------------
# torch.library custom ops of the fast path (opaque to torch.compile; fake implementations give shapes)


@torch.library.custom_op(_OP + "_fwd", mutates_args=())
def _fwd_op(x: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor, fc1_weight: torch.Tensor,
            fc1_bias: torch.Tensor, fc2_weight: torch.Tensor, fc2_bias: torch.Tensor, eps: float, gate: int,
            sample_scale: Optional[torch.Tensor]  # noqa: UP045
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with _guard.launch_guard(_OP + "_fwd", x, fc1_weight=fc1_weight, fc2_weight=fc2_weight, norm_weight=norm_weight,
                             sample_scale=sample_scale):
        return gmixer_token_mixing_fwd(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps,
                                       gate, sample_scale)


@_fwd_op.register_fake
def _(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps, gate, sample_scale):
    return fake_fwd_outputs(x)


@torch.library.custom_op(_OP + "_bwd", mutates_args=())
def _bwd_op(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, norm_weight: torch.Tensor,
            norm_bias: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: torch.Tensor, fc2_weight: torch.Tensor,
            gate: int, sample_scale: Optional[torch.Tensor], weight_grads: bool  # noqa: UP045
            ) -> list[torch.Tensor]:
    with _guard.launch_guard(_OP + "_bwd", x, dy=dy, fc1_weight=fc1_weight, fc2_weight=fc2_weight,
                             norm_weight=norm_weight, sample_scale=sample_scale):
        grads = gmixer_token_mixing_bwd(dy, x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight,
                                        gate, sample_scale, weight_grads)
    return [g for g in grads if g is not None]


@_bwd_op.register_fake
def _(dy, x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, gate, sample_scale, weight_grads):
    return fake_bwd_outputs(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, weight_grads)


def _setup_context(ctx, inputs, output):
    x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps, gate, sample_scale = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, sample_scale)
    ctx.gate = gate
    ctx.fc2_bias_dtype = fc2_bias.dtype
    ctx.mark_non_differentiable(mean, rstd)


def _backward(ctx, dy, _dmean, _drstd):
    x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, sample_scale = ctx.saved_tensors
    weight_grads = any(ctx.needs_input_grad[3:7])
    grads = _bwd_op(dy, x, mean, rstd, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, ctx.gate,
                    sample_scale, weight_grads)
    return (*input_grads(grads, weight_grads, ctx.fc2_bias_dtype), None, None, None)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)
_guard.guard_autograd(_fwd_op, "mixer_kernels.gmixer_token_mixing")
_guard.guard_autograd(_bwd_op, "mixer_kernels.gmixer_token_mixing", backward=True)


# ------------------------------------------------------------------------------------------------
# The composition (S > 256, fp32): cuBLAS GEMMs and our gate kernel as a custom op with autograd


def _token_layout(h):
    """h [B, DS, C] contiguous as the gate kernel's rows (b, j < H), columns c: (R, N, RH, s_zg, s_zr, half)."""
    B, DS, C = h.shape
    H = DS // 2
    return B * H, C, H, DS * C, C, H * C


@torch.library.custom_op("mixer_kernels::glu_gate", mutates_args=())
def _glu_gate_op(h: torch.Tensor, gate: int) -> torch.Tensor:
    """g [B, H, C] of h [B, DS = 2H, C] (the gate along dim 1): _glu_pass_kernel."""
    with _guard.launch_guard("mixer_kernels::glu_gate", h):
        h = h.contiguous()
        B, DS, C = h.shape
        return glu_gate(h, *_token_layout(h), gate).view(B, DS // 2, C)


@_glu_gate_op.register_fake
def _(h, gate):
    B, DS, C = h.shape
    return h.new_empty((B, DS // 2, C))


@torch.library.custom_op("mixer_kernels::glu_gate_bwd", mutates_args=())
def _glu_gate_bwd_op(dg: torch.Tensor, h: torch.Tensor, gate: int) -> torch.Tensor:
    """dh [B, DS, C] from dg [B, H, C] (the gate's backward kernel)."""
    with _guard.launch_guard("mixer_kernels::glu_gate_bwd", h, dg=dg):
        h = h.contiguous()
        dz, _, _ = glu_gate_bwd(dg.contiguous().to(h.dtype), h, *_token_layout(h), gate)
        return dz


@_glu_gate_bwd_op.register_fake
def _(dg, h, gate):
    return torch.empty_like(h, memory_format=torch.contiguous_format)


def _glu_gate_setup(ctx, inputs, output):
    h, gate = inputs
    ctx.save_for_backward(h)
    ctx.gate = gate


def _glu_gate_backward(ctx, dg):
    (h,) = ctx.saved_tensors
    return _glu_gate_bwd_op(dg, h, ctx.gate), None


_glu_gate_op.register_autograd(_glu_gate_backward, setup_context=_glu_gate_setup)
_guard.guard_autograd(_glu_gate_op, "mixer_kernels.gmixer_token_mixing")
_guard.guard_autograd(_glu_gate_bwd_op, "mixer_kernels.gmixer_token_mixing", backward=True)


def _composed(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps, gate, sample_scale):
    """The large-S / fp32 path: LayerNorm (PyTorch), fc1 and fc2 through torch.matmul (cuBLAS), the gate our
    kernel; autograd differentiates it, sample_scale included."""
    cdt = fc1_weight.dtype
    t = torch.nn.functional.layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, eps).to(cdt)   # [B, S, C]
    h = torch.matmul(fc1_weight, t) + fc1_bias[:, None]                                      # [B, DS, C]
    g = _glu_gate_op(h, gate)                                                                # [B, H, C]
    branch = torch.matmul(fc2_weight, g) + fc2_bias[:, None]                                 # [B, S, C]
    if sample_scale is not None:
        branch = branch * sample_scale.to(branch.dtype)[:, None, None]
    return (x + branch).to(x.dtype)


def gmixer_token_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps: float = 1e-6,
                        gate_last: bool = True, sample_scale: torch.Tensor | None = None) -> torch.Tensor:
    """The Triton path of `mixer_kernels.gmixer_token_mixing` (inputs already checked): the fused kernels
    when fast_path(S, dtype), else the composition (see the module docstring). sample_scale needing a
    gradient takes the composition's autograd on the composition path; functional.py handles it on the
    fused one."""
    gate = glu_mode(gate_last)
    if fast_path(x.shape[1], fc1_weight.dtype):
        out, _, _ = _fwd_op(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, float(eps), gate,
                            None if sample_scale is None else sample_scale.detach())
        return out
    return _composed(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, float(eps), gate,
                     sample_scale)
