"""Fused token mixing (ops/token_mixing.py) through the public `mixer_kernels.token_mixing`, judged against
float64 (reference/ops.py; docs/design.md, "Accuracy: how the tests judge"). Without a GPU the Triton kernels
run under the interpreter on CPU tensors, so the shapes are small (the big token counts 196, 197, 576 come
with few channels); on a GPU the accuracy tests take real Mixer sizes instead (helpers.by_device: one
shape list per test, the real sizes marked gpu)."""
import os
import subprocess
import sys

import pytest
import torch
from helpers import (
    COMPILE_BACKENDS,
    LOWP_ATOL,
    LOWP_FACTOR,
    assert_close,
    by_device,
    count_launches,
    layernorm_params,
    linear_params,
    rel_err,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import mixer_kernels
from mixer_kernels.ops import token_mixing as tm
from reference import ops as oracle

NAMES = ("x", "norm_weight", "norm_bias", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")
# fp16/bf16 (or tf32) with S <= 256: the token-major kernels (ops/_token_kernels.py), weight gradients from GEMMs
FAST_FWD_KERNELS = ("_layernorm_stats_kernel", "_token_mixing_fwd_tm_kernel")
FAST_BWD_KERNELS = ("_token_mixing_bwd_dt_tm_kernel", "_layernorm_bwd_kernel")
# S > 256 in every dtype, and ieee fp32 at every S: the large-S GEMM path (ops/_token_large_kernels.py;
# tests/test_token_mixing_large.py)
LARGE_FWD = {"_token_large_ln_kernel": 1, "_token_large_gemm_kernel": 2}
LARGE_BWD = {"_token_large_ln_kernel": 1, "_token_large_dual_kernel": 1, "_token_large_gemm_kernel": 1,
             "_layernorm_bwd_kernel": 1}


def make_inputs(B, S, C, DS, dtype=torch.float32, device="cpu", x=None):
    """x (mean away from 0), LayerNorm and fc parameters away from their init."""
    if x is None:
        x = (0.3 + torch.randn(B, S, C, dtype=torch.float64)).to(device=device, dtype=dtype)
    nw, nb = layernorm_params(C, dtype, device)
    w1, b1 = linear_params(DS, S, dtype, device)
    w2, b2 = linear_params(S, DS, dtype, device)
    return [x, nw, nb, w1, b1, w2, b2]


def leaves(tensors, dtype=None):
    return [t.detach().to(dtype or t.dtype).requires_grad_() for t in tensors]


def reference(inputs, dy, approximate="none", sample_scale=None, eps=1e-6):
    """Output and the 7 gradients in float64 (the oracle, reference/ops.py)."""
    return oracle.forward_backward(oracle.token_mixing, inputs, dy, sample_scale=sample_scale, eps=eps,
                                approximate=approximate)


def eager(inputs, dy, approximate="none", sample_scale=None):
    """Output and gradients of eager PyTorch (the oracle's math) in the inputs' own dtype."""
    return oracle.forward_backward(oracle.token_mixing, inputs, dy, dtype=None, sample_scale=sample_scale,
                                approximate=approximate)


def run(inputs, dy, **kw):
    p = leaves(inputs)
    out = mixer_kernels.token_mixing(*p, **kw)
    out.backward(dy)
    return out.detach(), [t.grad for t in p]


def check_all(out, grads, ref_out, ref_grads, eager_out=None, eager_grads=None):
    assert_close("out", out, ref_out, eager_out)
    for i, name in enumerate(NAMES):
        assert grads[i] is not None, name
        assert grads[i].dtype == out.dtype or name != "x"
        assert_close(f"d{name}", grads[i], ref_grads[i], None if eager_grads is None else eager_grads[i])


# Real sizes for the GPU (paper Table 1 at 224 px, patch 16: S = 196): (B, S, C, DS) of S/16, B/16, L/16.
S16, B16, L16 = (4, 196, 512, 256), (4, 196, 768, 384), (2, 196, 1024, 512)

# --------------------------------------------------------------------------------------------------
# fp32 (ieee dots: the default "highest") against float64: S in {1, 49, 196, 197, 576}, C in {8, 40, 130}, DS
# never a power of two, both GELUs; every S runs the large-S GEMM path with FMA dots (launches counted). On a
# GPU: S/16, B/16, L/16 (and B/16 with the tanh GELU).

@pytest.mark.parametrize("B,S,C,DS,approximate", by_device([
    (2, 1, 8, 24, "none"),
    (2, 49, 40, 24, "tanh"),
    (1, 49, 130, 36, "none"),
    (1, 196, 8, 20, "tanh"),
    (1, 197, 40, 36, "none"),
    (1, 576, 8, 20, "none"),      # S > 256
], [(*S16, "none"), (*B16, "none"), (*L16, "none"), (*B16, "tanh")]))
def test_fp32(device, B, S, C, DS, approximate):
    inputs = make_inputs(B, S, C, DS, device=device)
    dy = torch.randn(B, S, C, device=device)
    p = leaves(inputs)
    if device == "cuda":      # the first call autotunes (many launches); count a later one
        mixer_kernels.token_mixing(*p, approximate=approximate).backward(dy)
        p = leaves(inputs)
    with count_launches() as n_fwd:
        out = mixer_kernels.token_mixing(*p, approximate=approximate)
    assert dict(n_fwd) == LARGE_FWD     # exactly these launches
    with count_launches() as n_bwd:
        out.backward(dy)
    assert dict(n_bwd) == LARGE_BWD
    assert out.dtype == torch.float32 and out.shape == (B, S, C)
    ref_out, ref_grads = reference(inputs, dy, approximate)
    check_all(out.detach(), [t.grad for t in p], ref_out, ref_grads)


# --------------------------------------------------------------------------------------------------
# fp16 / bf16: within 2x eager PyTorch's error in the same dtype (+ atol), output and every gradient.

@pytest.mark.parametrize("dtype,approximate,shape", by_device([
    (torch.bfloat16, "none", (2, 49, 40, 24)),
    (torch.bfloat16, "tanh", (1, 197, 8, 36)),
    (torch.float16, "none", (1, 196, 8, 20)),
    (torch.float16, "tanh", (2, 49, 40, 24)),
], [(dt, "none", shape) for shape in (S16, B16, L16) for dt in (torch.bfloat16, torch.float16)]
   + [(torch.bfloat16, "tanh", B16)]))
def test_low_precision(device, dtype, approximate, shape):
    B, S, C, DS = shape
    inputs = make_inputs(B, S, C, DS, dtype, device)
    dy = torch.randn(B, S, C, device=device).to(dtype)
    out, grads = run(inputs, dy, approximate=approximate)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    ref_out, ref_grads = reference(inputs, dy, approximate)
    e_out, e_grads = eager(inputs, dy, approximate)
    check_all(out, grads, ref_out, ref_grads, e_out, e_grads)


@pytest.mark.parametrize("dtype,shape,layout", [
    (torch.bfloat16, (2, 197, 130, 36), "contiguous"),     # masked channel tile, DS padded to 64
    (torch.bfloat16, (1, 256, 8, 72), "transposed"),       # S = BLOCK_S exactly, two hidden chunks
    (torch.float16, (3, 1, 20, 5), "sliced"),              # one token, tiny DS
])
def test_fast_path(device, dtype, shape, layout):
    """The token-major kernels and the GEMM weight gradients: exactly their launches, odd sizes, views."""
    B, S, C, DS = shape
    if layout == "contiguous":
        x = torch.randn(B, S, C, device=device)
    elif layout == "transposed":
        x = torch.randn(B, C, S, device=device).transpose(1, 2)
    else:
        x = torch.randn(B + 1, S + 2, 2 * C, device=device)[1:, 2:, ::2]
    inputs = make_inputs(B, S, C, DS, dtype, device, x=(x + 0.3).to(dtype))
    dy = torch.randn(B, C, S, device=device).transpose(1, 2).to(dtype)
    p = leaves(inputs)
    if device == "cuda":      # the first call autotunes (many launches); count a later one
        mixer_kernels.token_mixing(*p).backward(dy)
        p = leaves(inputs)
    with count_launches() as n_fwd:
        out = mixer_kernels.token_mixing(*p)
    assert dict(n_fwd) == {k: 1 for k in FAST_FWD_KERNELS}
    with count_launches() as n_bwd:
        out.backward(dy)
    assert dict(n_bwd) == {k: 1 for k in FAST_BWD_KERNELS}
    ref_out, ref_grads = reference(inputs, dy)
    e_out, e_grads = eager(inputs, dy)
    check_all(out.detach(), [t.grad for t in p], ref_out, ref_grads, e_out, e_grads)


@pytest.mark.parametrize("B,S,C,DS,approximate", [
    (2, 49, 40, 24, "tanh"),
    (1, 197, 40, 36, "none"),       # masked channel tile, DS padded to 64
    (1, 256, 8, 72, "none"),        # S = BLOCK_S exactly, two hidden chunks
])
def test_fp32_tf32_takes_fast_path(device, B, S, C, DS, approximate):
    """fp32 with tf32 dots allowed (torch.set_float32_matmul_precision("high")) runs the token-major kernels
    (wgmma on sm_90) and the GEMM weight gradients: exactly their launches. Against float64 at fp32
    tolerance where the dots are exact (the interpreter); on a GPU within 2x eager's error under tf32."""
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        inputs = make_inputs(B, S, C, DS, device=device)
        dy = torch.randn(B, S, C, device=device)
        p = leaves(inputs)
        with count_launches() as n_fwd:
            out = mixer_kernels.token_mixing(*p, approximate=approximate)
        assert dict(n_fwd) == {k: 1 for k in FAST_FWD_KERNELS}
        with count_launches() as n_bwd:
            out.backward(dy)
        assert dict(n_bwd) == {k: 1 for k in FAST_BWD_KERNELS}
        # on a GPU eager's own matmuls run tf32 too: the 2x rule against it
        e_out, e_grads = eager(inputs, dy, approximate) if device == "cuda" else (None, None)
    finally:
        torch.set_float32_matmul_precision(old)
    assert out.dtype == torch.float32
    ref_out, ref_grads = reference(inputs, dy, approximate)
    check_all(out.detach(), [t.grad for t in p], ref_out, ref_grads, e_out, e_grads)


def test_fast_path_frozen_weights_and_offsets(device, monkeypatch):
    """bf16 without fc weight gradients (the dT kernel skips its stores) and with 64-bit offsets forced."""
    monkeypatch.setattr(tm, "_off64", lambda *t: True)
    inputs = make_inputs(2, 49, 40, 24, torch.bfloat16, device)
    dy = torch.randn(2, 49, 40, device=device).to(torch.bfloat16)
    p = [t.detach().clone().requires_grad_(i < 3) for i, t in enumerate(inputs)]
    out = mixer_kernels.token_mixing(*p, approximate="tanh")
    out.backward(dy)
    ref_out, ref_grads = reference(inputs, dy, "tanh")
    e_out, e_grads = eager(inputs, dy, "tanh")
    assert_close("out", out.detach(), ref_out, e_out)
    for i in range(3):
        assert_close(f"d{NAMES[i]}", p[i].grad, ref_grads[i], e_grads[i])
    assert all(t.grad is None for t in p[3:])
    out, grads = run(inputs, dy, approximate="tanh")
    check_all(out, grads, ref_out, ref_grads, e_out, e_grads)


def test_fast_path_empty_batch(device):
    p = leaves(make_inputs(0, 49, 8, 20, torch.bfloat16, device))
    out = mixer_kernels.token_mixing(*p)
    assert out.shape == (0, 49, 8)
    out.sum().backward()
    assert all(torch.equal(t.grad, torch.zeros_like(t)) for t in p[1:])


# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("B,S,C,DS", by_device([(3, 49, 40, 24)], [(64, 196, 768, 384)]))   # GPU: B/16 batch 64
def test_backward_deterministic(device, B, S, C, DS):
    """Two backward runs are bitwise equal (no atomics; the dW partitions are summed in fixed order)."""
    inputs = make_inputs(B, S, C, DS, torch.bfloat16, device)
    dy = torch.randn(B, S, C, device=device).to(torch.bfloat16)
    _, g1 = run(inputs, dy)
    _, g2 = run(inputs, dy)
    for name, a, b in zip(NAMES, g1, g2, strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("B,S,C,DS", by_device([(2, 49, 40, 24)], [B16]))
def test_non_contiguous(device, B, S, C, DS):
    """x and dy as transposed, sliced views."""
    base = torch.randn(B, C + 5, S + 3, device=device) + 0.3
    x = base.transpose(1, 2)[:, 1:S + 1, 2:C + 2]              # [B, S, C], stride 1 along S
    assert not x.is_contiguous()
    inputs = make_inputs(B, S, C, DS, device=device, x=x)
    dy = torch.randn(B, C, S, device=device).transpose(1, 2)
    out, grads = run(inputs, dy, approximate="tanh")
    ref_out, ref_grads = reference(inputs, dy, "tanh")
    check_all(out, grads, ref_out, ref_grads)


def test_broadcast_gradient(device):
    """out.sum().backward() hands the backward an expanded dy (all strides 0)."""
    inputs = make_inputs(2, 49, 8, 20, device=device)
    p = leaves(inputs)
    mixer_kernels.token_mixing(*p).sum().backward()
    ref_out, ref_grads = reference(inputs, torch.ones(2, 49, 8, device=device))
    for name, t, r in zip(NAMES, p, ref_grads, strict=True):
        assert_close(f"d{name}", t.grad, r)


def test_strided_parameters(device):
    """Parameters and sample_scale as strided views (e.g. slices of a packed buffer, a transposed weight)."""
    B, S, C, DS = 2, 49, 8, 20
    x, nw, nb, w1, b1, w2, b2 = make_inputs(B, S, C, DS, device=device)
    packed = torch.stack([nw, nb], dim=1)                       # [C, 2]: columns are stride-2 views
    w1_t = w1.t().contiguous().t()                             # [DS, S] with strides (1, DS)
    inputs = [x, packed[:, 0], packed[:, 1], w1_t, b1, w2, b2]
    assert not inputs[1].is_contiguous() and not inputs[3].is_contiguous()
    scale = torch.tensor([0.5, 9.0, 2.0, 9.0], device=device)[::2]
    dy = torch.randn(B, S, C, device=device)
    out, grads = run(inputs, dy, sample_scale=scale)
    ref_out, ref_grads = reference(inputs, dy, sample_scale=scale)
    check_all(out, grads, ref_out, ref_grads)


@pytest.mark.parametrize("B,S,C,DS", by_device([(3, 49, 8, 20)], [B16]))
def test_sample_scale(device, B, S, C, DS):
    """drop_path: each sample's branch is multiplied by its scale (0 drops it); no gradient for the scale."""
    inputs = make_inputs(B, S, C, DS, device=device)
    scale = torch.tensor([0.0, 1.25, 2.0, 1.25][:B], device=device)
    dy = torch.randn(B, S, C, device=device)
    out, grads = run(inputs, dy, sample_scale=scale)
    assert torch.equal(out[0], inputs[0][0])                  # dropped sample: the residual only
    ref_out, ref_grads = reference(inputs, dy, sample_scale=scale)
    check_all(out, grads, ref_out, ref_grads)


@pytest.mark.parametrize("B,S,C,DS", by_device([(2, 49, 8, 20)], [B16]))
def test_sample_scale_low_precision(device, B, S, C, DS):
    inputs = make_inputs(B, S, C, DS, torch.bfloat16, device)
    scale = torch.tensor([0.5, 2.0, 0.0, 1.25][:B], device=device)
    dy = torch.randn(B, S, C, device=device).to(torch.bfloat16)
    out, grads = run(inputs, dy, sample_scale=scale)
    ref_out, ref_grads = reference(inputs, dy, sample_scale=scale)
    e_out, e_grads = eager(inputs, dy, sample_scale=scale)
    check_all(out, grads, ref_out, ref_grads, e_out, e_grads)


def _assert_like_eager(name, out, ref64, eager_out, dtype):
    """Low-precision arithmetic in a higher-precision tensor (autocast): 2x eager's error + atol."""
    assert torch.isfinite(out).all(), name
    err, eager_err = rel_err(out, ref64), rel_err(eager_out, ref64)
    assert err <= LOWP_FACTOR * eager_err + LOWP_ATOL[dtype], f"{name}: {err:.3g} vs eager {eager_err:.3g}"


@pytest.mark.parametrize("B,S,C,DS", by_device([(2, 49, 40, 24)], [B16]))
def test_autocast(device, B, S, C, DS):
    """Under autocast, x and the parameters stay fp32, the matmuls run in bf16 (as eager's nn.Linear),
    the LayerNorm in fp32; output and gradients in the inputs' dtypes, as eager gives them."""
    inputs = make_inputs(B, S, C, DS, device=device)
    dy = torch.randn(B, S, C, device=device)
    p, q = leaves(inputs), leaves(inputs)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        out = mixer_kernels.token_mixing(*p)
        e_out = oracle.token_mixing(*q)
    assert out.dtype == e_out.dtype == torch.float32
    out.backward(dy)
    e_out.backward(dy)
    ref_out, ref_grads = reference(inputs, dy)
    _assert_like_eager("out", out.detach(), ref_out, e_out.detach(), torch.bfloat16)
    for name, a, e, r in zip(NAMES, p, q, ref_grads, strict=True):
        assert a.grad.dtype == e.grad.dtype == torch.float32, name
        _assert_like_eager(f"d{name}", a.grad, r, e.grad, torch.bfloat16)


@pytest.mark.parametrize("precision,expected", [("highest", "ieee"), ("high", "tf32")])
def test_matmul_precision(device, precision, expected):
    """fp32 dots follow torch.get_float32_matmul_precision() (the interpreter computes exact fp32 either
    way; the compiled kernels get the flag)."""
    seen = []
    # ieee: the large-S path's GEMMs (FMA dots, at S = 49 too); tf32: the token-major kernels (ops/_token_kernels.py)
    kernels = (tm.lk._token_large_gemm_kernel, tm.lk._token_large_dual_kernel, tm._token_mixing_fwd_tm_kernel,
               tm._token_mixing_bwd_dt_tm_kernel)
    for k in kernels:
        orig = k.run

        def spy(*args, _orig=orig, **kwargs):
            seen.append(kwargs["INPUT_PRECISION"])
            return _orig(*args, **kwargs)
        k.run = spy
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision(precision)
        inputs = make_inputs(1, 49, 8, 20, device=device)
        dy = torch.randn(1, 49, 8, device=device)
        out, grads = run(inputs, dy)
    finally:
        torch.set_float32_matmul_precision(old)
        for k in kernels:
            del k.run
    # ieee: fc1, fc2, the dual GEMM and dT; tf32: forward and dT (more: GPU autotune)
    assert set(seen) == {expected} and len(seen) >= (4 if expected == "ieee" else 2)
    ref_out, ref_grads = reference(inputs, dy)
    if expected == "ieee" or device == "cpu":
        check_all(out, grads, ref_out, ref_grads)


def test_frozen_weights(device, monkeypatch):
    """ieee fp32 without fc weight gradients: the backward's kernels run, the weight-gradient GEMMs
    (torch.matmul) do not; x and LayerNorm gradients still exact."""
    inputs = make_inputs(2, 49, 8, 20, device=device)
    dy = torch.randn(2, 49, 8, device=device)
    p = [t.detach().clone().requires_grad_(i < 3) for i, t in enumerate(inputs)]
    out = mixer_kernels.token_mixing(*p)
    matmuls, real = [], torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda *a, **k: matmuls.append(1) or real(*a, **k))
    with count_launches() as n:
        out.backward(dy)
    monkeypatch.undo()
    assert n["_token_large_dual_kernel"] >= 1 and n["_layernorm_bwd_kernel"] >= 1 and not matmuls, dict(n)
    ref_out, ref_grads = reference(inputs, dy)
    for i in range(3):
        assert_close(f"d{NAMES[i]}", p[i].grad, ref_grads[i])
    assert all(t.grad is None for t in p[3:])


def test_large_path_small(device):
    """ieee fp32 at S <= 256 takes the large-S path (FMA dots): several row and column tiles and K steps of
    every GEMM, masked edges; no fast-path kernel runs."""
    assert tm._large_path(49, torch.float32, "ieee") and not tm._large_path(49, torch.float32, "tf32")
    inputs = make_inputs(2, 49, 40, 24, device=device)
    dy = torch.randn(2, 49, 40, device=device)
    with count_launches() as n:
        out, grads = run(inputs, dy, approximate="tanh")
    assert n["_token_large_dual_kernel"] >= 1 and not any(n[k] for k in FAST_FWD_KERNELS + FAST_BWD_KERNELS[:1]), \
        dict(n)   # > 1: GPU autotune
    ref_out, ref_grads = reference(inputs, dy, "tanh")
    check_all(out, grads, ref_out, ref_grads)


def test_64bit_offsets():
    """The fast path's launcher switches to 64-bit offsets where a view may address past 2^31 elements
    (the int64 code path runs in test_fast_path_frozen_weights_and_offsets, the switch forced; the large-S
    path's row offsets are 64-bit always)."""
    assert tm._off64(torch.empty(2**12, 2**10, 2**9 + 1, device="meta"))
    assert tm._off64(torch.empty(1, 2, 3, device="meta").as_strided((2, 2, 3), (2**31, 3, 1)))
    assert not tm._off64(torch.empty(256, 196, 768, device="meta"))


def test_saved_activations(device):
    """What autograd keeps for the backward: x and the fp32 row statistics (mean, rstd) besides the
    parameters; nothing of the hidden activation's size (the backward recomputes T, H and A)."""
    B, S, C, DS = 2, 49, 8, 20
    p = leaves(make_inputs(B, S, C, DS, dtype=torch.bfloat16, device=device))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = mixer_kernels.token_mixing(*p)
    params = {t.data_ptr() for t in p[1:]}
    acts = sorted((tuple(t.shape), t.dtype) for t in saved if t.data_ptr() not in params and t.numel() > 0)
    assert acts == sorted([((B * S,), torch.float32), ((B * S,), torch.float32), ((B, S, C), torch.bfloat16)]), acts
    out.sum().backward()
    assert all(t.grad is not None for t in p)


def test_empty_batch(device):
    inputs = make_inputs(0, 49, 8, 20, device=device)
    p = leaves(inputs)
    out = mixer_kernels.token_mixing(*p)
    assert out.shape == (0, 49, 8)
    out.sum().backward()
    assert p[0].grad.shape == (0, 49, 8)
    assert all(torch.equal(t.grad, torch.zeros_like(t)) for t in p[1:])


@pytest.mark.parametrize("backend", COMPILE_BACKENDS)
def test_torch_compile_fullgraph(device, backend):
    """The custom op traces into one graph (fake implementations, registered autograd); forward and
    backward through torch.compile equal the eager kernel call (inductor leaves the op alone)."""
    torch._dynamo.reset()
    inputs = make_inputs(2, 49, 8, 20, device=device)
    dy = torch.randn(2, 49, 8, device=device)

    def fn(x, *params):
        return mixer_kernels.token_mixing(x * 1.0, *params, approximate="tanh").sum(dim=0) * 2.0

    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    p, q = leaves(inputs), leaves(inputs)
    out = compiled(*p)
    out.backward(dy[0])
    ref = fn(*q)
    ref.backward(dy[0])
    assert torch.equal(out, ref)
    for name, a, b in zip(NAMES, p, q, strict=True):
        assert torch.equal(a.grad, b.grad), name
    torch._dynamo.reset()


def test_custom_op_fake_shapes(device):
    """The fake implementations agree with the real ones on shapes and dtypes (torch.library's checker)."""
    inputs = make_inputs(2, 49, 8, 20, device=device)
    torch.library.opcheck(torch.ops.mixer_kernels.token_mixing_fwd.default, (*inputs, 1e-6, False, None),
                          test_utils=("test_schema", "test_faketensor"))
    out, mean, rstd = torch.ops.mixer_kernels.token_mixing_fwd(*inputs, 1e-6, False, None)
    dy = torch.randn_like(out)
    torch.library.opcheck(torch.ops.mixer_kernels.token_mixing_bwd.default,
                          (dy, inputs[0], mean, rstd, *inputs[1:6], 1e-6, False, None, True),
                          test_utils=("test_schema", "test_faketensor"))


def test_cpu_without_interpreter_takes_torch_path():
    """Without TRITON_INTERPRET, CPU tensors run the plain PyTorch path (no Triton launch)."""
    code = ("import torch, mixer_kernels\n"
            "from mixer_kernels.torch_math import token_mixing_torch\n"
            "x = torch.randn(2, 5, 8); a = [torch.randn(8), torch.randn(8), torch.randn(6, 5), torch.randn(6),"
            " torch.randn(5, 6), torch.randn(5)]\n"
            "assert torch.equal(mixer_kernels.token_mixing(x, *a), token_mixing_torch(x, *a))\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


# --------------------------------------------------------------------------------------------------
# Bad input: ValueError/TypeError naming the argument, before any kernel runs.

def _bad_cases():
    B, S, C, DS = 2, 7, 8, 6
    good = make_inputs(B, S, C, DS)
    x, nw, nb, w1, b1, w2, b2 = good
    cases = {
        "x rank": (ValueError, "x", [x[0], nw, nb, w1, b1, w2, b2]),
        "x integer": (TypeError, "x", [x.to(torch.int32), nw, nb, w1, b1, w2, b2]),
        "norm_weight shape (C)": (ValueError, "norm_weight", [x, torch.ones(C + 1), nb, w1, b1, w2, b2]),
        "norm_bias rank": (ValueError, "norm_bias", [x, nw, nb[None], w1, b1, w2, b2]),
        "fc1_weight S mismatch": (ValueError, "fc1_weight", [x, nw, nb, torch.randn(DS, S + 1), b1, w2, b2]),
        "fc1_weight rank": (ValueError, "fc1_weight", [x, nw, nb, w1[None], b1, w2, b2]),
        "fc1_bias DS mismatch": (ValueError, "fc1_bias", [x, nw, nb, w1, torch.randn(DS + 1), w2, b2]),
        "fc2_weight DS mismatch": (ValueError, "fc2_weight", [x, nw, nb, w1, b1, torch.randn(S, DS + 1), b2]),
        "fc2_weight S mismatch": (ValueError, "fc2_weight", [x, nw, nb, w1, b1, torch.randn(S + 1, DS), b2]),
        "fc2_bias S mismatch": (ValueError, "fc2_bias", [x, nw, nb, w1, b1, w2, torch.randn(S + 1)]),
        "integer weight": (TypeError, "fc1_weight", [x, nw, nb, w1.to(torch.int64), b1, w2, b2]),
        "dtype mismatch": (TypeError, "fc2_weight", [x, nw, nb, w1, b1, w2.half(), b2]),
        "LN dtype mismatch": (TypeError, "norm_weight", [x, nw.double(), nb, w1, b1, w2, b2]),
        "device mismatch": (ValueError, "fc1_bias", [x, nw, nb, w1, b1.to("meta"), w2, b2]),
        "not a tensor": (TypeError, "norm_bias", [x, nw, nb.tolist(), w1, b1, w2, b2]),
    }
    return cases


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input(case):
    exc, name, args = _bad_cases()[case]
    with count_launches() as n:
        with pytest.raises(exc, match=name):
            mixer_kernels.token_mixing(*args)
    assert sum(n.values()) == 0


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(approximate="exact"), ValueError, "approximate"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(eps=-1e-5), ValueError, "eps"),
    (dict(sample_scale=torch.ones(3)), ValueError, "sample_scale"),
    (dict(sample_scale=torch.ones(2, dtype=torch.int64)), TypeError, "sample_scale"),
    (dict(recompute="yes"), TypeError, "recompute: expected a bool, got str"),
    (dict(recompute=1), TypeError, "recompute: expected a bool, got int"),
])
def test_bad_keyword(kwargs, exc, name):
    inputs = make_inputs(2, 7, 8, 6)
    with pytest.raises(exc, match=name):
        mixer_kernels.token_mixing(*inputs, **kwargs)


# --------------------------------------------------------------------------------------------------
# Fuzzing: small shapes (any size >= 1) and layouts.

@settings(max_examples=6, deadline=None, derandomize=True)
@given(B=st.integers(1, 2), S=st.integers(1, 20), C=st.integers(1, 20), DS=st.integers(1, 20),
       layout=st.sampled_from(["contiguous", "transposed", "sliced"]), approximate=st.sampled_from(["none", "tanh"]))
def test_fuzz(B, S, C, DS, layout, approximate):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if layout == "contiguous":
        x = torch.randn(B, S, C, device=device)
    elif layout == "transposed":
        x = torch.randn(B, C, S, device=device).transpose(1, 2)
    else:
        x = torch.randn(B + 1, S + 2, 2 * C, device=device)[1:, 2:, ::2]
    inputs = make_inputs(B, S, C, DS, device=device, x=x + 0.3)
    dy = torch.randn(B, S, C, device=device)
    out, grads = run(inputs, dy, approximate=approximate)
    ref_out, ref_grads = reference(inputs, dy, approximate)
    assert_close("out", out, ref_out)
    for i, name in enumerate(NAMES):
        if name == "norm_weight" and C == 1:    # LN of one channel: xhat == 0, so this gradient is 0
            assert torch.equal(grads[i], torch.zeros_like(grads[i]))
            continue
        assert_close(f"d{name}", grads[i], ref_grads[i])


def test_matches_layer_norm_semantics_eps(device):
    """eps reaches the statistics: a large eps changes the result exactly as F.layer_norm's does."""
    inputs = make_inputs(1, 49, 8, 20, device=device)
    out = mixer_kernels.token_mixing(*inputs, eps=0.5)
    assert_close("out", out, oracle.token_mixing(*(t.double() for t in inputs), 0.5))


def test_sample_scale_gradient(device):
    """A sample_scale that requires grad gets its gradient (a per-sample reduction of dy * branch) on
    the Triton path, as on the plain path; every other gradient stays right."""
    B, S, C, DS = 3, 49, 8, 20
    inputs = make_inputs(B, S, C, DS, device=device)
    scale = torch.tensor([0.0, 1.25, 2.0], device=device)
    dy = torch.randn(B, S, C, device=device)
    p, s = leaves(inputs), scale.clone().requires_grad_()
    with count_launches() as n:
        out = mixer_kernels.token_mixing(*p, sample_scale=s)
        out.backward(dy)
    assert sum(n.values()) >= 4, n                             # the kernels answered, forward and backward
    ref_p, ref_s = leaves(inputs, torch.float64), scale.double().requires_grad_()
    ref_out = oracle.token_mixing(*ref_p, 1e-6, "none", ref_s)
    ref_out.backward(dy.double())
    check_all(out.detach(), [t.grad for t in p], ref_out.detach(), [t.grad for t in ref_p])
    assert s.grad is not None, "sample_scale got no gradient"
    assert_close("dsample_scale", s.grad, ref_s.grad)
