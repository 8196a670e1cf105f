"""The one device guard of every launch: Triton launches on the *current* CUDA device, so each launcher
enters x's device first (a tensor on cuda:1 while cuda:0 is current would otherwise launch on cuda:0)."""
import contextlib

import torch


def device_of(x: torch.Tensor):
    """A context that makes x's GPU current (nothing for CPU tensors under the interpreter)."""
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
