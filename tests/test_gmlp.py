"""gMLP (timm's SpatialGatingBlock with GatedMlp and SpatialGatingUnit) fused: mk.gmlp_block and the
SpatialGatingBlock module, judged against timm's own block in float64 (an oracle independent of this
package): output and every gradient, fp32 and the low-precision 2x rule, drop_path, recompute, autocast,
launches counted (the kernels ran, and no unfused layer did), torch.compile fullgraph, a whole timm gMLP
fused, input errors."""
from __future__ import annotations

import copy

import pytest
import torch
from helpers import COMPILE_BACKENDS, assert_close, by_device, count_launches

import mixer_kernels as mk
from reference import ops as ref_ops

timm = pytest.importorskip("timm")
from timm.layers import GatedMlp as TimmGatedMlp  # noqa: E402
from timm.models.mlp_mixer import MlpMixer  # noqa: E402
from timm.models.mlp_mixer import SpatialGatingBlock as TimmSpatialGatingBlock  # noqa: E402

# A small gMLP as timm's gmlp_* factories build it (block_layer and mlp_layer fixed there): 2 blocks, S = 16,
# C = 32, DC = 192.
GMLP = dict(num_classes=10, img_size=32, patch_size=8, num_blocks=2, embed_dim=32, mlp_ratio=6,
            mlp_layer=TimmGatedMlp)

FWD = {"_layernorm_stats_kernel": 2, "_channel_hidden_kernel": 1, "_sgu_fwd_kernel": 1, "_channel_out_kernel": 1}
BWD = {"_sgu_bwd_kernel": 1, "_sgu_dn_kernel": 1, "_sgu_norm_bwd_kernel": 1, "_sgu_gelu_pass_kernel": 1,
       "_layernorm_bwd_kernel": 1, "_channel_wgrad_kernel": 2}


def _timm_block(S, C, DC, seed=0):
    """timm's SpatialGatingBlock in float64 with every parameter away from its init (the projection no longer
    near 0 with bias 1, so the spatial mixing weighs in and its errors show)."""
    torch.manual_seed(seed)
    blk = TimmSpatialGatingBlock(C, S, mlp_ratio=DC / C).double()
    assert blk.mlp_channels.fc1.out_features == DC
    with torch.no_grad():
        for name, p in blk.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.2 * torch.randn_like(p))
            elif name.endswith("proj.weight"):
                p.copy_(torch.randn_like(p) * S ** -0.5)
            else:
                p.add_(0.2 * p.std() * torch.randn_like(p))
    return blk


class _FixedDropPath(torch.nn.Module):
    """drop_path with a given per-sample scale (keep mask / keep probability)."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale.to(device=x.device, dtype=x.dtype)[:, None, None]


def _grads(block, x, grad):
    out = block(x)
    out.backward(grad)
    return out.detach(), x.grad.detach(), {n: p.grad.detach() for n, p in block.named_parameters()}


SMALL = [(torch.float32, 2, 49, 32, 64, False, False), (torch.float32, 2, 64, 40, 96, True, True),
         (torch.float32, 3, 37, 48, 50, False, True), (torch.bfloat16, 2, 49, 32, 64, False, False),
         (torch.float16, 2, 64, 40, 96, True, False), (torch.bfloat16, 2, 37, 48, 50, False, True),
         (torch.float32, 1, 300, 8, 16, False, True)]      # S > 256: several token tiles in every spatial kernel
REAL = [(dt, 8, 196, 256, 1536, rec, sc) for dt in (torch.float32, torch.bfloat16, torch.float16)
        for rec, sc in ((False, False), (True, True))] + [(torch.bfloat16, 4, 196, 512, 3072, False, True)]


def _case_id(c):
    return f"{str(c[0])[6:]}-{c[1]}x{c[2]}x{c[3]}x{c[4]}-{'rec' if c[5] else 'save'}{'-droppath' if c[6] else ''}"


@pytest.mark.parametrize("dtype,B,S,C,DC,recompute,drop_path", by_device(SMALL, REAL, ids=_case_id))
def test_block_against_timm(device, dtype, B, S, C, DC, recompute, drop_path):
    ref64 = _timm_block(S, C, DC)
    x64 = torch.randn(B, S, C, dtype=torch.float64)
    grad64 = torch.randn(B, S, C, dtype=torch.float64)
    eager = copy.deepcopy(ref64).to(device=device, dtype=dtype)
    fused = mk.SpatialGatingBlock.from_block(copy.deepcopy(eager), recompute=recompute)
    if drop_path:   # one fixed draw for all (the draw itself is the MixerBlock's, tested there): sample 0 dropped
        keep = torch.tensor([0.0, 2.0] * (B // 2) + [2.0] * (B % 2), dtype=torch.float64)
        for m in (ref64, eager):
            m.drop_path = _FixedDropPath(keep)
        fused.drop_path = mk.modules._DropPathRate(0.5)
        fused.train()
        fused._sample_scale = lambda x: keep.to(device=x.device, dtype=x.dtype)

    def run(block, dt, dev):
        x = x64.to(device=dev, dtype=dt, copy=True).requires_grad_()
        return _grads(block, x, grad64.to(device=dev, dtype=dt))

    ref = run(ref64, torch.float64, "cpu")
    if device == "cuda":   # the first call tunes; judge a later one
        run(fused, dtype, device)
        for p in fused.parameters():
            p.grad = None
    with count_launches() as n:
        got = run(fused, dtype, device)
    for k, v in {**FWD, **BWD}.items():
        assert n[k] >= v, (k, dict(n))
    low = dtype != torch.float32
    eg = run(eager, dtype, device) if low else (None, None, {})
    assert_close("out", got[0], ref[0], eg[0])
    assert_close("dx", got[1], ref[1], eg[1])
    assert set(got[2]) == set(ref[2])
    for name in ref[2]:
        assert got[2][name].dtype == dtype, name
        assert_close(f"d{name}", got[2][name], ref[2][name], eg[2].get(name))


def _params(blk):
    c = blk.mlp_channels
    return (blk.norm.weight, blk.norm.bias, c.fc1.weight, c.fc1.bias, c.gate.norm.weight, c.gate.norm.bias,
            c.gate.proj.weight, c.gate.proj.bias, c.fc2.weight, c.fc2.bias)


def test_function_against_oracle(device):
    """mk.gmlp_block alone against reference/ops.gmlp_block (float64): per-sample scale, tanh GELU, other eps,
    non-contiguous x, every gradient."""
    B, S, C, DC = 3, 25, 24, 40
    blk = _timm_block(S, C, DC, seed=3)
    params64 = [p.detach() for p in _params(blk)]
    scale = torch.tensor([0.0, 2.0, 1.0], dtype=torch.float64)
    x64 = torch.randn(B, C, S, dtype=torch.float64).transpose(1, 2)          # [B, S, C], not contiguous
    g64 = torch.randn(B, S, C, dtype=torch.float64)
    kw = dict(eps=1e-5, gate_eps=1e-6, approximate="tanh")
    ref_out, ref_g = ref_ops.forward_backward(ref_ops.gmlp_block, [x64, *params64], g64, sample_scale=scale, **kw)
    leaves = [t.float().to(device).requires_grad_() for t in params64]
    x = x64.float().to(device).requires_grad_()
    with count_launches() as n:
        out = mk.gmlp_block(x, *leaves, sample_scale=scale.float().to(device), **kw)
        out.backward(g64.float().to(device))
    assert n["_sgu_fwd_kernel"] == 1 and n["_sgu_bwd_kernel"] == 1, dict(n)
    assert_close("out", out, ref_out)
    for name, t, r in zip(["x", "nw", "nb", "w1", "b1", "gw", "gb", "wp", "bp", "w2", "b2"], [x, *leaves], ref_g,
                          strict=True):
        assert_close(f"d{name}", t.grad, r)


def test_wide_gate_norm_path(device, monkeypatch):
    """Gate widths above what _sgu_norm_bwd_kernel loads in one piece (sg.NORM_MAX_H, 2048) run LN_v's
    backward through ops/layernorm_backward.py and then the GELU' pass: the same gradients (the limit lowered
    here so a small case takes that path)."""
    from mixer_kernels.ops import _spatial_gating_kernels as sg
    monkeypatch.setattr(sg, "NORM_MAX_H", 8)
    B, S, C, DC = 2, 16, 16, 40
    params64 = [p.detach() for p in _params(_timm_block(S, C, DC, seed=6))]
    x64 = torch.randn(B, S, C, dtype=torch.float64)
    g64 = torch.randn(B, S, C, dtype=torch.float64)
    ref_out, ref_g = ref_ops.forward_backward(ref_ops.gmlp_block, [x64, *params64], g64)
    ins = [t.float().to(device).requires_grad_() for t in (x64, *params64)]
    with count_launches() as n:
        mk.gmlp_block(*ins).backward(g64.float().to(device))
    assert n["_sgu_norm_bwd_kernel"] == 0 and n["_sgu_gelu_pass_kernel"] == 2 and n["_layernorm_bwd_kernel"] == 2, \
        dict(n)
    for i, (t, r) in enumerate(zip(ins, ref_g, strict=True)):
        assert_close(f"d{i}", t.grad, r)


def test_frozen_parts(device):
    """Only some inputs require grad: the others get none, and the needed ones are right."""
    B, S, C, DC = 2, 16, 16, 32
    blk = _timm_block(S, C, DC, seed=4)
    params64 = [p.detach() for p in _params(blk)]
    x64 = torch.randn(B, S, C, dtype=torch.float64)
    g64 = torch.randn(B, S, C, dtype=torch.float64)
    _, ref_g = ref_ops.forward_backward(ref_ops.gmlp_block, [x64, *params64], g64)
    # proj only, fc2 weight only, x only (recomputing fc1's output), gate norm bias only (recomputing)
    for trainable, recompute in (({6, 7}, False), ({9}, False), ({0}, True), ({5}, True)):
        ins = [t.float().to(device) for t in (x64, *params64)]
        for i in trainable:
            ins[i].requires_grad_()
        mk.gmlp_block(*ins, recompute=recompute).backward(g64.float().to(device))
        for i, t in enumerate(ins):
            if i in trainable:
                assert_close(f"d{i}", t.grad, ref_g[i])
            else:
                assert t.grad is None


def test_sample_scale_gradient(device):
    """A sample_scale that requires grad gets its gradient (as on the plain path)."""
    B, S, C, DC = 2, 16, 16, 32
    blk = _timm_block(S, C, DC, seed=5)
    params64 = [p.detach() for p in _params(blk)]
    x64 = torch.randn(B, S, C, dtype=torch.float64)
    s64 = torch.tensor([0.5, 1.5], dtype=torch.float64, requires_grad=True)
    g64 = torch.randn(B, S, C, dtype=torch.float64)
    ref_out, ref_g = ref_ops.forward_backward(ref_ops.gmlp_block, [x64, *params64], g64, sample_scale=s64)
    s = s64.detach().float().to(device).requires_grad_()
    out = mk.gmlp_block(x64.float().to(device), *[p.float().to(device) for p in params64], sample_scale=s)
    out.backward(g64.float().to(device))
    assert_close("out", out, ref_out)
    assert_close("dsample_scale", s.grad, ref_g[-1])


def test_autocast(device):
    """Under autocast: matmuls in bf16, both LayerNorms in fp32, output fp32, as eager timm."""
    B, S, C, DC = 2, 49, 32, 64
    ref = _timm_block(S, C, DC, seed=7)
    x64 = torch.randn(B, S, C, dtype=torch.float64)
    eager = copy.deepcopy(ref).float().to(device)
    fused = mk.SpatialGatingBlock.from_block(copy.deepcopy(eager))
    x = x64.float().to(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        e = eager(x)
        with count_launches() as n:
            f = fused(x)
    assert n["_sgu_fwd_kernel"] == 1, dict(n)
    assert f.dtype == e.dtype == torch.float32
    assert_close("out", f.to(torch.bfloat16), ref(x64).detach(), e.to(torch.bfloat16))


@pytest.mark.parametrize("backend", COMPILE_BACKENDS)
def test_torch_compile_fullgraph(device, backend):
    torch._dynamo.reset()
    ref = _timm_block(16, 32, 64, seed=9)
    fused = mk.SpatialGatingBlock.from_block(copy.deepcopy(ref).float().to(device))
    x = torch.randn(2, 16, 32, device=device)
    compiled = torch.compile(fused, fullgraph=True, backend=backend)
    with count_launches() as n:
        out = compiled(x)
        out.sum().backward()
    assert n["_sgu_fwd_kernel"] == 1 and n["_sgu_bwd_kernel"] == 1, dict(n)
    g = {k: p.grad.clone() for k, p in fused.named_parameters()}
    for p in fused.parameters():
        p.grad = None
    out_e = fused(x)
    out_e.sum().backward()
    torch.testing.assert_close(out, out_e, rtol=0, atol=0)
    for k, p in fused.named_parameters():
        torch.testing.assert_close(g[k], p.grad, rtol=0, atol=0)
    torch._dynamo.reset()


def test_deterministic(device):
    ref = _timm_block(49, 32, 64, seed=11)
    fused = mk.SpatialGatingBlock.from_block(copy.deepcopy(ref).float().to(device))
    x = torch.randn(2, 49, 32, device=device)
    runs = []
    for _ in range(2):
        for p in fused.parameters():
            p.grad = None
        fused(x).sum().backward()
        runs.append([p.grad.clone() for p in fused.parameters()])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_timm_model_fused(device):
    """A whole timm gMLP fused in place: same logits and gradients as unfused, only fused blocks run."""
    torch.manual_seed(0)
    model = MlpMixer(block_layer=TimmSpatialGatingBlock, **GMLP).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x64 = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ref = model(x64)
    ref.sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    fused = copy.deepcopy(model).float().to(device)
    for p in fused.parameters():
        p.grad = None
    keys = list(fused.state_dict())
    mk.fuse_mixer_blocks(fused)
    assert list(fused.state_dict()) == keys
    assert all(type(b) is mk.SpatialGatingBlock for b in fused.blocks)
    with count_launches() as n:
        out = fused(x64.float().to(device))
    assert n["_sgu_fwd_kernel"] == 2 and n["_channel_out_kernel"] == 2, dict(n)
    out.sum().backward()
    assert_close("logits", out, ref.detach())
    for name, p in fused.named_parameters():
        assert_close(f"d{name}", p.grad, ref_grads[name], scale=ref_grads[name].norm().item() + 1e-3)


def test_built_fused(device):
    """timm builds the fused block itself: MlpMixer(block_layer=mk.SpatialGatingBlock, ...) loads timm's weights
    (timm's gmlp_*_224 factories fix block_layer themselves, so create_model(..., block_layer=...) cannot pass
    one: fuse_mixer_blocks is the route for those)."""
    torch.manual_seed(0)
    plain = MlpMixer(block_layer=TimmSpatialGatingBlock, **GMLP)
    fused = MlpMixer(block_layer=mk.SpatialGatingBlock, **GMLP)
    assert list(fused.state_dict()) == list(plain.state_dict())
    fused.load_state_dict(plain.state_dict())
    assert all(type(b) is mk.SpatialGatingBlock for b in fused.blocks)
    torch.nn.init.normal_(plain.head.weight, std=0.02)      # timm zero-initialises the head
    fused.head.load_state_dict(plain.head.state_dict())
    x = torch.randn(2, 3, 32, 32)
    fused, plain = fused.to(device), plain.to(device)
    torch.testing.assert_close(fused(x.to(device)), plain(x.to(device)), rtol=1e-4, atol=1e-5)
    assert fused.blocks[0].mlp_channels.gate.proj.weight.std() < 1e-5          # timm's gate init reached it
    with pytest.raises(TypeError, match="block_layer"):                        # timm's own limitation
        timm.create_model("gmlp_ti16_224", block_layer=mk.SpatialGatingBlock)


def test_unsupported_parts():
    blk = _timm_block(16, 32, 64).float()
    bad = copy.deepcopy(blk)
    bad.norm = torch.nn.Identity()
    with pytest.raises(ValueError, match=r"norm.*LayerNorm"):
        mk.SpatialGatingBlock.from_block(bad)
    bad = copy.deepcopy(blk)
    bad.mlp_channels.act = torch.nn.ReLU()
    with pytest.raises(ValueError, match=r"mlp_channels\.act.*GELU"):
        mk.SpatialGatingBlock.from_block(bad)
    bad = copy.deepcopy(blk)
    bad.mlp_channels.gate = torch.nn.Identity()
    with pytest.raises(ValueError, match=r"mlp_channels\.gate.*SpatialGatingUnit"):
        mk.SpatialGatingBlock.from_block(bad)
    bad = copy.deepcopy(blk)
    bad.mlp_channels.gate.norm = torch.nn.LayerNorm(32, elementwise_affine=False)
    with pytest.raises(ValueError, match=r"mlp_channels\.gate\.norm"):
        mk.SpatialGatingBlock.from_block(bad)
    bad = copy.deepcopy(blk)
    bad.mlp_channels.norm = torch.nn.LayerNorm(32)
    with pytest.raises(ValueError, match=r"mlp_channels\.norm"):
        mk.SpatialGatingBlock.from_block(bad)
    with pytest.raises(ValueError, match="bare SpatialGatingBlock"):
        mk.fuse_mixer_blocks(blk)
    fused = mk.SpatialGatingBlock.from_block(blk)
    fused.mlp_channels.drop1.p = 0.1
    fused.train()
    with pytest.raises(RuntimeError, match="does not compute dropout"):
        fused(torch.randn(2, 16, 32))


def test_bad_input(device):
    B, S, C, DC = 2, 16, 32, 64
    H = DC // 2
    r = lambda *s: torch.randn(*s, device=device)   # noqa: E731
    x = r(B, S, C)
    good = [r(C), r(C), r(DC, C), r(DC), r(H), r(H), r(S, S), r(S), r(C, H), r(C)]

    def call(i=None, t=None, **kw):
        args = list(good)
        if i is not None:
            args[i] = t
        return mk.gmlp_block(x, *args, **kw)
    with pytest.raises(ValueError, match=r"fc1_weight: expected an even DC"):
        mk.gmlp_block(x, good[0], good[1], r(DC + 1, C), r(DC + 1), *good[4:])
    with pytest.raises(ValueError, match=r"gate_norm_weight: expected shape \[DC/2\]"):
        call(4, r(DC))
    with pytest.raises(ValueError, match=r"proj_weight: expected shape \[S, S\]"):
        call(6, r(S + 1, S + 1))
    with pytest.raises(ValueError, match=r"proj_bias: expected shape \[S\]"):
        call(7, r(C))
    with pytest.raises(ValueError, match=r"fc2_weight: expected shape \[C, DC/2\]"):
        call(8, r(C, DC))
    with pytest.raises(TypeError, match=r"proj_weight: expected dtype torch.float32"):
        call(6, r(S, S).half())
    with pytest.raises(ValueError, match=r"sample_scale: expected shape \[B\]"):
        call(sample_scale=r(B + 1))
    with pytest.raises(ValueError, match="gate_eps"):
        call(gate_eps=0.0)
    with pytest.raises(ValueError, match="approximate"):
        call(approximate="erf")
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        mk.gmlp_block(x.tolist(), *good)


def test_float64_takes_the_torch_path():
    """float64 runs the plain PyTorch math (no Triton kernel), exact against timm's block."""
    ref = _timm_block(16, 32, 64, seed=13)
    x = torch.randn(2, 16, 32, dtype=torch.float64)
    fused = mk.SpatialGatingBlock.from_block(copy.deepcopy(ref))
    with count_launches() as n:
        out = fused(x)
    assert not any(n.values()), dict(n)
    torch.testing.assert_close(out, ref(x), rtol=1e-12, atol=1e-12)


def test_no_unfused_layer_runs(device):
    """Inside a fused SpatialGatingBlock's forward no eager layer runs: no matmul, linear, GELU or layer norm
    reaches ATen; the custom op does the work."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func.name()))
            return func(*args, **(kwargs or {}))

    fused = mk.SpatialGatingBlock.from_block(_timm_block(16, 32, 64).float().to(device))
    x = torch.randn(2, 16, 32, device=device)
    with torch.no_grad(), Ops() as ops:
        fused(x)
    assert any("gmlp_block_fwd" in n for n in ops.names), ops.names
    eager_layers = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::mul",
                    "aten::gelu", "aten::native_layer_norm", "aten::layer_norm")
    assert not [n for n in ops.names if n.split(".")[0] in eager_layers], ops.names


def test_guards(device):
    """The custom op refuses float64 (no Triton kernel computes in it), double backward and torch.func's grad
    transform on the Triton path, each with an error naming it."""
    from mixer_kernels.ops.gmlp_block import gmlp_block_fwd
    B, S, C, DC = 2, 8, 8, 16
    params = [p.detach().float().to(device) for p in _params(_timm_block(S, C, DC, seed=15))]
    x = torch.randn(B, S, C, device=device)
    with pytest.raises(TypeError, match=r"mixer_kernels::gmlp_block_fwd: x is float64"):
        gmlp_block_fwd(x.double(), *params, None, 1e-6, 1e-5, "none", False)
    leaves = [p.clone().requires_grad_() for p in params]
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(mk.gmlp_block(xr, *leaves).sum(), xr, create_graph=False)
    assert g.shape == x.shape
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(mk.gmlp_block(xr, *leaves).sum(), xr, create_graph=True)
    with pytest.raises(RuntimeError, match=r"torch\.func\.grad"):
        torch.func.grad(lambda t: mk.gmlp_block(t, *params).sum())(x)


def test_reference_model_equals_timm_and_fuses(device):
    """reference/mlp_mixer.py's gMLP classes are timm's (same state_dict keys, same float64 output) and
    fuse_mixer_blocks fuses them too."""
    from reference.mlp_mixer import GatedMlp, SpatialGatingBlock
    from reference.mlp_mixer import MlpMixer as RefMixer
    torch.manual_seed(1)
    kw = dict(num_classes=10, img_size=32, patch_size=8, num_blocks=2, embed_dim=32, mlp_ratio=6)
    theirs = MlpMixer(block_layer=TimmSpatialGatingBlock, mlp_layer=TimmGatedMlp, **kw).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = RefMixer(block_layer=SpatialGatingBlock, mlp_layer=GatedMlp, **kw).double()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)
    fused = mk.fuse_mixer_blocks(copy.deepcopy(ours).float().to(device))
    assert all(type(b) is mk.SpatialGatingBlock for b in fused.blocks)
    with count_launches() as n:
        out = fused(x.float().to(device))
    assert n["_sgu_fwd_kernel"] == 2, dict(n)
    assert_close("logits", out, theirs(x).detach())

