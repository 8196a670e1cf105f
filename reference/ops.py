"""The float64 oracle of each fused op: what mixer_kernels.token_mixing / channel_mixing compute, written
once, from the paper (Tolstikhin et al. 2021, arXiv 2105.01601) and timm's MixerBlock, independently of
the package (nothing here imports mixer_kernels). Tests and benchmarks judge accuracy with these
functions: called on float64 tensors they are the reference; called on fp16/bf16 tensors (or under
autocast) they are eager PyTorch in that dtype, whose error the "2x rule" allows twice over
(docs/design.md, "Accuracy: how the tests judge"). tests/test_reference.py checks them against timm
and against the formulas written element by element.

Shapes use the paper's letters: x [B, S, C]; token MLP fc1 [DS, S], fc2 [S, DS]; channel MLP
fc1 [DC, C], fc2 [C, DC]. `sample_scale` [B] is drop_path's per-sample factor on the branch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["layer_norm", "mlp", "token_mixing", "channel_mixing", "mixer_block", "glu_mlp", "gmixer_token_mixing",
           "gmixer_channel_mixing", "gmlp_block", "forward_backward"]


def layer_norm(x, weight, bias, eps=1e-6):
    """LayerNorm over the channels C (the last dim), timm's eps."""
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def mlp(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, approximate="none"):
    """fc2(GELU(fc1(x))) along the last dim; GELU exact (erf) or its tanh approximation."""
    return F.linear(F.gelu(F.linear(x, fc1_weight, fc1_bias), approximate=approximate), fc2_weight, fc2_bias)


def _residual(x, branch, sample_scale):
    if sample_scale is not None:
        branch = branch * sample_scale.to(branch.dtype)[:, None, None]
    return x + branch


def token_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps=1e-6,
                 approximate="none", sample_scale=None):
    """x [B, S, C] -> x + fc2(GELU(fc1(LN(x)^T)))^T: the token MLP mixes along S, per channel column."""
    t = layer_norm(x, norm_weight, norm_bias, eps).transpose(1, 2)                       # [B, C, S]
    branch = mlp(t, fc1_weight, fc1_bias, fc2_weight, fc2_bias, approximate).transpose(1, 2)   # [B, S, C]
    return _residual(x, branch, sample_scale)


def channel_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps=1e-6,
                   approximate="none", sample_scale=None):
    """x [B, S, C] -> x + fc2(GELU(fc1(LN(x)))): the channel MLP mixes along C, per token row."""
    branch = mlp(layer_norm(x, norm_weight, norm_bias, eps), fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                 approximate)
    return _residual(x, branch, sample_scale)


def mixer_block(x, n1w, n1b, t1w, t1b, t2w, t2b, n2w, n2b, c1w, c1b, c2w, c2b, eps=1e-6, approximate="none"):
    """One Mixer block (docs/design.md, "The block"): token mixing, then channel mixing."""
    y = token_mixing(x, n1w, n1b, t1w, t1b, t2w, t2b, eps, approximate)
    return channel_mixing(y, n2w, n2b, c1w, c1b, c2w, c2b, eps, approximate)


# gMixer (timm's gmixer_*: MixerBlock with GluMlp and SiLU in both halves). fc1 [2H, N], fc2 [N, H].

def glu_mlp(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gate_last=True):
    """fc2(x1 * SiLU(x2)) (gate_last) or fc2(SiLU(x1) * x2), x1, x2 = fc1(x).chunk(2, -1): timm's GluMlp."""
    x1, x2 = F.linear(x, fc1_weight, fc1_bias).chunk(2, dim=-1)
    g = x1 * F.silu(x2) if gate_last else F.silu(x1) * x2
    return F.linear(g, fc2_weight, fc2_bias)


def gmixer_token_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps=1e-6,
                        gate_last=True, sample_scale=None):
    """x [B, S, C] -> x + GluMlp(LN(x)^T)^T along S: fc1 [DS, S], fc2 [S, DS/2]."""
    t = layer_norm(x, norm_weight, norm_bias, eps).transpose(1, 2)                       # [B, C, S]
    branch = glu_mlp(t, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gate_last).transpose(1, 2)
    return _residual(x, branch, sample_scale)


def gmixer_channel_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps=1e-6,
                          gate_last=True, sample_scale=None):
    """x [B, S, C] -> x + GluMlp(LN(x)) along C: fc1 [DC, C], fc2 [C, DC/2]."""
    branch = glu_mlp(layer_norm(x, norm_weight, norm_bias, eps), fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                     gate_last)
    return _residual(x, branch, sample_scale)


def gmlp_block(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
               proj_bias, fc2_weight, fc2_bias, eps=1e-6, gate_eps=1e-5, approximate="none", sample_scale=None):
    """gMLP's block (Liu et al. 2021, arXiv 2105.08050; timm's SpatialGatingBlock with GatedMlp and
    SpatialGatingUnit): h = GELU(fc1(LN(x))) [B, S, DC], u, v = the two halves of h (u first, timm's
    chunk), v = LN_v(v) over DC/2 (gate_eps: nn.LayerNorm's default 1e-5 in timm), the spatial projection
    p[b, s, c] = sum_t W_p[s, t] v[b, t, c] + b_p[s], and x + fc2(u * p)."""
    h = F.gelu(F.linear(layer_norm(x, norm_weight, norm_bias, eps), fc1_weight, fc1_bias), approximate=approximate)
    u, v = h.chunk(2, dim=-1)
    v = layer_norm(v, gate_norm_weight, gate_norm_bias, gate_eps)
    p = torch.einsum("st,btc->bsc", proj_weight, v) + proj_bias[None, :, None]
    return _residual(x, F.linear(u * p, fc2_weight, fc2_bias), sample_scale)


def forward_backward(op, inputs, grad_out, dtype=torch.float64, sample_scale=None, **kwargs):
    """`op` (one of the functions above) on copies of `inputs` cast to `dtype` (float64: the oracle;
    None: each input's own dtype, i.e. eager PyTorch), then backward with `grad_out`. Returns the
    detached output and the gradient of every input, in order, and of `sample_scale` (appended) when
    it requires grad."""
    def leaf(t, grad=True):
        return t.detach().to(dtype or t.dtype).requires_grad_(grad)

    leaves = [leaf(t) for t in inputs]
    if sample_scale is not None:
        sample_scale = leaf(sample_scale, sample_scale.requires_grad)
        kwargs["sample_scale"] = sample_scale
    out = op(*leaves, **kwargs)
    out.backward(grad_out.to(out.dtype))
    grads = [t.grad for t in leaves]
    if sample_scale is not None and sample_scale.requires_grad:
        grads.append(sample_scale.grad)
    return out.detach(), grads
