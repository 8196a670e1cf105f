"""One whole Mixer block (token mixing, then channel mixing): mixer_kernels' two fused ops against
reference.ops.mixer_block (the float64 oracle's formulas) in eager PyTorch and under torch.compile."""
from __future__ import annotations

import torch

from .cases import (
    SHAPES,
    Case,
    RunConfig,
    build_op_case,
    channel_flops,
    layernorm_params,
    linear_params,
    mode_factor,
    token_flops,
)


def fused_block(x, n1w, n1b, t1w, t1b, t2w, t2b, n2w, n2b, c1w, c1b, c2w, c2b):
    """What mixer_kernels.MixerBlock.forward computes: token_mixing then channel_mixing."""
    import mixer_kernels
    y = mixer_kernels.token_mixing(x, n1w, n1b, t1w, t1b, t2w, t2b)
    return mixer_kernels.channel_mixing(y, n2w, n2b, c1w, c1b, c2w, c2b)


def _build(shape: str, B: int, mode: str):
    d = SHAPES[shape]
    S, C, DS, DC = d["S"], d["C"], d["DS"], d["DC"]

    def make_set(gen, cfg):
        x = (0.5 + 2.0 * torch.randn(B, S, C, generator=gen, device=cfg.device)).to(cfg.dtype)
        return [x, *layernorm_params(C, gen, cfg), *linear_params(DS, S, gen, cfg), *linear_params(S, DS, gen, cfg),
                *layernorm_params(C, gen, cfg), *linear_params(DC, C, gen, cfg), *linear_params(C, DC, gen, cfg)]

    def build(cfg: RunConfig):
        from reference.ops import mixer_block
        return build_op_case(cfg, mode, lambda g: make_set(g, cfg), (B, S, C), fused_block, mixer_block)

    return build


def block_flops(B, d) -> float:
    return token_flops(B, d["S"], d["C"], d["DS"]) + channel_flops(B, d["S"], d["C"], d["DC"])


def cases(shapes, batches, modes) -> list[Case]:
    out = []
    for shape in shapes:
        for B in batches:
            for mode in modes:
                out.append(Case("block", shape, B, mode, block_flops(B, SHAPES[shape]) * mode_factor(mode),
                                _build(shape, B, mode)))
    return out
