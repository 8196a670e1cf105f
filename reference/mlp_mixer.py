"""Plain-PyTorch MLP-Mixer (Tolstikhin et al. 2021, arXiv 2105.01601): the reference model the fused
modules are judged against (each op's float64 oracle, as functions, is reference/ops.py). Module and
parameter names equal timm's `timm/models/mlp_mixer.py`, so
`MlpMixer.load_state_dict(timm_model.state_dict(), strict=True)` works and gives timm's logits.

Shapes use the paper's letters: B batch, S tokens (patches), C channels, DS token-MLP hidden width,
DC channel-MLP hidden width.
"""
from __future__ import annotations

from functools import partial

from torch import nn

__all__ = ["CONFIGS", "DropPath", "Mlp", "MixerBlock", "GatedMlp", "SpatialGatingUnit", "SpatialGatingBlock",
           "PatchEmbed", "MlpMixer"]

# Paper Table 1. name -> (patch_size, num_blocks, embed_dim C); DS = C/2 and DC = 4C via mlp_ratio.
CONFIGS = {
    "S/32": dict(patch_size=32, num_blocks=8, embed_dim=512),
    "S/16": dict(patch_size=16, num_blocks=8, embed_dim=512),
    "B/32": dict(patch_size=32, num_blocks=12, embed_dim=768),
    "B/16": dict(patch_size=16, num_blocks=12, embed_dim=768),
    "L/32": dict(patch_size=32, num_blocks=24, embed_dim=1024),
    "L/16": dict(patch_size=16, num_blocks=24, embed_dim=1024),
    "H/14": dict(patch_size=14, num_blocks=32, embed_dim=1280),
}


class DropPath(nn.Module):
    """Stochastic depth per sample, as timm: keep a sample's branch with probability 1 - p, scaled 1/(1 - p)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * (mask.div_(keep) if keep > 0.0 else mask)


class Mlp(nn.Module):
    """fc1 -> act -> drop -> fc2 -> drop, with timm's attribute names."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU,
                 norm_layer=None, bias=True, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = norm_layer(hidden_features) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class MixerBlock(nn.Module):
    """x [B, S, C]: token mixing along S, then channel mixing along C, each with a residual."""

    def __init__(self, dim, seq_len, mlp_ratio=(0.5, 4.0), mlp_layer=Mlp,
                 norm_layer=partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU, drop=0.0, drop_path=0.0):
        super().__init__()
        if not isinstance(mlp_ratio, (tuple, list)):
            mlp_ratio = (mlp_ratio, mlp_ratio)
        tokens_dim, channels_dim = [int(r * dim) for r in mlp_ratio]          # DS, DC
        self.norm1 = norm_layer(dim)
        self.mlp_tokens = mlp_layer(seq_len, tokens_dim, act_layer=act_layer, drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp_channels = mlp_layer(dim, channels_dim, act_layer=act_layer, drop=drop)

    def forward(self, x):
        x = x + self.drop_path(self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2))
        x = x + self.drop_path(self.mlp_channels(self.norm2(x)))
        return x


class SpatialGatingUnit(nn.Module):
    """gMLP's gate (Liu et al. 2021, arXiv 2105.08050; timm's SpatialGatingUnit): u, v = x.chunk(2, -1),
    v = LayerNorm(v) over DC/2 (nn.LayerNorm's eps 1e-5), a linear layer along S on v, u * v."""

    def __init__(self, dim, seq_len, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm = norm_layer(dim // 2)
        self.proj = nn.Linear(seq_len, seq_len)

    def forward(self, x):
        u, v = x.chunk(2, dim=-1)
        return u * self.proj(self.norm(v).transpose(-1, -2)).transpose(-1, -2)


class GatedMlp(nn.Module):
    """fc1 -> act -> drop1 -> gate -> norm -> fc2 -> drop2 (timm's GatedMlp): fc2 from DC/2 with a gate."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU,
                 norm_layer=None, gate_layer=None, bias=True, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.gate = gate_layer(hidden_features) if gate_layer is not None else nn.Identity()
        hidden_features = hidden_features // 2 if gate_layer is not None else hidden_features
        self.norm = norm_layer(hidden_features) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        return self.drop2(self.fc2(self.norm(self.gate(self.drop1(self.act(self.fc1(x)))))))


class SpatialGatingBlock(nn.Module):
    """gMLP's block (timm's SpatialGatingBlock): x + drop_path(GatedMlp(LayerNorm(x))) with the spatial gate."""

    def __init__(self, dim, seq_len, mlp_ratio=4, mlp_layer=GatedMlp, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                 act_layer=nn.GELU, drop=0.0, drop_path=0.0):
        super().__init__()
        self.norm = norm_layer(dim)
        self.mlp_channels = mlp_layer(dim, int(dim * mlp_ratio), act_layer=act_layer,
                                      gate_layer=partial(SpatialGatingUnit, seq_len=seq_len), drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x):
        return x + self.drop_path(self.mlp_channels(self.norm(x)))


class PatchEmbed(nn.Module):
    """Image [B, in_chans, H, W] -> patches [B, S, C] by a strided convolution (timm's `stem`)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, norm_layer=None):
        super().__init__()
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class MlpMixer(nn.Module):
    """stem -> blocks -> norm -> mean over tokens -> head. Keyword names as timm's MlpMixer."""

    def __init__(self, num_classes=1000, img_size=224, in_chans=3, patch_size=16, num_blocks=8,
                 embed_dim=512, mlp_ratio=(0.5, 4.0), block_layer=MixerBlock, mlp_layer=Mlp,
                 norm_layer=partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU, drop_rate=0.0,
                 proj_drop_rate=0.0, drop_path_rate=0.0, stem_norm=False, global_pool="avg"):
        super().__init__()
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.global_pool = global_pool
        self.stem = PatchEmbed(img_size, patch_size, in_chans, embed_dim,
                               norm_layer=norm_layer if stem_norm else None)
        self.blocks = nn.Sequential(*[
            block_layer(embed_dim, self.stem.num_patches, mlp_ratio, mlp_layer=mlp_layer,
                        norm_layer=norm_layer, act_layer=act_layer, drop=proj_drop_rate,
                        drop_path=drop_path_rate)
            for _ in range(num_blocks)])
        self.norm = norm_layer(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    @classmethod
    def from_name(cls, name: str, **overrides) -> MlpMixer:
        """`MlpMixer.from_name("B/16", num_classes=10)`: a paper configuration (Table 1) by name."""
        if name not in CONFIGS:
            raise ValueError(f"name: expected one of {sorted(CONFIGS)}, got {name!r}")
        return cls(**{**CONFIGS[name], **overrides})

    def forward_features(self, x):
        return self.norm(self.blocks(self.stem(x)))

    def forward_head(self, x, pre_logits: bool = False):
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))
