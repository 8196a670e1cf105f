"""The XLA path: `token_mixing` and `channel_mixing` on torch_xla tensors (TPU; XLA's CPU device in the
tests). functional.py sends tensors here by device type; torch_xla is imported only when needed.

Formulation. The math is torch_math.py's, unchanged: layer_norm, linear, gelu and the residual add are
all lowered by torch_xla to HLO (no `aten::` fallback to the CPU), shapes are static, nothing reads a
value back to the host, and the whole step (forward, backward, optimizer) becomes one XLA graph that
the compiler fuses. A Triton-style fused kernel would only hide the graph from XLA. The token half's
transposes cost nothing there: on XLA's CPU backend a token-mixing forward+backward (B=4, S=49, C=64,
DS=32) compiles to 6 dots and 6 transposes as written in torch_math.py, against 15 transposes for the
transpose-free `einsum("ds,bsc->bdc")` form (docs/design.md, "The block") and 12 for a broadcast `matmul`.

Recompute. forward and backward are one graph, so `torch.utils.checkpoint` is undone by XLA's common
subexpression elimination: the recomputed forward is identical to the original, gets merged with it,
and the activations stay alive (pytorch/xla#3455, #7024). `recompute=True` therefore uses
`torch_xla.utils.checkpoint.checkpoint`, which puts an optimization barrier on the inputs of the
recomputation. It is reentrant: gradients come from `.backward()` (not `torch.autograd.grad`), and it
applies only when grad is enabled and some input requires grad (otherwise there is nothing to save).

Other device types that run PyTorch through XLA (TorchTPU's "tpu", torchax's "jax") take the same
formulation; for them `recompute=True` uses `torch.utils.checkpoint` (non-reentrant). Not tested.
"""
from __future__ import annotations

import torch

from . import torch_math


def _run(math, x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps, approximate,
         sample_scale, recompute):
    def fn(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, sample_scale):
        return math(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, float(eps), approximate,
                    sample_scale)

    args = (x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, sample_scale)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)
    if not (recompute and needs_grad):
        return fn(*args)
    if x.device.type == "xla":
        from torch_xla.utils.checkpoint import checkpoint
        # Nothing inside is random (drop_path's scale comes in as sample_scale): no RNG state to replay.
        return checkpoint(fn, *args, preserve_rng_state=False)
    from torch.utils.checkpoint import checkpoint
    return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False)


def token_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps=1e-6,
                 approximate="none", sample_scale=None, recompute=False):
    """x + fc2(GELU(fc1(LN(x)^T)))^T on an XLA device; arguments as `mixer_kernels.token_mixing`
    (already checked there). `recompute=True`: backward recomputes LN and the hidden activation."""
    return _run(torch_math.token_mixing_torch, x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight,
                fc2_bias, eps, approximate, sample_scale, recompute)


def channel_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps=1e-6,
                   approximate="none", sample_scale=None, recompute=False):
    """x + fc2(GELU(fc1(LN(x)))) on an XLA device; arguments as `mixer_kernels.channel_mixing`
    (already checked there). `recompute=True`: backward recomputes LN and the hidden activation."""
    return _run(torch_math.channel_mixing_torch, x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight,
                fc2_bias, eps, approximate, sample_scale, recompute)


def _checkpointed(fn, args, recompute):
    """fn(*args), recomputed in the backward when `recompute` (as _run, for any argument list)."""
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)
    if not (recompute and needs_grad):
        return fn(*args)
    if args[0].device.type == "xla":
        from torch_xla.utils.checkpoint import checkpoint
        return checkpoint(fn, *args, preserve_rng_state=False)
    from torch.utils.checkpoint import checkpoint
    return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False)


def resmlp_token_mixing(x, alpha, beta, weight, bias, layer_scale, *, sample_scale=None):
    """x + ls * (W @ (alpha * x + beta) + bias) along S on an XLA device (ResMLP's token half); arguments as
    `mixer_kernels.resmlp_token_mixing`, already checked. Nothing to recompute: only x is needed."""
    return torch_math.resmlp_token_mixing_torch(x, alpha, beta, weight, bias, layer_scale, sample_scale)


def resmlp_channel_mixing(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, *,
                          approximate="none", sample_scale=None, recompute=False):
    """x + ls * fc2(GELU(fc1(alpha * x + beta))) on an XLA device; `recompute=True`: the backward recomputes
    the hidden activation (an optimisation barrier keeps XLA from merging it back)."""
    def fn(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, sample_scale):
        return torch_math.resmlp_channel_mixing_torch(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                                                      layer_scale, approximate, sample_scale)
    return _checkpointed(fn, (x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, sample_scale),
                         recompute)


def gmlp_block(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
               proj_bias, fc2_weight, fc2_bias, *, eps=1e-6, gate_eps=1e-5, approximate="none", sample_scale=None,
               recompute=False):
    """gMLP's block on an XLA device (torch_math's formulation); arguments as `mixer_kernels.gmlp_block`,
    already checked. `recompute=True`: the backward recomputes the hidden activations (with an optimisation
    barrier, as the other ops)."""
    def fn(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight, proj_bias,
           fc2_weight, fc2_bias, sample_scale):
        return torch_math.gmlp_block_torch(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight,
                                           gate_norm_bias, proj_weight, proj_bias, fc2_weight, fc2_bias, float(eps),
                                           float(gate_eps), approximate, sample_scale)
    return _checkpointed(fn, (x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias,
                              proj_weight, proj_bias, fc2_weight, fc2_bias, sample_scale), recompute)


def gmixer_token_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps=1e-6,
                        gate_last=True, sample_scale=None, recompute=False):
    """gMixer's token half on an XLA device (torch_math's formulation: LN, fc1, SiLU gate, fc2 along S);
    arguments as `mixer_kernels.gmixer_token_mixing`, already checked. `recompute=True`: the backward
    recomputes LN and the hidden activations (with an optimisation barrier)."""
    def fn(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, sample_scale):
        return torch_math.gmixer_token_mixing_torch(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight,
                                                    fc2_bias, float(eps), gate_last, sample_scale)
    return _checkpointed(fn, (x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, sample_scale),
                         recompute)


def gmixer_channel_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps=1e-6,
                          gate_last=True, sample_scale=None, recompute=False):
    """gMixer's channel half on an XLA device; as gmixer_token_mixing."""
    def fn(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, sample_scale):
        return torch_math.gmixer_channel_mixing_torch(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight,
                                                      fc2_bias, float(eps), gate_last, sample_scale)
    return _checkpointed(fn, (x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, sample_scale),
                         recompute)
