"""ResMLP's two halves in plain float64-ready PyTorch (Touvron et al. 2021, arXiv 2105.03404; timm's
ResBlock), written independently of mixer_kernels: the oracle of the ResMLP tests where timm is absent
(the XLA environment). x [B, S, C]; alpha, beta, layer_scale [C]; token weight [S, S].
"""
import torch


def affine(x, alpha, beta):
    return alpha.reshape(-1) * x + beta.reshape(-1)


def token_mixing(x, alpha, beta, weight, bias, layer_scale, sample_scale=None):
    """x + s * ls * (W @ affine(x) + bias) along S, per sample."""
    branch = torch.einsum("st,btc->bsc", weight, affine(x, alpha, beta)) + bias[None, :, None]
    s = 1.0 if sample_scale is None else sample_scale[:, None, None]
    return x + s * layer_scale * branch


def channel_mixing(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, sample_scale=None,
                   approximate="none"):
    """x + s * ls * fc2(GELU(fc1(affine(x))))."""
    h = torch.nn.functional.gelu(affine(x, alpha, beta) @ fc1_weight.t() + fc1_bias, approximate=approximate)
    s = 1.0 if sample_scale is None else sample_scale[:, None, None]
    return x + s * layer_scale * (h @ fc2_weight.t() + fc2_bias)
