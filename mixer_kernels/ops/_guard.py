"""What every launch of the fused ops checks first, in one place (issue 15): the custom ops' bodies
(token_mixing_fwd/_bwd, channel_mixing_fwd/_bwd) run their launches inside `launch_guard`, and their
registered backwards call `no_double_backward`.

- float64: no Triton kernel computes in float64 (the dots run at fp32 precision at best); the public
  functions (mixer_kernels/functional.py) route float64 to the plain PyTorch math on every device, so
  a float64 tensor here means a direct call of a custom op: refused, naming the op and the argument.
- The device: Triton launches on the *current* CUDA device; a tensor on another GPU would be read from
  the wrong one. The guard checks every tensor is on x's device and enters ops/_device.device_of(x), the
  one device guard of every launcher (the ResMLP ops use it directly).
- Double backward: the backward kernels are not differentiable (no formula is registered for the
  backward custom ops); create_graph=True is refused at the first backward with a clear message.
"""
from __future__ import annotations

import torch

from ._device import device_of


def launch_guard(op: str, x: torch.Tensor, **tensors):
    """Context for the launches of custom op `op` on x and the named `tensors` (None allowed): refuses
    float64 and a tensor off x's device, and makes x's CUDA device current (a no-op on CPU and meta)."""
    for name, t in (("x", x), *tensors.items()):
        if t is None:
            continue
        if t.dtype == torch.float64:
            raise TypeError(f"{op}: {name} is float64, which has no Triton kernel (its dots would run at fp32 "
                            "precision); the public mixer_kernels.token_mixing / channel_mixing run float64 in "
                            "plain PyTorch on every device")
        if t.device != x.device:
            raise ValueError(f"{op}: {name}: expected a tensor on x's device {x.device}, got {t.device}")
    return device_of(x)


def no_double_backward(op: str, *tensors) -> None:
    """Called first in a registered backward: with create_graph=True (grad mode on inside the backward)
    and a differentiable input, the gradient of this backward would be needed, and the backward custom
    ops have none. Raise instead of torch's 'no autograd formula was registered' later."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise RuntimeError(
            f"{op}: double backward (autograd.grad/backward with create_graph=True, e.g. a gradient penalty "
            "or Hessian-vector products) is not supported on the Triton path: its backward kernels are not "
            "differentiable. Use the plain PyTorch path (CPU tensors without TRITON_INTERPRET, or "
            "mixer_kernels.torch_math) for higher-order gradients")
