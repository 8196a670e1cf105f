"""What every launch of the fused ops checks first, in one place (issues 15, 23): the custom ops' bodies run
their launches inside `launch_guard`, and every custom op has `guard_autograd` in front of its autograd formula.

- float64: no Triton kernel computes in float64 (the dots run at fp32 precision at best); the public
  functions (mixer_kernels/functional.py) route float64 to the plain PyTorch math on every device, so
  a float64 tensor here means a direct call of a custom op: refused, naming the op and the argument.
- The device: Triton launches on the *current* CUDA device; a tensor on another GPU would be read from
  the wrong one. The guard checks every tensor is on x's device and enters ops/_device.device_of(x), the
  one device guard of every launcher.
- Autograd modes: functorch's Grad and Jvp transforms, forward-mode dual tensors and double backward
  (create_graph=True: the backward custom ops have no formula) are refused at the op with an error naming them.
"""
from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
from torch._library.autograd import make_autograd_impl

from ._device import device_of


def launch_guard(op: str, x: torch.Tensor, **tensors):
    """Context for the launches of custom op `op` on x and the named `tensors` (None allowed): refuses
    float64 and a tensor off x's device, and makes x's CUDA device current (a no-op on CPU and meta)."""
    for name, t in (("x", x), *tensors.items()):
        if t is None:
            continue
        if t.dtype == torch.float64:
            raise TypeError(f"{op}: {name} is float64, which has no Triton kernel (its dots would run at fp32 "
                            "precision); the public mixer_kernels functions run float64 in plain PyTorch on "
                            "every device")
        if t.device != x.device:
            raise ValueError(f"{op}: {name}: expected a tensor on x's device {x.device}, got {t.device}")
    return device_of(x)


# ---- what the custom ops' autograd formulas cannot do, refused at the op (issue 23) -------------------------
# Each custom op of the package has a reverse-mode formula only. Without a guard, forward-mode AD drops the
# tangent (torch's custom-op autograd skips the formula when no input requires grad: a None or zero tangent),
# and functorch's Grad transform fails inside torch. The guard runs in front of the formula, in the dispatcher's
# Autograd slot of every op, so that it sees every way in: the public functions, direct calls of
# torch.ops.mixer_kernels.*, and the ops as torch.compile traces them (the error survives tracing).

_TRANSFORMS = {"Grad": "torch.func.grad / vjp / jacrev / hessian (functorch's Grad transform)",
               "Jvp": "torch.func.jvp / jacfwd / linearize (functorch's Jvp transform)"}
_WAY_OUT = ("use torch.autograd.grad / .backward() (first-order reverse mode), or the plain PyTorch path (CPU "
            "tensors without TRITON_INTERPRET, or float64), where torch differentiates the math in every mode")


def check_autograd_mode(public, args, backward: bool = False) -> None:
    """Raise a RuntimeError naming `public` (a name, or a function of `args` giving it) and the mode when this
    call of a custom op runs under a functorch Grad or Jvp transform, with a forward-mode dual tensor among
    `args`, or (`backward`: the op is a registered backward) with grad mode on and a differentiable input,
    i.e. double backward (create_graph=True)."""
    if callable(public):
        public = public(args)
    for interp in torch._C._functorch.get_interpreter_stack() or ():
        what = _TRANSFORMS.get(interp.key().name)
        if what is not None:
            raise RuntimeError(f"{public}: {what} is not supported on the Triton path (CUDA, or CPU with "
                               f"TRITON_INTERPRET=1): its kernels have a reverse-mode formula only; {_WAY_OUT}")
    if fwAD._current_level >= 0 and any(isinstance(a, torch.Tensor) and fwAD.unpack_dual(a).tangent is not None
                                        for a in args):
        raise RuntimeError(f"{public}: forward-mode AD (a dual tensor of torch.autograd.forward_ad.make_dual, or "
                           "torch.func.linearize) is not supported on the Triton path (CUDA, or CPU with "
                           f"TRITON_INTERPRET=1): its kernels have a reverse-mode formula only; {_WAY_OUT}")
    if backward and torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        raise RuntimeError(
            f"{public}: double backward (autograd.grad/backward with create_graph=True, e.g. a gradient penalty "
            "or Hessian-vector products, or torch.autograd.functional.jvp) is not supported on the Triton path: "
            "its backward kernels are not differentiable. Use the plain PyTorch path (CPU tensors without "
            "TRITON_INTERPRET, float64, or mixer_kernels.torch_math) for higher-order gradients")


def guard_autograd(op_def, public, *, backward: bool = False) -> None:
    """Put check_autograd_mode in front of custom op `op_def`'s autograd formula (its register_autograd, or
    none for a backward op: `backward=True`), for CPU and CUDA tensors (fake ones too). `public` names the
    mixer_kernels function the op belongs to."""
    formula = make_autograd_impl(op_def._opoverload, op_def)     # what torch registers under "Autograd"

    def autograd_kernel(keyset, *args, **kwargs):
        check_autograd_mode(public, args, backward)
        return formula(keyset, *args, **kwargs)

    # a kernel for a backend's Autograd key takes precedence over the op's "Autograd" alias kernel
    for key in ("AutogradCPU", "AutogradCUDA"):
        op_def._lib.impl(op_def._name, autograd_kernel, key, with_keyset=True)
