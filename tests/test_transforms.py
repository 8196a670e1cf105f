"""Issue 15's edges of the Triton path, for both ops: the float64 rule (plain PyTorch on every device,
decided in functional.py; the custom ops refuse float64), torch.func transforms and double backward
(refused with an error naming them; vmap works), and the one launch guard of every custom op
(ops/_guard.py: dtype, device, x's GPU made current)."""
import os
import subprocess
import sys

import pytest
import torch
from helpers import count_launches, layernorm_params, linear_params

import mixer_kernels
from mixer_kernels import torch_math
from mixer_kernels._config import triton_interpret
from mixer_kernels.ops import _guard

OPS = {"token": mixer_kernels.token_mixing, "channel": mixer_kernels.channel_mixing}
TORCH = {"token": torch_math.token_mixing_torch, "channel": torch_math.channel_mixing_torch}
FWD_KERNEL = {"token": "_token_large_gemm_kernel", "channel": "_channel_hidden_kernel"}   # fp32 ieee
needs_interpreter = pytest.mark.skipif(not triton_interpret() and not torch.cuda.is_available(),
                                       reason="the Triton path needs TRITON_INTERPRET=1 or a GPU")


def _inputs(kind, dtype=torch.float32, device="cpu", B=2, S=7, C=12, D=10):
    """x and the six parameters, away from their init; (x, params)."""
    n = S if kind == "token" else C
    x = 0.3 + torch.randn(B, S, C, dtype=torch.float64)
    nw, nb = layernorm_params(C, torch.float64)
    w1, b1 = linear_params(D, n, torch.float64)
    w2, b2 = linear_params(n, D, torch.float64)
    return x.to(device, dtype), [t.to(device, dtype) for t in (nw, nb, w1, b1, w2, b2)]


# ---- float64: the plain PyTorch path, full precision -----------------------------------------------

@pytest.mark.parametrize("kind", ["token", "channel"])
def test_float64_gradcheck(kind):
    """float64 under the interpreter (this process) runs the PyTorch math: no kernel launches, and
    gradcheck (float64 finite differences, atol 1e-5 / rtol 1e-3) passes for x and every parameter."""
    x, params = _inputs(kind, torch.float64, B=2, S=5, C=6, D=4)
    args = [t.requires_grad_() for t in (x, *params)]
    with count_launches() as n:
        ok = torch.autograd.gradcheck(lambda *a: OPS[kind](*a), args)
    assert ok
    assert sum(n.values()) == 0, dict(n)
    out = OPS[kind](*args)
    ref = TORCH[kind](*args)
    assert torch.equal(out, ref)


def test_float64_gradcheck_without_interpreter():
    """The same rule on the plain path (a fresh process without TRITON_INTERPRET)."""
    code = ("import torch, mixer_kernels as mk\n"
            "from mixer_kernels._config import triton_interpret\n"
            "assert not triton_interpret()\n"
            "torch.manual_seed(0)\n"
            "for kind, n in (('token', 5), ('channel', 6)):\n"
            "    f = mk.token_mixing if kind == 'token' else mk.channel_mixing\n"
            "    x = (0.3 + torch.randn(2, 5, 6, dtype=torch.float64)).requires_grad_()\n"
            "    p = [1 + 0.1 * torch.randn(6), 0.1 * torch.randn(6), 0.4 * torch.randn(4, n), 0.1 * torch.randn(4),\n"
            "         0.4 * torch.randn(n, 4), 0.1 * torch.randn(n)]\n"
            "    p = [t.double().requires_grad_() for t in p]\n"
            "    assert torch.autograd.gradcheck(lambda *a: f(*a), [x, *p])\n"
            "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


@needs_interpreter
@pytest.mark.parametrize("kind", ["token", "channel"])
def test_custom_ops_refuse_float64(kind, device):
    """Called directly (bypassing functional.py's routing), the custom ops refuse float64, naming the op
    and the argument."""
    x, (nw, nb, w1, b1, w2, b2) = _inputs(kind, torch.float64, device)
    if kind == "token":
        op = torch.ops.mixer_kernels.token_mixing_fwd
        call = lambda: op(x, nw, nb, w1, b1, w2, b2, 1e-6, False, None)  # noqa: E731
        name = "token_mixing_fwd"
    else:
        op = torch.ops.mixer_kernels.channel_mixing_fwd
        call = lambda: op(x, nw, nb, w1, b1, w2, b2, None, 1e-6, "none", False)  # noqa: E731
        name = "channel_mixing_fwd"
    import mixer_kernels.ops.channel_mixing  # noqa: F401  (registers the ops)
    import mixer_kernels.ops.token_mixing  # noqa: F401
    with pytest.raises(TypeError, match=rf"mixer_kernels::{name}: x is float64, which has no Triton kernel"):
        call()
    x32 = x.float()
    with pytest.raises(TypeError, match=r"fc1_weight is float64"):
        if kind == "token":
            op(x32, nw.float(), nb.float(), w1, b1.float(), w2.float(), b2.float(), 1e-6, False, None)
        else:
            op(x32, nw.float(), nb.float(), w1, b1.float(), w2.float(), b2.float(), None, 1e-6, "none", False)


# ---- torch.func and double backward --------------------------------------------------------------

@needs_interpreter
@pytest.mark.parametrize("kind", ["token", "channel"])
@pytest.mark.parametrize("transform", ["grad", "jacrev", "jvp", "vmap_of_grad"])
def test_functorch_grad_transforms_refused(kind, transform, device):
    x, params = _inputs(kind, device=device)
    f = lambda x: OPS[kind](x, *params)  # noqa: E731
    call = {"grad": lambda: torch.func.grad(lambda x: f(x).sum())(x),
            "jacrev": lambda: torch.func.jacrev(f)(x[:1]),
            "jvp": lambda: torch.func.jvp(f, (x,), (torch.ones_like(x),)),
            "vmap_of_grad": lambda: torch.func.vmap(torch.func.grad(lambda x: f(x[None]).sum()))(x)}[transform]
    what = "Jvp transform" if transform == "jvp" else "Grad transform"
    with pytest.raises(RuntimeError, match=rf"mixer_kernels.{kind}_mixing: torch.func.*\({'functorch.s ' + what}\) "
                                           r"is not supported on the Triton path"):
        call()


@needs_interpreter
@pytest.mark.parametrize("kind", ["token", "channel"])
def test_vmap_runs_the_kernels(kind, device):
    """torch.func.vmap over a leading dimension: torch runs the op per slice (no batching rule), so the
    kernels run and give the unbatched op's results."""
    x, params = _inputs(kind, device=device)
    xs = torch.stack([x, x.flip(0) * 0.5])
    with count_launches() as n:
        out = torch.func.vmap(lambda x: OPS[kind](x, *params))(xs)
    assert n[FWD_KERNEL[kind]] >= 2
    for i in range(2):
        torch.testing.assert_close(out[i], OPS[kind](xs[i], *params), rtol=0, atol=0)


@needs_interpreter
@pytest.mark.parametrize("kind", ["token", "channel"])
def test_double_backward_refused(kind, device):
    """create_graph=True: the first backward refuses, naming double backward (the backward kernels are
    not differentiable); plain backward and create_graph with nothing differentiable still work."""
    x, params = _inputs(kind, device=device)
    x.requires_grad_()
    out = OPS[kind](x, *params)
    with pytest.raises(RuntimeError, match=rf"mixer_kernels.{kind}_mixing: double backward .*create_graph=True"):
        torch.autograd.grad(out.square().sum(), x, create_graph=True)
    (g,) = torch.autograd.grad(OPS[kind](x, *params).square().sum(), x)
    assert torch.isfinite(g).all()


# ---- the launch guard --------------------------------------------------------------------------------

@needs_interpreter
def test_every_custom_op_enters_the_guard(device, monkeypatch):
    """Forward and backward of both ops run their launches inside ops/_guard.launch_guard (the one
    device guard): each of the four custom ops enters it once per call, with x."""
    entered = []
    real = _guard.launch_guard

    def spy(op, x, **tensors):
        entered.append(op)
        return real(op, x, **tensors)

    monkeypatch.setattr(_guard, "launch_guard", spy)
    for kind in ("token", "channel"):
        x, params = _inputs(kind, device=device)
        x.requires_grad_()
        OPS[kind](x, *(p.requires_grad_() for p in params)).sum().backward()
    assert entered == ["mixer_kernels::token_mixing_fwd", "mixer_kernels::token_mixing_bwd",
                       "mixer_kernels::channel_mixing_fwd", "mixer_kernels::channel_mixing_bwd"]


def test_guard_enters_x_device(monkeypatch):
    """Without a GPU: a (mocked) tensor on cuda:1 gets torch.cuda.device(cuda:1) as its context, a CPU
    one a no-op; a tensor on another device than x is refused, naming it."""
    class Fake:
        def __init__(self, device, dtype=torch.float16):
            self.device, self.dtype = torch.device(device), dtype
    ctx = _guard.launch_guard("op", Fake("cuda:1"), fc1_weight=Fake("cuda:1"), sample_scale=None)
    assert isinstance(ctx, torch.cuda.device) and ctx.idx == 1
    assert not isinstance(_guard.launch_guard("op", Fake("cpu")), torch.cuda.device)
    with pytest.raises(ValueError, match=r"op: fc2_weight: expected a tensor on x's device cuda:1, got cuda:0"):
        _guard.launch_guard("op", Fake("cuda:1"), fc2_weight=Fake("cuda:0"))


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["token", "channel"])
def test_non_current_gpu(kind):
    """Tensors on cuda:1 while cuda:0 is current: forward and backward launch on cuda:1 (the same results
    as with cuda:1 current)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs (a tensor on a GPU that is not the current one)")
    x, params = _inputs(kind, torch.bfloat16, "cuda:1", B=4, S=49, C=64, D=32)
    x.requires_grad_()
    with torch.cuda.device(0):
        out = OPS[kind](x, *params)
        (g,) = torch.autograd.grad(out.float().sum(), x)
    with torch.cuda.device(1):
        out1 = OPS[kind](x, *params)
        (g1,) = torch.autograd.grad(out1.float().sum(), x)
    assert out.device == x.device and torch.equal(out, out1) and torch.equal(g, g1)
