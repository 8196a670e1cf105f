"""A whole ResMLP block (issue 14; timm's ResBlock): mixer_kernels' two fused ResMLP ops against
reference/resmlp.py's formulas in eager PyTorch and under torch.compile.
    token   x + ls1 * (W @ (alpha1 * x + beta1) + b)        W [S, S]
    channel x + ls2 * fc2(GELU(fc1(alpha2 * x + beta2)))   fc1 [DC, C], fc2 [C, DC]
"""
from __future__ import annotations

import torch

from .cases import SHAPES as MIXER_SHAPES
from .cases import Case, RunConfig, build_op_case, channel_flops, linear_params, mode_factor

# resmlp_24_224 (C = 384, DC = 4C) at 224 px; "tiny" is the CPU smoke run's shape.
SHAPES = {"resmlp_24": dict(S=196, C=384, DC=1536, depth=24, patch=16),
          "tiny": {k: MIXER_SHAPES["tiny"][k] for k in ("S", "C", "DC", "depth", "patch")}}


def _affine_params(C, gen, cfg):
    """alpha, beta, layer scale: away from (1, 0, 1e-4) so every term counts."""
    a = 1.0 + 0.1 * torch.randn(C, generator=gen, device=cfg.device)
    b = 0.1 * torch.randn(C, generator=gen, device=cfg.device)
    ls = 0.5 + 0.1 * torch.randn(C, generator=gen, device=cfg.device)
    return [a.to(cfg.dtype), b.to(cfg.dtype), ls.to(cfg.dtype)]


def fused_block(x, a1, b1, ls1, tw, tb, a2, b2, ls2, c1w, c1b, c2w, c2b):
    """What mixer_kernels.ResBlock.forward computes."""
    import mixer_kernels
    y = mixer_kernels.resmlp_token_mixing(x, a1, b1, tw, tb, ls1)
    return mixer_kernels.resmlp_channel_mixing(y, a2, b2, c1w, c1b, c2w, c2b, ls2)


def eager_block(x, a1, b1, ls1, tw, tb, a2, b2, ls2, c1w, c1b, c2w, c2b):
    from reference import resmlp
    y = resmlp.token_mixing(x, a1, b1, tw, tb, ls1)
    return resmlp.channel_mixing(y, a2, b2, c1w, c1b, c2w, c2b, ls2)


def _build(shape: str, B: int, mode: str):
    d = SHAPES[shape]
    S, C, DC = d["S"], d["C"], d["DC"]

    def make_set(gen, cfg):
        x = (0.5 + 2.0 * torch.randn(B, S, C, generator=gen, device=cfg.device)).to(cfg.dtype)
        return [x, *_affine_params(C, gen, cfg), *linear_params(S, S, gen, cfg), *_affine_params(C, gen, cfg),
                *linear_params(DC, C, gen, cfg), *linear_params(C, DC, gen, cfg)]

    def build(cfg: RunConfig):
        return build_op_case(cfg, mode, lambda g: make_set(g, cfg), (B, S, C), fused_block, eager_block)

    return build


def block_flops(B, d) -> float:
    return 2.0 * B * d["S"] * d["S"] * d["C"] + channel_flops(B, d["S"], d["C"], d["DC"])


def cases(shapes, batches, modes) -> list[Case]:
    """The ResMLP block at the given shapes of SHAPES (others are the Mixer's: left to its families)."""
    out = []
    for shape in [s for s in shapes if s in SHAPES]:
        for B in batches:
            for mode in modes:
                out.append(Case("resmlp", shape, B, mode, block_flops(B, SHAPES[shape]) * mode_factor(mode),
                                _build(shape, B, mode)))
    return out
