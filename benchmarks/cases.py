"""What one benchmark case is, and the providers (implementations) a case compares.

A `Case` is one row of the results: a family (token, channel, block, model, anchor), a shape, a batch
and a mode. Building it (only when it runs, so nothing is allocated up front) gives a `Built`: one
`step(i)` callable per provider, which runs the i-th rotated input set once and returns the output
(and, for forward+backward, the gradients) so providers can be checked against the reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

MODES = ("fwd", "fwd+bwd", "infer")
MODEL_MODES = MODES + ("train",)    # train: a whole-model training step (models only; see models.py)
MODE_HELP = {"fwd": "forward (training: autograd records)", "fwd+bwd": "forward + backward",
             "infer": "inference (no_grad)"}
MK = "mixer-kernels"
MK_COMPILE = "mixer-kernels+compile"     # opt-in: torch.compile around the fused ops (what a user may do)
BASELINES = ("eager", "compile", "compile-max")
PROVIDERS = (MK, MK_COMPILE, *BASELINES)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

# Paper Table 1 (docs/design.md, "The block") at 224 px, patch 16: S = 196.
SHAPES = {
    "S/16": dict(S=196, C=512, DS=256, DC=2048, depth=8, patch=16),
    "B/16": dict(S=196, C=768, DS=384, DC=3072, depth=12, patch=16),
    "L/16": dict(S=196, C=1024, DS=512, DC=4096, depth=24, patch=16),
    # The CPU smoke run: tiny, odd token count, runs through the Triton interpreter in seconds.
    "tiny": dict(S=12, C=16, DS=8, DC=40, depth=2, patch=8),
}


@dataclass
class RunConfig:
    device: str                  # "cuda", or "cpu" for the smoke run
    dtype: torch.dtype
    smoke: bool
    providers: list[str]         # in measuring order; MK first
    rounds: int = 5              # interleaved measuring rounds per case
    round_ms: float = 100.0      # target time per provider per round
    l2_bytes: int = 0            # the card's L2 size (rotation sets must exceed it)
    kernels: bool = False        # profile per-kernel device time after timing
    deadline: float | None = None  # time.perf_counter() past which a case starts no new round (--budget-s)

    @property
    def cuda(self) -> bool:
        """Time with CUDA events and read CUDA memory statistics."""
        return self.device == "cuda"


@dataclass
class Built:
    steps: dict[str, Callable[[int], tuple]]       # provider -> step(i)
    skipped: dict[str, str] = field(default_factory=dict)   # provider -> why it did not run
    errors: dict[str, str] = field(default_factory=dict)    # provider -> why it failed to build
    reference: str | None = "eager"                # the provider others are checked against
    n_sets: int = 1


@dataclass
class Case:
    family: str                  # "anchor", "token", "channel", "block", "model"
    name: str                    # "B/16", "timm B/16", "matmul 8192^3", ...
    batch: int
    mode: str
    work: float                  # FLOPs (or bytes for the copy anchor) of one step
    build: Callable[[RunConfig], Built]
    unit: str = "flop"           # "flop" -> TFLOP/s, "byte" -> GB/s

    @property
    def label(self) -> str:
        return f"{self.family} {self.name} B={self.batch} {self.mode}"


# -------------------------------------------------------------------------------------------------
# FLOP counts (docs/design.md, "Where the time goes"): forward only; backward is counted as 2x forward.

def token_flops(B, S, C, DS) -> float:
    return 4.0 * B * C * S * DS


def channel_flops(B, S, C, DC) -> float:
    return 4.0 * B * S * C * DC


def kernel_flops(family: str, name: str, batch: int) -> dict[str, float]:
    """FLOPs of one call of each mixer-kernels matmul kernel in a case, for per-kernel rates (issue 4:
    "each GEMM at >= 70% of the matmul rate"). Unpadded sizes, recomputed matmuls counted (the kernel
    does that work). Channel mixing: every launch of its three kernels is one [B*S, C] x [C, DC]-sized
    GEMM (fc1, fc2, the two backward data GEMMs, each weight gradient). Token mixing: the fast path's
    forward kernel does 2 token-MLP matmuls, its dT kernel 3; each launch of the large-S path's GEMM kernel
    (fc1, fc2, dT) 1, its dual GEMM 2 (sizes: docs/design.md, "Where the time goes")."""
    shape = name.split()[-1]
    if family not in ("token", "channel", "block", "model") or shape not in SHAPES:
        return {}
    d = SHAPES[shape]
    tok = token_flops(batch, d["S"], d["C"], d["DS"]) / 2      # one token-MLP matmul
    ch = channel_flops(batch, d["S"], d["C"], d["DC"]) / 2     # one channel-MLP matmul
    return {"_token_mixing_fwd_tm_kernel": 2 * tok, "_token_mixing_bwd_dt_tm_kernel": 3 * tok,
            "_token_large_gemm_kernel": tok, "_token_large_dual_kernel": 2 * tok,
            "_channel_hidden_kernel": ch, "_channel_out_kernel": ch,
            "_channel_wgrad_kernel": ch}


def mode_factor(mode: str) -> float:
    return 3.0 if mode in ("fwd+bwd", "train") else 1.0


# -------------------------------------------------------------------------------------------------
# Providers.

def compiled(fn, provider: str):
    """torch.compile of fn for the "compile" / "compile-max" providers. Static shapes: each case gets
    its own compiled callable (the runner resets dynamo between cases), so no case runs a dynamic-shape
    graph or falls back to eager after the recompile limit."""
    kwargs: dict[str, Any] = dict(dynamic=False)
    if provider == "compile-max":
        kwargs["mode"] = "max-autotune-no-cudagraphs"
    return torch.compile(fn, **kwargs)


def baseline_fns(eager_fn, cfg: RunConfig) -> dict[str, Callable]:
    """eager and the torch.compile variants of the same reference math, for the providers asked for."""
    fns = {}
    for p in cfg.providers:
        if p == "eager":
            fns[p] = eager_fn
        elif p in ("compile", "compile-max"):
            fns[p] = compiled(eager_fn, p)
    return fns


# -------------------------------------------------------------------------------------------------
# Inputs: fresh random sets away from init (LN weight != 1, biases != 0), rotated so the L2 holds none.

MAX_SETS, MAX_ROTATION_BYTES = 512, 2 << 30


def rotation_sets(set_bytes: int, cfg: RunConfig) -> int:
    """Enough input sets that consecutive steps of a provider never find their inputs in the L2:
    together at least 3x the L2 size, within 2 GiB and 512 sets."""
    if cfg.smoke or cfg.l2_bytes <= 0:
        return 2
    n = -(-3 * cfg.l2_bytes // max(set_bytes, 1))
    n = min(n, MAX_SETS, max(1, MAX_ROTATION_BYTES // max(set_bytes, 1)))
    return max(2, n)


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def layernorm_params(C, gen, cfg):
    w = 1.0 + 0.1 * torch.randn(C, generator=gen, device=cfg.device)
    b = 0.1 * torch.randn(C, generator=gen, device=cfg.device)
    return [w.to(cfg.dtype), b.to(cfg.dtype)]


def linear_params(n_out, n_in, gen, cfg):
    bound = n_in ** -0.5
    w = (torch.rand(n_out, n_in, generator=gen, device=cfg.device) * 2 - 1) * bound
    b = 0.1 * torch.randn(n_out, generator=gen, device=cfg.device)
    return [w.to(cfg.dtype), b.to(cfg.dtype)]


def generator(cfg: RunConfig, seed: int) -> torch.Generator:
    return torch.Generator(device=cfg.device).manual_seed(seed)


def op_step(fn, sets, grad_outs, mode):
    """step(i) for a function of tensors: inference under no_grad, forward with autograd recording,
    or forward + backward (torch.autograd.grad over every input, so nothing accumulates)."""
    n = len(sets)
    if mode == "infer":
        def step(i):
            with torch.no_grad():
                return (fn(*sets[i % n]),)
    elif mode == "fwd":
        def step(i):
            return (fn(*sets[i % n]),)
    else:
        def step(i):
            args = sets[i % n]
            out = fn(*args)
            return (out.detach(), *torch.autograd.grad(out, args, grad_outs[i % n]))
    return step


def build_op_case(cfg: RunConfig, mode: str, make_set: Callable[[torch.Generator], list[torch.Tensor]],
                  out_shape: tuple, mk_fn: Callable, eager_fn: Callable) -> Built:
    """Built for a function of (x, parameters...): mixer-kernels, eager and compiled eager."""
    first = make_set(generator(cfg, 0))
    n_sets = rotation_sets(nbytes(first), cfg)
    sets = [first] + [make_set(generator(cfg, i)) for i in range(1, n_sets)]
    if mode != "infer":
        for s in sets:
            for t in s:
                t.requires_grad_(True)
    grad_outs = None
    if mode == "fwd+bwd":
        grad_outs = [torch.randn(out_shape, generator=generator(cfg, 1000 + i), device=cfg.device).to(cfg.dtype)
                     for i in range(n_sets)]
    built = Built(steps={}, n_sets=n_sets)
    fns = baseline_fns(eager_fn, cfg)
    for p in (MK, MK_COMPILE):
        if p in cfg.providers:
            fns[p] = mk_fn if p == MK else compiled(mk_fn, "compile")
    for p in cfg.providers:
        if p in fns:
            built.steps[p] = op_step(fns[p], sets, grad_outs, mode)
    return built
