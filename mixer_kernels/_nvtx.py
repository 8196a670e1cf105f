"""NVTX ranges around each fused op, for Nsight Systems. Off by default and free when off (the
functional wrappers test one module-level bool); on with MIXER_KERNELS_NVTX=1, read once at import
(`_config.nvtx_enabled`). Uses the `nvtx` package (torch.cuda.nvtx fails on CPU builds), an optional
dependency (`pip install "mixer-kernels[nvtx]"`) imported on the first annotated call; asking for
ranges without it raises an ImportError that says how to install it. Skipped while torch.compile
traces, where a Python context manager would break the graph."""
import contextlib

import torch

from ._config import nvtx_enabled

ENABLED = nvtx_enabled()
_NVTX = None   # the nvtx module, once imported

MISSING = ("MIXER_KERNELS_NVTX=1 asks for NVTX ranges, which need the nvtx package: "
           "pip install \"mixer-kernels[nvtx]\" (or pip install nvtx), or unset MIXER_KERNELS_NVTX")


def _module():
    global _NVTX
    if _NVTX is None:
        try:
            import nvtx
        except ImportError as e:
            raise ImportError(MISSING) from e
        _NVTX = nvtx
    return _NVTX


def annotate(name: str):
    """A context manager marking `name` on the NVTX timeline (a no-op when off or compiling)."""
    if not ENABLED or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return _module().annotate(name, domain="mixer_kernels")
