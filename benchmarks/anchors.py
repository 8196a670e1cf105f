"""The card's own ceilings, measured in the same run: a square matmul (TFLOP/s, the denominator of
"% of matmul") and a device-to-device copy (GB/s, bytes read + written)."""
from __future__ import annotations

import torch

from .cases import Built, Case, RunConfig


def _matmul(n: int):
    def build(cfg: RunConfig) -> Built:
        a = torch.randn(n, n, device=cfg.device).to(cfg.dtype)
        b = torch.randn(n, n, device=cfg.device).to(cfg.dtype)
        c = torch.empty(n, n, device=cfg.device, dtype=cfg.dtype)
        return Built(steps={"torch": lambda i: (torch.mm(a, b, out=c),)}, reference=None)
    return build


def _copy(nbytes: int):
    def build(cfg: RunConfig) -> Built:
        src = torch.randn(nbytes // 4, device=cfg.device)
        dst = torch.empty_like(src)
        return Built(steps={"torch": lambda i: (dst.copy_(src),)}, reference=None)
    return build


def cases(smoke: bool) -> list[Case]:
    n = 64 if smoke else 8192
    size = (1 << 20) if smoke else (1 << 30)
    return [Case("anchor", f"matmul {n}^3", 1, "infer", 2.0 * n ** 3, _matmul(n)),
            Case("anchor", f"copy {size >> 20} MiB", 1, "infer", 2.0 * size, _copy(size), unit="byte")]
