"""ResMLP (timm's ResBlock) fused: resmlp_token_mixing, resmlp_channel_mixing and the ResBlock module,
judged against timm's own ResBlock in float64 (an oracle independent of this package): outputs and every
gradient, fp32 and the low-precision 2x rule, drop_path, recompute, autocast, launches counted (the
kernels ran, and no unfused layer did), torch.compile fullgraph, whole timm models fused, input errors."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from helpers import COMPILE_BACKENDS, assert_close, by_device, count_launches

import mixer_kernels as mk

timm = pytest.importorskip("timm")
from timm.models.mlp_mixer import Affine as TimmAffine  # noqa: E402
from timm.models.mlp_mixer import MlpMixer  # noqa: E402
from timm.models.mlp_mixer import ResBlock as TimmResBlock  # noqa: E402

# A small ResMLP as timm's resmlp_* factories build it (their block_layer and norm_layer are fixed, so a
# fused one is built through MlpMixer itself): 2 blocks, S = 16, C = 64, DC = 256.
RESMLP = dict(num_classes=10, img_size=32, patch_size=8, num_blocks=2, embed_dim=64, mlp_ratio=4, norm_layer=TimmAffine)

FWD = {"_token_linear_fwd_kernel": 1, "_affine_fwd_kernel": 1, "_channel_hidden_kernel": 1, "_channel_out_kernel": 1}


def _timm_block(S, C, seed=0):
    """timm's ResBlock in float64 with every parameter away from its init (layer scales near 1, so the
    branches weigh as much as the residual and their errors show)."""
    torch.manual_seed(seed)
    blk = TimmResBlock(C, S, mlp_ratio=4).double()
    with torch.no_grad():
        for name, p in blk.named_parameters():
            if name.endswith("alpha") or name in ("ls1", "ls2"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("beta") or name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
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


SMALL = [(torch.float32, 2, 49, 32, False, False), (torch.float32, 2, 64, 40, True, True),
         (torch.float32, 2, 196, 48, False, True), (torch.bfloat16, 2, 49, 32, False, False),
         (torch.float16, 2, 64, 40, True, False), (torch.bfloat16, 2, 196, 48, False, True)]
REAL = [(dt, 8, 196, 384, rec, sc) for dt in (torch.float32, torch.bfloat16, torch.float16)
        for rec, sc in ((False, False), (True, True))] + [(torch.bfloat16, 2, 784, 768, False, True)]


def _case_id(c):
    return f"{str(c[0])[6:]}-{c[1]}x{c[2]}x{c[3]}-{'rec' if c[4] else 'save'}{'-droppath' if c[5] else ''}"


@pytest.mark.parametrize("dtype,B,S,C,recompute,drop_path", by_device(SMALL, REAL, ids=_case_id))
def test_block_against_timm(device, dtype, B, S, C, recompute, drop_path):
    ref64 = _timm_block(S, C)
    x64 = torch.randn(B, S, C, dtype=torch.float64)
    grad64 = torch.randn(B, S, C, dtype=torch.float64)
    eager = copy.deepcopy(ref64).to(device=device, dtype=dtype)
    fused = mk.ResBlock.from_block(copy.deepcopy(eager), recompute=recompute)
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
    for k, v in FWD.items():
        assert n[k] >= v, dict(n)
    assert n["_token_linear_bwd_kernel"] == 1 and n["_affine_bwd_kernel"] == 1, dict(n)
    low = dtype != torch.float32
    eg = run(eager, dtype, device) if low else (None, None, {})
    assert_close("out", got[0], ref[0], eg[0])
    assert_close("dx", got[1], ref[1], eg[1])
    for name in ref[2]:
        assert got[2][name].dtype == dtype, name
        assert_close(f"d{name}", got[2][name], ref[2][name], eg[2].get(name))


def test_functions_against_timm(device):
    """The two public functions alone, with a per-sample scale, timm's [1, 1, C] Affine parameters, tanh GELU."""
    B, S, C = 3, 49, 40
    ref = _timm_block(S, C, seed=3)
    ref.mlp_channels.act = torch.nn.GELU(approximate="tanh")
    scale = torch.tensor([0.0, 2.0, 1.0], dtype=torch.float64)
    x64 = torch.randn(B, S, C, dtype=torch.float64)
    t, c = ref.norm1, ref.mlp_channels
    expect = x64 + scale[:, None, None] * ref.ls1 * ref.linear_tokens(t(x64).transpose(1, 2)).transpose(1, 2)
    expect = expect + scale[:, None, None] * ref.ls2 * c(ref.norm2(expect))
    blk = copy.deepcopy(ref).float().to(device)
    x = x64.float().to(device)
    s = scale.float().to(device)
    with count_launches() as n:
        y = mk.resmlp_token_mixing(x, blk.norm1.alpha, blk.norm1.beta, blk.linear_tokens.weight,
                                   blk.linear_tokens.bias, blk.ls1, sample_scale=s)
        y = mk.resmlp_channel_mixing(y, blk.norm2.alpha, blk.norm2.beta, blk.mlp_channels.fc1.weight,
                                     blk.mlp_channels.fc1.bias, blk.mlp_channels.fc2.weight, blk.mlp_channels.fc2.bias,
                                     blk.ls2, approximate="tanh", sample_scale=s)
    assert n["_token_linear_fwd_kernel"] == 1 and n["_channel_hidden_kernel"] == 1, dict(n)
    assert_close("out", y, expect.detach())


def test_sample_scale_gradient(device):
    """A sample_scale that requires grad gets its gradient (as on the plain path)."""
    B, S, C = 2, 16, 32
    ref = _timm_block(S, C, seed=5)
    x64 = torch.randn(B, S, C, dtype=torch.float64)
    s64 = torch.tensor([0.5, 1.5], dtype=torch.float64, requires_grad=True)
    a, b = ref.norm1.alpha, ref.norm1.beta
    out64 = x64 + s64[:, None, None] * ref.ls1 * ref.linear_tokens((a * x64 + b).transpose(1, 2)).transpose(1, 2)
    out64.sum().backward()
    blk = copy.deepcopy(ref).float().to(device)
    s = s64.detach().float().to(device).requires_grad_()
    out = mk.resmlp_token_mixing(x64.float().to(device), blk.norm1.alpha, blk.norm1.beta, blk.linear_tokens.weight,
                                 blk.linear_tokens.bias, blk.ls1, sample_scale=s)
    out.sum().backward()
    assert_close("out", out, out64.detach())
    assert_close("dsample_scale", s.grad, s64.grad)


def test_autocast(device):
    """Under autocast: matmuls in bf16, Affine and layer scales in fp32, output fp32, as eager timm."""
    B, S, C = 2, 49, 32
    ref = _timm_block(S, C, seed=7)
    x64 = torch.randn(B, S, C, dtype=torch.float64)
    eager = copy.deepcopy(ref).float().to(device)
    fused = mk.ResBlock.from_block(copy.deepcopy(eager))
    x = x64.float().to(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        e = eager(x)
        with count_launches() as n:
            f = fused(x)
    assert n["_token_linear_fwd_kernel"] == 1, dict(n)
    assert f.dtype == e.dtype == torch.float32
    r = ref(x64).detach()
    # judged by the bf16 rule against eager's own autocast error
    assert_close("out", f.to(torch.bfloat16), r, e.to(torch.bfloat16))


@pytest.mark.parametrize("backend", COMPILE_BACKENDS)
def test_torch_compile_fullgraph(device, backend):
    torch._dynamo.reset()
    ref = _timm_block(16, 32, seed=9)
    fused = mk.ResBlock.from_block(copy.deepcopy(ref).float().to(device))
    x = torch.randn(2, 16, 32, device=device)
    compiled = torch.compile(fused, fullgraph=True, backend=backend)
    with count_launches() as n:
        out = compiled(x)
        out.sum().backward()
    assert n["_token_linear_fwd_kernel"] == 1 and n["_token_linear_bwd_kernel"] == 1, dict(n)
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
    ref = _timm_block(49, 32, seed=11)
    fused = mk.ResBlock.from_block(copy.deepcopy(ref).float().to(device))
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
    """A whole timm ResMLP fused in place: same logits and gradients as unfused, only fused blocks run."""
    torch.manual_seed(0)
    model = MlpMixer(block_layer=TimmResBlock, **RESMLP).double()
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
    assert all(type(b) is mk.ResBlock for b in fused.blocks)
    with count_launches() as n:
        out = fused(x64.float().to(device))
    assert n["_token_linear_fwd_kernel"] == 2 and n["_channel_out_kernel"] == 2, dict(n)
    out.sum().backward()
    assert_close("logits", out, ref.detach())
    for name, p in fused.named_parameters():
        assert_close(f"d{name}", p.grad, ref_grads[name], scale=ref_grads[name].norm().item() + 1e-3)


def test_built_fused(device):
    """timm builds the fused block itself: MlpMixer(block_layer=mk.ResBlock, ...) loads timm's weights."""
    torch.manual_seed(0)
    plain = MlpMixer(block_layer=TimmResBlock, **RESMLP)
    fused = MlpMixer(block_layer=mk.ResBlock, **RESMLP)
    fused.load_state_dict(plain.state_dict())
    assert all(type(b) is mk.ResBlock for b in fused.blocks)
    x = torch.randn(2, 3, 32, 32)
    fused, plain = fused.to(device), plain.to(device)
    torch.testing.assert_close(fused(x.to(device)), plain(x.to(device)), rtol=1e-4, atol=1e-5)


def test_fuse_strict_and_non_strict():
    """A family block the fused forms cannot compute (here gMLP blocks with ReLU): strict raises naming the block,
    non-strict fuses the rest and warns once."""
    from timm.layers import GatedMlp
    from timm.models.mlp_mixer import SpatialGatingBlock
    model = MlpMixer(num_classes=10, img_size=32, patch_size=16, num_blocks=2, embed_dim=32, mlp_ratio=6,
                     block_layer=SpatialGatingBlock, mlp_layer=GatedMlp, act_layer=torch.nn.ReLU)
    with pytest.raises(ValueError, match=r"blocks\.0: mlp_channels\.act.*GELU.*strict=False"):
        mk.fuse_mixer_blocks(model)
    assert type(model.blocks[0]).__name__ == "SpatialGatingBlock"      # nothing replaced
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mk.fuse_mixer_blocks(model, strict=False)
    assert len(w) == 1 and "2 block(s) left unfused" in str(w[0].message) and "blocks.1" in str(w[0].message)
    mixed = torch.nn.Sequential(_timm_block(16, 32).float(), copy.deepcopy(model.blocks[0]))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mk.fuse_mixer_blocks(mixed, strict=False)
    assert type(mixed[0]) is mk.ResBlock and type(mixed[1]).__name__ == "SpatialGatingBlock" and len(w) == 1
    with pytest.raises(TypeError, match="strict"):
        mk.fuse_mixer_blocks(mixed, strict="no")


def test_unsupported_resblock_parts():
    blk = _timm_block(16, 32).float()
    bad = copy.deepcopy(blk)
    bad.norm1 = torch.nn.LayerNorm(32)
    with pytest.raises(ValueError, match=r"norm1.*Affine"):
        mk.ResBlock.from_block(bad)
    bad = copy.deepcopy(blk)
    bad.mlp_channels.act = torch.nn.ReLU()
    with pytest.raises(ValueError, match=r"mlp_channels\.act.*GELU"):
        mk.ResBlock.from_block(bad)
    with pytest.raises(ValueError, match="bare ResBlock"):
        mk.fuse_mixer_blocks(blk)
    fused = mk.ResBlock.from_block(blk)
    fused.mlp_channels.drop1.p = 0.1
    fused.train()
    with pytest.raises(RuntimeError, match="does not compute dropout"):
        fused(torch.randn(2, 16, 32))


def test_bad_input(device):
    B, S, C = 2, 16, 32
    x = torch.randn(B, S, C, device=device)
    a, b, ls = torch.ones(C, device=device), torch.zeros(C, device=device), torch.ones(C, device=device)
    w, bias = torch.randn(S, S, device=device), torch.randn(S, device=device)
    with pytest.raises(ValueError, match=r"weight: expected shape \[S, S\]"):
        mk.resmlp_token_mixing(x, a, b, torch.randn(S, S + 1, device=device), bias, ls)
    with pytest.raises(ValueError, match=r"alpha: expected shape \[C\] or \[1, 1, C\]"):
        mk.resmlp_token_mixing(x, torch.ones(C + 1, device=device), b, w, bias, ls)
    with pytest.raises(ValueError, match=r"layer_scale: expected shape \[C\]"):
        mk.resmlp_token_mixing(x, a, b, w, bias, torch.ones(S, device=device))
    with pytest.raises(TypeError, match=r"weight: expected dtype torch.float32"):
        mk.resmlp_token_mixing(x, a, b, w.half(), bias, ls)
    with pytest.raises(ValueError, match=r"sample_scale: expected shape \[B\]"):
        mk.resmlp_token_mixing(x, a, b, w, bias, ls, sample_scale=torch.ones(B + 1, device=device))
    w1, b1 = torch.randn(4 * C, C, device=device), torch.randn(4 * C, device=device)
    w2, b2 = torch.randn(C, 4 * C, device=device), torch.randn(C, device=device)
    with pytest.raises(ValueError, match=r"fc2_weight: expected shape \[C, DC\]"):
        mk.resmlp_channel_mixing(x, a, b, w1, b1, w2.t(), b2, ls)
    with pytest.raises(ValueError, match="approximate"):
        mk.resmlp_channel_mixing(x, a, b, w1, b1, w2, b2, ls, approximate="erf")
    with pytest.raises(TypeError, match="layer_scale: expected dtype"):
        mk.resmlp_channel_mixing(x, a, b, w1, b1, w2, b2, ls.double())


def test_float64_takes_the_torch_path():
    """float64 runs the plain PyTorch math (no Triton kernel), exact against timm's block."""
    ref = _timm_block(16, 32, seed=13)
    x = torch.randn(2, 16, 32, dtype=torch.float64)
    fused = mk.ResBlock.from_block(copy.deepcopy(ref))
    with count_launches() as n:
        out = fused(x)
    assert not any(n.values()), dict(n)
    torch.testing.assert_close(out, ref(x), rtol=1e-12, atol=1e-12)


def test_no_unfused_layer_runs(device):
    """Inside a fused ResBlock's forward no eager layer runs: no matmul, linear, addcmul, GELU or layer
    norm reaches ATen; the two custom ops do the work."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func.name()))
            return func(*args, **(kwargs or {}))

    fused = mk.ResBlock.from_block(_timm_block(16, 32).float().to(device))
    x = torch.randn(2, 16, 32, device=device)
    with torch.no_grad(), Ops() as ops:
        fused(x)
    assert any("resmlp_token_mixing_fwd" in n for n in ops.names), ops.names
    assert any("resmlp_channel_mixing_fwd" in n for n in ops.names), ops.names
    eager_layers = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::addcmul",
                    "aten::gelu", "aten::native_layer_norm")
    assert not [n for n in ops.names if n.split(".")[0] in eager_layers], ops.names
