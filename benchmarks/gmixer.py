"""A whole gMixer block (issue 14; timm's MixerBlock with GluMlp and SiLU in both halves, gmixer_24_224):
mixer_kernels' two gMixer ops against the float64 oracle's formulas (reference/ops.py, timm's GluMlp op for
op) in eager PyTorch and under torch.compile.
    token   x + fc2(x1 * SiLU(x2))^T,  x1, x2 = fc1(LN(x)^T).chunk(2)     fc1 [DS, S], fc2 [S, DS/2]
    channel x + fc2(x1 * SiLU(x2)),    x1, x2 = fc1(LN(x)).chunk(2)       fc1 [DC, C], fc2 [C, DC/2]
"""
from __future__ import annotations

import torch

from .cases import SHAPES as MIXER_SHAPES
from .cases import Case, RunConfig, build_op_case, linear_params, mode_factor

# gmixer_24_224 (C = 384, token hidden 384 = C, DC = 4C) at 224 px; "tiny" is the CPU smoke run's shape
# (its DS and DC are even).
SHAPES = {"gmixer_24": dict(S=196, C=384, DS=384, DC=1536, depth=24, patch=16),
          "tiny": {k: MIXER_SHAPES["tiny"][k] for k in ("S", "C", "DS", "DC", "depth", "patch")}}


def _norm_params(n, gen, cfg):
    """LayerNorm weight and bias away from (1, 0)."""
    w = 1.0 + 0.1 * torch.randn(n, generator=gen, device=cfg.device)
    b = 0.1 * torch.randn(n, generator=gen, device=cfg.device)
    return [w.to(cfg.dtype), b.to(cfg.dtype)]


def fused_block(x, n1w, n1b, t1w, t1b, t2w, t2b, n2w, n2b, c1w, c1b, c2w, c2b):
    """What mixer_kernels.MixerBlock.forward computes with GluMlp + SiLU halves."""
    import mixer_kernels
    y = mixer_kernels.gmixer_token_mixing(x, n1w, n1b, t1w, t1b, t2w, t2b)
    return mixer_kernels.gmixer_channel_mixing(y, n2w, n2b, c1w, c1b, c2w, c2b)


def eager_block(x, n1w, n1b, t1w, t1b, t2w, t2b, n2w, n2b, c1w, c1b, c2w, c2b):
    """timm's MixerBlock(mlp_layer=GluMlp, act_layer=nn.SiLU).forward, op for op."""
    from reference import ops
    y = ops.gmixer_token_mixing(x, n1w, n1b, t1w, t1b, t2w, t2b)
    return ops.gmixer_channel_mixing(y, n2w, n2b, c1w, c1b, c2w, c2b)


def _build(shape: str, B: int, mode: str):
    d = SHAPES[shape]
    S, C, DS, DC = d["S"], d["C"], d["DS"], d["DC"]

    def make_set(gen, cfg):
        x = torch.randn(B, S, C, generator=gen, device=cfg.device).to(cfg.dtype)
        return [x, *_norm_params(C, gen, cfg), *linear_params(DS, S, gen, cfg), *linear_params(S, DS // 2, gen, cfg),
                *_norm_params(C, gen, cfg), *linear_params(DC, C, gen, cfg), *linear_params(C, DC // 2, gen, cfg)]

    def build(cfg: RunConfig):
        return build_op_case(cfg, mode, lambda g: make_set(g, cfg), (B, S, C), fused_block, eager_block)

    return build


def block_flops(B, d) -> float:
    """GluMlp: fc1 to the full hidden width, fc2 from half of it, in both halves."""
    return 3.0 * B * d["S"] * d["C"] * (d["DS"] + d["DC"])


def cases(shapes, batches, modes) -> list[Case]:
    """The gMixer block at the given shapes of SHAPES (others are the Mixer's: left to its families)."""
    out = []
    for shape in [s for s in shapes if s in SHAPES]:
        for B in batches:
            for mode in modes:
                out.append(Case("gmixer", shape, B, mode, block_flops(B, SHAPES[shape]) * mode_factor(mode),
                                _build(shape, B, mode)))
    return out
