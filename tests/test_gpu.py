"""The compiled kernels on a CUDA device at real Mixer shapes: `pytest -m gpu` (skipped without CUDA).

Every public function and module, fp32/fp16/bf16, forward and every gradient against a float64
reference judged by tests/helpers.assert_close (docs/design.md, "Accuracy: how the tests judge"), plus
torch.compile(fullgraph=True) and
CUDA-graph capture, with the launch counter proving the Triton kernels ran. Small batches keep it fast:
the shapes that matter are S, C, DS, DC (paper Table 1 at 224 px, patch 16).
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, count_launches, layernorm_params, linear_params, perturb_, rel_err

pytestmark = pytest.mark.gpu
DEVICE = "cuda"      # constants, so the test logic can be dry-run on CPU through the interpreter
IMG = 224

# name -> (S, C, DS, DC), batch
SHAPES = {"S/16": (196, 512, 256, 2048), "B/16": (196, 768, 384, 3072), "L/16": (196, 1024, 512, 4096)}
BATCH = {"S/16": 4, "B/16": 4, "L/16": 2}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
GRAD_NAMES = ("x", "norm_weight", "norm_bias", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")
KERNEL_PREFIX = {"token": "_token", "channel": "_channel"}


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


# -------------------------------------------------------------------------------------------------
# The math, written out (docs/design.md, "The block"): float64 for the reference, the test dtype for eager.

def _residual(x, branch, sample_scale):
    return x + (branch if sample_scale is None else branch * sample_scale.to(branch.dtype)[:, None, None])


def token_math(x, nw, nb, w1, b1, w2, b2, eps=1e-6, approximate="none", sample_scale=None):
    t = F.layer_norm(x, (x.shape[-1],), nw, nb, eps).transpose(1, 2)
    branch = F.linear(F.gelu(F.linear(t, w1, b1), approximate=approximate), w2, b2).transpose(1, 2)
    return _residual(x, branch, sample_scale)


def channel_math(x, nw, nb, w1, b1, w2, b2, eps=1e-6, approximate="none", sample_scale=None):
    h = F.layer_norm(x, (x.shape[-1],), nw, nb, eps)
    return _residual(x, F.linear(F.gelu(F.linear(h, w1, b1), approximate=approximate), w2, b2), sample_scale)


def _op(kind):
    import mixer_kernels
    return (mixer_kernels.token_mixing, token_math) if kind == "token" else (mixer_kernels.channel_mixing, channel_math)


def _inputs64(kind, shape, B=None):
    """x and the six parameters in float64 on the GPU, away from init."""
    S, C, DS, DC = SHAPES[shape]
    B = B or BATCH[shape]
    n, h = (S, DS) if kind == "token" else (C, DC)
    x = 0.5 + 2.0 * torch.randn(B, S, C, dtype=torch.float64)
    params = [*layernorm_params(C, torch.float64), *linear_params(h, n, torch.float64),
              *linear_params(n, h, torch.float64)]
    return [t.to(DEVICE) for t in (x, *params)]


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
        out, ref, eager = named_outs[name], named_refs[name], named_eager.get(name)
        if ref.detach().double().norm().item() <= 1e-9 * scale:
            size = out.detach().double().norm().item()
            bound = max(10 * eager.detach().double().norm().item() if eager is not None else 0.0, 1e-4 * scale)
            if not size <= bound:
                failures.append(f"{name}: zero in exact arithmetic, got norm {size:.3g} > {bound:.3g}")
            continue
        try:
            assert_close(name, out, ref, eager)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n".join(failures)


def _run_and_judge(kind, shape, dtype, approximate="none", noncontiguous=False, sample_scale=False, **kwargs):
    op, math = _op(kind)
    ins64 = _inputs64(kind, shape)
    scale = None
    if sample_scale:      # drop_path's per-sample factors: dropped (0) or kept and scaled by 1/keep
        scale = torch.tensor([0.0, 1.25, 1.25, 0.0, 1.25, 1.25][:ins64[0].shape[0]], device=DEVICE).to(dtype)
        kwargs["sample_scale"] = scale
    leaves = _leaves(ins64, dtype)
    if noncontiguous:        # x as a [B, S, C] view of a [B, C, S] buffer: channel stride S, token stride 1
        xbuf = leaves[0].detach().transpose(1, 2).contiguous().requires_grad_(True)
        x_in = xbuf.transpose(1, 2)
        assert not x_in.is_contiguous()
    else:
        xbuf = x_in = leaves[0]
    gout = torch.randn(x_in.shape, device=DEVICE, dtype=torch.float64).to(dtype)
    with count_launches() as fwd:
        out = op(x_in, *leaves[1:], approximate=approximate, **kwargs)
    _assert_kernels_ran(fwd, KERNEL_PREFIX[kind], "the forward")
    assert out.dtype == dtype and out.shape == x_in.shape
    with count_launches() as bwd:
        grads = torch.autograd.grad(out, [xbuf, *leaves[1:]], gout)
    _assert_kernels_ran(bwd, KERNEL_PREFIX[kind], "the backward")
    if noncontiguous:
        grads = (grads[0].transpose(1, 2), *grads[1:])

    ref_leaves = _leaves([t.double() for t in leaves])     # the reference sees the rounded inputs
    ref_out = math(*ref_leaves, approximate=approximate, sample_scale=None if scale is None else scale.double())
    ref_grads = torch.autograd.grad(ref_out, ref_leaves, gout.double())
    eager_leaves = _leaves(leaves)
    eager_out = math(*eager_leaves, approximate=approximate, sample_scale=scale)
    eager_grads = torch.autograd.grad(eager_out, eager_leaves, gout)

    _judge(dict(out=out, **{f"grad {n}": g for n, g in zip(GRAD_NAMES, grads, strict=True)}),
           dict(out=ref_out, **{f"grad {n}": g for n, g in zip(GRAD_NAMES, ref_grads, strict=True)}),
           dict(out=eager_out, **{f"grad {n}": g for n, g in zip(GRAD_NAMES, eager_grads, strict=True)}))


# -------------------------------------------------------------------------------------------------
# The functions: every shape and dtype, forward and every gradient (first: the broadest check).

@pytest.mark.parametrize("dtype", DTYPES, ids=list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES)
def test_token_mixing(shape, dtype):
    _run_and_judge("token", shape, DTYPES[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES)
def test_channel_mixing(shape, dtype):
    _run_and_judge("channel", shape, DTYPES[dtype])


# -------------------------------------------------------------------------------------------------
# Cheap checks on the same compiled kernels (nothing new to compile): statistics, determinism.

@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm_stats(shape):
    from mixer_kernels.ops.layernorm_stats import layernorm_stats
    S, C, _, _ = SHAPES[shape]
    x = (3.0 + 2.0 * torch.randn(BATCH[shape], S, C, device=DEVICE)).to(torch.bfloat16)
    with count_launches() as n:
        mean, rstd = layernorm_stats(x, 1e-6)
    assert n["_layernorm_stats_kernel"] == 1
    x64 = x.double()
    torch.testing.assert_close(mean.double(), x64.mean(-1).reshape(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rstd.double(), (x64.var(-1, unbiased=False) + 1e-6).rsqrt().reshape(-1),
                               rtol=1e-5, atol=0)


@pytest.mark.parametrize("kind", ["token", "channel"])
def test_backward_is_deterministic(kind):
    # Batch 64 (M = 12544 rows): the paths only large batches take, here within the first minutes of a
    # time-limited run: the channel weight gradients split K = M into row ranges (at the other tests'
    # M <= 1568 they do not split), and each LayerNorm-backward program loops over several row blocks.
    op, _ = _op(kind)
    leaves = _leaves(_inputs64(kind, "B/16", B=64), torch.bfloat16)
    gout = torch.randn(leaves[0].shape, device=DEVICE, dtype=torch.bfloat16)
    runs = [torch.autograd.grad(op(*leaves), leaves, gout) for _ in range(2)]
    for name, a, b in zip(GRAD_NAMES, *runs, strict=True):
        assert torch.equal(a, b), f"grad {name}: two backward runs differ (max {(a - b).abs().max().item():.3g})"


# -------------------------------------------------------------------------------------------------
# The modules.

def _reference_block(shape):
    from reference.mlp_mixer import MixerBlock as RefBlock
    S, C, _, _ = SHAPES[shape]
    return perturb_(RefBlock(C, S)).to(DEVICE)


@pytest.mark.parametrize("dtype", DTYPES, ids=list(DTYPES))
def test_mixer_block_module(dtype):
    """mixer_kernels.MixerBlock loads the reference block's state_dict and matches it."""
    import mixer_kernels
    dt = DTYPES[dtype]
    S, C, _, _ = SHAPES["B/16"]
    ref_block = _reference_block("B/16")
    fused = mixer_kernels.MixerBlock(C, S).to(DEVICE)
    fused.load_state_dict(ref_block.state_dict(), strict=True)
    fused.to(dt)
    eager = copy.deepcopy(ref_block).to(dt)
    ref64 = copy.deepcopy(ref_block).double()
    x = (0.5 + 2.0 * torch.randn(BATCH["B/16"], S, C, device=DEVICE, dtype=torch.float64)).to(dt)
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


def _block_math(x, n1w, n1b, t1w, t1b, t2w, t2b, n2w, n2b, c1w, c1b, c2w, c2b):
    return channel_math(token_math(x, n1w, n1b, t1w, t1b, t2w, t2b), n2w, n2b, c1w, c1b, c2w, c2b)


def _block_inputs(dtype, B=4):
    tok = _inputs64("token", "B/16", B)
    ch = _inputs64("channel", "B/16", B)[1:]
    return _leaves([*tok, *ch], dtype)


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
# Variants of the functions that compile little: strides, autocast, recompute.

@pytest.mark.parametrize("kind", ["token", "channel"])
def test_noncontiguous_x(kind):
    _run_and_judge(kind, "B/16", torch.bfloat16, noncontiguous=True)


@pytest.mark.parametrize("kind", ["token", "channel"])
def test_autocast_bf16(kind):
    """fp32 tensors under torch.autocast(bfloat16): as close to float64 as eager under autocast is."""
    op, math = _op(kind)
    ins64 = _inputs64(kind, "B/16")
    leaves = _leaves(ins64, torch.float32)
    with torch.autocast(DEVICE, dtype=torch.bfloat16), count_launches() as n:
        out = op(*leaves)
    _assert_kernels_ran(n, KERNEL_PREFIX[kind], "an autocast forward")
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        eager = math(*_leaves(leaves))
    assert out.dtype == eager.dtype, f"autocast output dtype {out.dtype}, eager gives {eager.dtype}"
    ref = math(*[t.double() for t in leaves])
    err, eager_err = rel_err(out, ref), rel_err(eager, ref)
    assert err <= 2 * eager_err + 1e-3, f"autocast: relative error {err:.3g} > 2 x eager's {eager_err:.3g} + 1e-3"


@pytest.mark.parametrize("dtype", DTYPES, ids=list(DTYPES))
def test_channel_mixing_recompute(dtype):
    _run_and_judge("channel", "B/16", DTYPES[dtype], recompute=True)


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
    ref_out = _block_math(*ref_leaves)
    ref_grads = torch.autograd.grad(ref_out, ref_leaves, gout.double())
    e_leaves = _leaves(leaves)
    e_out = _block_math(*e_leaves)
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


# -------------------------------------------------------------------------------------------------
# Variants that compile every kernel again (new constexprs; fp32's FMA dots compile slowest): last,
# so that a run stopped by gpu_check.sh's time limit loses these first; bf16 before fp32.

@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("kind", ["token", "channel"])
def test_tanh_gelu(kind, dtype):
    _run_and_judge(kind, "B/16", DTYPES[dtype], approximate="tanh")


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("kind", ["token", "channel"])
def test_sample_scale(kind, dtype):
    """drop_path's per-sample scale, applied to the branch before the residual."""
    _run_and_judge(kind, "B/16", DTYPES[dtype], sample_scale=True)
