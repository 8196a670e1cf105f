"""mixer-kernels: fused Triton kernels for MLP-Mixer layers."""
from .functional import channel_mixing, token_mixing
from .jax_checkpoint import load_jax_checkpoint

__all__ = ["token_mixing", "channel_mixing", "load_jax_checkpoint"]
__version__ = "0.1.0"
