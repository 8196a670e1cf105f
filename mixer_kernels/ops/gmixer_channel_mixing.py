"""gMixer's channel half, fused: out = x + sample_scale[b] * fc2(x1 * SiLU(x2)),  x1, x2 = fc1(LN(x)).chunk(2, -1)
(timm's MixerBlock with mlp_layer=GluMlp, act_layer=nn.SiLU: gmixer_12_224, gmixer_24_224).

x [B, S, C]; fc1_weight [DC, C] (DC = 2H, rows n and n + H pair up as one gated hidden unit), fc2_weight [C, H].

The channel GEMMs of ops/channel_mixing.py with the activation as a parameter (its `approximate`: "glu_silu",
gate last, or "glu_silu_first", timm's gate_last=False), the same custom ops
(`mixer_kernels::channel_mixing_fwd` / `_bwd`) and launches:
  forward  layernorm_stats (writes y = LN(x)), GEMM 1 with two accumulators over fc1 rows n and n + H and the
           gate in the epilogue (writes z = [x1 | x2] [M, DC] when training, g [M, H]), GEMM 2 with bias,
           sample scale and residual;
  backward dg = g_out @ W2 with the GLU backward epilogue (dx1 = dg * SiLU(x2), dx2 = dg * x1 * SiLU'(x2),
           recomputed from z; s * g for dW2; column sums of dz for db1), dW2, dW1 = dz^T @ y, dn = dz @ W1,
           the LayerNorm backward.
Each GEMM is a choice between our kernel and cuBLAS plus a Triton pass (ops/_channel_routes.py, the GLU pass
_glu_pass_kernel), as for GELU. ops/_channel_gemm.py says why two accumulators rather than an interleaved copy.
"""
import torch

from .channel_mixing import channel_mixing


def activation(gate_last: bool) -> str:
    """The activation name ops/channel_mixing.py takes for gMixer's GLU."""
    return "glu_silu" if gate_last else "glu_silu_first"


def gmixer_channel_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, eps: float,
                          gate_last: bool = True, recompute: bool = False,
                          sample_scale: torch.Tensor | None = None) -> torch.Tensor:
    """The Triton path of `mixer_kernels.gmixer_channel_mixing` (inputs already checked)."""
    return channel_mixing(x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps=eps,
                          approximate=activation(gate_last), recompute=recompute, sample_scale=sample_scale)
