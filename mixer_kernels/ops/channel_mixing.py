"""Fused channel mixing, forward and backward: out = x + sample_scale[b] * fc2(GELU(fc1(LN(x)))).

The activation is a parameter (`approximate`): GELU "none" / "tanh", or gMixer's SiLU-gated GLU "glu_silu"
(x1 * SiLU(x2), timm's gate_last) / "glu_silu_first" (SiLU(x1) * x2), with fc1 [DC, C] and fc2 [C, DC/2]:
the same launches, GEMM 1 with the gate in its epilogue (ops/_channel_gemm.py; ops/gmixer_channel_mixing.py).

Forward, three launches, no separate GELU pass in device memory:
  1. layernorm_stats (WRITE_Y): fp32 mean, rstd per row, and the LayerNorm output y [M, C] in the
     compute dtype (transient: freed after step 2).
  2. _channel_hidden_kernel: fc1 as a plain GEMM on y, bias + GELU epilogue. Writes the
     activation GELU(z) [M, DC] (fc2's input) and, when training with recompute=False, the
     pre-activation z [M, DC] (compute dtype): the only activation saved besides x and the stats.
  3. _channel_out_kernel: fc2 + bias, * sample_scale, + residual x in the epilogue.
Why y goes through memory (the choice issue 13 asks for, made by the speed model): normalising the A
tiles inside fc1's main loop cost 365 SASS instructions per k-step against 512 tensor-core cycles, an
issue-bound loop at ~41% of its floor (H100 model, B/16 batch 256); writing y costs one pass of M*C
elements (77 MB, ~26 us at 3 TB/s) and leaves a plain loop. Folding the LayerNorm into the epilogue
(rstd * (x @ (W*gamma)^T - mu * rowsum(W*gamma)) + W @ beta) would avoid that pass, but cancels
mu * rowsum against a large product for rows whose mean is large against their spread; y rounds to the
compute dtype exactly as eager's LayerNorm output does, so the numerics are eager's.

Backward (`channel_mixing_bwd`; kernels of gradients autograd does not need are skipped):
  0. y = LN(x) from the saved statistics (layernorm_stats, STATS=False: bitwise the forward's y) when
     fc1's weight gradient or recompute needs it; recompute=True: _channel_hidden_kernel recomputes z
     from it (nothing but x and the stats is saved).
  1. _channel_hidden_kernel (BACKWARD): dz = s * (g @ W2) * GELU'(z), the scale and the GELU
     derivative in the epilogue; also writes s * GELU(z) for the fc2 weight gradient and per-row-tile
     column sums of dz (db1).
  2. _channel_wgrad_kernel: dW2 = g^T @ (s * GELU(z)); db2 = sum of s * g (a torch reduction).
  3. _channel_wgrad_kernel: dW1 = dz^T @ y. Both weight-gradient GEMMs are plain split-K loops.
  4. _channel_out_kernel: dn = dz @ W1, the gradient at the LayerNorm output.
  5. layernorm_backward: dx (+ the residual gradient g), dgamma, dbeta (deterministic partials).
  Weight/bias gradients accumulate in fp32 over fixed row ranges and are summed in a fixed order:
  bitwise reproducible. (Plus small torch reductions of the split-K partials.) Across processes the
  autotuner may pick another tile config (the same BLOCK_K and row ranges, but not guaranteed to give
  the same bits); MIXER_KERNELS_AUTOTUNE=0 fixes the configs.

Never slower than the composition: each GEMM above (fc1, fc2, the hidden backward, dn, both weight
gradients) is a choice (ops/_channel_routes.py) between our kernel and cuBLAS plus a Triton pass for what
cuBLAS cannot fuse, measured on the first call of a shape on a GPU and cached on disk with Triton's
autotuning (ops/_choice.py); MIXER_KERNELS_AUTOTUNE=0, the CPU and the interpreter take our kernels.

The custom ops `mixer_kernels::channel_mixing_fwd` / `_bwd` (torch.library, with fake kernels and
registered autograd) make torch.compile(fullgraph=True) trace through without graph breaks.
float64 never reaches these ops (functional.py runs it in plain PyTorch); called directly, they refuse it
(ops/_guard.py, which also makes x's GPU current for the launches).
Direct callers of the custom ops pass contiguous 1-D tensors (the `channel_mixing` wrapper ensures it).
"""
# No `from __future__ import annotations`: torch.library infers the op schemas from real annotation
# objects (string annotations need a newer torch to resolve).
from typing import Optional

import torch

from . import _channel_routes as gemm  # each GEMM: our kernel or cuBLAS + a pass, chosen by measurement
from . import _guard
from .layernorm_backward import layernorm_backward
from .layernorm_stats import layernorm_apply, layernorm_forward

_OP = "mixer_kernels::channel_mixing"


@torch.library.custom_op(_OP + "_fwd", mutates_args=())
def channel_mixing_fwd(x: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor,
                       fc1_weight: torch.Tensor, fc1_bias: torch.Tensor, fc2_weight: torch.Tensor,
                       fc2_bias: torch.Tensor, sample_scale: Optional[torch.Tensor],  # noqa: UP045
                       eps: float, approximate: str, save_preact: bool
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, mean, rstd, z): z is the pre-activation [M, DC] if save_preact, else an empty [0, DC]."""
    with _guard.launch_guard(_OP + "_fwd", x, fc1_weight=fc1_weight, fc2_weight=fc2_weight, norm_weight=norm_weight,
                             sample_scale=sample_scale):
        return _forward(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, sample_scale, eps,
                        approximate, save_preact)


def _forward(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, sample_scale, eps, approximate,
             save_preact):
    B, S, C = x.shape
    M, DC = B * S, fc1_weight.shape[0]
    if M == 0:
        empty_stats = torch.empty((0,), device=x.device, dtype=torch.float32)
        return (torch.empty((B, S, C), device=x.device, dtype=x.dtype), empty_stats, empty_stats.clone(),
                torch.empty((0, DC), device=x.device, dtype=fc1_weight.dtype))
    y, mean, rstd = layernorm_forward(x, eps, norm_weight, norm_bias, fc1_weight.dtype)
    z, act = gemm.fc1(y, fc1_weight, fc1_bias, approximate=approximate, write_z=save_preact, write_act=True)
    del y
    out = gemm.fc2(act, x, fc2_weight, fc2_bias, sample_scale)
    if z is None:
        z = torch.empty((0, DC), device=x.device, dtype=fc1_weight.dtype)
    return out, mean, rstd, z


@channel_mixing_fwd.register_fake
def _(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, sample_scale, eps, approximate,
      save_preact):
    B, S, C = x.shape
    M, DC = B * S, fc1_weight.shape[0]
    return (x.new_empty((B, S, C)), x.new_empty((M,), dtype=torch.float32), x.new_empty((M,), dtype=torch.float32),
            x.new_empty((M if save_preact else 0, DC), dtype=fc1_weight.dtype))


@torch.library.custom_op(_OP + "_bwd", mutates_args=())
def channel_mixing_bwd(grad_out: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                       z: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor,
                       fc1_weight: torch.Tensor, fc1_bias: torch.Tensor, fc2_weight: torch.Tensor,
                       sample_scale: Optional[torch.Tensor], approximate: str,  # noqa: UP045
                       need_input: bool, need_fc1: bool, need_fc2: bool
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                  torch.Tensor, torch.Tensor]:
    """Gradients (dx, d norm_weight, d norm_bias, d fc1_weight, d fc1_bias, d fc2_weight, d fc2_bias),
    each in its input's dtype. z: the saved pre-activation, or [0, DC] to recompute it. need_input
    (x and the LayerNorm parameters), need_fc1, need_fc2: which gradients to compute; the others come
    back as empty [0] tensors and their kernels are skipped (frozen layers)."""
    with _guard.launch_guard(_OP + "_bwd", x, grad_out=grad_out, fc1_weight=fc1_weight, fc2_weight=fc2_weight,
                             norm_weight=norm_weight, sample_scale=sample_scale):
        return _backward_impl(grad_out, x, mean, rstd, z, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight,
                              sample_scale, approximate, need_input, need_fc1, need_fc2)


def _backward_impl(grad_out, x, mean, rstd, z, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight,
                   sample_scale, approximate, need_input, need_fc1, need_fc2):
    B, S, C = x.shape
    M = B * S
    cdt = fc1_weight.dtype
    if M == 0:
        return (torch.zeros_like(x), torch.zeros_like(norm_weight), torch.zeros_like(norm_bias),
                torch.zeros_like(fc1_weight), torch.zeros_like(fc1_bias), torch.zeros_like(fc2_weight),
                torch.zeros((C,), device=x.device, dtype=fc2_weight.dtype))
    # skipped gradients: distinct empty tensors (custom-op outputs may not alias each other)
    dx, dnw, dnb, dw1, db1, dw2, db2 = (torch.empty((0,), device=x.device, dtype=cdt) for _ in range(7))
    if not (need_input or need_fc1 or need_fc2):
        return dx, dnw, dnb, dw1, db1, dw2, db2
    recompute = z.shape[0] != M     # recompute=True: only x and the statistics were saved
    y = None
    if recompute:
        y = layernorm_apply(x, mean, rstd, norm_weight, norm_bias, cdt)
        z, _ = gemm.fc1(y, fc1_weight, fc1_bias, approximate=approximate, write_z=True, write_act=False)
        if not need_fc1:
            y = None
    dz, act, db1 = gemm.hidden_bwd(grad_out, sample_scale, fc2_weight, z, approximate=approximate,
                                   write_act=need_fc2, write_db=need_fc1)
    del z
    if need_fc2:
        dw2 = gemm.wgrad(grad_out, act, transpose_out=False, out_dtype=fc2_weight.dtype)
        # db2 = sum over rows of s[b] * grad_out: per-sample fp32 sums, then the scale (fixed order)
        g = grad_out.sum(dim=1, dtype=torch.float32)                                 # [B, C]
        db2 = (g * sample_scale.to(torch.float32)[:, None] if sample_scale is not None else g).sum(0)
        db2 = db2.to(fc2_weight.dtype)
    del act
    if need_fc1:
        if y is None:
            y = layernorm_apply(x, mean, rstd, norm_weight, norm_bias, cdt)
        dw1 = gemm.wgrad(y, dz, transpose_out=True, out_dtype=cdt)
        db1 = db1.to(fc1_bias.dtype)
        del y
    if need_input:
        dn = gemm.dn(dz, fc1_weight, B, S)
        del dz
        dx, dnw, dnb = layernorm_backward(dn, x, mean, rstd, norm_weight, dresidual=grad_out)
        dnw, dnb = dnw.to(norm_weight.dtype), dnb.to(norm_bias.dtype)
    return dx, dnw, dnb, dw1, db1, dw2, db2


@channel_mixing_bwd.register_fake
def _(grad_out, x, mean, rstd, z, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, sample_scale,
      approximate, need_input, need_fc1, need_fc2):
    C = x.shape[2]
    if x.shape[0] * x.shape[1] == 0:
        need_input = need_fc1 = need_fc2 = True

    def none():
        return fc1_weight.new_empty((0,))
    return (x.new_empty(x.shape) if need_input else none(),
            torch.empty_like(norm_weight) if need_input else none(),
            torch.empty_like(norm_bias) if need_input else none(),
            torch.empty_like(fc1_weight) if need_fc1 else none(),
            torch.empty_like(fc1_bias) if need_fc1 else none(),
            torch.empty_like(fc2_weight) if need_fc2 else none(),
            fc2_weight.new_empty((C,)) if need_fc2 else none())


def _setup_context(ctx, inputs, output):
    x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, _, sample_scale, _, approximate, _ = inputs
    _, mean, rstd, z = output
    ctx.save_for_backward(x, mean, rstd, z, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, sample_scale)
    ctx.approximate = approximate
    ctx.mark_non_differentiable(mean, rstd, z)


def _backward(ctx, grad_out, _gmean, _grstd, _gz):
    x, mean, rstd, z, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, sample_scale = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_input, need_fc1, need_fc2 = any(need[0:3]), any(need[3:5]), any(need[5:7])
    grads = channel_mixing_bwd(grad_out, x, mean, rstd, z, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight,
                               sample_scale, ctx.approximate, need_input, need_fc1, need_fc2)
    return (*(g if n else None for g, n in zip(grads, need[:7], strict=True)), None, None, None, None)


channel_mixing_fwd.register_autograd(_backward, setup_context=_setup_context)


def _public(args) -> str:
    """The public function a call of these ops belongs to: gMixer's channel half passes a GLU activation."""
    glu = any(isinstance(a, str) and a.startswith("glu") for a in args)
    return "mixer_kernels.gmixer_channel_mixing" if glu else "mixer_kernels.channel_mixing"


_guard.guard_autograd(channel_mixing_fwd, _public)
_guard.guard_autograd(channel_mixing_bwd, _public, backward=True)


def channel_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps: float,
                   approximate: str, recompute: bool, sample_scale: torch.Tensor | None = None) -> torch.Tensor:
    """The Triton channel-mixing op (inputs already checked by mixer_kernels.functional).

    x [B, S, C] any float dtype and strides; LN parameters any float dtype; fc weights/biases in one
    compute dtype. Returns x + sample_scale[b] * branch, contiguous, in x's dtype."""
    params = (x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in params)
    # The kernels index 1-D tensors with unit stride (x, grad_out and the weights take any strides).
    norm_weight, norm_bias, fc1_bias, fc2_bias = (t.contiguous() for t in (norm_weight, norm_bias, fc1_bias, fc2_bias))
    if sample_scale is not None:
        sample_scale = sample_scale.detach().contiguous()
    out, _, _, _ = channel_mixing_fwd(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                                      sample_scale, float(eps), approximate, bool(needs_grad and not recompute))
    return out


__all__ = ["channel_mixing", "channel_mixing_fwd", "channel_mixing_bwd"]
