"""Fused gMLP block (Liu et al. 2021, "Pay Attention to MLPs", arXiv 2105.08050; timm's SpatialGatingBlock
with GatedMlp and SpatialGatingUnit), forward and backward:

    z = fc1(LN(x)) [M, DC],  act = GELU(z),  u, v = act[:, :H], act[:, H:]   (H = DC/2)
    gate = u * (W_p @ LN_v(v) + b_p)   along S, per sample        out = x + s[b] * fc2(gate)

Forward, five launches (nothing of [M, H] or [M, DC] besides z is written twice):
  1. layernorm_stats (WRITE_Y): y = LN(x) in the compute dtype and its fp32 statistics (ops/channel_mixing.py's
     choice: a plain GEMM1 main loop).
  2. channel.fc1 (ops/_channel_routes.py, the Mixer's GEMM1 choice, imported as is): z (saved unless
     recompute) and act = GELU(z) [M, DC].
  3. layernorm_stats (stats only) of the strided view v = act[:, H:]: mean_v, rstd_v [M] fp32 (saved).
  4. _sgu_fwd_kernel (ops/_spatial_gating_kernels.py): gate = u * (W_p @ LN_v(v) + b_p), LN_v applied to
     the v tiles while loading (the per-token scale lies along K: see that file for the trade-off).
  5. channel.fc2: out = x + s[b] * (gate @ W2^T + b2), the Mixer's GEMM2 with its residual epilogue.
Saved for backward: x, the four fp32 statistics vectors and z (recompute=True: not z). gmlp_s16 at batch
256, bf16: x 25.7 MB, z 154.1 MB, statistics 0.8 MB per block, 180.6 MB (recompute: 26.5 MB), against
591.3 MB that eager timm's autograd saves (benchmarks/saved_memory.py's saved_bytes).

Backward (gradients autograd does not need are skipped; deterministic, no atomics):
  0. recompute: y = LN(x) from the statistics, z = fc1(y) (channel.fc1); dW1 needs y in any case.
  1. dg = g @ W2 (channel.dn: the Mixer's GEMM2 kernel run as [M, C] x [C, H]).
  2. _sgu_gelu_pass_kernel: v = GELU(z_v) [M, H] (only z is saved; u is recomputed in step 3's epilogue).
  3. _sgu_bwd_kernel: p = W_p @ LN_v(v) + b_p recomputed; dz_u = s*dg * p * GELU'(z_u) into dz (and its column
     sums: db1's u half), dp = s*dg * u [S, B*H], s * gate for fc2's weight gradient, n = LN_v(v) [S+1, B*H]
     for the projection's.
  4. dW2 = g^T @ (s * gate) (channel.wgrad), db2 = sum of s * g; dW_p | db_p = dp @ [n; 1]^T (cuBLAS).
  5. _sgu_dn_kernel: dn = W_p^T @ dp; _sgu_norm_bwd_kernel: LN_v's and GELU's backward in one pass, dz_v
     into dz, d gamma_v, d beta_v and db1's v half (H > 2048: layernorm_backward, then the GELU' pass).
  6. dW1 = dz^T @ y (channel.wgrad); dLN = dz @ W1 (channel.dn); layernorm_backward with the residual
     gradient: dx, d norm weight, d norm bias.

The custom ops `mixer_kernels::gmlp_block_fwd` / `_bwd` (torch.library, fake kernels, registered autograd)
let torch.compile(fullgraph=True) trace through; float64 never reaches them (functional.py).
"""
# No `from __future__ import annotations`: torch.library infers the op schemas from real annotations.
from typing import Optional

import torch
import triton

from .._config import empty, input_precision, triton_interpret
from . import _channel_routes as gemm
from . import _guard
from . import _spatial_gating_kernels as sg
from . import _token_linear_kernels as tl_k
from ._tuning import LAUNCH_OPTIONS
from .layernorm_backward import layernorm_backward
from .layernorm_stats import layernorm_apply, layernorm_forward, layernorm_stats

_OP = "mixer_kernels::gmlp_block"


# --------------------------------------------------------------------------------------------------
# Launchers (internal: callers pass checked tensors on one Triton device)


def sgu_forward(act, mean_v, rstd_v, gate_weight, gate_bias, proj_weight, proj_bias, B, S):
    """gate = u * (W_p @ LN_v(v) + b_p) [M, H] contiguous in the compute dtype, from act [M, DC]."""
    M, DC = act.shape
    H = DC // 2
    gate = empty((M, H), device=act.device, dtype=act.dtype)
    if M * H == 0:
        return gate
    bc, bk, warps, stages = sg.config("fwd", proj_weight.dtype, triton_interpret())
    bs = sg.block_s(S, "fwd")
    wp = tl_k.launch_weight(proj_weight, S, bs, bk, transpose=False)
    sg._sgu_fwd_kernel[(B, triton.cdiv(H, bc), triton.cdiv(S, bs))](
        wp, proj_bias, act, mean_v, rstd_v, gate_weight, gate_bias, gate, S, H, wp.shape[1], act.stride(0),
        OFF64=tl_k.off64(act), INTERPRET=triton_interpret(), INPUT_PRECISION=input_precision(wp.dtype),
        BLOCK_S=bs, BLOCK_C=bc, BLOCK_K=bk, num_warps=warps, num_stages=stages, **LAUNCH_OPTIONS)
    return gate


def gelu_v(z, approximate):
    """v = GELU(z[:, H:]) [M, H] contiguous in z's dtype (the backward's operand; bitwise the forward's v)."""
    M, DC = z.shape
    H = DC // 2
    v = empty((M, H), device=z.device, dtype=z.dtype)
    bm, bn = sg.PASS_BLOCK
    sg._sgu_gelu_pass_kernel[(triton.cdiv(M, bm), triton.cdiv(H, bn))](
        z, v, v, M, H, z.stride(0), GRAD=False, APPROX_TANH=approximate == "tanh", INTERPRET=triton_interpret(),
        BLOCK_M=bm, BLOCK_N=bn, **LAUNCH_OPTIONS)
    return v


def dz_v(z, dv, dz, approximate):
    """dz[:, H:] = dv * GELU'(z[:, H:]), in place in dz [M, DC]."""
    M, DC = z.shape
    H = DC // 2
    bm, bn = sg.PASS_BLOCK
    sg._sgu_gelu_pass_kernel[(triton.cdiv(M, bm), triton.cdiv(H, bn))](
        z, dv, dz, M, H, z.stride(0), GRAD=True, APPROX_TANH=approximate == "tanh", INTERPRET=triton_interpret(),
        BLOCK_M=bm, BLOCK_N=bn, **LAUNCH_OPTIONS)


def sgu_backward(v, mean_v, rstd_v, gate_weight, gate_bias, proj_weight, proj_bias, z, dg, sample_scale, dz, B, S,
                 *, approximate, write_gate: bool, store_wgrad: bool, write_db: bool):
    """Writes dz's u half; returns (dp [S, B*H], s * gate [M, H] or None, n [S+1, B*H] or None, the fp32 column
    sums of dz_u [H] or None)."""
    M, H = v.shape
    cdt = proj_weight.dtype
    dp = empty((S, B * H), device=v.device, dtype=cdt)
    gate_s = empty((M, H), device=v.device, dtype=cdt) if write_gate else None
    nt = None
    if store_wgrad:
        nt = empty((S + 1, B * H), device=v.device, dtype=cdt)
        nt[S].fill_(1)
    bc, bk, warps, stages = sg.config("bwd", cdt, triton_interpret())
    bs = sg.block_s(S, "bwd")
    n_s = triton.cdiv(S, bs)
    dbp = empty((B * n_s, H), device=v.device, dtype=torch.float32) if write_db else None
    wp = tl_k.launch_weight(proj_weight, S, bs, bk, transpose=False)
    sg._sgu_bwd_kernel[(B, triton.cdiv(H, bc), n_s)](
        wp, proj_bias, v, mean_v, rstd_v, gate_weight, gate_bias, z, dg,
        sample_scale if sample_scale is not None else proj_bias, dz,
        gate_s if write_gate else dp, dp, nt if store_wgrad else dp, dbp if write_db else dp,
        S, H, wp.shape[1], z.stride(0),
        HAS_SCALE=sample_scale is not None, WRITE_GATE=write_gate, STORE_WGRAD=store_wgrad, WRITE_DB=write_db,
        APPROX_TANH=approximate == "tanh", OFF64=tl_k.off64(z), INTERPRET=triton_interpret(),
        INPUT_PRECISION=input_precision(cdt), BLOCK_S=bs, BLOCK_C=bc, BLOCK_K=bk, num_warps=warps, num_stages=stages,
        **LAUNCH_OPTIONS)
    return dp, gate_s, nt, (dbp.sum(0) if write_db else None)      # fixed-order sum of the partials


def norm_backward(dn, z, v, mean_v, rstd_v, gate_weight, dz, approximate):
    """LN_v's backward and GELU's: writes dz's v half; returns (d gamma_v, d beta_v, column sums of dz_v), fp32
    [H]. H <= sg.NORM_MAX_H: one fused pass (_sgu_norm_bwd_kernel, v recomputed from z); above,
    ops/layernorm_backward.py on v = GELU(z_v) (passed in), then the GELU' pass."""
    M, DC = z.shape
    H = DC // 2
    if H > sg.NORM_MAX_H:
        dv, dgw, dgb = layernorm_backward(dn, v, mean_v, rstd_v, gate_weight)
        del v
        dz_v(z, dv, dz, approximate)
        return dgw, dgb, dz[:, H:].sum(0, dtype=torch.float32)
    bm, bh, warps = sg.norm_block(H)
    G = max(1, min(triton.cdiv(M, bm), sg.NORM_MAX_PROGRAMS))
    parts = [empty((G, H), device=z.device, dtype=torch.float32) for _ in range(3)]
    sg._sgu_norm_bwd_kernel[(G,)](
        dn, z, mean_v, rstd_v, gate_weight, dz, *parts, M, H, z.stride(0), APPROX_TANH=approximate == "tanh",
        INTERPRET=triton_interpret(), BLOCK_M=bm, BLOCK_H=bh, num_warps=warps, **LAUNCH_OPTIONS)
    return tuple(p.sum(0) for p in parts)                          # fixed-order sums of the partials


def sgu_dn(dp, proj_weight, B, S):
    """dn = W_p^T @ dp per sample: [M, H] contiguous in the compute dtype."""
    H = dp.shape[1] // B
    cdt = proj_weight.dtype
    dn = empty((B * S, H), device=dp.device, dtype=cdt)
    bc, bk, warps, stages = sg.config("dn", cdt, triton_interpret())
    bs = sg.block_s(S, "dn")
    wtp = tl_k.launch_weight(proj_weight, S, bs, bk, transpose=True)
    sg._sgu_dn_kernel[(B, triton.cdiv(H, bc), triton.cdiv(S, bs))](
        wtp, dp, dn, S, H, wtp.shape[1], OFF64=tl_k.off64(dp), INTERPRET=triton_interpret(),
        INPUT_PRECISION=input_precision(cdt), BLOCK_S=bs, BLOCK_C=bc, BLOCK_K=bk, num_warps=warps, num_stages=stages,
        **LAUNCH_OPTIONS)
    return dn


# --------------------------------------------------------------------------------------------------
# Custom ops


@torch.library.custom_op(_OP + "_fwd", mutates_args=())
def gmlp_block_fwd(x: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor, fc1_weight: torch.Tensor,
                   fc1_bias: torch.Tensor, gate_norm_weight: torch.Tensor, gate_norm_bias: torch.Tensor,
                   proj_weight: torch.Tensor, proj_bias: torch.Tensor, fc2_weight: torch.Tensor,
                   fc2_bias: torch.Tensor, sample_scale: Optional[torch.Tensor],  # noqa: UP045
                   eps: float, gate_eps: float, approximate: str, save_preact: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, mean, rstd, mean_v, rstd_v, z): z the pre-activation [M, DC] if save_preact, else [0, DC]."""
    with _guard.launch_guard(_OP + "_fwd", x, fc1_weight=fc1_weight, proj_weight=proj_weight, fc2_weight=fc2_weight,
                             norm_weight=norm_weight, gate_norm_weight=gate_norm_weight, sample_scale=sample_scale):
        return _forward(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias,
                        proj_weight, proj_bias, fc2_weight, fc2_bias, sample_scale, eps, gate_eps, approximate,
                        save_preact)


def _forward(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
             proj_bias, fc2_weight, fc2_bias, sample_scale, eps, gate_eps, approximate, save_preact):
    B, S, C = x.shape
    M, DC = B * S, fc1_weight.shape[0]
    H = DC // 2
    cdt = fc1_weight.dtype
    if M == 0:
        st = torch.empty((0,), device=x.device, dtype=torch.float32)
        return (torch.empty((B, S, C), device=x.device, dtype=x.dtype), st, st.clone(), st.clone(), st.clone(),
                torch.empty((0, DC), device=x.device, dtype=cdt))
    y, mean, rstd = layernorm_forward(x, eps, norm_weight, norm_bias, cdt)
    z, act = gemm.fc1(y, fc1_weight, fc1_bias, approximate=approximate, write_z=save_preact, write_act=True)
    del y
    mean_v, rstd_v = layernorm_stats(act[:, H:], gate_eps)
    gate = sgu_forward(act, mean_v, rstd_v, gate_norm_weight, gate_norm_bias, proj_weight, proj_bias, B, S)
    del act
    out = gemm.fc2(gate, x, fc2_weight, fc2_bias, sample_scale)
    if z is None:
        z = torch.empty((0, DC), device=x.device, dtype=cdt)
    return out, mean, rstd, mean_v, rstd_v, z


@gmlp_block_fwd.register_fake
def _(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight, proj_bias,
      fc2_weight, fc2_bias, sample_scale, eps, gate_eps, approximate, save_preact):
    B, S, C = x.shape
    M, DC = B * S, fc1_weight.shape[0]
    f32 = torch.float32
    return (x.new_empty((B, S, C)), x.new_empty((M,), dtype=f32), x.new_empty((M,), dtype=f32),
            x.new_empty((M,), dtype=f32), x.new_empty((M,), dtype=f32),
            x.new_empty((M if save_preact else 0, DC), dtype=fc1_weight.dtype))


@torch.library.custom_op(_OP + "_bwd", mutates_args=())
def gmlp_block_bwd(grad_out: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                   mean_v: torch.Tensor, rstd_v: torch.Tensor, z: torch.Tensor, norm_weight: torch.Tensor,
                   norm_bias: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: torch.Tensor,
                   gate_norm_weight: torch.Tensor, gate_norm_bias: torch.Tensor, proj_weight: torch.Tensor,
                   proj_bias: torch.Tensor, fc2_weight: torch.Tensor,
                   sample_scale: Optional[torch.Tensor], approximate: str,  # noqa: UP045
                   need_input: bool, need_fc1: bool, need_gate_norm: bool, need_proj: bool, need_fc2: bool
                   ) -> list[torch.Tensor]:
    """[dx, d norm_weight, d norm_bias, dW1, db1, d gate_norm_weight, d gate_norm_bias, dW_p, db_p, dW2, db2],
    each in its input's dtype; a gradient not needed is an empty [0] tensor (its kernels skipped)."""
    with _guard.launch_guard(_OP + "_bwd", x, grad_out=grad_out, fc1_weight=fc1_weight, proj_weight=proj_weight,
                             fc2_weight=fc2_weight, norm_weight=norm_weight, gate_norm_weight=gate_norm_weight,
                             sample_scale=sample_scale):
        return _backward_impl(grad_out, x, mean, rstd, mean_v, rstd_v, z, norm_weight, norm_bias, fc1_weight,
                              fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight, proj_bias, fc2_weight,
                              sample_scale, approximate, need_input, need_fc1, need_gate_norm, need_proj, need_fc2)


def _backward_impl(grad_out, x, mean, rstd, mean_v, rstd_v, z, norm_weight, norm_bias, fc1_weight, fc1_bias,
                   gate_norm_weight, gate_norm_bias, proj_weight, proj_bias, fc2_weight, sample_scale, approximate,
                   need_input, need_fc1, need_gate_norm, need_proj, need_fc2):
    B, S, C = x.shape
    M, DC = B * S, fc1_weight.shape[0]
    H = DC // 2
    cdt = fc1_weight.dtype
    params = (norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
              proj_bias, fc2_weight)
    if M == 0:
        return [torch.zeros_like(x)] + [torch.zeros_like(p) for p in params] + \
            [torch.zeros((C,), device=x.device, dtype=fc2_weight.dtype)]
    out = [torch.empty((0,), device=x.device, dtype=cdt) for _ in range(11)]   # distinct: outputs may not alias
    need_up = need_input or need_fc1 or need_gate_norm       # gradients upstream of the projection's input
    if not (need_up or need_proj or need_fc2):
        return out
    y = None
    if z.shape[0] != M or need_fc1:        # recompute (only x and the statistics were saved), or dW1 = dz^T @ y
        y = layernorm_apply(x, mean, rstd, norm_weight, norm_bias, cdt)
    if z.shape[0] != M:
        z, _ = gemm.fc1(y, fc1_weight, fc1_bias, approximate=approximate, write_z=True, write_act=False)
        if not need_fc1:
            y = None
    g2 = grad_out.reshape(M, C).to(cdt).contiguous()
    dg = gemm.dn(g2, fc2_weight, B, S).reshape(M, H)                       # g @ W2, before the sample scale
    v = gelu_v(z, approximate)
    dz = empty((M, DC), device=x.device, dtype=cdt)
    dp, gate_s, nt, db1_u = sgu_backward(v, mean_v, rstd_v, gate_norm_weight, gate_norm_bias, proj_weight, proj_bias,
                                         z, dg, sample_scale, dz, B, S, approximate=approximate, write_gate=need_fc2,
                                         store_wgrad=need_proj, write_db=need_fc1)
    del dg
    if H <= sg.NORM_MAX_H:
        v = None          # the fused LN_v backward recomputes it
    if need_fc2:
        out[9] = gemm.wgrad(grad_out, gate_s, transpose_out=False, out_dtype=fc2_weight.dtype)
        gsum = grad_out.sum(dim=1, dtype=torch.float32)                                 # [B, C]
        gsum = gsum * sample_scale.to(torch.float32)[:, None] if sample_scale is not None else gsum
        out[10] = gsum.sum(0).to(fc2_weight.dtype)
        del gate_s
    if need_proj:
        ext = torch.matmul(dp, nt.t())                                                 # [S, S + 1]: dW_p | db_p
        out[7] = ext[:, :S].to(proj_weight.dtype).clone(memory_format=torch.contiguous_format)
        out[8] = ext[:, S].to(proj_bias.dtype).clone()
        del nt, ext
    if not need_up:
        return out
    dn = sgu_dn(dp, proj_weight, B, S)
    del dp
    dgw, dgb, db1_v = norm_backward(dn, z, v, mean_v, rstd_v, gate_norm_weight, dz, approximate)
    del dn, z, v
    if need_gate_norm:
        out[5], out[6] = dgw.to(gate_norm_weight.dtype), dgb.to(gate_norm_bias.dtype)
    if need_fc1:
        out[3] = gemm.wgrad(y, dz, transpose_out=True, out_dtype=fc1_weight.dtype)
        out[4] = torch.cat([db1_u, db1_v]).to(fc1_bias.dtype)
    del y
    if need_input:
        dln = gemm.dn(dz, fc1_weight, B, S)
        del dz
        dx, dnw, dnb = layernorm_backward(dln, x, mean, rstd, norm_weight, dresidual=grad_out)
        out[0], out[1], out[2] = dx, dnw.to(norm_weight.dtype), dnb.to(norm_bias.dtype)
    return out


@gmlp_block_bwd.register_fake
def _(grad_out, x, mean, rstd, mean_v, rstd_v, z, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight,
      gate_norm_bias, proj_weight, proj_bias, fc2_weight, sample_scale, approximate, need_input, need_fc1,
      need_gate_norm, need_proj, need_fc2):
    C = x.shape[2]
    if x.shape[0] * x.shape[1] == 0:
        need_input = need_fc1 = need_gate_norm = need_proj = need_fc2 = True

    def like(t, need):
        return torch.empty_like(t, memory_format=torch.contiguous_format) if need else fc1_weight.new_empty((0,))
    return [like(x, need_input), like(norm_weight, need_input), like(norm_bias, need_input),
            like(fc1_weight, need_fc1), like(fc1_bias, need_fc1), like(gate_norm_weight, need_gate_norm),
            like(gate_norm_bias, need_gate_norm), like(proj_weight, need_proj), like(proj_bias, need_proj),
            like(fc2_weight, need_fc2), fc2_weight.new_empty((C,)) if need_fc2 else fc1_weight.new_empty((0,))]


def _setup_context(ctx, inputs, output):
    (x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight, proj_bias,
     fc2_weight, _, sample_scale, _, _, approximate, _) = inputs
    _, mean, rstd, mean_v, rstd_v, z = output
    ctx.save_for_backward(x, mean, rstd, mean_v, rstd_v, z, norm_weight, norm_bias, fc1_weight, fc1_bias,
                          gate_norm_weight, gate_norm_bias, proj_weight, proj_bias, fc2_weight, sample_scale)
    ctx.approximate = approximate
    ctx.mark_non_differentiable(mean, rstd, mean_v, rstd_v, z)


def _backward(ctx, grad_out, *_):
    (x, mean, rstd, mean_v, rstd_v, z, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight,
     gate_norm_bias, proj_weight, proj_bias, fc2_weight, sample_scale) = ctx.saved_tensors
    need = ctx.needs_input_grad
    grads = gmlp_block_bwd(grad_out, x, mean, rstd, mean_v, rstd_v, z, norm_weight, norm_bias, fc1_weight, fc1_bias,
                           gate_norm_weight, gate_norm_bias, proj_weight, proj_bias, fc2_weight, sample_scale,
                           ctx.approximate, any(need[0:3]), any(need[3:5]), any(need[5:7]), any(need[7:9]),
                           any(need[9:11]))
    return (*(g if n else None for g, n in zip(grads, need[:11], strict=True)), None, None, None, None, None)


gmlp_block_fwd.register_autograd(_backward, setup_context=_setup_context)
_guard.guard_autograd(gmlp_block_fwd, "mixer_kernels.gmlp_block")
_guard.guard_autograd(gmlp_block_bwd, "mixer_kernels.gmlp_block", backward=True)


def gmlp_block(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
               proj_bias, fc2_weight, fc2_bias, *, eps: float, gate_eps: float, approximate: str, recompute: bool,
               sample_scale=None) -> torch.Tensor:
    """The Triton path of `mixer_kernels.gmlp_block` (inputs checked and cast by functional.py)."""
    params = (x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
              proj_bias, fc2_weight, fc2_bias)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in params)
    norm_weight, norm_bias, fc1_bias, gate_norm_weight, gate_norm_bias, proj_bias, fc2_bias = (
        t.contiguous() for t in (norm_weight, norm_bias, fc1_bias, gate_norm_weight, gate_norm_bias, proj_bias,
                                 fc2_bias))
    if sample_scale is not None:
        sample_scale = sample_scale.detach().contiguous()
    out = gmlp_block_fwd(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias,
                         proj_weight, proj_bias, fc2_weight, fc2_bias, sample_scale, float(eps), float(gate_eps),
                         approximate, bool(needs_grad and not recompute))
    return out[0]


__all__ = ["gmlp_block", "gmlp_block_fwd", "gmlp_block_bwd"]
