"""A whole gMLP block (issue 14; timm's SpatialGatingBlock with GatedMlp and SpatialGatingUnit):
mixer_kernels.gmlp_block against the same block written as timm writes it, in eager PyTorch and under
torch.compile.
    h = GELU(fc1(LN(x))),  u, v = h.chunk(2, -1)       fc1 [DC, C]
    out = x + fc2(u * proj(LN_v(v)^T)^T)               proj [S, S] + [S] along the tokens, fc2 [C, DC/2]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .cases import SHAPES as MIXER_SHAPES
from .cases import Case, RunConfig, build_op_case, linear_params, mode_factor

# gmlp_s16_224 (C = 256, DC = 6C) at 224 px; "tiny" is the CPU smoke run's shape (its DC is even).
SHAPES = {"gmlp_s16": dict(S=196, C=256, DC=1536, depth=30, patch=16),
          "tiny": {k: MIXER_SHAPES["tiny"][k] for k in ("S", "C", "DC", "depth", "patch")}}


def _norm_params(n, gen, cfg):
    """LayerNorm weight and bias away from (1, 0)."""
    w = 1.0 + 0.1 * torch.randn(n, generator=gen, device=cfg.device)
    b = 0.1 * torch.randn(n, generator=gen, device=cfg.device)
    return [w.to(cfg.dtype), b.to(cfg.dtype)]


def fused_block(x, nw, nb, w1, b1, gw, gb, pw, pb, w2, b2):
    """What mixer_kernels.SpatialGatingBlock.forward computes."""
    import mixer_kernels
    return mixer_kernels.gmlp_block(x, nw, nb, w1, b1, gw, gb, pw, pb, w2, b2)


def eager_block(x, nw, nb, w1, b1, gw, gb, pw, pb, w2, b2):
    """timm's SpatialGatingBlock.forward, op for op (LayerNorm eps 1e-6, the gate's nn.LayerNorm 1e-5)."""
    h = F.gelu(F.linear(F.layer_norm(x, (x.shape[-1],), nw, nb, 1e-6), w1, b1))
    u, v = h.chunk(2, dim=-1)
    v = F.layer_norm(v, (v.shape[-1],), gw, gb, 1e-5)
    v = F.linear(v.transpose(-1, -2), pw, pb)
    return x + F.linear(u * v.transpose(-1, -2), w2, b2)


def _build(shape: str, B: int, mode: str):
    d = SHAPES[shape]
    S, C, DC = d["S"], d["C"], d["DC"]

    def make_set(gen, cfg):
        x = torch.randn(B, S, C, generator=gen, device=cfg.device).to(cfg.dtype)
        return [x, *_norm_params(C, gen, cfg), *linear_params(DC, C, gen, cfg), *_norm_params(DC // 2, gen, cfg),
                *linear_params(S, S, gen, cfg), *linear_params(C, DC // 2, gen, cfg)]

    def build(cfg: RunConfig):
        return build_op_case(cfg, mode, lambda g: make_set(g, cfg), (B, S, C), fused_block, eager_block)

    return build


def block_flops(B, d) -> float:
    """fc1 [C -> DC], the projection along S on DC/2 channels, fc2 [DC/2 -> C]."""
    S, C, DC = d["S"], d["C"], d["DC"]
    return 2.0 * B * S * (C * DC + S * DC // 2 + DC // 2 * C)


def cases(shapes, batches, modes) -> list[Case]:
    """The gMLP block at the given shapes of SHAPES (others are the Mixer's: left to its families)."""
    out = []
    for shape in [s for s in shapes if s in SHAPES]:
        for B in batches:
            for mode in modes:
                out.append(Case("gmlp", shape, B, mode, block_flops(B, SHAPES[shape]) * mode_factor(mode),
                                _build(shape, B, mode)))
    return out
