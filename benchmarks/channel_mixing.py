"""Channel mixing, x + fc2(GELU(fc1(LN(x)))): mixer_kernels.channel_mixing against the same math in
eager PyTorch and under torch.compile."""
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
    op_available,
)


def _build(shape: str, B: int, mode: str):
    d = SHAPES[shape]
    S, C, DC = d["S"], d["C"], d["DC"]

    def make_set(gen, cfg):
        x = (0.5 + 2.0 * torch.randn(B, S, C, generator=gen, device=cfg.device)).to(cfg.dtype)
        return [x, *layernorm_params(C, gen, cfg), *linear_params(DC, C, gen, cfg), *linear_params(C, DC, gen, cfg)]

    def build(cfg: RunConfig):
        from mixer_kernels.torch_math import channel_mixing_torch
        skip = op_available("channel_mixing")
        mk_fn = None
        if skip is None:
            import mixer_kernels
            mk_fn = mixer_kernels.channel_mixing
        return build_op_case(cfg, mode, lambda g: make_set(g, cfg), (B, S, C), mk_fn, skip, channel_mixing_torch)

    return build


def cases(shapes, batches, modes) -> list[Case]:
    out = []
    for shape in shapes:
        d = SHAPES[shape]
        for B in batches:
            for mode in modes:
                flops = channel_flops(B, d["S"], d["C"], d["DC"]) * mode_factor(mode)
                out.append(Case("channel", shape, B, mode, flops, _build(shape, B, mode)))
    return out
