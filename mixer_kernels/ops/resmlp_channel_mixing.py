"""Fused ResMLP channel mixing, forward and backward:
out = x + sample_scale[b] * ls[c] * fc2(GELU(fc1(alpha * x + beta))).

The Mixer's channel GEMMs (ops/_channel_gemm.py) with the Affine prologue in place of the LayerNorm:
Forward, three launches:
  1. affine_forward: y = alpha * x + beta [M, C] in the compute dtype (transient; no statistics).
  2. _channel_hidden_kernel: fc1 + bias + GELU; saves z [M, DC] unless recompute.
  3. _channel_out_kernel: fc2 with the layer scale folded into its weight and bias,
     W2s = ls[:, None] * W2, b2s = ls * b2 (rounded once per call, C*DC elements), then sample scale
     and the residual in the epilogue. Folding keeps the GEMM kernels as the Mixer runs them (no extra
     epilogue operand); eager rounds fc2's output and then the product with ls in the compute dtype,
     we round the scaled weight once and the sum once (fp32 is exact to rounding either way).
Backward (gradients autograd does not need are skipped):
  hidden backward with W2s gives dz = s * (g @ W2s) * GELU'(z) and s * GELU(z); one weight-gradient
  GEMM G = g^T @ (s * GELU(z)) [C, DC] in fp32 serves three gradients: dW2 = ls * G, and the layer
  scale's dls[c] = sum_k W2[c, k] G[c, k] + b2[c] * sum_m s g[m, c] (the branch before scaling is
  W2 act + b2, so no extra GEMM); db2 = ls * sum_m s g. Then dW1 = dz^T @ y, dn = dz @ W1 and
  affine_backward: dx = g + alpha * dn, dalpha, dbeta. Deterministic, as the Mixer's channel op.
"""
# No `from __future__ import annotations`: torch.library infers the op schemas from real annotations.
from typing import Optional

import torch

from . import _guard
from ._channel_gemm import hidden_backward, hidden_forward, out_backward, out_forward, wgrad
from ._device import device_of
from .affine import affine_backward, affine_forward

_OP = "mixer_kernels::resmlp_channel_mixing"


def _scaled_fc2(fc2_weight, fc2_bias, layer_scale):
    ls = layer_scale.to(torch.float32)
    return ((fc2_weight.to(torch.float32) * ls[:, None]).to(fc2_weight.dtype),
            (fc2_bias.to(torch.float32) * ls).to(fc2_bias.dtype))


@torch.library.custom_op(_OP + "_fwd", mutates_args=())
def resmlp_channel_mixing_fwd(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, fc1_weight: torch.Tensor,
                              fc1_bias: torch.Tensor, fc2_weight: torch.Tensor, fc2_bias: torch.Tensor,
                              layer_scale: torch.Tensor, sample_scale: Optional[torch.Tensor],  # noqa: UP045
                              approximate: str, save_preact: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, z): z the pre-activation [M, DC] if save_preact, else an empty [0, DC]."""
    with _guard.launch_guard(_OP + "_fwd", x, alpha=alpha, beta=beta, fc1_weight=fc1_weight, fc1_bias=fc1_bias,
                             fc2_weight=fc2_weight, fc2_bias=fc2_bias, layer_scale=layer_scale,
                             sample_scale=sample_scale):
        return _forward(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, sample_scale,
                        approximate, save_preact)


def _forward(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, sample_scale, approximate,
             save_preact):
    B, S, C = x.shape
    M, DC = B * S, fc1_weight.shape[0]
    cdt = fc1_weight.dtype
    if M == 0:
        return torch.empty((B, S, C), device=x.device, dtype=x.dtype), torch.empty((0, DC), device=x.device, dtype=cdt)
    with device_of(x):
        y = affine_forward(x, alpha, beta, cdt)
        z, act = hidden_forward(y, fc1_weight, fc1_bias, approximate=approximate, write_z=save_preact, write_act=True)
        del y
        w2s, b2s = _scaled_fc2(fc2_weight, fc2_bias, layer_scale)
        out = out_forward(act, x, w2s, b2s, sample_scale)
    return out, (z if z is not None else torch.empty((0, DC), device=x.device, dtype=cdt))


@resmlp_channel_mixing_fwd.register_fake
def _(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, sample_scale, approximate,
      save_preact):
    B, S, _ = x.shape
    return x.new_empty(x.shape), x.new_empty((B * S if save_preact else 0, fc1_weight.shape[0]), dtype=fc1_weight.dtype)


@torch.library.custom_op(_OP + "_bwd", mutates_args=())
def resmlp_channel_mixing_bwd(grad_out: torch.Tensor, x: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor,
                              beta: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: torch.Tensor,
                              fc2_weight: torch.Tensor, fc2_bias: torch.Tensor, layer_scale: torch.Tensor,
                              sample_scale: Optional[torch.Tensor], approximate: str,  # noqa: UP045
                              need_input: bool, need_fc1: bool, need_fc2: bool, need_ls: bool) -> list[torch.Tensor]:
    """[dx, dalpha, dbeta, dW1, db1, dW2, db2, dls]; a gradient not needed is an empty [0] tensor
    (dalpha, dbeta, dls in fp32, the others in their input's dtype)."""
    with _guard.launch_guard(_OP + "_bwd", x, grad_out=grad_out, alpha=alpha, beta=beta, fc1_weight=fc1_weight,
                             fc2_weight=fc2_weight, layer_scale=layer_scale, sample_scale=sample_scale):
        return _backward_impl(grad_out, x, z, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale,
                              sample_scale, approximate, need_input, need_fc1, need_fc2, need_ls)


def _backward_impl(grad_out, x, z, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale,
                   sample_scale, approximate, need_input, need_fc1, need_fc2, need_ls):
    B, S, C = x.shape
    M = B * S
    cdt = fc1_weight.dtype
    out = [torch.empty((0,), device=x.device, dtype=cdt) for _ in range(8)]   # distinct: outputs may not alias
    if M == 0:
        return [torch.zeros_like(x), torch.zeros_like(alpha, dtype=torch.float32),
                torch.zeros_like(beta, dtype=torch.float32), torch.zeros_like(fc1_weight), torch.zeros_like(fc1_bias),
                torch.zeros_like(fc2_weight), torch.zeros_like(fc2_bias), torch.zeros_like(layer_scale,
                                                                                         dtype=torch.float32)]
    if not (need_input or need_fc1 or need_fc2 or need_ls):
        return out
    y = None
    if z.shape[0] != M or need_fc1:       # recompute (only x was saved), or dW1 = dz^T @ y
        y = affine_forward(x, alpha, beta, cdt)
    if z.shape[0] != M:
        z, _ = hidden_forward(y, fc1_weight, fc1_bias, approximate=approximate, write_z=True, write_act=False)
    w2s, _ = _scaled_fc2(fc2_weight, fc2_bias, layer_scale)
    want_g = need_fc2 or need_ls
    dz, act, db1 = hidden_backward(grad_out, sample_scale, w2s, z, approximate=approximate, write_act=want_g,
                                   write_db=need_fc1)
    del z, w2s
    if want_g:
        G = wgrad(grad_out, act, transpose_out=False, out_dtype=torch.float32)          # [C, DC] = g^T @ (s GELU(z))
        gs = grad_out.sum(dim=1, dtype=torch.float32)                                    # [B, C]
        gs = (gs * sample_scale.to(torch.float32)[:, None] if sample_scale is not None else gs).sum(0)
        ls = layer_scale.to(torch.float32)
        if need_fc2:
            out[5] = (G * ls[:, None]).to(fc2_weight.dtype)
            out[6] = (gs * ls).to(fc2_bias.dtype)
        if need_ls:
            out[7] = (G * fc2_weight.to(torch.float32)).sum(1) + gs * fc2_bias.to(torch.float32)
        del G
    del act
    if need_fc1:
        out[3] = wgrad(y, dz, transpose_out=True, out_dtype=cdt)
        out[4] = db1.to(fc1_bias.dtype)
    del y
    if need_input:
        dn = out_backward(dz, fc1_weight, B, S)
        del dz
        out[0], out[1], out[2] = affine_backward(dn, x, alpha, grad_out)
    return out


@resmlp_channel_mixing_bwd.register_fake
def _(grad_out, x, z, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, sample_scale,
      approximate, need_input, need_fc1, need_fc2, need_ls):
    if x.shape[0] * x.shape[1] == 0:
        need_input = need_fc1 = need_fc2 = need_ls = True
    f32 = torch.float32

    def none():
        return fc1_weight.new_empty((0,))
    return [x.new_empty(x.shape) if need_input else none(),
            alpha.new_empty(alpha.shape, dtype=f32) if need_input else none(),
            beta.new_empty(beta.shape, dtype=f32) if need_input else none(),
            torch.empty_like(fc1_weight) if need_fc1 else none(), torch.empty_like(fc1_bias) if need_fc1 else none(),
            torch.empty_like(fc2_weight) if need_fc2 else none(), torch.empty_like(fc2_bias) if need_fc2 else none(),
            layer_scale.new_empty(layer_scale.shape, dtype=f32) if need_ls else none()]


def _setup_context(ctx, inputs, output):
    x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, sample_scale, approximate, _ = inputs
    _, z = output
    ctx.save_for_backward(x, z, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, sample_scale)
    ctx.approximate = approximate
    ctx.mark_non_differentiable(z)


def _backward(ctx, grad_out, _gz):
    x, z, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, sample_scale = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_input, need_fc1, need_fc2, need_ls = any(need[0:3]), any(need[3:5]), any(need[5:7]), need[7]
    g = resmlp_channel_mixing_bwd(grad_out, x, z, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                                  layer_scale, sample_scale, ctx.approximate, need_input, need_fc1, need_fc2, need_ls)
    g[1], g[2], g[7] = g[1].to(alpha.dtype), g[2].to(beta.dtype), g[7].to(layer_scale.dtype)
    return (*(t if n else None for t, n in zip(g, need[:8], strict=True)), None, None, None)


resmlp_channel_mixing_fwd.register_autograd(_backward, setup_context=_setup_context)
_guard.guard_autograd(resmlp_channel_mixing_fwd, "mixer_kernels.resmlp_channel_mixing")
_guard.guard_autograd(resmlp_channel_mixing_bwd, "mixer_kernels.resmlp_channel_mixing", backward=True)


def resmlp_channel_mixing(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, *,
                          approximate: str, recompute: bool, sample_scale=None) -> torch.Tensor:
    """The Triton path of `mixer_kernels.resmlp_channel_mixing` (inputs checked and cast by functional.py)."""
    params = (x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in params)
    alpha, beta, fc1_bias, fc2_bias, layer_scale = (t.contiguous() for t in (alpha, beta, fc1_bias, fc2_bias,
                                                                             layer_scale))
    if sample_scale is not None:
        sample_scale = sample_scale.detach().contiguous()
    out, _ = resmlp_channel_mixing_fwd(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale,
                                       sample_scale, approximate, bool(needs_grad and not recompute))
    return out


__all__ = ["resmlp_channel_mixing", "resmlp_channel_mixing_fwd", "resmlp_channel_mixing_bwd"]
