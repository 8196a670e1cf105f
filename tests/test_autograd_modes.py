"""Issue 23: every autograd mode of the seven functions is exact or refused with an error naming it.

Triton path (the interpreter here, CUDA on a GPU): forward-mode AD (torch.func.jvp / jacfwd / linearize,
forward_ad dual tensors, direct calls of torch.ops.mixer_kernels.*), functorch's reverse transforms
(grad / vjp / jacrev) and double backward are refused at the op (ops/_guard.guard_autograd), also under
torch.compile. Plain path (float64 here, fp32 in a process without TRITON_INTERPRET): the same calls give
tangents and gradients that match float64 central differences. No test accepts a None or zero tangent."""
import os
import subprocess
import sys

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from helpers import count_launches, layernorm_params, linear_params

import mixer_kernels as mk
from mixer_kernels._config import triton_interpret

needs_triton = pytest.mark.skipif(not triton_interpret() and not torch.cuda.is_available(),
                                  reason="the Triton path needs TRITON_INTERPRET=1 or a GPU")

B, S, C = 2, 5, 8


def make_call(name, dtype=torch.float64, device="cpu", param_dtype=None, **kw):
    """(f, x): f(x) runs public function `name` on fixed parameters (away from their init; in `param_dtype`,
    default x's dtype) with keyword arguments `kw`."""
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(1)

    def r(*shape, scale=1.0, shift=0.0):
        return (shift + scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(device, dtype)
    x = r(B, S, C, shift=0.3)
    dtype = param_dtype or dtype
    nw, nb = (t.to(device, dtype) for t in layernorm_params(C, torch.float64))
    if name in ("token_mixing", "channel_mixing", "gmixer_token_mixing", "gmixer_channel_mixing"):
        n = S if "token" in name else C
        glu = name.startswith("gmixer")
        w1, b1 = (t.to(device, dtype) for t in linear_params(6, n, torch.float64))
        w2, b2 = (t.to(device, dtype) for t in linear_params(n, 3 if glu else 6, torch.float64))
        fn = getattr(mk, name)
        return (lambda x: fn(x, nw, nb, w1, b1, w2, b2, **kw)), x
    if name == "resmlp_token_mixing":
        w, b = (t.to(device, dtype) for t in linear_params(S, S, torch.float64))
        a, be, ls = r(C, scale=0.1, shift=1.0), r(C, scale=0.1), r(C, scale=0.3, shift=0.5)
        return (lambda x: mk.resmlp_token_mixing(x, a, be, w, b, ls, **kw)), x
    if name == "resmlp_channel_mixing":
        w1, b1 = (t.to(device, dtype) for t in linear_params(12, C, torch.float64))
        w2, b2 = (t.to(device, dtype) for t in linear_params(C, 12, torch.float64))
        a, be, ls = r(C, scale=0.1, shift=1.0), r(C, scale=0.1), r(C, scale=0.3, shift=0.5)
        return (lambda x: mk.resmlp_channel_mixing(x, a, be, w1, b1, w2, b2, ls, **kw)), x
    assert name == "gmlp_block"
    w1, b1 = (t.to(device, dtype) for t in linear_params(12, C, torch.float64))
    gw, gb = (t.to(device, dtype) for t in layernorm_params(6, torch.float64))
    pw, pb = (t.to(device, dtype) for t in linear_params(S, S, torch.float64))
    w2, b2 = (t.to(device, dtype) for t in linear_params(C, 6, torch.float64))
    return (lambda x: mk.gmlp_block(x, nw, nb, w1, b1, gw, gb, pw, pb, w2, b2, **kw)), x


FUNCTIONS = ["token_mixing", "channel_mixing", "resmlp_token_mixing", "resmlp_channel_mixing", "gmlp_block",
             "gmixer_token_mixing", "gmixer_channel_mixing"]
# the Triton cases: every function in fp32, and gMixer's token half in bf16 too (fp32 runs its composition,
# bf16 its fused op)
TRITON_CASES = [(n, torch.float32) for n in FUNCTIONS] + [("gmixer_token_mixing", torch.bfloat16)]
CASE_IDS = [f"{n}-{str(d)[6:]}" for n, d in TRITON_CASES]


def _dual_tangent(f, x, t, requires_grad=False):
    with fwAD.dual_level():
        xd = fwAD.make_dual(x.clone().requires_grad_(requires_grad), t)
        return fwAD.unpack_dual(f(xd)).tangent


FORWARD_MODES = {
    "jvp": lambda f, x, t: torch.func.jvp(f, (x,), (t,))[1],
    "jacfwd": lambda f, x, t: torch.func.jacfwd(f)(x),
    "linearize": lambda f, x, t: torch.func.linearize(f, x)[1](t),
    "dual": _dual_tangent,
    "dual_requires_grad": lambda f, x, t: _dual_tangent(f, x, t, requires_grad=True),
}
REVERSE_MODES = {
    "grad": lambda f, x, t: torch.func.grad(lambda x: (f(x) * t).sum())(x),
    "vjp": lambda f, x, t: torch.func.vjp(f, x)[1](t)[0],
    "jacrev": lambda f, x, t: torch.func.jacrev(f)(x),
    "double_backward": lambda f, x, t: torch.autograd.grad(
        torch.autograd.grad((f(xr := x.clone().requires_grad_()) * t).sum(), xr, create_graph=True)[0].sum(), xr),
}
WHAT = {"jvp": "functorch's Jvp transform", "jacfwd": "functorch's Jvp transform",
        "linearize": "forward-mode AD", "dual": "forward-mode AD", "dual_requires_grad": "forward-mode AD",
        "grad": "functorch's Grad transform", "vjp": "functorch's Grad transform",
        "jacrev": "functorch's Grad transform", "double_backward": "double backward"}


def _refusal(name, mode):
    what = WHAT[mode].replace("'", ".{1,2}")     # dynamo's report quotes the message with repr: functorch\\'s
    return rf"mixer_kernels.{name}: .*{what}.*not supported on the Triton path"


def _triton_runs(f, x):
    """The call takes the Triton path: kernels launch (not the plain PyTorch math)."""
    with count_launches() as n:
        f(x)
    assert sum(n.values()) > 0, "expected Triton launches"


# ---- the Triton path: refused, naming the mode ---------------------------------------------------------

@needs_triton
@pytest.mark.parametrize("mode", [*FORWARD_MODES, *REVERSE_MODES])
@pytest.mark.parametrize("name,dtype", TRITON_CASES, ids=CASE_IDS)
def test_triton_path_refuses(name, dtype, mode, device):
    f, x = make_call(name, dtype, device)
    _triton_runs(f, x)
    t = torch.randn_like(x)
    call = {**FORWARD_MODES, **REVERSE_MODES}[mode]
    with pytest.raises(RuntimeError, match=_refusal(name, mode)):
        call(f, x, t)


@needs_triton
@pytest.mark.parametrize("name,dtype", TRITON_CASES, ids=CASE_IDS)
def test_triton_path_reverse_mode_runs(name, dtype, device):
    """What stays supported on the Triton path: .backward() / autograd.grad (first order), and vmap."""
    f, x = make_call(name, dtype, device)
    xr = x.clone().requires_grad_()
    with count_launches() as n:
        (g,) = torch.autograd.grad(f(xr).float().square().sum(), xr)
    assert sum(n.values()) > 0 and torch.isfinite(g).all() and g.abs().sum() > 0


OPS = {  # a direct call of each custom op, with the dual tensor as x (args after x: the op's schema)
    "token_mixing_fwd": lambda x, p: torch.ops.mixer_kernels.token_mixing_fwd(x, *p["mlp"], 1e-6, False, None),
    "channel_mixing_fwd": lambda x, p: torch.ops.mixer_kernels.channel_mixing_fwd(x, *p["mlpc"], None, 1e-6, "none",
                                                                                 False),
    "resmlp_token_mixing_fwd": lambda x, p: torch.ops.mixer_kernels.resmlp_token_mixing_fwd(x, *p["rt"], None),
    "resmlp_channel_mixing_fwd": lambda x, p: torch.ops.mixer_kernels.resmlp_channel_mixing_fwd(x, *p["rc"], None,
                                                                                               "none", False),
    "glu_gate": lambda x, p: torch.ops.mixer_kernels.glu_gate(x.reshape(B, S * 2, C // 2), 0),
    "gmlp_block_fwd": lambda x, p: torch.ops.mixer_kernels.gmlp_block_fwd(x, *p["gmlp"], None, 1e-6, 1e-5, "none",
                                                                         False),
    "gmixer_token_mixing_fwd": lambda x, p: torch.ops.mixer_kernels.gmixer_token_mixing_fwd(
        x.bfloat16(), *(t.bfloat16() for t in p["glu"]), 1e-6, 1, None),
}


@needs_triton
@pytest.mark.parametrize("op", list(OPS))
def test_direct_op_call_refuses_dual(op, device):
    """torch.ops.mixer_kernels.* called directly with a dual tensor: refused (their autograd formula would
    drop the tangent), not a None tangent."""
    import mixer_kernels.ops.gmixer_token_mixing  # noqa: F401  (registers the ops)
    import mixer_kernels.ops.gmlp_block  # noqa: F401
    import mixer_kernels.ops.resmlp_channel_mixing  # noqa: F401
    import mixer_kernels.ops.resmlp_token_mixing  # noqa: F401
    import mixer_kernels.ops.token_mixing  # noqa: F401
    from mixer_kernels.ops import channel_mixing  # noqa: F401
    x = (0.3 + torch.randn(B, S, C)).to(device)
    nw, nb = (t.to(device) for t in layernorm_params(C))
    ones, zeros = torch.ones(C, device=device), torch.zeros(C, device=device)
    p = {"mlp": (nw, nb, *(t.to(device) for t in linear_params(6, S)), *(t.to(device) for t in linear_params(S, 6))),
         "mlpc": (nw, nb, *(t.to(device) for t in linear_params(6, C)), *(t.to(device) for t in linear_params(C, 6))),
         "rt": (ones, zeros, *(t.to(device) for t in linear_params(S, S)), ones),
         "rc": (ones, zeros, *(t.to(device) for t in linear_params(6, C)), *(t.to(device) for t in linear_params(C, 6)),
                ones),
         "gmlp": (nw, nb, *(t.to(device) for t in linear_params(12, C)), *(t.to(device) for t in layernorm_params(6)),
                  *(t.to(device) for t in linear_params(S, S)), *(t.to(device) for t in linear_params(C, 6))),
         "glu": (nw, nb, *(t.to(device) for t in linear_params(6, S)), *(t.to(device) for t in linear_params(S, 3)))}
    OPS[op](x, p)   # runs without a tangent
    with fwAD.dual_level():
        with pytest.raises(RuntimeError, match=r"mixer_kernels\.\w+: forward-mode AD .*not supported"):
            OPS[op](fwAD.make_dual(x, torch.randn_like(x)), p)


@needs_triton
@pytest.mark.parametrize("fullgraph", [False, True], ids=["graph_breaks", "fullgraph"])
@pytest.mark.parametrize("mode", ["jvp", "dual", "grad"])
@pytest.mark.parametrize("name,dtype", TRITON_CASES, ids=CASE_IDS)
def test_triton_path_refuses_under_compile(name, dtype, mode, fullgraph, device):
    """torch.compile around the transform: the op's own error (not a zero tangent, not torch's setup_context
    error). By default it reaches the user as raised; with fullgraph=True dynamo reports an exception raised
    inside its inlined functorch code as Unsupported "Observed exception", whose text carries the op's message.
    gMixer's fp32 token composition starts with F.layer_norm, whose forward-mode rule fails inside dynamo
    before our op is reached (torch's internal assert about _fw_primal / _make_dual; the plain path's float64
    token_mixing meets it too): an error all the same."""
    f, x = make_call(name, dtype, device)
    t = torch.randn_like(x)
    call = {**FORWARD_MODES, **REVERSE_MODES}[mode]
    match = _refusal(name, mode)
    if name == "gmixer_token_mixing" and dtype == torch.float32 and mode != "grad":
        match = rf"{match}|INTERNAL ASSERT FAILED"
    torch._dynamo.reset()
    try:
        with pytest.raises(RuntimeError, match=match) as e:
            torch.compile(lambda x: call(f, x, t), backend="aot_eager", fullgraph=fullgraph)(x)
        if not fullgraph:
            assert "Observed exception" not in str(e.value)
    finally:
        torch._dynamo.reset()


# ---- the plain path: exact ------------------------------------------------------------------------------

def _central_difference(f, x, t, h=1e-6):
    return (f(x + h * t) - f(x - h * t)) / (2 * h)


@pytest.mark.parametrize("mode", ["jvp", "linearize", "dual", "dual_requires_grad"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_plain_path_forward_mode_exact(name, mode):
    """float64 runs the plain PyTorch math in every process: forward mode gives the directional derivative
    (float64 central differences), not a None or zero tangent, with no kernel launched."""
    f, x = make_call(name, torch.float64)
    t = torch.randn_like(x)
    with count_launches() as n:
        tan = FORWARD_MODES[mode](f, x, t)
    assert sum(n.values()) == 0, dict(n)
    ref = _central_difference(f, x, t)
    assert tan is not None and ref.abs().max() > 1e-3
    torch.testing.assert_close(tan, ref, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_plain_path_reverse_transforms_exact(name):
    """torch.func.grad, vjp and double backward on the plain path (float64): the gradient of L = sum(v * f(x)^2)
    matches central differences along t, and so does its Hessian-vector product."""
    f, x = make_call(name, torch.float64)
    t, v = torch.randn_like(x), torch.randn_like(x)
    loss = lambda x: (v * f(x).square()).sum()  # noqa: E731
    g = torch.func.grad(loss)(x)
    dd = (loss(x + 1e-6 * t) - loss(x - 1e-6 * t)) / 2e-6
    assert abs(dd) > 1e-3
    torch.testing.assert_close((g * t).sum(), dd, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(torch.func.vjp(loss, x)[1](torch.tensor(1.0, dtype=x.dtype))[0], g)

    def grad_of(x):
        xr = x.clone().requires_grad_()
        return torch.autograd.grad(loss(xr), xr, create_graph=True)[0], xr
    g1, xr = grad_of(x)
    (hvp,) = torch.autograd.grad((g1 * t).sum(), xr)
    ref = (grad_of(x + 1e-6 * t)[0] - grad_of(x - 1e-6 * t)[0]).detach() / 2e-6
    assert ref.abs().max() > 1e-3
    torch.testing.assert_close(hvp, ref, rtol=1e-5, atol=1e-7)


def test_plain_path_fp32_without_interpreter():
    """The same in fp32 on the plain path of a process without TRITON_INTERPRET: jvp, dual tensors, linearize
    and torch.func.grad match float64 central differences (relative 1e-4)."""
    code = (
        "import sys, torch\n"
        "sys.path.insert(0, 'tests')\n"
        "from mixer_kernels._config import triton_interpret\n"
        "assert not triton_interpret()\n"
        "from test_autograd_modes import FUNCTIONS, FORWARD_MODES, make_call, _central_difference\n"
        "for name in FUNCTIONS:\n"
        "    f64, x64 = make_call(name, torch.float64)\n"
        "    f, x = make_call(name, torch.float32)\n"
        "    t = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)\n"
        "    ref = _central_difference(f64, x64, t)\n"
        "    for mode in ('jvp', 'linearize', 'dual'):\n"
        "        tan = FORWARD_MODES[mode](f, x, t.float())\n"
        "        err = ((tan.double() - ref).norm() / ref.norm()).item()\n"
        "        assert err < 1e-4, (name, mode, err)\n"
        "    g = torch.func.grad(lambda x: (f(x) * t.float()).sum())(x)\n"
        "    dd = (ref * t).sum()\n"
        "    assert abs((g.double() * t).sum() - dd) / abs(dd) < 1e-4, (name, 'grad')\n"
        "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


# ---- one dtype rule for every function (issue 23) -----------------------------------------------------

@pytest.mark.parametrize("name", ["resmlp_token_mixing", "resmlp_channel_mixing"])
def test_float64_parameters_under_autocast_take_the_plain_path(name, device):
    """fp32 x with float64 parameters under autocast: ResMLP computes as eager and the other families do
    (autocast leaves float64 alone: float64 math, float64 result), on the plain path (no launch). (The
    LayerNorm families meet torch's own mixed-dtype refusal of layer_norm there, as eager does.)"""
    f, x = make_call(name, torch.float32, device, param_dtype=torch.float64)
    f64, _ = make_call(name, torch.float64, device)
    with torch.autocast(device, dtype=torch.bfloat16), count_launches() as n:
        out = f(x)
    assert sum(n.values()) == 0, dict(n)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, f64(x.double()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_float64_sample_scale_one_rule(name, device):
    """A float64 sample_scale with fp32 x: accepted by every function and computed in the plain PyTorch math
    (float64 anywhere runs it), in x's dtype and within the fp32 rule of the float64 result."""
    s64 = torch.tensor([0.0, 1.25], dtype=torch.float64, device=device)
    f, x = make_call(name, torch.float32, device, sample_scale=s64)
    f64, x64 = make_call(name, torch.float64, device, sample_scale=s64)
    with count_launches() as n:
        out = f(x)
    assert sum(n.values()) == 0, dict(n)
    ref = f64(x64)
    assert out.dtype == torch.float32
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-5


def test_export_on_cpu_warns_that_it_records_the_plain_math():
    """torch.export and torch.jit.trace of a call on CPU tensors without TRITON_INTERPRET record the plain
    PyTorch math: a warning says so where it happens."""
    code = (
        "import sys, warnings, torch\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_autograd_modes import make_call\n"
        "f, x = make_call('token_mixing', torch.float32)\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return f(x)\n"
        "for how in ('export', 'jit.trace', 'eager'):\n"
        "    with warnings.catch_warnings(record=True) as w:\n"
        "        warnings.simplefilter('always')\n"
        "        if how == 'export':\n"
        "            torch.export.export(M(), (x,))\n"
        "        elif how == 'jit.trace':\n"
        "            torch.jit.trace(M(), (x,))\n"
        "        else:\n"
        "            M()(x)\n"
        "    said = [str(m.message) for m in w if 'records the plain PyTorch math' in str(m.message)]\n"
        "    assert bool(said) == (how != 'eager'), (how, [str(m.message) for m in w])\n"
        "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


# ---- sample_scale's gradient on the Triton path (issue 23, item 4 open): warned where it happens ----------------

@needs_triton
@pytest.mark.parametrize("name,dtype", TRITON_CASES, ids=CASE_IDS)
def test_sample_scale_gradient_warns_on_the_triton_path(name, dtype, device):
    """Until the kernels reduce it from the branch, a sample_scale that needs a gradient gets one from out - x in
    x's dtype, with a UserWarning saying so; a detached one (drop_path) warns nothing. gMixer's fp32 token half
    runs a torch composition that differentiates sample_scale itself: no warning there."""
    import warnings
    s = torch.tensor([0.5, 1.5], device=device, dtype=dtype, requires_grad=True)
    f, x = make_call(name, dtype, device, sample_scale=s)
    composition = (name, dtype) == ("gmixer_token_mixing", torch.float32)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with count_launches() as n:
            f(x).float().sum().backward()
    assert sum(n.values()) > 0, "expected Triton launches"
    got = [w for w in seen if "sample_scale requires a gradient" in str(w.message)]
    assert len(got) == (0 if composition else 1), [str(w.message) for w in seen]
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    f, x = make_call(name, dtype, device, sample_scale=s.detach())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        f(x)
    assert not [w for w in seen if "sample_scale requires a gradient" in str(w.message)]
