"""The two halves of the block on their own, each fused op against the same math in eager PyTorch and under
torch.compile:
    token   x + fc2(GELU(fc1(LN(x)^T)))^T   mixer_kernels.token_mixing    fc1 [DS, S], fc2 [S, DS]
    channel x + fc2(GELU(fc1(LN(x))))       mixer_kernels.channel_mixing  fc1 [DC, C], fc2 [C, DC]
"""
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

# family -> (op name in mixer_kernels and reference/ops.py, the MLP's (features, hidden) keys of SHAPES, FLOPs)
FAMILIES = {"token": ("token_mixing", ("S", "DS"), token_flops),
            "channel": ("channel_mixing", ("C", "DC"), channel_flops)}


def _build(family: str, shape: str, B: int, mode: str):
    op, (feat_key, hid_key), _ = FAMILIES[family]
    d = SHAPES[shape]
    S, C, F, H = d["S"], d["C"], d[feat_key], d[hid_key]

    def make_set(gen, cfg):
        x = (0.5 + 2.0 * torch.randn(B, S, C, generator=gen, device=cfg.device)).to(cfg.dtype)
        return [x, *layernorm_params(C, gen, cfg), *linear_params(H, F, gen, cfg), *linear_params(F, H, gen, cfg)]

    def build(cfg: RunConfig):
        import mixer_kernels
        from reference import ops
        return build_op_case(cfg, mode, lambda g: make_set(g, cfg), (B, S, C), getattr(mixer_kernels, op),
                             getattr(ops, op))

    return build


def cases(family: str, shapes, batches, modes) -> list[Case]:
    _, (_, hid_key), flops_of = FAMILIES[family]
    out = []
    for shape in shapes:
        d = SHAPES[shape]
        for B in batches:
            for mode in modes:
                flops = flops_of(B, d["S"], d["C"], d[hid_key]) * mode_factor(mode)
                out.append(Case(family, shape, B, mode, flops, _build(family, shape, B, mode)))
    return out
