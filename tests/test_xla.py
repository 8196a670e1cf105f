"""The XLA path (mixer_kernels/xla.py) on torch_xla's CPU device (PJRT_DEVICE=CPU), against float64
references on the CPU. Tests marked `xla` need torch_xla: .ci/run runs them in .venv-xla (torch 2.9.0 +
torch_xla 2.9.0). This file imports nothing beyond torch, pytest and the project, so it also loads in
the main environment, where the unmarked tests run and the marked ones are skipped.

Accuracy: XLA's CPU backend computes fp32 dots in fp32, so outputs and gradients are judged by
helpers.assert_close (relative Frobenius error <= 1e-5 against float64), except where a test says why
it needs more.
"""
from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import textwrap
from functools import partial

import pytest
import torch
from helpers import LOWP_ATOL, LOWP_FACTOR, assert_close, layernorm_params, linear_params, perturb_, rel_err
from torch import nn

import mixer_kernels as mk
from mixer_kernels import xla as mk_xla
from reference import ops as oracle
from reference.mlp_mixer import MlpMixer

NAMES = ("x", "norm_weight", "norm_bias", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")


@pytest.fixture
def xdev():
    torch_xla = pytest.importorskip("torch_xla")
    return torch_xla.device()


def _metrics():
    import torch_xla.debug.metrics as met
    return met


def _samples(name: str) -> int:
    data = _metrics().metric_data(name)
    return 0 if data is None else data[0]


def _clear_metrics():
    """Reset torch_xla's metrics once earlier (asynchronous) executions have finished and recorded theirs."""
    import torch_xla.core.xla_model as xm
    xm.wait_device_ops()
    _metrics().clear_all()


def _fallbacks() -> list[str]:
    return [n for n in _metrics().counter_names() if n.startswith("aten::")]


# --------------------------------------------------------------------------------------------------
# The two functions against the float64 oracle (reference/ops.py, not the package's torch_math.py).


def _half_inputs(kind: str, B=3, S=13, C=10, DS=7, DC=20):
    n, h = (S, DS) if kind == "token" else (C, DC)
    x = torch.randn(B, S, C)
    return [x, *layernorm_params(C), *linear_params(h, n), *linear_params(n, h)]


def _reference_half(kind, inputs, approximate, sample_scale, grad_out):
    """Output and gradients (x, then the six parameters) in float64 from the oracle (reference/ops.py)."""
    op = oracle.token_mixing if kind == "token" else oracle.channel_mixing
    return oracle.forward_backward(op, inputs, grad_out, sample_scale=sample_scale, approximate=approximate)


def _run_half(kind, inputs, device, **kwargs):
    fn = mk.token_mixing if kind == "token" else mk.channel_mixing
    leaves = [t.detach().to(device).requires_grad_() for t in inputs]
    scale = kwargs.pop("sample_scale", None)
    out = fn(*leaves, sample_scale=None if scale is None else scale.to(device), **kwargs)
    return out, leaves


@pytest.mark.xla
@pytest.mark.parametrize("kind", ["token", "channel"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("drop_path", [False, True])
def test_function_matches_float64(xdev, kind, approximate, recompute, drop_path):
    inputs = _half_inputs(kind)
    scale = torch.tensor([0.0, 1.25, 1.25]) if drop_path else None        # timm's drop_path, p = 0.2
    grad_out = torch.randn_like(inputs[0])
    out, leaves = _run_half(kind, inputs, xdev, approximate=approximate, recompute=recompute,
                            sample_scale=scale)
    assert out.device.type == "xla" and out.dtype == torch.float32
    out.backward(grad_out.to(xdev))
    import torch_xla
    torch_xla.sync()
    ref_out, ref_grads = _reference_half(kind, inputs, approximate, scale, grad_out)
    assert_close(f"{kind} out", out.cpu(), ref_out)
    for name, leaf, ref in zip(NAMES, leaves, ref_grads, strict=True):
        assert_close(f"{kind} grad {name}", leaf.grad.cpu(), ref)


@pytest.mark.xla
@pytest.mark.parametrize("kind", ["token", "channel"])
def test_function_under_autocast_bf16(xdev, kind):
    """torch.autocast("xla", bfloat16), the usual mixed precision on a TPU: the graph's matmuls are bf16,
    and output and gradients (fp32, as in eager) are within the bf16 rule of docs/design.md, "Accuracy: how the
    tests judge" (2x the error of
    eager CPU autocast + 1e-3) against float64. Bias gradients get 8x: XLA's CPU backend sums bf16 in bf16
    (measured: a 4096-row bf16 column sum has relative error 1e-2 there, 1.7e-3 in eager), and a bias
    gradient is such a sum of the bf16 gradient of the linear's output."""
    import torch_xla
    inputs = _half_inputs(kind, B=4, S=49, C=64, DS=32, DC=256)
    grad_out = torch.randn_like(inputs[0])
    with torch.autocast("xla", dtype=torch.bfloat16):
        out, leaves = _run_half(kind, inputs, xdev)
    hlo = torch_xla._XLAC._get_xla_tensors_hlo([out])
    assert re.search(r"= bf16\[[0-9,]+\]\S* dot\(", hlo), "no bf16 matmul in the autocast graph"
    out.backward(grad_out.to(xdev))
    torch_xla.sync()
    eager_leaves = [t.clone().requires_grad_() for t in inputs]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = (mk_xla.token_mixing if kind == "token" else mk_xla.channel_mixing)(*eager_leaves)  # torch_math
    eager.backward(grad_out)
    ref_out, ref_grads = _reference_half(kind, inputs, "none", None, grad_out)
    results = zip(("out",) + NAMES, [out] + [t.grad for t in leaves], [eager] + [t.grad for t in eager_leaves],
                  [ref_out] + ref_grads, strict=True)
    for name, got, eager_got, ref in results:
        assert got.dtype == torch.float32, name
        factor = 8.0 if name.endswith("_bias") and name.startswith("fc") else LOWP_FACTOR
        err, eager_err = rel_err(got.cpu(), ref), rel_err(eager_got, ref)
        bound = factor * eager_err + LOWP_ATOL[torch.bfloat16]
        assert err <= bound, f"{kind} {name}: relative error {err:.3g} > {bound:.3g} (eager: {eager_err:.3g})"


@pytest.mark.xla
@pytest.mark.parametrize("kind", ["token", "channel"])
def test_function_no_fallback_no_host_sync(xdev, kind):
    """Forward + backward build one graph: nothing executes before the sync, nothing falls back."""
    met = _metrics()
    inputs = _half_inputs(kind)
    _clear_metrics()
    out, leaves = _run_half(kind, inputs, xdev, recompute=True)
    (out * out).sum().backward()
    assert _samples("ExecuteTime") == 0 and _samples("TransferFromDeviceTime") == 0, met.short_metrics_report()
    import torch_xla
    import torch_xla.core.xla_model as xm
    torch_xla.sync()
    xm.wait_device_ops()
    assert _samples("ExecuteTime") == 1, met.short_metrics_report()
    assert _fallbacks() == [], met.short_metrics_report()


@pytest.mark.xla
def test_bad_input_on_xla_is_a_clear_error(xdev):
    """The input checks read shapes and devices only: a clear error, and nothing executed on the device."""
    cpu_inputs = _half_inputs("token")
    x, nw, nb, w1, b1, w2, b2 = (t.to(xdev) for t in cpu_inputs)
    _clear_metrics()
    with pytest.raises(ValueError, match="fc1_weight"):
        mk.token_mixing(x, nw, nb, w1.T, b1, w2, b2)
    with pytest.raises(ValueError, match="norm_weight: expected a tensor on x's device"):
        fc = [t.to(xdev) for t in (*linear_params(20, 10), *linear_params(10, 20))]
        mk.channel_mixing(x, cpu_inputs[1], nb, *fc)
    assert _samples("ExecuteTime") == 0 and _samples("TransferFromDeviceTime") == 0


@pytest.mark.xla
def test_recompute_survives_xla_cse(tmp_path):
    """With recompute=True the optimized HLO of a channel-mixing forward+backward holds one more dot
    (fc1 recomputed in the backward) than without: XLA's CSE did not merge the recomputation back into
    the forward. Compiled in a subprocess, since XLA_FLAGS (the HLO dump) is read once per process."""
    script = textwrap.dedent("""
        import torch, torch_xla
        import mixer_kernels as mk
        dev = torch_xla.device()
        x = torch.randn(4, 49, 64).to(dev).requires_grad_()
        ps = [torch.randn(*s).to(dev).requires_grad_() for s in [(64,), (64,), (96, 64), (96,), (64, 96), (64,)]]
        for recompute in (False, True):   # one graph each, compiled in this order
            y = mk.channel_mixing(x, *ps, recompute=recompute)
            y.backward(torch.randn(4, 49, 64).to(dev))
            torch_xla.sync()   # y is alive, so its forward is computed too (as a loss would be)
    """)
    env = dict(os.environ, PJRT_DEVICE=os.environ.get("PJRT_DEVICE", "CPU"),
               XLA_FLAGS=f"--xla_dump_to={tmp_path} --xla_dump_hlo_as_text")
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    before = sorted(tmp_path.glob("module_*SyncTensorsGraph*before_optimizations.txt"))
    after = sorted(tmp_path.glob("module_*SyncTensorsGraph*after_optimizations.txt"))
    assert len(before) == len(after) == 2, sorted(p.name for p in tmp_path.iterdir())
    assert ["opt-barrier" in f.read_text() for f in before] == [False, True]
    # (at much smaller sizes XLA's CPU backend turns some dots into fusions, hence these sizes)
    assert [f.read_text().count(" dot(") for f in after] == [6, 7]


def test_recompute_elsewhere_uses_torch_checkpoint():
    """Devices other than torch_xla's (TorchTPU "tpu", torchax "jax": not available here) recompute
    with torch.utils.checkpoint; the same code path on CPU tensors gives eager's gradients."""
    for kind, fn in (("token", mk_xla.token_mixing), ("channel", mk_xla.channel_mixing)):
        inputs = _half_inputs(kind)
        grads = []
        for recompute in (False, True):
            leaves = [t.clone().requires_grad_() for t in inputs]
            fn(*leaves, approximate="tanh", recompute=recompute).square().sum().backward()
            grads.append([t.grad for t in leaves])
        for name, a, b in zip(NAMES, *grads, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{kind} grad {name}")


# --------------------------------------------------------------------------------------------------
# A fused small MlpMixer (reference model + fuse_mixer_blocks) on XLA.


def _small_mixer(drop_path=0.0, approximate="none"):
    """S=16 patches, C=24, DS=12, DC=96, two blocks; parameters perturbed away from their init."""
    model = MlpMixer(num_classes=5, img_size=32, patch_size=8, num_blocks=2, embed_dim=24,
                     drop_path_rate=drop_path, act_layer=partial(nn.GELU, approximate=approximate))
    return perturb_(model)


def _batch(n=4):
    return torch.randn(n, 3, 32, 32), torch.randint(0, 5, (n,))


def _fused_on(model, device, recompute=False):
    fused = mk.fuse_mixer_blocks(copy.deepcopy(model), recompute=recompute).to(device)
    assert all(isinstance(b, mk.MixerBlock) for b in fused.blocks)
    return fused


@pytest.mark.xla
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("recompute", [False, True])
def test_fused_mixer_matches_float64(xdev, approximate, recompute):
    import torch_xla
    model = _small_mixer(approximate=approximate)
    ref, fused = copy.deepcopy(model).double(), _fused_on(model, xdev, recompute)
    img, target = _batch()
    logits = fused(img.to(xdev))
    nn.functional.cross_entropy(logits, target.to(xdev)).backward()
    torch_xla.sync()   # one graph for all; reading tensors one by one would compile one graph each
    ref_logits = ref(img.double())
    nn.functional.cross_entropy(ref_logits, target).backward()
    assert_close("logits", logits.cpu(), ref_logits.detach())
    ref_grads = {name: p.grad for name, p in ref.named_parameters()}
    scale = max(g.norm() for g in ref_grads.values())
    for name, p in fused.named_parameters():
        ref_grad = ref_grads[name]
        if ref_grad.norm() < 1e-12 * scale:
            # mlp_tokens.fc2.bias adds a per-token constant that every later LayerNorm (over C) removes:
            # its gradient is exactly zero, and only its size next to the other gradients can be judged.
            assert p.grad.cpu().norm() <= 1e-6 * scale, f"grad {name}: expected ~0, got {p.grad.cpu().norm():.3g}"
            continue
        assert_close(f"grad {name}", p.grad.cpu(), ref_grad)


@pytest.mark.xla
@pytest.mark.parametrize("recompute", [False, True])
def test_training_step_compiles_once_without_fallback(xdev, recompute):
    """Two identical SGD steps (fresh batches, drop_path on): the second compiles nothing, each step is
    one graph execution, nothing is read back to the host, and no op falls back to the CPU."""
    import torch_xla
    import torch_xla.core.xla_model as xm
    met = _metrics()
    model = _fused_on(_small_mixer(drop_path=0.2), xdev, recompute).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def step():
        img, target = _batch()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(img.to(xdev)), target.to(xdev)).backward()
        opt.step()
        torch_xla.sync()
        xm.wait_device_ops()   # execution is asynchronous; its metrics land when it finishes

    _clear_metrics()
    step()
    assert _fallbacks() == [], met.short_metrics_report()
    compiled, executed = _samples("CompileTime"), _samples("ExecuteTime")
    assert compiled >= 1
    step()
    assert _samples("CompileTime") == compiled, met.short_metrics_report()
    assert _samples("ExecuteTime") == executed + 1, met.short_metrics_report()
    assert _samples("TransferFromDeviceTime") == 0, met.short_metrics_report()
    assert _fallbacks() == [], met.short_metrics_report()


@pytest.mark.xla
def test_optimizer_steps_track_cpu(xdev):
    """Five SGD-with-momentum steps of the fused model on XLA (fp32) and of the same model on the CPU
    (unfused reference, float64) on the same batches: losses and final parameters agree."""
    import torch_xla
    model = _small_mixer()
    ref, fused = copy.deepcopy(model).double(), _fused_on(model, xdev, recompute=True)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (ref, fused)]
    losses = []
    for _ in range(5):
        img, target = _batch()
        pair = []
        for m, opt, dev, dt in ((ref, opts[0], "cpu", torch.float64), (fused, opts[1], xdev, torch.float32)):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(m(img.to(device=dev, dtype=dt)), target.to(dev))
            loss.backward()
            opt.step()
            pair.append(loss.detach())
        torch_xla.sync()
        losses.append([pair[0].item(), pair[1].cpu().item()])
    ref_losses, xla_losses = torch.tensor(losses, dtype=torch.float64).T
    assert ref_losses[-1] < ref_losses[0], "the steps should train (losses fall): choose another lr"
    assert_close("losses", xla_losses, ref_losses)
    ref_params = dict(ref.named_parameters())
    for name, p in fused.named_parameters():
        assert_close(f"param {name} after 5 steps", p.detach().cpu(), ref_params[name].detach())


@pytest.mark.xla
@pytest.mark.parametrize("recompute", [False, True])
def test_fused_mixer_recompute_covers_both_halves(xdev, recompute):
    """fuse_mixer_blocks(model, recompute=True): on XLA every block recomputes its token and its
    channel half, each behind one optimization barrier in the backward graph."""
    import torch_xla
    model = _fused_on(_small_mixer(), xdev, recompute)
    img, target = _batch()
    nn.functional.cross_entropy(model(img.to(xdev)), target.to(xdev)).backward()
    hlo = torch_xla._XLAC._get_xla_tensors_hlo([p.grad for p in model.parameters()])
    assert hlo.count(" opt-barrier(") == (2 * len(model.blocks) if recompute else 0)


# --------------------------------------------------------------------------------------------------
# ResMLP's halves on XLA (issue 14), against reference/resmlp.py in float64.

def _resmlp_inputs(kind, B=3, S=13, C=10, DC=20):
    x = torch.randn(B, S, C)
    alpha, beta = 1.0 + 0.2 * torch.randn(C), 0.2 * torch.randn(C)
    ls = 1.0 + 0.2 * torch.randn(C)
    if kind == "token":
        return [x, alpha, beta, *linear_params(S, S), ls]
    return [x, alpha, beta, *linear_params(DC, C), *linear_params(C, DC), ls]


@pytest.mark.xla
@pytest.mark.parametrize("kind", ["token", "channel"])
@pytest.mark.parametrize("recompute", [False, True])
def test_resmlp_matches_float64(xdev, kind, recompute):
    import torch_xla

    from reference import resmlp
    inputs = _resmlp_inputs(kind)
    scale = torch.tensor([0.0, 1.25, 1.25])
    grad_out = torch.randn_like(inputs[0])
    leaves = [t.detach().to(xdev).requires_grad_() for t in inputs]
    if kind == "token":
        out = mk.resmlp_token_mixing(*leaves, sample_scale=scale.to(xdev))
    else:
        out = mk.resmlp_channel_mixing(*leaves, sample_scale=scale.to(xdev), approximate="tanh", recompute=recompute)
    assert out.device.type == "xla"
    out.backward(grad_out.to(xdev))
    torch_xla.sync()
    ref_leaves = [t.detach().double().requires_grad_() for t in inputs]
    if kind == "token":
        ref = resmlp.token_mixing(*ref_leaves, sample_scale=scale.double())
    else:
        ref = resmlp.channel_mixing(*ref_leaves, sample_scale=scale.double(), approximate="tanh")
    ref.backward(grad_out.double())
    assert_close(f"resmlp {kind} out", out.cpu(), ref.detach())
    for i, (leaf, r) in enumerate(zip(leaves, ref_leaves, strict=True)):
        assert_close(f"resmlp {kind} grad {i}", leaf.grad.cpu(), r.grad)


# --------------------------------------------------------------------------------------------------
# gMLP's block on XLA (issue 14), against reference/ops.gmlp_block in float64.

def _gmlp_inputs(B=3, S=13, C=10, DC=20):
    H = DC // 2
    x = torch.randn(B, S, C)
    return [x, *layernorm_params(C), *linear_params(DC, C), *layernorm_params(H), *linear_params(S, S),
            *linear_params(C, H)]


@pytest.mark.xla
@pytest.mark.parametrize("recompute", [False, True])
def test_gmlp_matches_float64(xdev, recompute):
    """Output and every gradient against the oracle; no aten:: fallback; recompute=True puts one
    optimisation barrier in the backward graph."""
    import torch_xla
    inputs = _gmlp_inputs()
    scale = torch.tensor([0.0, 1.25, 1.25])
    grad_out = torch.randn_like(inputs[0])
    kw = dict(eps=1e-6, gate_eps=1e-5, approximate="tanh")
    _clear_metrics()
    leaves = [t.detach().to(xdev).requires_grad_() for t in inputs]
    out = mk.gmlp_block(*leaves, sample_scale=scale.to(xdev), recompute=recompute, **kw)
    assert out.device.type == "xla"
    out.backward(grad_out.to(xdev))
    hlo = torch_xla._XLAC._get_xla_tensors_hlo([t.grad for t in leaves])
    assert hlo.count(" opt-barrier(") == (1 if recompute else 0)
    torch_xla.sync()
    assert not _fallbacks(), _fallbacks()
    ref_out, ref_grads = oracle.forward_backward(oracle.gmlp_block, inputs, grad_out, sample_scale=scale.double(),
                                                 **kw)
    assert_close("gmlp out", out.cpu(), ref_out)
    for i, (leaf, r) in enumerate(zip(leaves, ref_grads, strict=True)):
        assert_close(f"gmlp grad {i}", leaf.grad.cpu(), r)


# --------------------------------------------------------------------------------------------------
# gMixer's halves on XLA (issue 14), against reference/ops.gmixer_* in float64.

def _gmixer_inputs(kind, B=3, S=13, C=10, DS=14, DC=20):
    x = torch.randn(B, S, C)
    if kind == "token":
        return [x, *layernorm_params(C), *linear_params(DS, S), *linear_params(S, DS // 2)]
    return [x, *layernorm_params(C), *linear_params(DC, C), *linear_params(C, DC // 2)]


@pytest.mark.xla
@pytest.mark.parametrize("kind", ["token", "channel"])
@pytest.mark.parametrize("recompute,gate_last", [(False, True), (True, False)])
def test_gmixer_matches_float64(xdev, kind, recompute, gate_last):
    """Output and every gradient against the oracle; no aten:: fallback; recompute=True puts one
    optimisation barrier in the backward graph."""
    import torch_xla
    inputs = _gmixer_inputs(kind)
    scale = torch.tensor([0.0, 1.25, 1.25])
    grad_out = torch.randn_like(inputs[0])
    _clear_metrics()
    leaves = [t.detach().to(xdev).requires_grad_() for t in inputs]
    fn = mk.gmixer_token_mixing if kind == "token" else mk.gmixer_channel_mixing
    out = fn(*leaves, sample_scale=scale.to(xdev), recompute=recompute, gate_last=gate_last)
    assert out.device.type == "xla"
    out.backward(grad_out.to(xdev))
    hlo = torch_xla._XLAC._get_xla_tensors_hlo([t.grad for t in leaves])
    assert hlo.count(" opt-barrier(") == (1 if recompute else 0)
    torch_xla.sync()
    assert not _fallbacks(), _fallbacks()
    ref_fn = oracle.gmixer_token_mixing if kind == "token" else oracle.gmixer_channel_mixing
    ref_out, ref_grads = oracle.forward_backward(ref_fn, inputs, grad_out, sample_scale=scale.double(),
                                                 gate_last=gate_last)
    assert_close(f"gmixer {kind} out", out.cpu(), ref_out)
    for i, (leaf, r) in enumerate(zip(leaves, ref_grads, strict=True)):
        assert_close(f"gmixer {kind} grad {i}", leaf.grad.cpu(), r)


@pytest.mark.xla
def test_fused_gmlp_model_matches_float64(xdev):
    """A reference gMLP (reference/mlp_mixer.py's SpatialGatingBlock, timm's layout) fused by fuse_mixer_blocks,
    trained one step on XLA: logits and every parameter gradient against the unfused model in float64."""
    import torch_xla

    from reference.mlp_mixer import GatedMlp, SpatialGatingBlock
    model = perturb_(MlpMixer(num_classes=5, img_size=32, patch_size=8, num_blocks=2, embed_dim=24, mlp_ratio=4,
                              block_layer=SpatialGatingBlock, mlp_layer=GatedMlp))
    ref = copy.deepcopy(model).double()
    fused = mk.fuse_mixer_blocks(copy.deepcopy(model)).to(xdev)
    assert all(isinstance(b, mk.SpatialGatingBlock) for b in fused.blocks)
    img, target = _batch()
    logits = fused(img.to(xdev))
    nn.functional.cross_entropy(logits, target.to(xdev)).backward()
    torch_xla.sync()
    ref_logits = ref(img.double())
    nn.functional.cross_entropy(ref_logits, target).backward()
    assert_close("logits", logits.cpu(), ref_logits.detach())
    ref_grads = {name: p.grad for name, p in ref.named_parameters()}
    for name, p in fused.named_parameters():
        assert_close(f"grad {name}", p.grad.cpu(), ref_grads[name])
