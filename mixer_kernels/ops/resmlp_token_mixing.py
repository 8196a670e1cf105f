"""Fused ResMLP token mixing, forward and backward:
out = x + sample_scale[b] * ls[c] * (W @ (alpha * x_b + beta) + bias)   along S, for every sample b.

Forward: one launch (`_token_linear_fwd_kernel`, ops/_token_linear_kernels.py): the Affine prologue on
the x tiles, the GEMM over S, bias, layer scale, sample scale and residual in the epilogue. Nothing is
saved but x (the Affine output is recomputed in the backward's epilogue).
Backward: one launch (`_token_linear_bwd_kernel`) gives dx and the dalpha, dbeta, dls partials, and
writes the weight-gradient operands when W or its bias need gradients; then one GEMM over K = B*C
through torch.matmul (cuBLAS, fp32 accumulation, deterministic), dW | db = (ls * P) @ [A; 1]^T, as the
Mixer's token op does. All partials are summed in a fixed order: bitwise reproducible gradients.

The custom ops `mixer_kernels::resmlp_token_mixing_fwd` / `_bwd` (torch.library, fake kernels,
registered autograd) let torch.compile(fullgraph=True) trace through.
"""
# No `from __future__ import annotations`: torch.library infers the op schemas from real annotations.
from typing import Optional

import torch
import triton

from .._config import empty, input_precision, triton_interpret
from . import _guard
from . import _token_linear_kernels as tl_k
from ._device import device_of
from ._tuning import LAUNCH_OPTIONS

_OP = "mixer_kernels::resmlp_token_mixing"


@torch.library.custom_op(_OP + "_fwd", mutates_args=())
def resmlp_token_mixing_fwd(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor, layer_scale: torch.Tensor,
                            sample_scale: Optional[torch.Tensor]) -> torch.Tensor:  # noqa: UP045
    """out [B, S, C] contiguous in x's dtype. weight [S, S] and bias [S] in the compute dtype."""
    with _guard.launch_guard(_OP + "_fwd", x, alpha=alpha, beta=beta, weight=weight, bias=bias,
                             layer_scale=layer_scale, sample_scale=sample_scale):
        return token_linear_forward(x, alpha, beta, weight, bias, layer_scale, sample_scale)


def token_linear_forward(x, alpha, beta, weight, bias, layer_scale, sample_scale):
    """The forward launcher (the custom op's body; the speed model records it on meta tensors)."""
    B, S, C = x.shape
    out = empty((B, S, C), device=x.device, dtype=x.dtype)
    if B * S * C == 0:
        return out
    bc, bk, warps, stages = tl_k.config("fwd", weight.dtype, triton_interpret())
    bs = tl_k.block_s(S, "fwd")
    wp = tl_k.launch_weight(weight, S, bs, bk, transpose=False)
    rowsum = wp.sum(1, dtype=torch.float32)             # of the rounded weights the dot uses: [S_rows]
    with device_of(x):
        tl_k._token_linear_fwd_kernel[(B, triton.cdiv(C, bc), triton.cdiv(S, bs))](
            x, alpha, beta, wp, rowsum, bias, layer_scale, sample_scale if sample_scale is not None else bias, out,
            S, C, wp.shape[1], *x.stride(),
            HAS_SCALE=sample_scale is not None, OFF64=tl_k.off64(x, out), INTERPRET=triton_interpret(),
            INPUT_PRECISION=input_precision(weight.dtype), BLOCK_S=bs, BLOCK_C=bc, BLOCK_K=bk,
            num_warps=warps, num_stages=stages, **LAUNCH_OPTIONS)
    return out


@resmlp_token_mixing_fwd.register_fake
def _(x, alpha, beta, weight, bias, layer_scale, sample_scale):
    return x.new_empty(x.shape)


@torch.library.custom_op(_OP + "_bwd", mutates_args=())
def resmlp_token_mixing_bwd(dy: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
                            weight: torch.Tensor, bias: torch.Tensor, layer_scale: torch.Tensor,
                            sample_scale: Optional[torch.Tensor],  # noqa: UP045
                            weight_grads: bool) -> list[torch.Tensor]:
    """[dx, dalpha, dbeta, dls] (+ [dweight, dbias] when weight_grads); dalpha, dbeta, dls in fp32."""
    with _guard.launch_guard(_OP + "_bwd", x, dy=dy, alpha=alpha, beta=beta, weight=weight, bias=bias,
                             layer_scale=layer_scale, sample_scale=sample_scale):
        return token_linear_backward(dy, x, alpha, beta, weight, bias, layer_scale, sample_scale, weight_grads)


def token_linear_backward(dy, x, alpha, beta, weight, bias, layer_scale, sample_scale, weight_grads):
    """The backward launcher (the custom op's body)."""
    B, S, C = x.shape
    cdt = weight.dtype
    bc, bk, warps, stages = tl_k.config("bwd", cdt, triton_interpret())
    bs = tl_k.block_s(S, "bwd")
    n_s = triton.cdiv(S, bs)
    K = B * C
    dx = empty((B, S, C), device=x.device, dtype=x.dtype)
    parts = [empty((B * n_s, C), device=x.device, dtype=torch.float32) for _ in range(3)]
    store = weight_grads and K > 0
    if store:
        gb = empty((S, K), device=x.device, dtype=cdt)
        ab = empty((S + 1, K), device=x.device, dtype=cdt)       # [A; 1]: the ones row gives the bias gradient
        ab[S].fill_(1)
    else:
        gb = ab = dx
    if B * S * C > 0:
        wtp = tl_k.launch_weight(weight, S, bs, bk, transpose=True)
        with device_of(x):
            tl_k._token_linear_bwd_kernel[(B, triton.cdiv(C, bc), n_s)](
                dy, x, alpha, beta, wtp, bias, layer_scale, sample_scale if sample_scale is not None else bias, dx,
                *parts, gb, ab, S, C, wtp.shape[1], *x.stride(), *dy.stride(),
                HAS_SCALE=sample_scale is not None, STORE_WGRAD=store, OFF64=tl_k.off64(x, dy, gb),
                INTERPRET=triton_interpret(), INPUT_PRECISION=input_precision(cdt), BLOCK_S=bs, BLOCK_C=bc,
                BLOCK_K=bk, num_warps=warps, num_stages=stages, **LAUNCH_OPTIONS)
    da, db, dls = (p.sum(0) for p in parts)                      # fixed-order sums of the per-program partials
    if not weight_grads:
        return [dx, da, db, dls]
    if not store:     # B*C == 0
        return [dx, da, db, dls, torch.zeros_like(weight), torch.zeros_like(bias)]
    ext = torch.matmul(gb, ab.t())                               # [S, S + 1]: dW | db
    return [dx, da, db, dls, ext[:, :S].clone(memory_format=torch.contiguous_format), ext[:, S].clone()]


@resmlp_token_mixing_bwd.register_fake
def _(dy, x, alpha, beta, weight, bias, layer_scale, sample_scale, weight_grads):
    C = x.shape[2]
    out = [x.new_empty(x.shape)] + [x.new_empty((C,), dtype=torch.float32) for _ in range(3)]
    if weight_grads:
        out += [torch.empty_like(weight, memory_format=torch.contiguous_format), torch.empty_like(bias)]
    return out


def _setup_context(ctx, inputs, output):
    x, alpha, beta, weight, bias, layer_scale, sample_scale = inputs
    ctx.save_for_backward(x, alpha, beta, weight, bias, layer_scale, sample_scale)
    ctx.dtypes = (alpha.dtype, beta.dtype, layer_scale.dtype)


def _backward(ctx, dy):
    x, alpha, beta, weight, bias, layer_scale, sample_scale = ctx.saved_tensors
    need = ctx.needs_input_grad
    weight_grads = need[3] or need[4]
    grads = resmlp_token_mixing_bwd(dy, x, alpha, beta, weight, bias, layer_scale, sample_scale, weight_grads)
    dx, da, db, dls = grads[:4]
    dw, dbias = grads[4:] if weight_grads else (None, None)
    da, db, dls = (g.to(dt) for g, dt in zip((da, db, dls), ctx.dtypes, strict=True))
    return dx, da, db, dw, dbias, dls, None


resmlp_token_mixing_fwd.register_autograd(_backward, setup_context=_setup_context)
_guard.guard_autograd(resmlp_token_mixing_fwd, "mixer_kernels.resmlp_token_mixing")
_guard.guard_autograd(resmlp_token_mixing_bwd, "mixer_kernels.resmlp_token_mixing", backward=True)


def resmlp_token_mixing(x, alpha, beta, weight, bias, layer_scale, *, sample_scale=None) -> torch.Tensor:
    """The Triton path of `mixer_kernels.resmlp_token_mixing` (inputs checked and cast by functional.py)."""
    alpha, beta, bias, layer_scale = (t.contiguous() for t in (alpha, beta, bias, layer_scale))
    if sample_scale is not None:
        sample_scale = sample_scale.detach().contiguous()
    return resmlp_token_mixing_fwd(x, alpha, beta, weight, bias, layer_scale, sample_scale)


__all__ = ["resmlp_token_mixing", "resmlp_token_mixing_fwd", "resmlp_token_mixing_bwd"]
