"""The two halves of a Mixer block as plain PyTorch ops: the CPU path (no GPU, no TRITON_INTERPRET)
and the formulation the XLA path builds on. One source of truth for this math inside the package;
a thing under test, not an oracle: the tests judge it and the kernels by reference/ops.py.

Under autocast these behave as eager timm does: layer_norm runs in fp32, linear in the autocast dtype.
`sample_scale` [B] (drop_path's per-sample keep/scale) multiplies the branch before the residual add.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _residual(x, branch, sample_scale):
    if sample_scale is not None:
        branch = branch * sample_scale.to(branch.dtype)[:, None, None]
    return x + branch


def token_mixing_torch(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                       eps=1e-6, approximate="none", sample_scale=None):
    """x [B, S, C] -> x + fc2(GELU(fc1(LN(x)^T)))^T, the token MLP mixing along S."""
    t = F.layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, eps).transpose(1, 2)   # [B, C, S]
    t = F.linear(F.gelu(F.linear(t, fc1_weight, fc1_bias), approximate=approximate), fc2_weight, fc2_bias)
    return _residual(x, t.transpose(1, 2), sample_scale)


def channel_mixing_torch(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                         eps=1e-6, approximate="none", sample_scale=None):
    """x [B, S, C] -> x + fc2(GELU(fc1(LN(x)))), the channel MLP mixing along C."""
    h = F.layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, eps)
    h = F.linear(F.gelu(F.linear(h, fc1_weight, fc1_bias), approximate=approximate), fc2_weight, fc2_bias)
    return _residual(x, h, sample_scale)


def resmlp_token_mixing_torch(x, alpha, beta, weight, bias, layer_scale, sample_scale=None):
    """x [B, S, C] -> x + ls * linear_S(alpha * x + beta): ResMLP's token half (timm's ResBlock)."""
    t = F.linear(torch.addcmul(beta, alpha, x).transpose(1, 2), weight, bias)      # [B, C, S]
    return _residual(x, layer_scale * t.transpose(1, 2), sample_scale)


def resmlp_channel_mixing_torch(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale,
                                approximate="none", sample_scale=None):
    """x [B, S, C] -> x + ls * fc2(GELU(fc1(alpha * x + beta))): ResMLP's channel half."""
    h = F.linear(F.gelu(F.linear(torch.addcmul(beta, alpha, x), fc1_weight, fc1_bias), approximate=approximate),
                 fc2_weight, fc2_bias)
    return _residual(x, layer_scale * h, sample_scale)


def _glu(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gate_last):
    x1, x2 = F.linear(x, fc1_weight, fc1_bias).chunk(2, dim=-1)
    return F.linear(x1 * F.silu(x2) if gate_last else F.silu(x1) * x2, fc2_weight, fc2_bias)


def gmixer_token_mixing_torch(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                              eps=1e-6, gate_last=True, sample_scale=None):
    """x [B, S, C] -> x + GluMlp(LN(x)^T)^T: gMixer's token half (fc1 [DS, S], SiLU gate, fc2 [S, DS/2])."""
    t = F.layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, eps).transpose(1, 2)   # [B, C, S]
    t = _glu(t, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gate_last)
    return _residual(x, t.transpose(1, 2), sample_scale)


def gmixer_channel_mixing_torch(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                                eps=1e-6, gate_last=True, sample_scale=None):
    """x [B, S, C] -> x + GluMlp(LN(x)): gMixer's channel half (fc1 [DC, C], SiLU gate, fc2 [C, DC/2])."""
    h = F.layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, eps)
    return _residual(x, _glu(h, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gate_last), sample_scale)


def gmlp_block_torch(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
                     proj_bias, fc2_weight, fc2_bias, eps=1e-6, gate_eps=1e-5, approximate="none", sample_scale=None):
    """x [B, S, C] -> x + fc2(u * proj_S(LN_v(v))), u, v = GELU(fc1(LN(x))).chunk(2): gMLP's block (timm's
    SpatialGatingBlock), written as timm writes it (the projection on the transposed v)."""
    h = F.gelu(F.linear(F.layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, eps), fc1_weight, fc1_bias),
               approximate=approximate)
    u, v = h.chunk(2, dim=-1)
    v = F.layer_norm(v, (v.shape[-1],), gate_norm_weight, gate_norm_bias, gate_eps)
    v = F.linear(v.transpose(-1, -2), proj_weight, proj_bias).transpose(-1, -2)
    return _residual(x, F.linear(u * v, fc2_weight, fc2_bias), sample_scale)
