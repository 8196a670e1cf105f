"""Public functions: check the inputs, pick the backend by device, call the op.

Dispatch (docs/design.md, "The user contract"):
- CUDA tensors: the Triton kernels (a torch.library custom op with registered autograd and a fake
  implementation, so torch.compile(fullgraph=True) traces it).
- CPU tensors: the same Triton kernels under the interpreter when TRITON_INTERPRET=1 (how the tests run
  them), else the plain PyTorch path of torch_math.py.
- float64 (x or the fc weights), on CPU and CUDA alike: the plain PyTorch path, decided here only (no
  Triton kernel computes in float64; the custom ops refuse it, ops/_guard.py).
- XLA tensors (torch_xla): the XLA formulation of xla.py.
"""
from __future__ import annotations

import warnings

import torch

from . import _nvtx, torch_math
from ._checks import (
    autocast_enabled,
    check_gmixer_args,
    check_gmlp_args,
    check_mlp_args,
    check_resmlp_channel_args,
    check_resmlp_token_args,
)
from ._config import use_triton

_XLA_DEVICE_TYPES = ("xla", "tpu", "jax")  # torch_xla, TorchTPU, torchax: all compiled by XLA (xla.py)


def _autocast_cast(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias):
    """Under torch.autocast, matmul operands run in the autocast dtype, as eager nn.Linear does; the
    LayerNorm (parameters and statistics) stays in fp32 inside the kernels, as eager's autocast does."""
    if not autocast_enabled(x):
        return fc1_weight, fc1_bias, fc2_weight, fc2_bias
    dt = torch.get_autocast_dtype(x.device.type)
    return fc1_weight.to(dt), fc1_bias.to(dt), fc2_weight.to(dt), fc2_bias.to(dt)


def _note_traced_plain_path(x) -> None:
    """torch.export / torch.jit.trace of a call that takes the plain path (CPU tensors without TRITON_INTERPRET)
    records the PyTorch math, not the kernels: say so (a model exported on CPU and served on a GPU would run
    that math there)."""
    if torch.jit.is_tracing() or torch.compiler.is_exporting():
        warnings.warn(f"mixer_kernels: tracing on {x.device.type} tensors records the plain PyTorch math, not the "
                      "Triton kernels (CPU without TRITON_INTERPRET=1 runs no kernel); the exported or traced graph "
                      "keeps that math on every device. Export or trace on a CUDA GPU to record the fused kernels",
                      stacklevel=4)


def _triton_path(x, *tensors) -> bool:
    """The routing rule of every function for CPU and CUDA tensors: Triton kernels (compiled, or interpreted on
    CPU), except when x, a parameter or sample_scale is float64 (possible with mixed dtypes under autocast):
    then torch_math on every device, as eager computes it (full float64 precision; gradcheck passes)."""
    if not use_triton(x):
        _note_traced_plain_path(x)
        return False
    return x.dtype != torch.float64 and all(t is None or t.dtype != torch.float64 for t in tensors)


def _scale_needs_grad(sample_scale) -> bool:
    return sample_scale is not None and sample_scale.requires_grad and torch.is_grad_enabled()


def _scaled_outside(x, out, sample_scale):
    """The Triton ops give no gradient to sample_scale: when it needs one, they run unscaled and the
    scale is applied here, in torch, as the plain path does (x + s * branch), so autograd differentiates
    it. The branch is recovered as out - x, which rounds in x's dtype (exact enough in fp32; in fp16/bf16
    the branch carries the rounding of the residual sum, a rare training setup)."""
    if not torch.compiler.is_compiling():   # dynamo cannot trace warnings.warn (fullgraph); eager calls warn
        warnings.warn("sample_scale requires a gradient: on the Triton path its gradient is computed from the branch "
                      "recovered as out - x in x's dtype, which loses accuracy when |x| is much larger than the "
                      "branch (a small layer scale, large activations; issue 23); detach sample_scale (drop_path "
                      "masks need no gradient) or use float64 (the plain path) for an exact one", UserWarning,
                      stacklevel=3)
    branch = out - x
    return x + branch * sample_scale.to(branch.dtype)[:, None, None]


def token_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps=1e-6,
                 approximate="none", sample_scale=None, recompute=False):
    """The token-mixing half of a Mixer block: x + fc2(GELU(fc1(LN(x)^T)))^T.

    x [B, S, C]; norm_weight, norm_bias [C]; fc1_weight [DS, S]; fc1_bias [DS]; fc2_weight [S, DS];
    fc2_bias [S]. `approximate`: "none" (exact erf GELU, timm) or "tanh" (the JAX original).
    `sample_scale` [B], optional: multiplies each sample's branch before the residual (drop_path).
    `recompute` matters only on the XLA path (the Triton path always recomputes the hidden activation).
    Returns a tensor shaped and typed like x. float64 runs the plain PyTorch math on every device.
    On the Triton path torch.func.grad / jacrev / jvp and double backward (create_graph=True) raise a
    RuntimeError naming them; torch.func.vmap works.

    Triton path (ops/token_mixing.py): two launches forward (row statistics, one fused kernel). S <= 256
    (all Mixers at 224 px) keeps the hidden activation [B, DS, C] on chip; S > 256 (e.g. 576 at 384 px)
    runs a correct tiled fallback that recomputes fc1 per 128-token output tile. The backward saves only
    x and the fp32 row statistics and gives deterministic (bitwise reproducible) gradients.
    """
    args = (x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    if _nvtx.ENABLED:
        with _nvtx.annotate("mixer_kernels.token_mixing"):
            return _token_mixing(*args, eps=eps, approximate=approximate, sample_scale=sample_scale,
                                 recompute=recompute)
    return _token_mixing(*args, eps=eps, approximate=approximate, sample_scale=sample_scale, recompute=recompute)


def channel_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps=1e-6,
                   approximate="none", recompute=False, sample_scale=None):
    """The channel-mixing half of a Mixer block: x + fc2(GELU(fc1(LN(x)))).

    x [B, S, C]; norm_weight, norm_bias [C]; fc1_weight [DC, C]; fc1_bias [DC]; fc2_weight [C, DC];
    fc2_bias [C]. `recompute=True` saves only x and the row statistics for backward (the hidden
    pre-activation [B*S, DC] is recomputed); by default that pre-activation is saved in the compute dtype.
    `sample_scale` [B], optional: multiplies each sample's branch before the residual (drop_path).
    Returns a tensor shaped and typed like x. float64 runs the plain PyTorch math on every device.
    On the Triton path torch.func.grad / jacrev / jvp and double backward (create_graph=True) raise a
    RuntimeError naming them; torch.func.vmap works.
    """
    args = (x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    if _nvtx.ENABLED:
        with _nvtx.annotate("mixer_kernels.channel_mixing"):
            return _channel_mixing(*args, eps=eps, approximate=approximate, recompute=recompute,
                                   sample_scale=sample_scale)
    return _channel_mixing(*args, eps=eps, approximate=approximate, recompute=recompute, sample_scale=sample_scale)


def _token_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps, approximate,
                  sample_scale, recompute):
    check_mlp_args("token", x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps,
                   approximate, sample_scale, recompute)
    if x.device.type in _XLA_DEVICE_TYPES:
        from . import xla
        return xla.token_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                                eps=eps, approximate=approximate, sample_scale=sample_scale, recompute=recompute)
    if _triton_path(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, sample_scale):
        from .ops.token_mixing import token_mixing as op
        w = _autocast_cast(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
        if _scale_needs_grad(sample_scale):
            return _scaled_outside(x, op(x, norm_weight, norm_bias, *w, eps=float(eps), approximate=approximate),
                                   sample_scale)
        return op(x, norm_weight, norm_bias, *w, eps=float(eps), approximate=approximate, sample_scale=sample_scale)
    return torch_math.token_mixing_torch(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                                         eps, approximate, sample_scale)


def _channel_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps,
                    approximate, recompute, sample_scale):
    check_mlp_args("channel", x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps,
                   approximate, sample_scale, recompute)
    if x.device.type in _XLA_DEVICE_TYPES:
        from . import xla
        return xla.channel_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                                  eps=eps, approximate=approximate, sample_scale=sample_scale, recompute=recompute)
    if _triton_path(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, sample_scale):
        from .ops.channel_mixing import channel_mixing as op
        w = _autocast_cast(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
        if _scale_needs_grad(sample_scale):
            return _scaled_outside(x, op(x, norm_weight, norm_bias, *w, eps=float(eps), approximate=approximate,
                                         recompute=recompute), sample_scale)
        return op(x, norm_weight, norm_bias, *w, eps=float(eps), approximate=approximate, recompute=recompute,
                  sample_scale=sample_scale)
    return torch_math.channel_mixing_torch(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight,
                                           fc2_bias, eps, approximate, sample_scale)


# ------------------------------------------------------------------------------------------------
# ResMLP (Touvron et al. 2021, arXiv 2105.03404; timm's ResBlock): an Affine "norm" (no statistics), one
# linear layer along S for the token half, and a per-channel layer scale on each branch.

def _flat(t):
    """timm stores Affine's alpha, beta as [1, 1, C]: the kernels take [C] (a view, same Parameter)."""
    return t.reshape(t.shape[-1])


def resmlp_token_mixing(x, alpha, beta, weight, bias, layer_scale, *, sample_scale=None):
    """The token-mixing half of a ResMLP block: x + ls * (W @ (alpha * x + beta) + bias) along S.

    x [B, S, C]; alpha, beta [C] or [1, 1, C] (timm's Affine); weight [S, S]; bias [S] (timm's
    linear_tokens); layer_scale [C] (ls1). `sample_scale` [B], optional: multiplies each sample's branch
    (drop_path). Returns a tensor shaped and typed like x.

    Triton path (ops/resmlp_token_mixing.py): one launch forward (Affine, GEMM over S, bias, scales and
    residual fused), one launch backward plus one GEMM for the weight gradient; only x is saved.
    float64 and CPU tensors without TRITON_INTERPRET run the plain PyTorch math (torch_math.py); XLA
    devices the same math compiled by XLA (xla.py)."""
    check_resmlp_token_args(x, alpha, beta, weight, bias, layer_scale, sample_scale)
    alpha, beta = _flat(alpha), _flat(beta)
    if _nvtx.ENABLED:
        with _nvtx.annotate("mixer_kernels.resmlp_token_mixing"):
            return _resmlp_token_mixing(x, alpha, beta, weight, bias, layer_scale, sample_scale)
    return _resmlp_token_mixing(x, alpha, beta, weight, bias, layer_scale, sample_scale)


def _resmlp_token_mixing(x, alpha, beta, weight, bias, layer_scale, sample_scale):
    if x.device.type in _XLA_DEVICE_TYPES:
        from . import xla
        return xla.resmlp_token_mixing(x, alpha, beta, weight, bias, layer_scale, sample_scale=sample_scale)
    if _triton_path(x, alpha, beta, weight, bias, layer_scale, sample_scale):
        from .ops.resmlp_token_mixing import resmlp_token_mixing as op
        if autocast_enabled(x):
            dt = torch.get_autocast_dtype(x.device.type)
            weight, bias = weight.to(dt), bias.to(dt)
        if _scale_needs_grad(sample_scale):
            return _scaled_outside(x, op(x, alpha, beta, weight, bias, layer_scale), sample_scale)
        return op(x, alpha, beta, weight, bias, layer_scale, sample_scale=sample_scale)
    return torch_math.resmlp_token_mixing_torch(x, alpha, beta, weight, bias, layer_scale, sample_scale)


def resmlp_channel_mixing(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, *,
                          approximate="none", sample_scale=None, recompute=False):
    """The channel-mixing half of a ResMLP block: x + ls * fc2(GELU(fc1(alpha * x + beta))).

    x [B, S, C]; alpha, beta [C] or [1, 1, C]; fc1_weight [DC, C]; fc1_bias [DC]; fc2_weight [C, DC];
    fc2_bias [C]; layer_scale [C] (ls2). `approximate`: "none" or "tanh" GELU. `recompute=True` saves
    only x for backward. `sample_scale` [B], optional (drop_path). Returns a tensor shaped like x.

    Triton path (ops/resmlp_channel_mixing.py): the Mixer's channel GEMMs with the Affine prologue and
    the layer scale folded into fc2; routing as resmlp_token_mixing."""
    check_resmlp_channel_args(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, approximate,
                              sample_scale, recompute)
    alpha, beta = _flat(alpha), _flat(beta)
    args = (x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale)
    if _nvtx.ENABLED:
        with _nvtx.annotate("mixer_kernels.resmlp_channel_mixing"):
            return _resmlp_channel_mixing(*args, approximate, sample_scale, recompute)
    return _resmlp_channel_mixing(*args, approximate, sample_scale, recompute)


def _resmlp_channel_mixing(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, approximate,
                           sample_scale, recompute):
    if x.device.type in _XLA_DEVICE_TYPES:
        from . import xla
        return xla.resmlp_channel_mixing(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale,
                                         approximate=approximate, sample_scale=sample_scale, recompute=recompute)
    if _triton_path(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale, sample_scale):
        from .ops.resmlp_channel_mixing import resmlp_channel_mixing as op
        w = _autocast_cast(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
        if _scale_needs_grad(sample_scale):
            return _scaled_outside(x, op(x, alpha, beta, *w, layer_scale, approximate=approximate,
                                         recompute=recompute), sample_scale)
        return op(x, alpha, beta, *w, layer_scale, approximate=approximate, recompute=recompute,
                  sample_scale=sample_scale)
    return torch_math.resmlp_channel_mixing_torch(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                                                  layer_scale, approximate, sample_scale)


# ------------------------------------------------------------------------------------------------
# gMLP (Liu et al. 2021, arXiv 2105.08050; timm's SpatialGatingBlock): one residual branch per block,
# LayerNorm, fc1, GELU, the spatial gating unit (LayerNorm of one half, a linear layer along S, the gate)
# and fc2.

def gmlp_block(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
               proj_bias, fc2_weight, fc2_bias, *, eps=1e-6, gate_eps=1e-5, approximate="none", sample_scale=None,
               recompute=False):
    """A whole gMLP block: x + fc2(u * (W_p @ LN_v(v) + b_p)), u, v = GELU(fc1(LN(x))).chunk(2, -1).

    x [B, S, C]; norm_weight, norm_bias [C] (timm's `norm`, eps `eps`); fc1_weight [DC, C], fc1_bias [DC]
    (DC even); gate_norm_weight, gate_norm_bias [DC/2] (`mlp_channels.gate.norm`, eps `gate_eps`: timm
    builds it as nn.LayerNorm, 1e-5); proj_weight [S, S], proj_bias [S] (`mlp_channels.gate.proj`, the
    linear layer along S); fc2_weight [C, DC/2], fc2_bias [C]. `approximate`: "none" (exact erf GELU,
    timm) or "tanh". `sample_scale` [B], optional: multiplies each sample's branch (drop_path).
    `recompute=True` saves only x and the fp32 row statistics for backward; by default the pre-activation
    fc1(LN(x)) [B*S, DC] is saved too, in the compute dtype. Returns a tensor shaped and typed like x.
    float64 runs the plain PyTorch math on every device; on the Triton path torch.func.grad / jacrev /
    jvp and double backward raise a RuntimeError naming them.

    Triton path (ops/gmlp_block.py): five launches forward (LayerNorm, fc1 + GELU, the gate's LayerNorm
    statistics, the spatial projection with the LayerNorm applied in its operand loads and the gate in
    its epilogue, fc2 + scale + residual); deterministic gradients for every input.
    """
    check_gmlp_args(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
                    proj_bias, fc2_weight, fc2_bias, eps, gate_eps, approximate, sample_scale, recompute)
    args = (x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
            proj_bias, fc2_weight, fc2_bias)
    if _nvtx.ENABLED:
        with _nvtx.annotate("mixer_kernels.gmlp_block"):
            return _gmlp_block(*args, eps, gate_eps, approximate, sample_scale, recompute)
    return _gmlp_block(*args, eps, gate_eps, approximate, sample_scale, recompute)


def _gmlp_block(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
                proj_bias, fc2_weight, fc2_bias, eps, gate_eps, approximate, sample_scale, recompute):
    if x.device.type in _XLA_DEVICE_TYPES:
        from . import xla
        return xla.gmlp_block(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias,
                              proj_weight, proj_bias, fc2_weight, fc2_bias, eps=eps, gate_eps=gate_eps,
                              approximate=approximate, sample_scale=sample_scale, recompute=recompute)
    if _triton_path(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
                    proj_bias, fc2_weight, fc2_bias, sample_scale):
        from .ops.gmlp_block import gmlp_block as op
        fc1_weight, fc1_bias, fc2_weight, fc2_bias = _autocast_cast(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
        if autocast_enabled(x):
            proj_weight, proj_bias = proj_weight.to(fc1_weight.dtype), proj_bias.to(fc1_weight.dtype)
        args = (x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
                proj_bias, fc2_weight, fc2_bias)
        kw = dict(eps=float(eps), gate_eps=float(gate_eps), approximate=approximate, recompute=recompute)
        if _scale_needs_grad(sample_scale):
            return _scaled_outside(x, op(*args, **kw), sample_scale)
        return op(*args, **kw, sample_scale=sample_scale)
    return torch_math.gmlp_block_torch(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight,
                                       gate_norm_bias, proj_weight, proj_bias, fc2_weight, fc2_bias, eps, gate_eps,
                                       approximate, sample_scale)


# ------------------------------------------------------------------------------------------------
# gMixer (timm's gmixer_12_224 / gmixer_24_224: MixerBlock with GluMlp and SiLU in both halves): fc1 to the
# hidden width, split in two halves x1, x2 (timm's chunk), the gate x1 * SiLU(x2) (gate_last, timm's default)
# or SiLU(x1) * x2 (gate_last=False), fc2 from half the hidden width.

def gmixer_token_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps=1e-6,
                        gate_last=True, sample_scale=None, recompute=False):
    """The token-mixing half of a gMixer block: x + fc2(g(fc1(LN(x)^T)))^T, g the SiLU-gated GLU.

    x [B, S, C]; norm_weight, norm_bias [C]; fc1_weight [DS, S] (DS even), fc1_bias [DS]; fc2_weight
    [S, DS/2]; fc2_bias [S]. `gate_last` as timm's GluMlp: True g = x1 * SiLU(x2), False SiLU(x1) * x2, with
    x1, x2 = the first and second halves of fc1's output. `sample_scale` [B], optional: multiplies each
    sample's branch (drop_path). `recompute` matters only on the XLA path. Returns a tensor shaped and typed
    like x. float64 runs the plain PyTorch math on every device; on the Triton path torch.func.grad /
    jacrev / jvp and double backward raise a RuntimeError naming them.

    Triton path (ops/gmixer_token_mixing.py): S <= 256 with fp16/bf16 weights (every gMixer at 224 px, as
    trained) runs the token-major fused kernels: two launches forward (row statistics; LayerNorm, both fc1
    halves, the gate and fc2 in one kernel, the hidden activations on chip only), the backward one kernel,
    the LayerNorm backward and two cuBLAS GEMMs for the weight gradients; only x and the statistics are
    saved. S > 256 and fp32 weights take the large-S path for now: a composition of PyTorch's LayerNorm,
    cuBLAS matmuls and our gate kernel (mixer_kernels::glu_gate), which saves the hidden activations.
    """
    args = (x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    check_gmixer_args("token", *args, eps, gate_last, sample_scale, recompute)
    if _nvtx.ENABLED:
        with _nvtx.annotate("mixer_kernels.gmixer_token_mixing"):
            return _gmixer_mixing("token", *args, eps, gate_last, sample_scale, recompute)
    return _gmixer_mixing("token", *args, eps, gate_last, sample_scale, recompute)


def gmixer_channel_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps=1e-6,
                          gate_last=True, sample_scale=None, recompute=False):
    """The channel-mixing half of a gMixer block: x + fc2(g(fc1(LN(x)))), g the SiLU-gated GLU.

    x [B, S, C]; norm_weight, norm_bias [C]; fc1_weight [DC, C] (DC even), fc1_bias [DC]; fc2_weight
    [C, DC/2]; fc2_bias [C]. `gate_last`, `sample_scale` as gmixer_token_mixing. `recompute=True` saves only
    x and the row statistics for backward; by default the pre-activation fc1(LN(x)) [B*S, DC] is saved in
    the compute dtype. Returns a tensor shaped and typed like x; float64 and the transforms as above.

    Triton path (ops/gmixer_channel_mixing.py): channel_mixing's launches with the gate as GEMM 1's
    epilogue (two accumulators over the paired fc1 rows); each GEMM is a measured choice between our
    kernel and cuBLAS plus a Triton pass, as for GELU.
    """
    args = (x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    check_gmixer_args("channel", *args, eps, gate_last, sample_scale, recompute)
    if _nvtx.ENABLED:
        with _nvtx.annotate("mixer_kernels.gmixer_channel_mixing"):
            return _gmixer_mixing("channel", *args, eps, gate_last, sample_scale, recompute)
    return _gmixer_mixing("channel", *args, eps, gate_last, sample_scale, recompute)


def _gmixer_mixing(kind, x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps, gate_last,
                   sample_scale, recompute):
    if x.device.type in _XLA_DEVICE_TYPES:
        from . import xla
        fn = xla.gmixer_token_mixing if kind == "token" else xla.gmixer_channel_mixing
        return fn(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps=eps, gate_last=gate_last,
                  sample_scale=sample_scale, recompute=recompute)
    if _triton_path(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, sample_scale):
        w = _autocast_cast(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
        if kind == "token":
            from .ops.gmixer_token_mixing import fast_path
            from .ops.gmixer_token_mixing import gmixer_token_mixing as op
            kw = dict(eps=float(eps), gate_last=gate_last)
            # the composition (large S, fp32) differentiates sample_scale itself; the fused ops take it as data
            outside = _scale_needs_grad(sample_scale) and fast_path(x.shape[1], w[0].dtype)
        else:
            from .ops.gmixer_channel_mixing import gmixer_channel_mixing as op
            kw = dict(eps=float(eps), gate_last=gate_last, recompute=recompute)
            outside = _scale_needs_grad(sample_scale)
        if outside:
            return _scaled_outside(x, op(x, norm_weight, norm_bias, *w, **kw), sample_scale)
        return op(x, norm_weight, norm_bias, *w, **kw, sample_scale=sample_scale)
    fn = torch_math.gmixer_token_mixing_torch if kind == "token" else torch_math.gmixer_channel_mixing_torch
    return fn(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps, gate_last, sample_scale)
