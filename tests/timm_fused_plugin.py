"""A pytest plugin that runs timm's own model tests (tests/test_models.py of timm's source distribution)
on fused models: every model timm.create_model builds is passed through mixer_kernels.fuse_mixer_blocks
before the test sees it. Used by .ci/run's timm stage (the README's "timm's own model tests"):

    cd <timm sdist> && PYTHONPATH=<repo>:<repo>/tests python -m pytest -p timm_fused_plugin tests/test_models.py

Only the mlp_mixer-family models of MODELS run (the other parametrisations are deselected); the plain
PyTorch path (CPU, TRITON_INTERPRET unset: the stage refuses to run with it set). For a plain MLP-Mixer
or a gMixer (`mixer_*`, `gmixer_*`) a created model without a fused block fails the test, so no test passes
on an unfused model; gMLP / ResMLP blocks that fuse_mixer_blocks cannot fuse stay unfused (strict=False) and are
counted in the summary line. Tests that cannot apply to a fused model are skipped with their reason (SKIP).
"""
from __future__ import annotations

import fnmatch
import inspect
import os
import warnings
from collections import Counter

import pytest

# One model per architecture and block variant, at the sizes CPU time allows (the README lists them):
# left out are mixer_b16/b32/l16/l32 (the S models run the same code at both patch sizes; timm's own fx
# tests exclude 'mixer_l*'; the B models were left out for CPU time once gMLP's 30 blocks fused),
# gmixer_24 (gmixer_12 at twice the depth), gmlp_s16/b16 (gmlp_ti16 wider), resmlp_24/36/big_24 (resmlp_12
# deeper or wider).
MODELS = ["mixer_s32_224", "mixer_s16_224", "gmixer_12_224", "gmlp_ti16_224", "resmlp_12_224"]

# The model tests of the stage (forward, backward, default configs, intermediates, features, pruning,
# torchscript, fx); every other test function of the file is deselected.
TESTS = ["test_model_forward", "test_model_backward", "test_model_default_cfgs", "test_model_default_cfgs_non_std",
         "test_model_forward_intermediates_features", "test_model_forward_intermediates",
         "test_model_forward_features", "test_prune_intermediate_layers_contract", "test_model_forward_torchscript",
         "test_model_forward_fx", "test_model_backward_fx"]

SKIP = {
    "test_model_forward_torchscript": "a fused block calls Triton kernels from Python, which torch.jit.script "
                                      "cannot compile: scripting a fused model raises a RuntimeError pointing to "
                                      "torch.compile / torch.jit.trace (README, 'Use it')",
}

_stats: Counter = Counter()


def _fuse(model):
    from mixer_kernels import fuse_mixer_blocks
    from mixer_kernels.modules import MixerBlock
    kwargs = {"strict": False} if "strict" in inspect.signature(fuse_mixer_blocks).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # strict=False lists the blocks it left unfused
        fuse_mixer_blocks(model, **kwargs)
    fused = sum(type(m).__module__.startswith("mixer_kernels") for m in model.modules())
    name = getattr(model, "pretrained_cfg", {}).get("architecture", "") or type(model).__name__
    _stats["models"] += 1
    _stats["fused blocks"] += fused
    if fused == 0:
        _stats["models left unfused"] += 1
    if (fnmatch.fnmatch(name, "mixer_*") or fnmatch.fnmatch(name, "gmixer_*")) \
            and not any(isinstance(m, MixerBlock) for m in model.modules()):
        raise AssertionError(f"{name}: fuse_mixer_blocks fused no MixerBlock")
    return model


def _wrap(create_model):
    def create_model_fused(*args, **kwargs):
        return _fuse(create_model(*args, **kwargs))
    create_model_fused.__wrapped__ = create_model
    return create_model_fused


def pytest_configure(config):
    from mixer_kernels._config import triton_interpret
    if triton_interpret():
        raise pytest.UsageError("timm_fused_plugin runs the plain PyTorch path: unset TRITON_INTERPRET")
    os.environ.setdefault("TORCH_DEVICE", "cpu")
    import timm
    import timm.models
    import timm.models._factory as factory
    wrapped = _wrap(factory.create_model)
    timm.create_model = timm.models.create_model = factory.create_model = wrapped


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.originalname in TESTS and params.get("model_name") in MODELS:
            keep.append(item)
            if item.originalname in SKIP:
                item.add_marker(pytest.mark.skip(reason=SKIP[item.originalname]))
        else:
            drop.append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(
        f"timm_fused_plugin: {_stats['models']} models created, {_stats['fused blocks']} fused blocks, "
        f"{_stats['models left unfused']} models left unfused (block families fuse_mixer_blocks cannot fuse yet)")
