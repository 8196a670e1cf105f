"""NVTX ranges around each fused op, for Nsight Systems. Off by default and free when off (the
functional wrappers test one module-level bool); on with MIXER_KERNELS_NVTX=1, read at import. Uses
the `nvtx` package (torch.cuda.nvtx fails on CPU builds), imported lazily. Skipped while torch.compile
traces, where a Python context manager would break the graph."""
import contextlib
import os

import torch

ENABLED = os.environ.get("MIXER_KERNELS_NVTX", "0") == "1"


def annotate(name: str):
    """A context manager marking `name` on the NVTX timeline (a no-op when off, compiling or missing)."""
    if not ENABLED or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    try:
        import nvtx
    except ImportError:
        return contextlib.nullcontext()
    return nvtx.annotate(name, domain="mixer_kernels")
