"""Issue 23: a fused block notices what changed after fusing, keeps the replaced block's hooks, refuses inner
hooks it could not fire, and fuse_mixer_blocks says when it found nothing to fuse. Four block kinds: Mixer,
gMixer (MixerBlock with GluMlp + SiLU), ResMLP, gMLP; tiny timm models, the Triton path under the interpreter."""
import warnings

import pytest
import torch
from helpers import count_launches, perturb_
from torch import nn

import mixer_kernels as mk

timm = pytest.importorskip("timm")
from timm.layers import GatedMlp, GluMlp, RmsNorm  # noqa: E402
from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock, SpatialGatingBlock  # noqa: E402

TINY = dict(num_classes=3, img_size=16, patch_size=4, num_blocks=1, embed_dim=16)    # S = 16, C = 16
KINDS = {
    "mixer": dict(),
    "gmixer": dict(mlp_layer=GluMlp, act_layer=nn.SiLU, mlp_ratio=(1.0, 4.0)),
    "resmlp": dict(block_layer=ResBlock, norm_layer=Affine, mlp_ratio=4),
    "gmlp": dict(block_layer=SpatialGatingBlock, mlp_layer=GatedMlp, mlp_ratio=6),
}
NORM = {"mixer": "norm1", "gmixer": "norm1", "resmlp": "norm1", "gmlp": "norm"}


def _model(kind):
    torch.manual_seed(0)
    return perturb_(MlpMixer(**TINY, **KINDS[kind])).eval()


def _x():
    return torch.randn(2, 16, 16)


class LoRALinear(nn.Linear):
    """A Linear subclass with its own forward (a LoRA adapter): what a fused block cannot compute."""

    def __init__(self, fc):
        super().__init__(fc.in_features, fc.out_features)
        self.load_state_dict(fc.state_dict())
        self.lora = nn.Parameter(0.1 * torch.randn(fc.out_features, fc.in_features))

    def forward(self, x):
        return super().forward(x) + nn.functional.linear(x, self.lora)


def _change(block, kind, what):
    """Apply change `what` to a block; returns the submodule's name."""
    c = block.mlp_channels
    if what == "mlp_norm":
        c.norm = nn.LayerNorm(c.fc2.in_features)
        return "mlp_channels.norm"
    if what == "lora_fc1":
        c.fc1 = LoRALinear(c.fc1)
        return "mlp_channels.fc1"
    name = NORM[kind]
    setattr(block, name, RmsNorm(16) if what == "rmsnorm" else nn.Identity())
    return name


@pytest.mark.parametrize("what", ["mlp_norm", "lora_fc1", "rmsnorm", "identity"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_change_after_fusing_is_refused(kind, what):
    """A submodule replaced after fusing by one the fused ops cannot compute: the next call raises a ValueError
    naming the block and the submodule and the way back (not the old output, not an AttributeError)."""
    model = mk.fuse_mixer_blocks(_model(kind))
    block, x = model.blocks[0], _x()
    with count_launches() as n:
        before = block(x)
    assert sum(n.values()) > 0
    sub = _change(block, kind, what)
    with pytest.raises(ValueError, match=rf"blocks\.0: .*{sub}.*changed after the block was fused.*strict=False"):
        block(x)
    assert torch.isfinite(before).all()


@pytest.mark.parametrize("kind", list(KINDS))
def test_same_types_swapped_in_still_run(kind):
    """A replacement the fused ops compute (a new nn.Linear of the same shape): runs fused, with the new weights."""
    model = mk.fuse_mixer_blocks(_model(kind))
    block, x = model.blocks[0], _x()
    ref = _model(kind).blocks[0]
    fc = nn.Linear(block.mlp_channels.fc1.in_features, block.mlp_channels.fc1.out_features)
    block.mlp_channels.fc1 = fc
    ref.mlp_channels.fc1 = fc
    with torch.no_grad(), count_launches() as n:
        out = block(x)
    assert sum(n.values()) > 0
    torch.testing.assert_close(out, ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", list(KINDS))
def test_block_hooks_move_to_the_fused_block(kind):
    """Forward pre-hooks and forward hooks of a replaced block fire on the fused block, and their handles still
    remove them."""
    model = _model(kind)
    calls = []
    h1 = model.blocks[0].register_forward_pre_hook(lambda m, args: calls.append(("pre", type(m).__module__)))
    h2 = model.blocks[0].register_forward_hook(lambda m, args, out: calls.append(("post", type(m).__module__)))
    mk.fuse_mixer_blocks(model)
    with torch.no_grad():
        model.blocks[0](_x())
    assert calls == [("pre", "mixer_kernels.modules"), ("post", "mixer_kernels.modules")]
    h1.remove()
    h2.remove()
    with torch.no_grad():
        model.blocks[0](_x())
    assert len(calls) == 2


@pytest.mark.parametrize("kind", list(KINDS))
def test_inner_hooks_at_fusing_refused_or_left_eager(kind):
    """An inner module with a hook (it would never fire in the fused block): strict refuses, naming it;
    strict=False leaves that block eager with a warning."""
    model = _model(kind)
    model.blocks[0].mlp_channels.fc1.register_forward_hook(lambda *a: None)
    with pytest.raises(ValueError, match=r"blocks\.0: hooks on inner modules .*mlp_channels\.fc1 \(forward hooks\)"):
        mk.fuse_mixer_blocks(model)
    with pytest.warns(UserWarning, match=r"left unfused.*blocks\.0 .*mlp_channels\.fc1"):
        mk.fuse_mixer_blocks(model, strict=False)
    assert type(model.blocks[0]).__module__ == "timm.models.mlp_mixer"


@pytest.mark.parametrize("kind", list(KINDS))
def test_inner_hook_added_after_fusing_warns_once(kind):
    """A hook put on an inner module after fusing (torchinfo, fvcore do this): the block still runs fused, and one
    warning at the next call says the hook never fires."""
    model = mk.fuse_mixer_blocks(_model(kind))
    block, x = model.blocks[0], _x()
    with torch.no_grad():
        ref = block(x)
    block.mlp_channels.fc1.register_forward_hook(lambda *a: None)
    with warnings.catch_warnings(record=True) as w, torch.no_grad(), count_launches() as n:
        warnings.simplefilter("always")
        out1, out2 = block(x), block(x)
    said = [str(m.message) for m in w if "never fire" in str(m.message)]
    assert len(said) == 1 and "blocks.0" in said[0] and "mlp_channels.fc1" in said[0], said
    assert sum(n.values()) > 0
    torch.testing.assert_close(out1, ref, rtol=0, atol=0)
    torch.testing.assert_close(out2, ref, rtol=0, atol=0)


def test_model_without_family_block():
    """Nothing of the Mixer family (a ResNet-like model): strict raises, strict=False warns; a model fused before
    is not 'nothing'."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match=r"model: Sequential holds no block of the MLP-Mixer family"):
        mk.fuse_mixer_blocks(net)
    with pytest.warns(UserWarning, match=r"holds no block of the MLP-Mixer family"):
        mk.fuse_mixer_blocks(net, strict=False)
    model = mk.fuse_mixer_blocks(_model("mixer"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mk.fuse_mixer_blocks(model)
