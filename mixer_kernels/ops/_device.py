"""Where a launch runs and what it needs from the runtime:

* the one device guard of every launch: Triton launches on the *current* CUDA device, so each launcher
  enters x's device first (a tensor on cuda:1 while cuda:0 is current would otherwise launch on cuda:0);
* the global scratch of kernels that build TMA descriptors on the device (`tl.make_tensor_descriptor`,
  128 bytes per descriptor and program): Triton asks the allocator set by `triton.set_allocator` for it at
  launch and fails without one. `tma_scratch` gives a torch allocation on the launch's device for the
  duration of the launch, unless the caller has set an allocator of their own (theirs is kept)."""
import contextlib

import torch


def device_of(x: torch.Tensor):
    """A context that makes x's GPU current (nothing for CPU tensors under the interpreter)."""
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()


def _torch_scratch(device: torch.device):
    def alloc(size: int, alignment: int, stream):
        # the caching allocator's blocks are 512-byte aligned (Triton asks for 128 at most)
        return torch.empty(size, device=device, dtype=torch.int8)
    return alloc


@contextlib.contextmanager
def tma_scratch(needed: bool, device: torch.device):
    """Inside: launches that need global scratch (device-side TMA descriptors) get it from torch on
    `device`, when `needed` and no allocator is set (Triton's default NullAllocator raises)."""
    if not needed or device.type != "cuda":
        yield
        return
    from triton.runtime import _allocation
    if not isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        yield
        return
    token = _allocation._allocator.set(_torch_scratch(device))
    try:
        yield
    finally:
        _allocation._allocator.reset(token)
