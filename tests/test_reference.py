"""The reference model (reference/mlp_mixer.py) and the float64 oracle of each op (reference/ops.py) equal
timm's MlpMixer (float64, perturbed weights) and the paper's formulas."""
import math

import pytest
import torch
from helpers import perturb_

from reference import ops
from reference.mlp_mixer import CONFIGS, MixerBlock, MlpMixer

timm_mixer = pytest.importorskip("timm.models.mlp_mixer")


@pytest.mark.parametrize("dim,seq_len,ratio", [(16, 49, (0.5, 4.0)), (40, 197, (0.5, 4.0)), (24, 7, (0.75, 3.0))])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_block_equals_timm(dim, seq_len, ratio, approximate):
    act = lambda: torch.nn.GELU(approximate=approximate)
    ours = MixerBlock(dim, seq_len, ratio, act_layer=act).double()
    theirs = timm_mixer.MixerBlock(dim, seq_len, ratio, act_layer=act).double()
    perturb_(ours)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, seq_len, dim, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [
    dict(img_size=28, patch_size=4, num_blocks=2, embed_dim=24),          # S = 49
    dict(img_size=20, patch_size=4, num_blocks=3, embed_dim=40, num_classes=7, in_chans=1),  # S = 25
    dict(img_size=24, patch_size=8, num_blocks=1, embed_dim=16, mlp_ratio=(1.0, 2.0), stem_norm=True),
])
def test_model_equals_timm_and_loads_its_state_dict(kw):
    kw = {"num_classes": 10, **kw}
    theirs = timm_mixer.MlpMixer(**kw).double()
    perturb_(theirs)
    ours = MlpMixer(**kw).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, kw.get("in_chans", 3), kw["img_size"], kw["img_size"], dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


def test_drop_path_per_sample_as_timm():
    ours = MixerBlock(16, 9, drop_path=0.5).double().train()
    theirs = timm_mixer.MixerBlock(16, 9, drop_path=0.5).double().train()
    perturb_(ours)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(8, 9, 16, dtype=torch.float64)
    torch.manual_seed(3)
    a = ours(x)
    torch.manual_seed(3)
    b = theirs(x)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    ours.eval()
    torch.testing.assert_close(ours(x), theirs.eval()(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,params", [("B/16", 59_880_472), ("L/16", 208_196_168)])
def test_named_config_parameter_counts(name, params):
    with torch.device("meta"):
        model = MlpMixer.from_name(name)
    assert sum(p.numel() for p in model.parameters()) == params


def test_from_name_configs():
    assert set(CONFIGS) == {"S/32", "S/16", "B/32", "B/16", "L/32", "L/16", "H/14"}
    with torch.device("meta"):
        m = MlpMixer.from_name("H/14", num_classes=3)
    assert m.stem.num_patches == 256 and m.embed_dim == 1280 and len(m.blocks) == 32
    blk = m.blocks[0]
    assert blk.mlp_tokens.fc1.weight.shape == (640, 256) and blk.mlp_channels.fc1.weight.shape == (5120, 1280)
    with pytest.raises(ValueError, match="name"):
        MlpMixer.from_name("X/1")


def test_block_formula_float64():
    """One block written out from the paper's equations, element by element, in float64."""
    B, S, C = 2, 5, 6
    blk = perturb_(MixerBlock(C, S).double())
    x = torch.randn(B, S, C, dtype=torch.float64)
    gelu = lambda v: 0.5 * v * (1 + torch.erf(v / math.sqrt(2)))

    def ln(v, norm):
        mu = v.mean(-1, keepdim=True)
        var = ((v - mu) ** 2).mean(-1, keepdim=True)
        return (v - mu) / torch.sqrt(var + 1e-6) * norm.weight + norm.bias

    t, c = blk.mlp_tokens, blk.mlp_channels
    u = ln(x, blk.norm1)
    y = x.clone()
    for b in range(B):
        for ch in range(C):        # token MLP mixes along S, independently for every channel column
            h = gelu(t.fc1.weight @ u[b, :, ch] + t.fc1.bias)
            y[b, :, ch] += t.fc2.weight @ h + t.fc2.bias
    v = ln(y, blk.norm2)
    out = y + (gelu(v @ c.fc1.weight.T + c.fc1.bias) @ c.fc2.weight.T + c.fc2.bias)
    with torch.no_grad():
        torch.testing.assert_close(blk(x), out, rtol=1e-12, atol=1e-12)
        ps = [blk.norm1.weight, blk.norm1.bias, t.fc1.weight, t.fc1.bias, t.fc2.weight, t.fc2.bias,
              blk.norm2.weight, blk.norm2.bias, c.fc1.weight, c.fc1.bias, c.fc2.weight, c.fc2.bias]
        torch.testing.assert_close(ops.mixer_block(x, *ps), out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_ops_equal_timm_halves(approximate):
    """reference/ops.py's token_mixing and channel_mixing are timm's two residual halves (float64,
    perturbed weights), with drop_path's per-sample scale on the branch; forward_backward gives every
    gradient autograd gives through timm's block."""
    B, S, C = 3, 13, 10
    act = lambda: torch.nn.GELU(approximate=approximate)
    blk = perturb_(timm_mixer.MixerBlock(C, S, (0.75, 3.0), act_layer=act).double())
    t, c = blk.mlp_tokens, blk.mlp_channels
    tok = [blk.norm1.weight, blk.norm1.bias, t.fc1.weight, t.fc1.bias, t.fc2.weight, t.fc2.bias]
    ch = [blk.norm2.weight, blk.norm2.bias, c.fc1.weight, c.fc1.bias, c.fc2.weight, c.fc2.bias]
    x = torch.randn(B, S, C, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([0.0, 1.25, 2.0], dtype=torch.float64)
    y_timm = x + scale[:, None, None] * t(blk.norm1(x).transpose(1, 2)).transpose(1, 2)
    out_timm = y_timm + c(blk.norm2(y_timm))
    dy = torch.randn(B, S, C, dtype=torch.float64)
    timm_grads = torch.autograd.grad(out_timm, [x, *tok, *ch], dy)
    y = ops.token_mixing(x, *tok, approximate=approximate, sample_scale=scale)
    torch.testing.assert_close(y, y_timm, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ops.channel_mixing(y, *ch, approximate=approximate), out_timm, rtol=1e-12, atol=1e-12)

    def both(x, *p):
        return ops.channel_mixing(ops.token_mixing(x, *p[:6], approximate=approximate, sample_scale=scale), *p[6:],
                                  approximate=approximate)

    out, grads = ops.forward_backward(both, [x, *tok, *ch], dy)
    torch.testing.assert_close(out, out_timm.detach(), rtol=1e-12, atol=1e-12)
    assert len(grads) == 13
    for g, r in zip(grads, timm_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_forward_backward_casts_and_scale_gradient():
    """forward_backward: float64 copies by default (the oracle), the inputs' own dtype with dtype=None
    (eager), and the gradient of a sample_scale that requires grad appended."""
    x, p = torch.randn(2, 5, 4), [torch.randn(4), torch.randn(4), torch.randn(6, 5), torch.randn(6),
                                  torch.randn(5, 6), torch.randn(5)]
    dy = torch.randn(2, 5, 4)
    out, grads = ops.forward_backward(ops.token_mixing, [x, *p], dy)
    assert out.dtype == torch.float64 and len(grads) == 7 and all(g.dtype == torch.float64 for g in grads)
    bf = [t.bfloat16() for t in (x, *p)]
    out, grads = ops.forward_backward(ops.token_mixing, bf, dy.bfloat16(), dtype=None)
    assert out.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in grads)
    s = torch.tensor([0.5, 2.0], requires_grad=True)
    out, grads = ops.forward_backward(ops.token_mixing, [x, *p], dy, sample_scale=s)
    branch = ops.token_mixing(x.double(), *(t.double() for t in p)) - x.double()
    torch.testing.assert_close(grads[-1], (dy.double() * branch).sum((1, 2)), rtol=1e-12, atol=1e-12)
    assert len(grads) == 8 and s.grad is None      # the caller's tensors are never touched


@pytest.mark.parametrize("kind", ["token", "channel"])
def test_package_cpu_path_against_the_oracle(kind):
    """mixer_kernels/torch_math.py (the package's CPU path, under test like the kernels) against the oracle:
    float64 output and every gradient, perturbed parameters, a drop_path scale, the tanh GELU."""
    from mixer_kernels import torch_math
    B, S, C, H = 2, 11, 10, 14
    n = S if kind == "token" else C
    x = 0.3 + torch.randn(B, S, C, dtype=torch.float64)
    params = [1 + 0.1 * torch.randn(C, dtype=torch.float64), 0.1 * torch.randn(C, dtype=torch.float64),
              torch.randn(H, n, dtype=torch.float64) / n ** 0.5, 0.1 * torch.randn(H, dtype=torch.float64),
              torch.randn(n, H, dtype=torch.float64) / H ** 0.5, 0.1 * torch.randn(n, dtype=torch.float64)]
    dy, scale = torch.randn(B, S, C, dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64)
    ours = getattr(torch_math, f"{kind}_mixing_torch")
    oracle = getattr(ops, f"{kind}_mixing")
    got = ops.forward_backward(ours, [x, *params], dy, sample_scale=scale, approximate="tanh")
    want = ops.forward_backward(oracle, [x, *params], dy, sample_scale=scale, approximate="tanh")
    for g, r in zip([got[0], *got[1]], [want[0], *want[1]], strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
