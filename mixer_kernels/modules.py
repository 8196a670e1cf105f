"""Drop-in fused modules for timm's MLP-Mixer.

`MixerBlock` has timm's constructor, attribute names and state_dict keys (norm1, mlp_tokens.fc1, ...,
norm2, mlp_channels.fc2), so `timm.create_model("mixer_b16_224", block_layer=MixerBlock)` builds a fused
model and timm checkpoints load unchanged. Its forward is `token_mixing` then `channel_mixing`; with timm's
GluMlp and SiLU as the MLPs (gMixer: `create_model("gmixer_24_224", block_layer=MixerBlock)`) it is
`gmixer_token_mixing` then `gmixer_channel_mixing`, each half chosen by its own MLP.
`fuse_mixer_blocks(model)` swaps the fused block into an existing model in place, sharing the very
Parameter objects (an optimizer built before the swap stays valid).

The fused kernels compute exactly: LayerNorm (eps read from the layer), Linear with bias, GELU (exact
or tanh), dropout only when inactive (p == 0 or eval), drop_path per sample. Anything else raises a
clear error at construction (or, for dropout, at a training forward) instead of computing something else;
a submodule replaced after construction or fusing is checked again at the next call (`_check_unchanged`).
"""
from __future__ import annotations

import sys
import warnings
from functools import partial

import torch
import torch.fx
from torch import nn

from .functional import (
    channel_mixing,
    gmixer_channel_mixing,
    gmixer_token_mixing,
    gmlp_block,
    resmlp_channel_mixing,
    resmlp_token_mixing,
    token_mixing,
)

__all__ = ["Mlp", "GluMlp", "Affine", "MixerBlock", "ResBlock", "GatedMlp", "SpatialGatingUnit", "SpatialGatingBlock",
           "fuse_mixer_blocks"]

# torch.fx: symbolic_trace records the two fused ops as calls (leaves) instead of tracing into their
# argument checks and kernels with Proxy arguments.
torch.fx.wrap("token_mixing")
torch.fx.wrap("channel_mixing")
torch.fx.wrap("resmlp_token_mixing")
torch.fx.wrap("resmlp_channel_mixing")
torch.fx.wrap("gmlp_block")
torch.fx.wrap("gmixer_token_mixing")
torch.fx.wrap("gmixer_channel_mixing")


class Mlp(nn.Module):
    """fc1 -> act -> drop1 -> norm -> fc2 -> drop2, timm's names (timm.layers.Mlp without use_conv)."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, norm_layer=None,
                 bias=True, drop=0.0, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias, **dd)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = norm_layer(hidden_features, **dd) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias, **dd)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class GluMlp(nn.Module):
    """fc1 -> chunk(2) -> x1 * act(x2) (gate_last) or act(x1) * x2 -> drop1 -> norm -> fc2 -> drop2: timm's
    GluMlp (timm.layers.GluMlp without use_conv) with its names; gMixer uses it with act_layer=nn.SiLU."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.Sigmoid, norm_layer=None,
                 bias=True, drop=0.0, gate_last=True, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        if hidden_features % 2:
            raise ValueError(f"hidden_features: expected an even width (the GLU halves it), got {hidden_features}")
        self.chunk_dim = -1
        self.gate_last = gate_last
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias, **dd)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = norm_layer(hidden_features // 2, **dd) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden_features // 2, out_features, bias=bias, **dd)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        x1, x2 = self.fc1(x).chunk(2, dim=self.chunk_dim)
        x = x1 * self.act(x2) if self.gate_last else self.act(x1) * x2
        return self.drop2(self.fc2(self.norm(self.drop1(x))))


def _gelu_approximate(act: nn.Module, where: str) -> str:
    """'none' or 'tanh' for the GELU modules the kernels compute; an error for anything else."""
    if isinstance(act, nn.GELU):
        return act.approximate
    cls = type(act)
    if cls.__module__.startswith("timm.layers") and cls.__name__ in ("GELU", "GELUTanh"):
        return "tanh" if cls.__name__ == "GELUTanh" else "none"
    raise ValueError(f"{where}: the fused MixerBlock computes GELU (exact or tanh) only, got {cls.__name__}; "
                     f"use the unfused block for other activations")


def _check_norm(norm: nn.Module, dim: int, where: str) -> None:
    if not isinstance(norm, nn.LayerNorm):
        raise ValueError(f"{where}: the fused MixerBlock computes LayerNorm only, got {type(norm).__name__}")
    if tuple(norm.normalized_shape) != (dim,) or norm.weight is None or norm.bias is None:
        raise ValueError(f"{where}: expected LayerNorm({dim}) with elementwise affine weight and bias, got {norm}")


# The MLP classes whose forward is fc1 -> act -> (dropout) -> fc2, what the kernels compute. timm's gated
# MLPs (GluMlp, SwiGLU, GatedMlp: gMLP-Mixer, `gmixer_*` models) split or gate the hidden activation.
_PLAIN_MLPS = {("timm.layers.mlp", "Mlp"), ("reference.mlp_mixer", "Mlp"), (__name__, "Mlp")}


def _check_mlp(mlp: nn.Module, in_features: int, where: str) -> str:
    cls = type(mlp)
    if (cls.__module__, cls.__name__) not in _PLAIN_MLPS:
        raise ValueError(f"{where}: the fused MixerBlock computes timm's Mlp (fc1 -> GELU -> fc2) only, got "
                         f"{cls.__module__}.{cls.__name__}; use the unfused block for other MLPs")
    for name in ("fc1", "act", "fc2"):
        if not hasattr(mlp, name):
            raise ValueError(f"{where}: expected an Mlp with fc1, act, fc2 (timm's layout), missing {name}")
    for name in ("fc1", "fc2"):
        fc = getattr(mlp, name)
        if type(fc) is not nn.Linear or fc.bias is None:
            raise ValueError(f"{where}.{name}: the fused MixerBlock needs nn.Linear with bias, got {fc}")
    if mlp.fc1.in_features != in_features or mlp.fc2.in_features != mlp.fc1.out_features \
            or mlp.fc2.out_features != in_features:
        raise ValueError(f"{where}: expected fc1 [{in_features} -> H] and fc2 [H -> {in_features}], got "
                         f"{mlp.fc1} and {mlp.fc2}")
    norm = getattr(mlp, "norm", None)
    if norm is not None and not isinstance(norm, nn.Identity):
        raise ValueError(f"{where}.norm: the fused MixerBlock has no norm inside the MLP, got {type(norm).__name__}")
    for name in ("drop1", "drop2", "drop"):
        d = getattr(mlp, name, None)
        if d is not None and not isinstance(d, (nn.Dropout, nn.Identity)):
            raise ValueError(f"{where}.{name}: expected nn.Dropout, got {type(d).__name__}")
    return _gelu_approximate(mlp.act, f"{where}.act")


# timm's GluMlp (and ours): fc1 -> chunk -> x1 * SiLU(x2) -> fc2, gMixer's MLP when its act is SiLU.
_GLU_MLPS = {("timm.layers.mlp", "GluMlp"), (__name__, "GluMlp")}


def _is_glu(mlp: nn.Module) -> bool:
    return (type(mlp).__module__, type(mlp).__name__) in _GLU_MLPS


def _check_glu_mlp(mlp: nn.Module, in_features: int, where: str) -> bool:
    """timm's GluMlp with nn.Linear fc1 [in -> 2H] and fc2 [H -> in] (with bias), the gate along the last dim,
    no norm inside, SiLU: the gated MLP the kernels compute. Returns gate_last."""
    for name in ("fc1", "act", "fc2"):
        if not hasattr(mlp, name):
            raise ValueError(f"{where}: expected a GluMlp with fc1, act, fc2 (timm's layout), missing {name}")
    for name in ("fc1", "fc2"):
        fc = getattr(mlp, name)
        if type(fc) is not nn.Linear or fc.bias is None:
            raise ValueError(f"{where}.{name}: the fused MixerBlock needs nn.Linear with bias, got {fc}")
    if mlp.fc1.in_features != in_features or mlp.fc1.out_features % 2 \
            or mlp.fc2.in_features * 2 != mlp.fc1.out_features or mlp.fc2.out_features != in_features:
        raise ValueError(f"{where}: expected fc1 [{in_features} -> 2H] and fc2 [H -> {in_features}] (GluMlp), got "
                         f"{mlp.fc1} and {mlp.fc2}")
    if getattr(mlp, "chunk_dim", -1) not in (-1, 2):
        raise ValueError(f"{where}: the fused MixerBlock splits the GluMlp hidden width along the last dim, got "
                         f"chunk_dim={mlp.chunk_dim}")
    norm = getattr(mlp, "norm", None)
    if norm is not None and not isinstance(norm, nn.Identity):
        raise ValueError(f"{where}.norm: the fused MixerBlock has no norm inside the MLP, got {type(norm).__name__}")
    for name in ("drop1", "drop2"):
        d = getattr(mlp, name, None)
        if d is not None and not isinstance(d, (nn.Dropout, nn.Identity)):
            raise ValueError(f"{where}.{name}: expected nn.Dropout, got {type(d).__name__}")
    return _glu_gate_last(mlp, where)


def _glu_gate_last(mlp: nn.Module, where: str) -> bool:
    """gate_last of a GluMlp whose act is SiLU (what the gMixer kernels compute); an error for another act."""
    if type(mlp.act) is not nn.SiLU:
        raise ValueError(f"{where}.act: the fused MixerBlock computes the GluMlp gate with SiLU only (gMixer), got "
                         f"{type(mlp.act).__name__}; use the unfused block for other activations")
    gate_last = getattr(mlp, "gate_last", True)
    if not isinstance(gate_last, bool):
        raise ValueError(f"{where}.gate_last: expected a bool, got {gate_last!r}")
    return gate_last


def _check_half(mlp: nn.Module, in_features: int, where: str) -> None:
    """A MixerBlock half: timm's Mlp with GELU, or its GluMlp with SiLU (gMixer)."""
    if _is_glu(mlp):
        _check_glu_mlp(mlp, in_features, where)
    else:
        _check_mlp(mlp, in_features, where)


def _dropout_p(mlp: nn.Module) -> float:
    # a plain loop: torch 2.11's dynamo cannot trace max(generator, default=...) (a graph break)
    p = 0.0
    for name in ("drop1", "drop2", "drop"):
        d = getattr(mlp, name, None)
        if isinstance(d, nn.Dropout) and d.p > p:
            p = d.p
    return p


_MLP_PARTS = ("fc1", "act", "drop1", "norm", "fc2", "drop2", "drop", "gate")
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _mlp_parts(mlp) -> tuple:
    """The MLP and the submodules the kernels stand in for (None where absent), read from _modules (cheap)."""
    if not isinstance(mlp, nn.Module):
        return (mlp,)
    mods = mlp._modules
    return (mlp, *(mods.get(n) for n in _MLP_PARTS))


def _hooked(m) -> bool:
    return isinstance(m, nn.Module) and any(getattr(m, h, None) for h in _HOOKS)


def _inner_hooks(block: nn.Module) -> list[str]:
    """'name (kinds)' of every module inside `block` (not the block itself) that carries hooks."""
    found = []
    for name, m in block.named_modules():
        kinds = [h.strip("_").replace("_hooks", "") for h in _HOOKS if name and getattr(m, h, None)]
        if kinds:
            found.append(f"{name} ({', '.join(kinds)} hooks)")
    return found


class _FusedBlock(nn.Module):
    """What every fused block shares: drop_path drawn as timm draws it, refused TorchScript, the dropout rule,
    and the check at every call that what it depends on is still what it computes (`_check_unchanged`)."""

    _block_name = None          # the block's path in the model, set by fuse_mixer_blocks (for messages)
    _dep_types = None           # the types of _dependencies() when last validated
    _hooks_warned = False

    def _dependencies(self) -> tuple:
        """The submodules whose exact types the fused ops stand in for (per block kind)."""
        raise NotImplementedError

    def _check_unchanged(self) -> None:
        """At every call, a few attribute reads: when a submodule the kernels stand in for was replaced since the
        block was validated (a norm, an MLP, a Linear subclass with its own forward), validate again, and raise a
        ValueError naming the block and the submodule if the fused ops cannot compute it; warn once when an inner
        module carries hooks (the fused block never calls it, so they never fire)."""
        deps = self._dependencies()
        types = tuple(type(m) for m in deps)
        if types != self._dep_types:
            where = f"{self._block_name}: " if self._block_name else ""
            try:
                self._validate()
            except (ValueError, AttributeError, TypeError) as e:
                raise ValueError(
                    f"{where}{e} (changed after the block was fused or built: the fused {type(self).__name__} cannot "
                    "compute it). Undo the change, or unfuse: build the model again and call "
                    "fuse_mixer_blocks(model, strict=False) after the change, which leaves this block eager"
                ) from None
            self._dep_types = types
        if not self._hooks_warned and any(_hooked(m) for m in deps):
            self._hooks_warned = True
            where = self._block_name or f"a fused {type(self).__name__}"
            warnings.warn(f"{where}: hooks on its inner modules ({'; '.join(_inner_hooks(self))}) never fire: the "
                          "fused block computes them in its kernels without calling them. Hook the block itself, or "
                          "leave it eager (fuse_mixer_blocks(model, strict=False) with the hooks in place)",
                          stacklevel=3)

    @property
    def drop_path_prob(self) -> float:
        return float(getattr(self.drop_path, "drop_prob", 0.0) or 0.0)

    def _sample_scale(self, x):
        """drop_path as timm: per-sample keep mask scaled by 1/keep, drawn in the same order."""
        p = self.drop_path_prob
        if not self.training or p == 0.0:
            return None
        keep = 1.0 - p
        mask = x.new_empty((x.shape[0],)).bernoulli_(keep)
        return mask.div_(keep) if keep > 0.0 else mask

    def _check_dropout(self, *mlps):
        if self.training and max(_dropout_p(m) for m in mlps) > 0.0:
            raise RuntimeError(f"the fused {type(self).__name__} does not compute dropout: set drop=0 "
                               "(proj_drop_rate=0), or call .eval(), or use the unfused block")

    @classmethod
    def _adopt(cls, block: nn.Module, names: tuple, layout: str, recompute: bool):
        """A fused `cls` holding `block`'s submodules `names` (the same Parameter objects) and drop_path."""
        _register_with_timm()
        hooked = _inner_hooks(block)
        if hooked:
            raise ValueError(f"hooks on inner modules would never fire in the fused block (its kernels compute them "
                             f"without calling them): {'; '.join(hooked)}; remove them, or hook the block itself")
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        for name in names:
            if not hasattr(block, name):
                raise ValueError(f"expected a {layout} with {name} (timm's layout)")
            setattr(fused, name, getattr(block, name))
        fused._take_drop_path(block)
        fused.recompute = recompute
        fused.train(block.training)
        fused._validate()
        # the block's own hooks move with it: the very dicts, so that the user's handles still remove them
        for attr in (*_HOOKS, "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                     "_forward_pre_hooks_with_kwargs"):
            if hasattr(block, attr):
                setattr(fused, attr, getattr(block, attr))
        if hasattr(block, "_is_full_backward_hook"):
            fused._is_full_backward_hook = block._is_full_backward_hook
        return fused

    def _take_drop_path(self, block: nn.Module) -> None:
        dp = block.drop_path
        if not isinstance(dp, nn.Identity) and not isinstance(getattr(dp, "drop_prob", None), (int, float)):
            raise ValueError(f"drop_path: expected timm's DropPath or nn.Identity, got {type(dp).__name__}")
        if getattr(dp, "scale_by_keep", True) is False:
            raise ValueError("drop_path: scale_by_keep=False is not supported by the fused block")
        self.drop_path = dp

    def __prepare_scriptable__(self):
        # torch.jit.script calls this on every submodule before compiling: refuse clearly, not with a
        # TorchScript parse error somewhere in the checks
        raise RuntimeError(f"torch.jit.script of a fused {type(self).__name__} is not supported (its forward calls "
                           "Triton kernels through Python); use torch.compile, or torch.jit.trace for a TorchScript "
                           "graph")

    def extra_repr(self) -> str:
        return f"fused=True, recompute={self.recompute}, drop_path={self.drop_path_prob}"


class MixerBlock(_FusedBlock):
    """Fused Mixer block: token mixing then channel mixing, each one fused Triton op (docs/design.md, "The block").

    Same constructor as timm's `MixerBlock`, plus `recompute` (channel mixing saves only its input and
    row statistics for backward; on XLA devices both halves recompute). x [B, S, C] -> [B, S, C].
    gMixer: `mlp_layer=GluMlp` (timm's or this module's) with `act_layer=nn.SiLU` and mlp_ratio=(1.0, 4.0)
    runs the gated ops (gmixer_token_mixing / gmixer_channel_mixing); a GluMlp with another act is refused.
    """

    def __init__(self, dim, seq_len, mlp_ratio=(0.5, 4.0), mlp_layer=Mlp, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                 act_layer=nn.GELU, drop=0.0, drop_path=0.0, recompute=False, device=None, dtype=None):
        super().__init__()
        _register_with_timm()
        dd = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        if not isinstance(mlp_ratio, (tuple, list)):
            mlp_ratio = (mlp_ratio, mlp_ratio)
        tokens_dim, channels_dim = [int(r * dim) for r in mlp_ratio]          # DS, DC
        self.norm1 = norm_layer(dim, **dd)
        self.mlp_tokens = mlp_layer(seq_len, tokens_dim, act_layer=act_layer, drop=drop, **dd)
        self.drop_path = _DropPathRate(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp_channels = mlp_layer(dim, channels_dim, act_layer=act_layer, drop=drop, **dd)
        self.recompute = recompute
        self._validate()

    @classmethod
    def from_block(cls, block: nn.Module, recompute: bool = False) -> MixerBlock:
        """A fused block that shares `block`'s submodules (and so its Parameter objects)."""
        return cls._adopt(block, ("norm1", "mlp_tokens", "norm2", "mlp_channels"), "MixerBlock", recompute)

    def _validate(self):
        dim = self.norm1.normalized_shape[0] if isinstance(self.norm1, nn.LayerNorm) else None
        _check_norm(self.norm1, dim, "norm_layer (norm1)")
        _check_norm(self.norm2, dim, "norm_layer (norm2)")
        if self.norm1.eps != self.norm2.eps:
            raise ValueError(f"norm_layer: norm1 and norm2 eps differ ({self.norm1.eps} vs {self.norm2.eps})")
        seq_len = self.mlp_tokens.fc1.in_features if hasattr(self.mlp_tokens, "fc1") else None
        _check_half(self.mlp_tokens, seq_len, "mlp_tokens")
        _check_half(self.mlp_channels, dim, "mlp_channels")

    def _dependencies(self) -> tuple:
        m = self._modules
        return (m.get("norm1"), m.get("norm2"), *_mlp_parts(m.get("mlp_tokens")), *_mlp_parts(m.get("mlp_channels")))

    def forward(self, x):
        self._check_unchanged()
        t, c = self.mlp_tokens, self.mlp_channels
        self._check_dropout(t, c)
        # each half its own activation, read at every call (an act swapped after construction is seen, or
        # refused): GELU for timm's Mlp, the SiLU gate for its GluMlp (gMixer)
        n1, n2 = self.norm1, self.norm2
        if _is_glu(t):
            x = gmixer_token_mixing(x, n1.weight, n1.bias, t.fc1.weight, t.fc1.bias, t.fc2.weight, t.fc2.bias,
                                    eps=n1.eps, gate_last=_glu_gate_last(t, "mlp_tokens"),
                                    sample_scale=self._sample_scale(x), recompute=self.recompute)
        else:
            x = token_mixing(x, n1.weight, n1.bias, t.fc1.weight, t.fc1.bias, t.fc2.weight, t.fc2.bias, eps=n1.eps,
                             approximate=_gelu_approximate(t.act, "mlp_tokens.act"),
                             sample_scale=self._sample_scale(x), recompute=self.recompute)
        if _is_glu(c):
            x = gmixer_channel_mixing(x, n2.weight, n2.bias, c.fc1.weight, c.fc1.bias, c.fc2.weight, c.fc2.bias,
                                      eps=n2.eps, gate_last=_glu_gate_last(c, "mlp_channels"),
                                      sample_scale=self._sample_scale(x), recompute=self.recompute)
        else:
            x = channel_mixing(x, n2.weight, n2.bias, c.fc1.weight, c.fc1.bias, c.fc2.weight, c.fc2.bias, eps=n2.eps,
                               approximate=_gelu_approximate(c.act, "mlp_channels.act"), recompute=self.recompute,
                               sample_scale=self._sample_scale(x))
        return x


class Affine(nn.Module):
    """ResMLP's "norm": alpha * x + beta per channel, no statistics (timm's Affine: alpha, beta [1, 1, dim])."""

    def __init__(self, dim, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.alpha = nn.Parameter(torch.ones((1, 1, dim), **dd))
        self.beta = nn.Parameter(torch.zeros((1, 1, dim), **dd))

    def forward(self, x):
        return torch.addcmul(self.beta, self.alpha, x)


def _check_affine(norm: nn.Module, dim: int, where: str) -> None:
    if type(norm).__name__ != "Affine" or not all(isinstance(getattr(norm, n, None), nn.Parameter)
                                                  for n in ("alpha", "beta")):
        raise ValueError(f"{where}: the fused ResBlock computes ResMLP's Affine (alpha * x + beta) only, got "
                         f"{type(norm).__name__}")
    for n in ("alpha", "beta"):
        if getattr(norm, n).numel() != dim:
            raise ValueError(f"{where}.{n}: expected {dim} elements, got shape {tuple(getattr(norm, n).shape)}")


class ResBlock(_FusedBlock):
    """Fused ResMLP block (Touvron et al. 2021; timm's `ResBlock`): Affine, one linear layer along S and
    layer scale ls1 for the token half; Affine, the channel Mlp and ls2 for the channel half; drop_path.

    Same constructor, attribute names and state_dict keys as timm's (norm1.alpha, linear_tokens.weight,
    ls1, norm2, mlp_channels.fc1, ..., ls2), plus `recompute` (channel mixing saves only its input).
    Both halves are fused ops (docs/design.md, "The kernels as built"). x [B, S, C] -> [B, S, C]."""

    def __init__(self, dim, seq_len, mlp_ratio=4, mlp_layer=Mlp, norm_layer=Affine, act_layer=nn.GELU,
                 init_values=1e-4, drop=0.0, drop_path=0.0, recompute=False, device=None, dtype=None):
        super().__init__()
        _register_with_timm()
        dd = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        channel_dim = int(dim * mlp_ratio)                                         # DC
        self.norm1 = norm_layer(dim, **dd)
        self.linear_tokens = nn.Linear(seq_len, seq_len, **dd)
        self.drop_path = _DropPathRate(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp_channels = mlp_layer(dim, channel_dim, act_layer=act_layer, drop=drop, **dd)
        self.ls1 = nn.Parameter(init_values * torch.ones(dim, **dd))
        self.ls2 = nn.Parameter(init_values * torch.ones(dim, **dd))
        self.recompute = recompute
        self._validate()

    @classmethod
    def from_block(cls, block: nn.Module, recompute: bool = False) -> ResBlock:
        """A fused block that shares `block`'s submodules and layer scales (the same Parameter objects)."""
        return cls._adopt(block, ("norm1", "linear_tokens", "norm2", "mlp_channels", "ls1", "ls2"), "ResMLP ResBlock",
                          recompute)

    def _validate(self):
        lt = self.linear_tokens
        if type(lt) is not nn.Linear or lt.bias is None or lt.in_features != lt.out_features:
            raise ValueError(f"linear_tokens: the fused ResBlock needs nn.Linear(S, S) with bias, got {lt}")
        dim = self.mlp_channels.fc1.in_features if hasattr(self.mlp_channels, "fc1") else None
        _check_affine(self.norm1, dim, "norm_layer (norm1)")
        _check_affine(self.norm2, dim, "norm_layer (norm2)")
        _check_mlp(self.mlp_channels, dim, "mlp_channels")
        for name in ("ls1", "ls2"):
            ls = getattr(self, name)
            if not isinstance(ls, nn.Parameter) or tuple(ls.shape) != (dim,):
                raise ValueError(f"{name}: expected a Parameter of shape [{dim}], got {type(ls).__name__} "
                                 f"{tuple(getattr(ls, 'shape', ()))}")

    def _dependencies(self) -> tuple:
        m = self._modules
        return (m.get("norm1"), m.get("linear_tokens"), m.get("norm2"), *_mlp_parts(m.get("mlp_channels")))

    def forward(self, x):
        self._check_unchanged()
        c = self.mlp_channels
        self._check_dropout(c)
        approx = _gelu_approximate(c.act, "mlp_channels.act")
        t = self.linear_tokens
        x = resmlp_token_mixing(x, self.norm1.alpha, self.norm1.beta, t.weight, t.bias, self.ls1,
                                sample_scale=self._sample_scale(x))
        x = resmlp_channel_mixing(x, self.norm2.alpha, self.norm2.beta, c.fc1.weight, c.fc1.bias, c.fc2.weight,
                                  c.fc2.bias, self.ls2, approximate=approx, recompute=self.recompute,
                                  sample_scale=self._sample_scale(x))
        return x


class SpatialGatingUnit(nn.Module):
    """gMLP's gate (timm's SpatialGatingUnit): u, v = x.chunk(2, -1); u * proj(LN(v)^T)^T, proj [S, S] + bias
    along the tokens. Same names (norm, proj) and init (proj weight ~ N(0, 1e-6), bias 1) as timm's."""

    def __init__(self, dim, seq_len, norm_layer=nn.LayerNorm, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm = norm_layer(dim // 2, **dd)
        self.proj = nn.Linear(seq_len, seq_len, **dd)

    def init_weights(self):
        nn.init.normal_(self.proj.weight, std=1e-6)
        nn.init.ones_(self.proj.bias)

    def forward(self, x):
        u, v = x.chunk(2, dim=-1)
        v = self.proj(self.norm(v).transpose(-1, -2))
        return u * v.transpose(-1, -2)


class GatedMlp(nn.Module):
    """fc1 -> act -> drop1 -> gate -> norm -> fc2 -> drop2 with timm's names (timm.layers.GatedMlp): the MLP of
    gMLP's block, fc2 from half the hidden width when a gate layer halves it."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, norm_layer=None,
                 gate_layer=None, bias=True, drop=0.0, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias, **dd)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        if gate_layer is not None:
            if hidden_features % 2:
                raise ValueError(f"hidden_features: the gate splits it in halves, expected an even number, got "
                                 f"{hidden_features}")
            self.gate = gate_layer(hidden_features, **dd)
            hidden_features //= 2
        else:
            self.gate = nn.Identity()
        self.norm = norm_layer(hidden_features, **dd) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias, **dd)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        return self.drop2(self.fc2(self.norm(self.gate(self.drop1(self.act(self.fc1(x)))))))


_GATED_MLPS = {("timm.layers.mlp", "GatedMlp"), ("reference.mlp_mixer", "GatedMlp"), (__name__, "GatedMlp")}
_GATES = {("timm.models.mlp_mixer", "SpatialGatingUnit"), ("reference.mlp_mixer", "SpatialGatingUnit"),
          (__name__, "SpatialGatingUnit")}


def _check_gated_mlp(mlp: nn.Module, dim: int, where: str) -> str:
    """timm's GatedMlp with a SpatialGatingUnit, Linear layers with bias, no norm after the gate."""
    cls = type(mlp)
    if (cls.__module__, cls.__name__) not in _GATED_MLPS:
        raise ValueError(f"{where}: the fused SpatialGatingBlock computes timm's GatedMlp (fc1 -> GELU -> spatial "
                         f"gate -> fc2) only, got {cls.__module__}.{cls.__name__}")
    for name in ("fc1", "act", "gate", "fc2"):
        if not hasattr(mlp, name):
            raise ValueError(f"{where}: expected a GatedMlp with fc1, act, gate, fc2 (timm's layout), missing {name}")
    for name in ("fc1", "fc2"):
        fc = getattr(mlp, name)
        if type(fc) is not nn.Linear or fc.bias is None:
            raise ValueError(f"{where}.{name}: the fused SpatialGatingBlock needs nn.Linear with bias, got {fc}")
    hidden = mlp.fc1.out_features
    if mlp.fc1.in_features != dim or hidden % 2 or mlp.fc2.in_features != hidden // 2 or mlp.fc2.out_features != dim:
        raise ValueError(f"{where}: expected fc1 [{dim} -> DC] (DC even) and fc2 [DC/2 -> {dim}], got {mlp.fc1} and "
                         f"{mlp.fc2}")
    gate = mlp.gate
    if (type(gate).__module__, type(gate).__name__) not in _GATES:
        raise ValueError(f"{where}.gate: the fused SpatialGatingBlock computes timm's SpatialGatingUnit only, got "
                         f"{type(gate).__name__}")
    _check_norm(gate.norm, hidden // 2, f"{where}.gate.norm")
    proj = gate.proj
    if type(proj) is not nn.Linear or proj.bias is None or proj.in_features != proj.out_features:
        raise ValueError(f"{where}.gate.proj: the fused SpatialGatingBlock needs nn.Linear(S, S) with bias, "
                         f"got {proj}")
    norm = getattr(mlp, "norm", None)
    if norm is not None and not isinstance(norm, nn.Identity):
        raise ValueError(f"{where}.norm: the fused SpatialGatingBlock has no norm after the gate, got "
                         f"{type(norm).__name__}")
    for name in ("drop1", "drop2"):
        d = getattr(mlp, name, None)
        if d is not None and not isinstance(d, (nn.Dropout, nn.Identity)):
            raise ValueError(f"{where}.{name}: expected nn.Dropout, got {type(d).__name__}")
    return _gelu_approximate(mlp.act, f"{where}.act")


class SpatialGatingBlock(_FusedBlock):
    """Fused gMLP block (Liu et al. 2021; timm's `SpatialGatingBlock`): x + drop_path(GatedMlp(LN(x))), the
    GatedMlp's gate a SpatialGatingUnit (LayerNorm of half the hidden width, a linear layer along S, u * v).

    Same constructor, attribute names and state_dict keys as timm's (norm, mlp_channels.fc1,
    mlp_channels.gate.norm, mlp_channels.gate.proj, mlp_channels.fc2), plus `recompute` (the backward
    recomputes fc1's output instead of saving it). One fused op, `gmlp_block`. x [B, S, C] -> [B, S, C]."""

    def __init__(self, dim, seq_len, mlp_ratio=4, mlp_layer=GatedMlp, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                 act_layer=nn.GELU, drop=0.0, drop_path=0.0, recompute=False, device=None, dtype=None):
        super().__init__()
        _register_with_timm()
        dd = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        channel_dim = int(dim * mlp_ratio)                                         # DC
        self.norm = norm_layer(dim, **dd)
        sgu = partial(SpatialGatingUnit, seq_len=seq_len, **dd)
        self.mlp_channels = mlp_layer(dim, channel_dim, act_layer=act_layer, gate_layer=sgu, drop=drop, **dd)
        self.drop_path = _DropPathRate(drop_path) if drop_path > 0.0 else nn.Identity()
        self.recompute = recompute
        self._validate()

    @classmethod
    def from_block(cls, block: nn.Module, recompute: bool = False) -> SpatialGatingBlock:
        """A fused block that shares `block`'s submodules (the same Parameter objects)."""
        return cls._adopt(block, ("norm", "mlp_channels"), "gMLP SpatialGatingBlock", recompute)

    def _validate(self):
        dim = self.norm.normalized_shape[0] if isinstance(self.norm, nn.LayerNorm) else None
        _check_norm(self.norm, dim, "norm_layer (norm)")
        _check_gated_mlp(self.mlp_channels, dim, "mlp_channels")

    def _dependencies(self) -> tuple:
        m = self._modules
        parts = _mlp_parts(m.get("mlp_channels"))
        gate = parts[-1]
        inner = (gate._modules.get("norm"), gate._modules.get("proj")) if isinstance(gate, nn.Module) else ()
        return (m.get("norm"), *parts, *inner)

    def forward(self, x):
        self._check_unchanged()
        c = self.mlp_channels
        self._check_dropout(c)
        approx = _gelu_approximate(c.act, "mlp_channels.act")
        g = c.gate
        return gmlp_block(x, self.norm.weight, self.norm.bias, c.fc1.weight, c.fc1.bias, g.norm.weight, g.norm.bias,
                          g.proj.weight, g.proj.bias, c.fc2.weight, c.fc2.bias, eps=self.norm.eps, gate_eps=g.norm.eps,
                          approximate=approx, sample_scale=self._sample_scale(x), recompute=self.recompute)


def _register_with_timm() -> None:
    """timm's fx feature extraction (create_feature_extractor, forward_intermediates' fx paths) traces
    the fused block as one leaf module. The library does not import timm: this registers only when the
    user already has (a model made with timm imports it before any block is built or fused)."""
    global _TIMM_REGISTERED
    if _TIMM_REGISTERED or "timm" not in sys.modules:
        return
    try:
        from timm.layers import register_notrace_module
    except ImportError:     # a timm without fx helpers
        return
    register_notrace_module(MixerBlock)
    register_notrace_module(ResBlock)
    register_notrace_module(SpatialGatingBlock)
    _TIMM_REGISTERED = True


_TIMM_REGISTERED = False


class _DropPathRate(nn.Module):
    """Holds drop_path's rate for the fused block (which applies it inside the kernels); same repr and
    attribute (`drop_prob`) as timm's DropPath, and no state."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def extra_repr(self) -> str:
        return f"drop_prob={round(self.drop_prob, 3):0.3f}"


# The blocks timm's MlpMixer builds (timm.models.mlp_mixer) and the reference model's, by class name:
# what fuse_mixer_blocks looks for.
_FAMILY_MODULES = ("timm.models.mlp_mixer", "reference.mlp_mixer")
_FUSED_FORMS = {"MixerBlock": MixerBlock, "ResBlock": ResBlock, "SpatialGatingBlock": SpatialGatingBlock}
_FAMILY_BLOCKS = ("MixerBlock", "ResBlock", "SpatialGatingBlock")


def _unfused_family_block(m: nn.Module) -> str | None:
    """The class name of an unfused block of the Mixer family, else None."""
    cls = type(m)
    return cls.__name__ if cls.__module__ in _FAMILY_MODULES and cls.__name__ in _FAMILY_BLOCKS else None


def fuse_mixer_blocks(model: nn.Module, recompute: bool = False, strict: bool = True) -> nn.Module:
    """Replace, in place, every block of the MLP-Mixer family inside `model` (timm's or the reference
    model's MixerBlock, ResMLP ResBlock and gMLP SpatialGatingBlock) by its fused form, sharing the same
    Parameter objects (pretrained weights and optimizers built before the swap stay valid). Other modules
    are left alone; calling it twice changes nothing. Returns `model`.

    strict (default): a family block the fused forms cannot compute (an activation other than GELU, or SiLU
    in a gMixer GluMlp, dropout inside the gate, hooks on its inner modules, which would never fire, ...)
    raises a ValueError naming it, and nothing is replaced; so does a model with no family block at all.
    strict=False fuses the rest and warns once, listing the blocks left unfused (or that none was found).
    Forward hooks and pre-hooks of a replaced block move to its fused form.
    A bare block cannot replace itself in place: use `MixerBlock.from_block(block)` (or ResBlock's,
    SpatialGatingBlock's)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict: expected a bool, got {type(strict).__name__}")
    if _unfused_family_block(model):
        raise ValueError(f"model: a bare {type(model).__name__} cannot be replaced in place; use "
                         f"{_FUSED_FORMS.get(type(model).__name__, MixerBlock).__name__}.from_block(block) or pass "
                         "the model that contains it")
    swaps, left, fused_already = [], [], 0
    for name, m in model.named_modules():
        kind = _unfused_family_block(m)
        if kind is None:
            fused_already += isinstance(m, _FusedBlock)
            continue
        try:
            if kind not in _FUSED_FORMS:
                raise ValueError(f"{kind} has no fused form yet")
            fused = _FUSED_FORMS[kind].from_block(m, recompute=recompute)
            fused._block_name = name
            swaps.append((name, fused))
        except ValueError as e:     # name the block inside the model: "blocks.3: mlp_channels.act: ..."
            if strict:
                raise ValueError(f"{name}: {e} (fuse_mixer_blocks(model, strict=False) fuses the other blocks "
                                 f"and leaves this one unfused)") from None
            left.append(f"{name} ({e})")
    if not swaps and not left and not fused_already:
        msg = (f"fuse_mixer_blocks: {type(model).__name__} holds no block of the MLP-Mixer family (timm's or the "
               "reference model's MixerBlock, ResBlock, SpatialGatingBlock): nothing was fused")
        if strict:
            raise ValueError(f"model: {msg[19:]}; fuse_mixer_blocks(model, strict=False) only warns")
        warnings.warn(msg, stacklevel=2)
    for name, fused in swaps:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, fused)
    if left:
        warnings.warn(f"fuse_mixer_blocks: {len(left)} block(s) left unfused (they run eager): " + "; ".join(left),
                      stacklevel=2)
    return model
