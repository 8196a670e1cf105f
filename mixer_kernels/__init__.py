"""mixer-kernels: fused Triton kernels for MLP-Mixer layers."""
from .functional import channel_mixing, token_mixing
from .jax_checkpoint import load_jax_checkpoint
from .modules import MixerBlock, fuse_mixer_blocks

__all__ = ["token_mixing", "channel_mixing", "MixerBlock", "fuse_mixer_blocks", "load_jax_checkpoint"]
__version__ = "0.1.0"
