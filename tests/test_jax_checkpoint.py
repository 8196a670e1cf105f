"""load_jax_checkpoint: an .npz in the google-research/vision_transformer layout -> timm names."""
import numpy as np
import pytest
import torch

from mixer_kernels import load_jax_checkpoint
from reference.mlp_mixer import MlpMixer

P, IN, C, DS, DC, S, K, NB = 4, 3, 12, 6, 20, 9, 5, 2    # patch, in_chans, channels, hidden, tokens, classes, blocks


def _jax_params(rng):
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    p = {"stem/kernel": f(P, P, IN, C), "stem/bias": f(C),
         "pre_head_layer_norm/scale": f(C), "pre_head_layer_norm/bias": f(C),
         "head/kernel": f(C, K), "head/bias": f(K)}
    for i in range(NB):
        b = f"MixerBlock_{i}"
        p.update({f"{b}/LayerNorm_0/scale": f(C), f"{b}/LayerNorm_0/bias": f(C),
                  f"{b}/token_mixing/Dense_0/kernel": f(S, DS), f"{b}/token_mixing/Dense_0/bias": f(DS),
                  f"{b}/token_mixing/Dense_1/kernel": f(DS, S), f"{b}/token_mixing/Dense_1/bias": f(S),
                  f"{b}/LayerNorm_1/scale": f(C), f"{b}/LayerNorm_1/bias": f(C),
                  f"{b}/channel_mixing/Dense_0/kernel": f(C, DC), f"{b}/channel_mixing/Dense_0/bias": f(DC),
                  f"{b}/channel_mixing/Dense_1/kernel": f(DC, C), f"{b}/channel_mixing/Dense_1/bias": f(C)})
    return p


def _model():
    return MlpMixer(num_classes=K, img_size=P * 3, in_chans=IN, patch_size=P, num_blocks=NB, embed_dim=C,
                    mlp_ratio=(DS / C, DC / C))


@pytest.mark.parametrize("prefix", ["", "params/"])
def test_npz_loads_strict_and_means_the_same(tmp_path, prefix):
    rng = np.random.default_rng(0)
    params = _jax_params(rng)
    path = tmp_path / "mixer.npz"
    np.savez(path, **{prefix + k: v for k, v in params.items()})
    sd = load_jax_checkpoint(str(path))
    model = _model()
    model.load_state_dict(sd, strict=True)

    # Flax semantics, computed here with numpy: a Dense is x @ kernel + bias; the stem is a patch
    # (H, W, in_chans order) times the HWIO kernel.
    x = rng.standard_normal((7, S)).astype(np.float32)
    fc = model.blocks[1].mlp_tokens.fc1
    with torch.no_grad():
        got = fc(torch.from_numpy(x)).numpy()
    want = x @ params["MixerBlock_1/token_mixing/Dense_0/kernel"] + params["MixerBlock_1/token_mixing/Dense_0/bias"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    img = rng.standard_normal((1, IN, P * 3, P * 3)).astype(np.float32)
    with torch.no_grad():
        tokens = model.stem(torch.from_numpy(img)).numpy()           # [1, S, C]
    patch = img[0, :, P:2 * P, 2 * P:3 * P].transpose(1, 2, 0)       # token (1, 2) -> index 5, HWC
    want = np.einsum("hwi,hwic->c", patch, params["stem/kernel"]) + params["stem/bias"]
    np.testing.assert_allclose(tokens[0, 5], want, rtol=1e-4, atol=1e-4)

    np.testing.assert_array_equal(model.norm.weight.detach().numpy(), params["pre_head_layer_norm/scale"])
    np.testing.assert_array_equal(model.blocks[0].norm2.bias.detach().numpy(), params["MixerBlock_0/LayerNorm_1/bias"])
    np.testing.assert_array_equal(model.head.weight.detach().numpy(), params["head/kernel"].T)


def test_accepts_open_npz_and_mapping(tmp_path):
    params = _jax_params(np.random.default_rng(1))
    path = tmp_path / "m.npz"
    np.savez(path, **params)
    with np.load(path) as npz:
        a = load_jax_checkpoint(npz)
    b = load_jax_checkpoint(params)
    assert a.keys() == b.keys() == _model().state_dict().keys()
    for k in a:
        assert torch.equal(a[k], b[k])


def test_unknown_keys_and_bad_source_are_errors():
    params = _jax_params(np.random.default_rng(2))
    params["Transformer/encoder_norm/scale"] = np.ones(C, np.float32)
    with pytest.raises(KeyError, match="Transformer/encoder_norm/scale"):
        load_jax_checkpoint(params)
    with pytest.raises(TypeError, match="path_or_npz"):
        load_jax_checkpoint(42)


def test_key_under_two_prefixes_is_refused():
    """A parameter present under params/ and opt/target/ (issue 23): refused, naming both keys, instead of
    the last one silently winning."""
    params = _jax_params(np.random.default_rng(3))
    both = {f"params/{k}": v for k, v in params.items()}
    both["opt/target/head/bias"] = params["head/bias"] + 1
    with pytest.raises(ValueError, match=r"'head/bias' appears twice, as 'params/head/bias' and "
                                         r"'opt/target/head/bias'"):
        load_jax_checkpoint(both)
    assert set(load_jax_checkpoint({f"params/{k}": v for k, v in params.items()})) == set(_model().state_dict())
