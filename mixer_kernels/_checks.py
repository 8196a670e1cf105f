"""Input validation shared by every backend: reads shapes, dtypes and devices only (no host sync), and
raises ValueError/TypeError naming the argument and what was expected (docs/design.md, "The user contract")."""
from __future__ import annotations

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
APPROXIMATE = ("none", "tanh")


def autocast_enabled(x: torch.Tensor) -> bool:
    """Whether torch.autocast is on for x's device type."""
    try:
        return torch.is_autocast_enabled(x.device.type)
    except (RuntimeError, TypeError):   # a device type autocast does not know
        return False


def _tensor(name: str, t, ndim: int, shape_desc: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {shape_desc}, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor (float32, float16 or bfloat16), got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name}: expected shape {shape_desc}, got {tuple(t.shape)} ({t.dim()} dimensions)")


def _shape(name: str, t: torch.Tensor, expected: tuple, shape_desc: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {shape_desc} = {tuple(expected)}, got {tuple(t.shape)}")


def check_mlp_args(kind: str, x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps,
                   approximate, sample_scale=None, recompute=False) -> None:
    """kind "token": fc1_weight [DS, S], fc2_weight [S, DS] (mixes along S);
    kind "channel": fc1_weight [DC, C], fc2_weight [C, DC] (mixes along C)."""
    _tensor("x", x, 3, "[B, S, C]")
    B, S, C = x.shape
    N, H = ("S", "DS") if kind == "token" else ("C", "DC")       # mixed dimension, hidden width
    n = S if kind == "token" else C
    _tensor("norm_weight", norm_weight, 1, "[C]")
    _shape("norm_weight", norm_weight, (C,), "[C]")
    _tensor("norm_bias", norm_bias, 1, "[C]")
    _shape("norm_bias", norm_bias, (C,), "[C]")
    _tensor("fc1_weight", fc1_weight, 2, f"[{H}, {N}]")
    if fc1_weight.shape[1] != n:
        raise ValueError(f"fc1_weight: expected shape [{H}, {N}] with {N}={n} (from x {tuple(x.shape)}), "
                         f"got {tuple(fc1_weight.shape)}")
    hidden = fc1_weight.shape[0]
    if hidden < 1:
        raise ValueError(f"fc1_weight: expected {H} >= 1, got shape {tuple(fc1_weight.shape)}")
    _tensor("fc1_bias", fc1_bias, 1, f"[{H}]")
    _shape("fc1_bias", fc1_bias, (hidden,), f"[{H}]")
    _tensor("fc2_weight", fc2_weight, 2, f"[{N}, {H}]")
    _shape("fc2_weight", fc2_weight, (n, hidden), f"[{N}, {H}]")
    _tensor("fc2_bias", fc2_bias, 1, f"[{N}]")
    _shape("fc2_bias", fc2_bias, (n,), f"[{N}]")
    if sample_scale is not None:
        _tensor("sample_scale", sample_scale, 1, "[B]")
        _shape("sample_scale", sample_scale, (B,), "[B]")
    named = [("norm_weight", norm_weight), ("norm_bias", norm_bias), ("fc1_weight", fc1_weight),
             ("fc1_bias", fc1_bias), ("fc2_weight", fc2_weight), ("fc2_bias", fc2_bias)]
    if sample_scale is not None:
        named.append(("sample_scale", sample_scale))
    for name, t in named:
        if t.device != x.device:
            raise ValueError(f"{name}: expected a tensor on x's device {x.device}, got {t.device}")
    if x.device.type in ("cuda", "cpu") and x.dtype not in SUPPORTED_DTYPES and x.dtype != torch.float64:
        raise TypeError(f"x: expected float32, float16 or bfloat16 (float64 runs the PyTorch math), got {x.dtype}")
    if not autocast_enabled(x):
        for name, t in named[:6]:
            if t.dtype != x.dtype:
                raise TypeError(f"{name}: expected dtype {x.dtype} (x's dtype), got {t.dtype}; "
                                f"mixed dtypes are accepted only under torch.autocast")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise ValueError(f"eps: expected a positive float, got {eps!r}")
    if approximate not in APPROXIMATE:
        raise ValueError(f"approximate: expected 'none' (exact erf GELU) or 'tanh', got {approximate!r}")
    if not isinstance(recompute, bool):
        raise TypeError(f"recompute: expected a bool, got {type(recompute).__name__}")


def check_gmixer_args(kind: str, x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, eps,
                      gate_last, sample_scale=None, recompute=False) -> None:
    """gMixer's halves (timm's GluMlp): kind "token": fc1_weight [DS, S] with DS = 2H even, fc2_weight [S, H];
    kind "channel": fc1_weight [DC, C], fc2_weight [C, DC/2]. LayerNorm, biases, dtypes, devices, eps,
    sample_scale and recompute as check_mlp_args."""
    _tensor("x", x, 3, "[B, S, C]")
    N, H = ("S", "DS") if kind == "token" else ("C", "DC")       # mixed dimension, fc1's output width
    n = x.shape[1] if kind == "token" else x.shape[2]
    _tensor("fc1_weight", fc1_weight, 2, f"[{H}, {N}]")
    if fc1_weight.shape[1] != n:
        raise ValueError(f"fc1_weight: expected shape [{H}, {N}] with {N}={n} (from x {tuple(x.shape)}), "
                         f"got {tuple(fc1_weight.shape)}")
    hidden = fc1_weight.shape[0]
    if hidden < 2 or hidden % 2:
        raise ValueError(f"fc1_weight: expected {H} even and >= 2 (the GLU splits fc1's output into two halves), "
                         f"got shape {tuple(fc1_weight.shape)}")
    _tensor("fc2_weight", fc2_weight, 2, f"[{N}, {H}/2]")
    _shape("fc2_weight", fc2_weight, (n, hidden // 2), f"[{N}, {H}/2]")
    if not isinstance(gate_last, bool):
        raise TypeError(f"gate_last: expected a bool (timm's GluMlp.gate_last), got {type(gate_last).__name__}")
    # everything else as the Mixer's halves check it, with fc2 seen through a [N, DS]-shaped view (no copy)
    fc2_view = fc2_weight[:1, :1].expand(n, hidden)
    check_mlp_args(kind, x, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_view, fc2_bias, eps, "none",
                   sample_scale, recompute)


def _same_device(x, named) -> None:
    for name, t in named:
        if t is not None and t.device != x.device:
            raise ValueError(f"{name}: expected a tensor on x's device {x.device}, got {t.device}")


def _same_dtype(x, named) -> None:
    if autocast_enabled(x):
        return
    for name, t in named:
        if t.dtype != x.dtype:
            raise TypeError(f"{name}: expected dtype {x.dtype} (x's dtype), got {t.dtype}; "
                            f"mixed dtypes are accepted only under torch.autocast")


def _affine_and_scales(x, alpha, beta, layer_scale, sample_scale, B, C) -> None:
    """ResMLP's Affine parameters: [C] (timm stores them as [1, 1, C]: pass either), layer scale [C]."""
    for name, t in (("alpha", alpha), ("beta", beta)):
        _tensor(name, t, t.dim() if isinstance(t, torch.Tensor) else 1, "[C] or [1, 1, C]")
        if tuple(t.shape) not in ((C,), (1, 1, C)):
            raise ValueError(f"{name}: expected shape [C] or [1, 1, C] with C={C}, got {tuple(t.shape)}")
    _tensor("layer_scale", layer_scale, 1, "[C]")
    _shape("layer_scale", layer_scale, (C,), "[C]")
    if sample_scale is not None:
        _tensor("sample_scale", sample_scale, 1, "[B]")
        _shape("sample_scale", sample_scale, (B,), "[B]")


def check_resmlp_token_args(x, alpha, beta, weight, bias, layer_scale, sample_scale=None) -> None:
    """ResMLP token mixing: weight [S, S], bias [S]; alpha, beta, layer_scale [C]."""
    _tensor("x", x, 3, "[B, S, C]")
    B, S, C = x.shape
    _affine_and_scales(x, alpha, beta, layer_scale, sample_scale, B, C)
    _tensor("weight", weight, 2, "[S, S]")
    _shape("weight", weight, (S, S), "[S, S]")
    _tensor("bias", bias, 1, "[S]")
    _shape("bias", bias, (S,), "[S]")
    named = [("alpha", alpha), ("beta", beta), ("weight", weight), ("bias", bias), ("layer_scale", layer_scale)]
    _same_device(x, named + [("sample_scale", sample_scale)])
    if x.device.type in ("cuda", "cpu") and x.dtype not in SUPPORTED_DTYPES and x.dtype != torch.float64:
        raise TypeError(f"x: expected float32, float16 or bfloat16 (float64 runs the PyTorch math), got {x.dtype}")
    _same_dtype(x, named)


def check_resmlp_channel_args(x, alpha, beta, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_scale,
                              approximate, sample_scale=None, recompute=False) -> None:
    """ResMLP channel mixing: fc1_weight [DC, C], fc2_weight [C, DC]; alpha, beta, layer_scale [C]."""
    _tensor("x", x, 3, "[B, S, C]")
    B, S, C = x.shape
    _affine_and_scales(x, alpha, beta, layer_scale, sample_scale, B, C)
    own = [("alpha", alpha), ("beta", beta), ("layer_scale", layer_scale)]
    _same_device(x, own)
    if x.device.type in ("cuda", "cpu") and x.dtype not in SUPPORTED_DTYPES and x.dtype != torch.float64:
        raise TypeError(f"x: expected float32, float16 or bfloat16 (float64 runs the PyTorch math), got {x.dtype}")
    _same_dtype(x, own)
    # the MLP's shapes, dtypes, devices, approximate and recompute as the Mixer's channel half checks them
    # (its norm arguments stand in for alpha and beta, already checked above)
    check_mlp_args("channel", x, alpha.reshape(C), beta.reshape(C), fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                   1.0, approximate, sample_scale, recompute)


def check_gmlp_args(x, norm_weight, norm_bias, fc1_weight, fc1_bias, gate_norm_weight, gate_norm_bias, proj_weight,
                    proj_bias, fc2_weight, fc2_bias, eps, gate_eps, approximate, sample_scale=None,
                    recompute=False) -> None:
    """gMLP's block: norm [C], fc1 [DC, C] with DC even, gate norm [DC/2], proj [S, S] + [S], fc2 [C, DC/2]."""
    _tensor("x", x, 3, "[B, S, C]")
    B, S, C = x.shape
    for name, t in (("norm_weight", norm_weight), ("norm_bias", norm_bias)):
        _tensor(name, t, 1, "[C]")
        _shape(name, t, (C,), "[C]")
    _tensor("fc1_weight", fc1_weight, 2, "[DC, C]")
    if fc1_weight.shape[1] != C:
        raise ValueError(f"fc1_weight: expected shape [DC, C] with C={C} (from x {tuple(x.shape)}), "
                         f"got {tuple(fc1_weight.shape)}")
    DC = fc1_weight.shape[0]
    if DC < 2 or DC % 2:
        raise ValueError(f"fc1_weight: expected an even DC >= 2 (the gate splits it in halves), got shape "
                         f"{tuple(fc1_weight.shape)}")
    H = DC // 2
    _tensor("fc1_bias", fc1_bias, 1, "[DC]")
    _shape("fc1_bias", fc1_bias, (DC,), "[DC]")
    for name, t in (("gate_norm_weight", gate_norm_weight), ("gate_norm_bias", gate_norm_bias)):
        _tensor(name, t, 1, "[DC/2]")
        _shape(name, t, (H,), "[DC/2]")
    _tensor("proj_weight", proj_weight, 2, "[S, S]")
    _shape("proj_weight", proj_weight, (S, S), "[S, S]")
    _tensor("proj_bias", proj_bias, 1, "[S]")
    _shape("proj_bias", proj_bias, (S,), "[S]")
    _tensor("fc2_weight", fc2_weight, 2, "[C, DC/2]")
    _shape("fc2_weight", fc2_weight, (C, H), "[C, DC/2]")
    _tensor("fc2_bias", fc2_bias, 1, "[C]")
    _shape("fc2_bias", fc2_bias, (C,), "[C]")
    if sample_scale is not None:
        _tensor("sample_scale", sample_scale, 1, "[B]")
        _shape("sample_scale", sample_scale, (B,), "[B]")
    named = [("norm_weight", norm_weight), ("norm_bias", norm_bias), ("fc1_weight", fc1_weight),
             ("fc1_bias", fc1_bias), ("gate_norm_weight", gate_norm_weight), ("gate_norm_bias", gate_norm_bias),
             ("proj_weight", proj_weight), ("proj_bias", proj_bias), ("fc2_weight", fc2_weight),
             ("fc2_bias", fc2_bias)]
    _same_device(x, named + [("sample_scale", sample_scale)])
    if x.device.type in ("cuda", "cpu") and x.dtype not in SUPPORTED_DTYPES and x.dtype != torch.float64:
        raise TypeError(f"x: expected float32, float16 or bfloat16 (float64 runs the PyTorch math), got {x.dtype}")
    _same_dtype(x, named)
    for name, e in (("eps", eps), ("gate_eps", gate_eps)):
        if not isinstance(e, (int, float)) or isinstance(e, bool) or not e > 0:
            raise ValueError(f"{name}: expected a positive float, got {e!r}")
    if approximate not in APPROXIMATE:
        raise ValueError(f"approximate: expected 'none' (exact erf GELU) or 'tanh', got {approximate!r}")
    if not isinstance(recompute, bool):
        raise TypeError(f"recompute: expected a bool, got {type(recompute).__name__}")
