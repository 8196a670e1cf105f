"""The drop-in fused MixerBlock and fuse_mixer_blocks on timm models (kernels under the interpreter
without a GPU): same logits and gradients as unfused timm, training together, compile, autocast,
state_dict, errors for layers the kernels do not compute."""
import copy

import pytest
import torch
from helpers import assert_close, count_launches, perturb_

import mixer_kernels as mk

timm = pytest.importorskip("timm")
from timm.models.mlp_mixer import MixerBlock as TimmMixerBlock  # noqa: E402
from timm.models.mlp_mixer import MlpMixer as TimmMlpMixer  # noqa: E402

SMALL = dict(num_classes=5, img_size=28, patch_size=4, num_blocks=2, embed_dim=24)   # S = 49 tokens, DS 12, DC 96


def _timm_pair(dtype=torch.float32, **kw):
    """An unfused perturbed timm MlpMixer and a deep copy of it with fused blocks."""
    unfused = perturb_(TimmMlpMixer(**{**SMALL, **kw})).to(dtype)
    fused = mk.fuse_mixer_blocks(copy.deepcopy(unfused))
    return unfused, fused


def _grads(model):
    return {n: p.grad for n, p in model.named_parameters()}


def _launches(n, prefix):
    return sum(v for k, v in n.items() if k.startswith(prefix))


def test_fused_model_matches_timm_float64_reference(device):
    unfused, fused = _timm_pair()
    unfused, fused = unfused.to(device), fused.to(device)
    ref = copy.deepcopy(unfused).double()
    x = torch.randn(2, 3, 28, 28, device=device)
    with count_launches() as n:
        out = fused(x)
        out.square().sum().backward()
    # 2 blocks, fwd + bwd; fp32 ieee token mixing runs the large-S GEMM kernels (_token_large_*)
    assert _launches(n, "_token_") >= 2 and _launches(n, "_channel_") >= 2
    out_ref = ref(x.double())
    out_ref.square().sum().backward()
    assert_close("logits", out, out_ref)
    ref_grads = _grads(ref)
    for name, g in _grads(fused).items():
        # mlp_tokens.fc2.bias adds a per-token constant that every later LayerNorm removes: its exact
        # gradient is 0, so its rounding noise is judged against the fc2 weight gradient's size.
        scale = ref_grads[name.replace("fc2.bias", "fc2.weight")].norm().item() if "mlp_tokens.fc2.bias" in name else 0
        assert_close(f"grad {name}", g, ref_grads[name], scale=scale)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_model_low_precision(device, dtype):
    unfused, fused = _timm_pair(dtype)
    unfused, fused = unfused.to(device), fused.to(device)
    ref = copy.deepcopy(unfused).double()
    x = torch.randn(2, 3, 28, 28, device=device)
    out = fused(x.to(dtype))
    eager = unfused(x.to(dtype))
    assert out.dtype == dtype
    assert_close("logits", out, ref(x.double()), eager)


def test_parameters_are_shared_and_fusing_is_idempotent():
    model = TimmMlpMixer(**SMALL)
    before = [id(p) for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert mk.fuse_mixer_blocks(model) is model
    assert all(isinstance(b, mk.MixerBlock) for b in model.blocks)
    assert [id(p) for p in model.parameters()] == before
    blocks = list(model.blocks)
    mk.fuse_mixer_blocks(model)
    assert list(model.blocks) == blocks
    assert len(opt.param_groups[0]["params"]) == len(before)
    assert not isinstance(model.stem, mk.MixerBlock) and isinstance(model.head, torch.nn.Linear)


def test_reference_blocks_are_fused_too():
    from reference.mlp_mixer import MlpMixer
    model = mk.fuse_mixer_blocks(MlpMixer(**SMALL))
    assert all(isinstance(b, mk.MixerBlock) for b in model.blocks)


@pytest.mark.slow   # ~17 s on 2 cores under the interpreter
def test_optimizer_steps_stay_together(device):
    unfused, fused = _timm_pair()
    unfused, fused = unfused.to(device), fused.to(device)
    # SGD with momentum, not Adam: Adam normalises each gradient, so the token fc2 bias, whose exact
    # gradient is 0 (see above), would move by +-lr in the direction of each model's rounding noise.
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (unfused, fused)]
    for _ in range(3):
        x = torch.randn(4, 3, 28, 28, device=device)
        y = torch.randint(0, 5, (4,), device=device)
        for m, opt in zip((unfused, fused), opts, strict=True):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    for (name, a), b in zip(unfused.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.slow   # ~50 s on 2 cores under the interpreter
def test_create_model_with_block_layer_and_state_dict_round_trip(tmp_path, device):
    kw = dict(pretrained=False, num_classes=5, img_size=64)                  # S/32 at 64 px: S = 4 tokens
    fused = timm.create_model("mixer_s32_224", block_layer=mk.MixerBlock, **kw)
    unfused = timm.create_model("mixer_s32_224", **kw)
    assert all(type(b) is mk.MixerBlock for b in fused.blocks)
    assert fused.state_dict().keys() == unfused.state_dict().keys()
    perturb_(unfused)
    fused.load_state_dict(unfused.state_dict(), strict=True)
    torch.save(fused.state_dict(), tmp_path / "sd.pt")
    again = timm.create_model("mixer_s32_224", block_layer=mk.MixerBlock, **kw)
    again.load_state_dict(torch.load(tmp_path / "sd.pt"), strict=True)
    for (k, a), b in zip(again.state_dict().items(), unfused.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_close("create_model logits", again.to(device).eval()(x.to(device)), unfused.double().eval()(x.double()))


def test_compile_fullgraph(device):
    unfused, fused = _timm_pair()
    unfused, fused = unfused.to(device), fused.to(device)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 28, 28, device=device)
    with count_launches() as n:
        out = compiled(x)
        out.sum().backward()
    assert _launches(n, "_token_") >= 2
    ref = copy.deepcopy(unfused).double()
    assert_close("compiled logits", out, ref(x.double()))


def test_autocast_behaves_as_eager(device):
    unfused, fused = _timm_pair()
    unfused, fused = unfused.to(device), fused.to(device)
    ref = copy.deepcopy(unfused).double()
    x = torch.randn(2, 3, 28, 28, device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = fused(x)
        eager = unfused(x)
    assert out.dtype == eager.dtype
    assert_close("autocast logits", out.float().to(torch.bfloat16), ref(x.double()), eager.to(torch.bfloat16))


def test_drop_path_per_sample_as_timm(device):
    unfused, fused = _timm_pair(drop_path_rate=0.5)
    unfused, fused = unfused.to(device).train(), fused.to(device).train()
    ref = copy.deepcopy(unfused).double()
    x = torch.randn(6, 3, 28, 28, device=device)
    torch.manual_seed(7)
    out = fused(x)
    torch.manual_seed(7)
    expected = ref(x.double())
    assert_close("drop_path logits", out, expected)


def test_unsupported_layers_raise():
    with pytest.raises(ValueError, match="GELU"):
        mk.MixerBlock(16, 9, act_layer=torch.nn.ReLU)
    with pytest.raises(ValueError, match="LayerNorm"):
        mk.MixerBlock(16, 9, norm_layer=lambda d, **kw: torch.nn.BatchNorm1d(d))
    with pytest.raises(ValueError, match="GELU"):
        mk.fuse_mixer_blocks(TimmMlpMixer(**SMALL, act_layer=torch.nn.SiLU))
    from timm.layers import GluMlp
    # gMixer (GluMlp + SiLU) fuses (tests/test_gmixer.py); a GluMlp with another act (its default Sigmoid) does not
    with pytest.raises(ValueError, match=r"mlp_tokens\.act: the fused MixerBlock computes the GluMlp gate with SiLU"):
        mk.fuse_mixer_blocks(TimmMlpMixer(**SMALL, mlp_layer=GluMlp, act_layer=torch.nn.Sigmoid))
    from timm.layers import SwiGLU
    with pytest.raises(ValueError, match="mlp_tokens: the fused MixerBlock computes timm's Mlp .* got timm.*SwiGLU"):
        mk.fuse_mixer_blocks(TimmMlpMixer(**SMALL, mlp_layer=SwiGLU, act_layer=torch.nn.SiLU))
    with pytest.raises(ValueError, match="bare MixerBlock"):
        mk.fuse_mixer_blocks(TimmMixerBlock(16, 9))
    with pytest.raises(TypeError, match="model"):
        mk.fuse_mixer_blocks("mixer")
    block = mk.MixerBlock(16, 9, drop=0.1)
    with pytest.raises(RuntimeError, match="dropout"):
        block.train()(torch.randn(2, 9, 16))


def test_tanh_gelu_block_matches_timm(device):
    act = lambda: torch.nn.GELU(approximate="tanh")
    ref = perturb_(TimmMixerBlock(24, 13, act_layer=act)).double()
    fused = mk.MixerBlock.from_block(copy.deepcopy(ref).float()).to(device)
    x = torch.randn(2, 13, 24, device=device)
    assert_close("tanh block", fused(x), ref(x.double().cpu()))


def test_nvtx_ranges_when_enabled(monkeypatch):
    from mixer_kernels import _nvtx
    names = []

    class Recorder:
        def __init__(self, name):
            names.append(name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(_nvtx, "ENABLED", True)
    monkeypatch.setattr(_nvtx, "annotate", Recorder)
    block = mk.MixerBlock(8, 5)
    block(torch.randn(1, 5, 8))
    assert names == ["mixer_kernels.token_mixing", "mixer_kernels.channel_mixing"]


def test_ddp_wraps_fused_model(tmp_path, device):
    """Plain Parameters: DistributedDataParallel (one process, gloo) wraps and trains the fused model."""
    import torch.distributed as dist
    if device != "cpu":
        pytest.skip("the gloo one-process check runs on CPU")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        _, fused = _timm_pair()
        ddp = torch.nn.parallel.DistributedDataParallel(fused)
        ddp(torch.randn(2, 3, 28, 28)).sum().backward()
        assert all(p.grad is not None for p in fused.parameters())
    finally:
        dist.destroy_process_group()


def test_nvtx_without_the_package_says_how_to_install(monkeypatch):
    """MIXER_KERNELS_NVTX=1 without the optional nvtx package: an ImportError naming the extra, not a
    silent run without ranges."""
    import sys

    from mixer_kernels import _nvtx
    monkeypatch.setattr(_nvtx, "ENABLED", True)
    monkeypatch.setattr(_nvtx, "_NVTX", None)
    monkeypatch.setitem(sys.modules, "nvtx", None)     # `import nvtx` raises ImportError
    block = mk.MixerBlock(8, 5)
    with pytest.raises(ImportError, match=r"mixer-kernels\[nvtx\]"):
        block(torch.randn(1, 5, 8))


def test_nvtx_ranges_with_the_package(monkeypatch):
    """With the nvtx package (the [nvtx] extra), enabled ranges go through nvtx.annotate and the block's
    output is unchanged."""
    nvtx = pytest.importorskip("nvtx")
    from mixer_kernels import _nvtx
    names = []
    real = nvtx.annotate

    def recording(name, **kwargs):
        names.append((name, kwargs.get("domain")))
        return real(name, **kwargs)

    monkeypatch.setattr(_nvtx, "ENABLED", True)
    monkeypatch.setattr(_nvtx, "_NVTX", None)
    monkeypatch.setattr(nvtx, "annotate", recording)
    block = mk.MixerBlock(8, 5)
    x = torch.randn(1, 5, 8)
    out = block(x)
    monkeypatch.setattr(_nvtx, "ENABLED", False)
    torch.testing.assert_close(out, block(x), rtol=0, atol=0)
    assert names == [("mixer_kernels.token_mixing", "mixer_kernels"), ("mixer_kernels.channel_mixing", "mixer_kernels")]


@pytest.mark.parametrize("which", ["mlp_tokens", "mlp_channels"])
def test_each_half_uses_its_own_gelu(device, which):
    """A tanh GELU on one MLP only: that half computes tanh, the other exact erf (as timm does)."""
    ref = perturb_(TimmMixerBlock(24, 13)).double()
    getattr(ref, which).act = torch.nn.GELU(approximate="tanh")
    fused = mk.MixerBlock.from_block(copy.deepcopy(ref).float()).to(device)
    x = torch.randn(2, 13, 24, device=device)
    assert_close(f"tanh {which} only", fused(x), ref(x.double().cpu()))


@pytest.mark.parametrize("which", ["mlp_tokens", "mlp_channels"])
def test_unsupported_activation_is_refused_not_ignored(which):
    fused = mk.MixerBlock(16, 9)
    getattr(fused, which).act = torch.nn.ReLU()      # swapped after construction: refused at the forward
    with pytest.raises(ValueError, match=rf"^{which}\.act: .*GELU.* got ReLU"):
        fused(torch.randn(2, 9, 16))
    model = TimmMlpMixer(**SMALL)
    getattr(model.blocks[1], which).act = torch.nn.ReLU()
    with pytest.raises(ValueError, match=rf"^blocks\.1: {which}\.act: .*GELU.* got ReLU"):
        mk.fuse_mixer_blocks(model)


def test_fx_symbolic_trace_and_timm_feature_extractor(device):
    """torch.fx records the fused ops as calls (not traced into with Proxies); timm's fx feature
    extraction keeps each fused block as one leaf module. Same outputs as the fused model."""
    from timm.models import create_feature_extractor
    unfused, fused = _timm_pair()
    fused = fused.to(device).eval()
    x = torch.randn(2, 3, 28, 28, device=device)
    expected = fused(x)
    gm = torch.fx.symbolic_trace(fused)
    called = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert called.count(mk.token_mixing) == 2 and called.count(mk.channel_mixing) == 2
    assert torch.equal(gm(x), expected)
    fe = create_feature_extractor(fused, return_nodes={"blocks.1": "b1", "head": "logits"})
    assert "blocks.0" in [n.target for n in fe.graph.nodes if n.op == "call_module"]   # a leaf
    feats = fe(x)
    assert torch.equal(feats["logits"], expected)
    assert torch.equal(feats["b1"], fused.blocks(fused.stem(x)))


def test_torchscript_is_refused_clearly():
    _, fused = _timm_pair()
    for obj in (fused, fused.blocks[0]):
        with pytest.raises(RuntimeError, match=r"torch\.jit\.script of a fused MixerBlock is not supported.*"
                                               r"torch\.compile.*torch\.jit\.trace"):
            torch.jit.script(obj)
