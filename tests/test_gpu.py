"""The compiled kernels on a CUDA device at real Mixer shapes, beyond one op: `pytest -m gpu` (skipped
without CUDA). The modules (mixer_kernels.MixerBlock, a whole timm Mixer-B/16 fused by
fuse_mixer_blocks), CUDA-graph capture and torch.compile(fullgraph=True) at scale, forward and every
gradient against float64 judged by tests/helpers.assert_close (docs/design.md, "Accuracy: how the
tests judge"), with the launch counter proving the Triton kernels ran. The per-op GPU tests (every
shape and dtype, strides, autocast, drop_path, recompute, the tanh GELU) are the op's own accuracy
tests at real sizes, beside its interpreter tests: tests/test_token_mixing.py, test_channel_mixing.py
and test_layernorm_stats.py (helpers.by_device).
"""
import copy

import pytest
import torch
from helpers import assert_close, count_launches, layernorm_params, linear_params, perturb_, rel_err

from reference import ops as oracle

pytestmark = pytest.mark.gpu
DEVICE = "cuda"      # constants, so the test logic can be dry-run on CPU through the interpreter
IMG = 224
S, C, DS, DC = 196, 768, 384, 3072    # Mixer-B/16 (paper Table 1 at 224 px, patch 16)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.fixture(autouse=True)
def _ieee_fp32():
    """fp32 is judged at 1e-5: no tf32 anywhere (kernels honour the matmul precision: docs/design.md, "The user
    contract")."""
    prec = torch.get_float32_matmul_precision()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_float32_matmul_precision(prec)
    torch.backends.cudnn.allow_tf32 = cudnn_tf32


def _leaves(ts, dtype=None):
    return [t.detach().to(dtype or t.dtype).clone().requires_grad_(True) for t in ts]


def _assert_kernels_ran(counts, prefix, when):
    ran = {k: v for k, v in counts.items() if k.startswith(prefix) and v}
    assert ran, f"no Triton kernel named {prefix}* launched during {when}; launched: {dict(counts)}"


def _judge(named_outs, named_refs, named_eager):
    """assert_close on every (name, tensor); all failures reported together.

    A gradient that is exactly zero in exact arithmetic has no relative error to judge: in a whole
    model, mlp_tokens.fc2.bias adds a per-token constant over the channels, which every later LayerNorm
    removes. Where the float64 reference is below 1e-9 of the largest reference norm, the result must
    instead be as small as eager's (10x) or below 1e-4 of that largest norm."""
    scale = max(r.detach().double().norm().item() for r in named_refs.values())
    failures = []
    for name in named_outs:
        out, ref64, eager = named_outs[name], named_refs[name], named_eager.get(name)
        if ref64.detach().double().norm().item() <= 1e-9 * scale:
            size = out.detach().double().norm().item()
            bound = max(10 * eager.detach().double().norm().item() if eager is not None else 0.0, 1e-4 * scale)
            if not size <= bound:
                failures.append(f"{name}: zero in exact arithmetic, got norm {size:.3g} > {bound:.3g}")
            continue
        try:
            assert_close(name, out, ref64, eager)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n".join(failures)


# -------------------------------------------------------------------------------------------------
# The modules.

def _reference_block():
    from reference.mlp_mixer import MixerBlock as RefBlock
    return perturb_(RefBlock(C, S)).to(DEVICE)


@pytest.mark.parametrize("dtype", DTYPES, ids=list(DTYPES))
def test_mixer_block_module(dtype):
    """mixer_kernels.MixerBlock loads the reference block's state_dict and matches it."""
    import mixer_kernels
    dt = DTYPES[dtype]
    ref_block = _reference_block()
    fused = mixer_kernels.MixerBlock(C, S).to(DEVICE)
    fused.load_state_dict(ref_block.state_dict(), strict=True)
    fused.to(dt)
    eager = copy.deepcopy(ref_block).to(dt)
    ref64 = copy.deepcopy(ref_block).double()
    x = (0.5 + 2.0 * torch.randn(4, S, C, device=DEVICE, dtype=torch.float64)).to(dt)
    gout = torch.randn(x.shape, device=DEVICE, dtype=torch.float64).to(dt)

    def run(model, x):
        x = x.detach().clone().requires_grad_(True)
        out = model(x)
        params = dict(model.named_parameters())
        grads = torch.autograd.grad(out, [x, *params.values()], gout.to(out.dtype))
        return {"out": out, "grad x": grads[0], **{f"grad {n}": g for n, g in zip(params, grads[1:], strict=True)}}

    with count_launches() as n:
        got = run(fused, x)
    _assert_kernels_ran(n, "_token", "MixerBlock forward+backward")
    _assert_kernels_ran(n, "_channel", "MixerBlock forward+backward")
    _judge(got, run(ref64, x.double()), run(eager, x))


def _timm_model(num_blocks=None, num_classes=10):
    import timm
    kw = dict(pretrained=False, num_classes=num_classes)
    if num_blocks is not None:
        kw["num_blocks"] = num_blocks
    model = timm.create_model("mixer_b16_224", **kw)
    torch.nn.init.normal_(model.head.weight, std=model.head.in_features ** -0.5)   # timm zero-inits the head
    return perturb_(model).to(DEVICE)


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_fuse_mixer_blocks_timm_b16(dtype):
    """A whole timm Mixer-B/16 fused by fuse_mixer_blocks: logits and every parameter gradient."""
    import mixer_kernels
    dt = DTYPES[dtype]
    model = _timm_model()
    ref64 = copy.deepcopy(model).double()
    eager = copy.deepcopy(model).to(dt)
    fused = mixer_kernels.fuse_mixer_blocks(copy.deepcopy(model).to(dt))
    assert type(fused.blocks[0]).__module__.startswith("mixer_kernels")
    images = torch.randn(2, 3, IMG, IMG, device=DEVICE, dtype=torch.float64)
    gout = torch.randn(2, 10, device=DEVICE, dtype=torch.float64)

    def run(m, dtype):
        out = m(images.to(dtype))
        params = dict(m.named_parameters())
        grads = torch.autograd.grad(out, list(params.values()), gout.to(out.dtype))
        return {"logits": out, **{f"grad {n}": g for n, g in zip(params, grads, strict=True)}}

    with count_launches() as n:
        got = run(fused, dt)
    _assert_kernels_ran(n, "_token", "the fused model")
    _assert_kernels_ran(n, "_channel", "the fused model")
    _judge(got, run(ref64, torch.float64), run(eager, dt))


# -------------------------------------------------------------------------------------------------
# CUDA graphs (after warm-up; no new compilation).

def _block_fn(x, n1w, n1b, t1w, t1b, t2w, t2b, n2w, n2b, c1w, c1b, c2w, c2b):
    import mixer_kernels
    y = mixer_kernels.token_mixing(x, n1w, n1b, t1w, t1b, t2w, t2b)
    return mixer_kernels.channel_mixing(y, n2w, n2b, c1w, c1b, c2w, c2b)


def _block_inputs(dtype, B=4):
    """x [B, S, C] and the twelve parameters of a B/16 block, away from init."""
    x = 0.5 + 2.0 * torch.randn(B, S, C, dtype=torch.float64)
    params = [*layernorm_params(C, torch.float64), *linear_params(DS, S, torch.float64),
              *linear_params(S, DS, torch.float64), *layernorm_params(C, torch.float64),
              *linear_params(DC, C, torch.float64), *linear_params(C, DC, torch.float64)]
    return _leaves([t.to(DEVICE) for t in (x, *params)], dtype)


def _capture(fn):
    """Warm up on a side stream, then capture fn() in a CUDA graph; returns (graph, static outputs,
    launch counts during capture)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with count_launches() as n, torch.cuda.graph(g):
        static = fn()
    return g, static, n


@pytest.mark.parametrize("mode", ["infer", "fwd+bwd"])
def test_cuda_graph_block(mode):
    """Both ops captured in a CUDA graph after warm-up (no host sync, no allocation outside the graph
    pool); a replay on new inputs equals an ordinary call bitwise."""
    leaves = _block_inputs(torch.bfloat16)
    gout = torch.randn(leaves[0].shape, device=DEVICE, dtype=torch.bfloat16)

    def fn():
        if mode == "infer":
            with torch.no_grad():
                return (_block_fn(*leaves),)
        out = _block_fn(*leaves)
        return (out, *torch.autograd.grad(out, leaves, gout))

    g, static, n = _capture(fn)
    _assert_kernels_ran(n, "_token", "CUDA-graph capture")
    _assert_kernels_ran(n, "_channel", "CUDA-graph capture")
    before = static[0].clone()
    fresh = _block_inputs(torch.bfloat16)
    with torch.no_grad():
        for dst, src in zip(leaves, fresh, strict=True):
            dst.copy_(src)
    g.replay()
    torch.cuda.synchronize()
    assert not torch.equal(before, static[0]), "graph replay did not recompute the output from the new inputs"
    expected = fn()
    for i, (a, b) in enumerate(zip(static, expected, strict=True)):
        assert torch.equal(a, b), f"output {i}: graph replay differs from a direct call by {rel_err(a, b):.3g}"


def test_cuda_graph_fused_timm_model():
    """Inference of a fused timm model (B/16 widths, 2 blocks) captured in a CUDA graph."""
    import mixer_kernels
    model = mixer_kernels.fuse_mixer_blocks(_timm_model(num_blocks=2)).to(torch.bfloat16).eval()
    images = torch.randn(4, 3, IMG, IMG, device=DEVICE, dtype=torch.bfloat16)

    def fn():
        with torch.no_grad():
            return model(images)

    g, static, n = _capture(fn)
    _assert_kernels_ran(n, "_token", "CUDA-graph capture of the fused model")
    before = static.clone()
    images.copy_(torch.randn_like(images))
    g.replay()
    torch.cuda.synchronize()
    assert not torch.equal(before, static), "graph replay did not recompute the logits from the new images"
    # The stem and head run cuDNN/cuBLAS, whose algorithm under capture may differ: a tolerance, not equality.
    err = rel_err(static, fn())
    assert err <= 1e-2, f"graph replay of the fused model differs from a direct call by {err:.3g}"


# -------------------------------------------------------------------------------------------------
# torch.compile (inductor compiles the rest of the graph: tens of seconds cold).

def test_compile_fullgraph_block():
    """torch.compile(fullgraph=True) over both ops, forward and backward: no graph break, the kernels
    run, results within docs/design.md, "Accuracy: how the tests judge"."""
    leaves = _block_inputs(torch.bfloat16)
    gout = torch.randn(leaves[0].shape, device=DEVICE, dtype=torch.bfloat16)
    compiled = torch.compile(_block_fn, fullgraph=True)
    with count_launches() as n:
        out = compiled(*leaves)
        grads = torch.autograd.grad(out, leaves, gout)
    _assert_kernels_ran(n, "_token", "the compiled block")
    _assert_kernels_ran(n, "_channel", "the compiled block")
    ref_leaves = _leaves([t.double() for t in leaves])
    ref_out = oracle.mixer_block(*ref_leaves)
    ref_grads = torch.autograd.grad(ref_out, ref_leaves, gout.double())
    e_leaves = _leaves(leaves)
    e_out = oracle.mixer_block(*e_leaves)
    e_grads = torch.autograd.grad(e_out, e_leaves, gout)
    names = [f"grad {i}" for i in range(len(leaves))]
    _judge(dict(out=out, **dict(zip(names, grads, strict=True))),
           dict(out=ref_out, **dict(zip(names, ref_grads, strict=True))),
           dict(out=e_out, **dict(zip(names, e_grads, strict=True))))


def test_compile_fullgraph_fused_timm_model():
    """A fused timm model (B/16 widths, 2 blocks) under torch.compile(fullgraph=True), training step."""
    import mixer_kernels
    model = mixer_kernels.fuse_mixer_blocks(_timm_model(num_blocks=2)).to(torch.bfloat16)
    images = torch.randn(2, 3, IMG, IMG, device=DEVICE, dtype=torch.bfloat16)
    expected = model(images)
    compiled = torch.compile(model, fullgraph=True)
    with count_launches() as n:
        out = compiled(images)
        out.float().square().sum().backward()
    _assert_kernels_ran(n, "_token", "the compiled fused model")
    _assert_kernels_ran(n, "_channel", "the compiled fused model")
    assert rel_err(out, expected) <= 2e-2, f"compiled fused model differs from uncompiled by {rel_err(out, expected)}"
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
