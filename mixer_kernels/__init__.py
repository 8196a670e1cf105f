"""mixer-kernels: fused Triton kernels for MLP-Mixer layers."""
from .functional import (
    channel_mixing,
    gmixer_channel_mixing,
    gmixer_token_mixing,
    gmlp_block,
    resmlp_channel_mixing,
    resmlp_token_mixing,
    token_mixing,
)
from .jax_checkpoint import load_jax_checkpoint
from .modules import Affine, GluMlp, MixerBlock, ResBlock, SpatialGatingBlock, fuse_mixer_blocks

__all__ = ["token_mixing", "channel_mixing", "resmlp_token_mixing", "resmlp_channel_mixing", "gmlp_block",
           "gmixer_token_mixing", "gmixer_channel_mixing", "MixerBlock", "GluMlp",
           "ResBlock", "SpatialGatingBlock", "Affine", "fuse_mixer_blocks", "load_jax_checkpoint"]
__version__ = "0.1.0"
