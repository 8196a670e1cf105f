"""Token mixing's large-S path (S > 256, every dtype; fp32 with tf32 or ieee dots): the LayerNorm kernel
writing the token-major copy and the three token-major GEMM kernels of ops/_token_large_kernels.py,
judged against float64 (reference/ops.py) through the public `mixer_kernels.token_mixing`. Under the
interpreter S is just above 256 with few channels and samples (odd sizes: masked tiles everywhere); on
a GPU B/16 at 384 px (S = 576)."""
import pytest
import torch
from helpers import assert_close, by_device, count_launches
from test_token_mixing import LARGE_BWD, LARGE_FWD, NAMES, check_all, eager, leaves, make_inputs, reference, run

import mixer_kernels
from mixer_kernels.ops import token_mixing as tm
from reference import ops as oracle

OLD_KERNELS = ("_layernorm_stats_kernel", "_token_mixing_fwd_tm_kernel", "_token_mixing_bwd_dt_tm_kernel")   # fast path
B16_384 = (2, 576, 768, 384)


def _counted(p, dy, device, **kw):
    """Forward and backward with the launches of each counted (on a GPU after a first, autotuning call)."""
    if device == "cuda":
        mixer_kernels.token_mixing(*p, **kw).backward(dy)
        p = [t.detach().clone().requires_grad_(t.requires_grad) for t in p]
    with count_launches() as n_fwd:
        out = mixer_kernels.token_mixing(*p, **kw)
    with count_launches() as n_bwd:
        out.backward(dy)
    return out.detach(), p, dict(n_fwd), dict(n_bwd)


@pytest.mark.parametrize("dtype,shape,approximate", by_device([
    (torch.bfloat16, (2, 260, 24, 36), "none"),
    (torch.bfloat16, (1, 293, 17, 20), "tanh"),     # C, DS, S all odd-sized: masked rows, columns and K
    (torch.float16, (3, 257, 8, 33), "none"),
], [(torch.bfloat16, B16_384, "none"), (torch.float16, B16_384, "tanh")]))
def test_low_precision(device, dtype, shape, approximate):
    """Output and every gradient within 2x eager's error in the same dtype; exactly the large-S launches."""
    B, S, C, DS = shape
    inputs = make_inputs(B, S, C, DS, dtype, device)
    dy = torch.randn(B, S, C, device=device).to(dtype)
    out, p, n_fwd, n_bwd = _counted(leaves(inputs), dy, device, approximate=approximate)
    assert n_fwd == LARGE_FWD and n_bwd == LARGE_BWD, (n_fwd, n_bwd)
    assert out.dtype == dtype and all(t.grad.dtype == dtype for t in p)
    ref_out, ref_grads = reference(inputs, dy, approximate)
    e_out, e_grads = eager(inputs, dy, approximate)
    check_all(out, [t.grad for t in p], ref_out, ref_grads, e_out, e_grads)


@pytest.mark.parametrize("precision", ["high", "highest"])
@pytest.mark.parametrize("B,S,C,DS", by_device([(2, 261, 12, 20)], [B16_384]))
def test_fp32(device, B, S, C, DS, precision, monkeypatch):
    """fp32 takes the large-S path with tf32 dots ("high": tf32 wgmma on sm_90) and with exact ones
    ("highest": FMA dots); against float64 at fp32 tolerance where the dots are exact (the interpreter,
    and ieee on a GPU), on a GPU under tf32 within 2x eager's error under tf32."""
    inputs = make_inputs(B, S, C, DS, device=device)
    dy = torch.randn(B, S, C, device=device)
    seen = []
    real = tm._large_kernel_and_meta

    class Spy:   # records each GEMM launch's dot precision
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            launch = self.kernel[grid]

            def call(*args, **kwargs):
                seen.append(kwargs["INPUT_PRECISION"])
                return launch(*args, **kwargs)
            return call

    def spy(kind, kernel, dtype):
        k, meta = real(kind, kernel, dtype)
        return Spy(k), meta
    monkeypatch.setattr(tm, "_large_kernel_and_meta", spy)
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision(precision)
        out, p, n_fwd, n_bwd = _counted(leaves(inputs), dy, device)
        tf32 = precision == "high" and device == "cuda"
        e_out, e_grads = eager(inputs, dy) if tf32 else (None, None)
    finally:
        torch.set_float32_matmul_precision(old)
    assert n_fwd == LARGE_FWD and n_bwd == LARGE_BWD, (n_fwd, n_bwd)
    assert set(seen) == {"tf32" if precision == "high" else "ieee"} and len(seen) >= 4   # 3 GEMMs + the dual
    ref_out, ref_grads = reference(inputs, dy)
    check_all(out, [t.grad for t in p], ref_out, ref_grads, e_out, e_grads)
    assert tm._large_path(257, torch.bfloat16) and not tm._large_path(256, torch.bfloat16)


@pytest.mark.parametrize("B,S,C,DS", by_device([(3, 259, 16, 24)], [(8, 576, 768, 384)]))
def test_backward_deterministic(device, B, S, C, DS):
    """Two backward runs are bitwise equal (no atomics; the weight gradients are cuBLAS GEMMs)."""
    inputs = make_inputs(B, S, C, DS, torch.bfloat16, device)
    dy = torch.randn(B, S, C, device=device).to(torch.bfloat16)
    _, g1 = run(inputs, dy)
    _, g2 = run(inputs, dy)
    for name, a, b in zip(NAMES, g1, g2, strict=True):
        assert torch.equal(a, b), name


def test_sample_scale(device):
    """drop_path: the branch scaled per sample (0 drops it), the gradients scaled the same; bf16."""
    B, S, C, DS = 3, 260, 8, 20
    inputs = make_inputs(B, S, C, DS, torch.bfloat16, device)
    scale = torch.tensor([0.0, 1.25, 2.0], device=device)
    dy = torch.randn(B, S, C, device=device).to(torch.bfloat16)
    out, p, n_fwd, n_bwd = _counted(leaves(inputs), dy, device, sample_scale=scale)
    assert n_fwd == LARGE_FWD and n_bwd == LARGE_BWD
    assert torch.equal(out[0], inputs[0][0])                  # dropped sample: the residual only
    ref_out, ref_grads = reference(inputs, dy, sample_scale=scale)
    e_out, e_grads = eager(inputs, dy, sample_scale=scale)
    check_all(out, [t.grad for t in p], ref_out, ref_grads, e_out, e_grads)


def test_sample_scale_gradient(device):
    """A sample_scale that requires grad gets its gradient; fp32 under tf32 (exact dots here)."""
    B, S, C, DS = 2, 258, 8, 20
    inputs = make_inputs(B, S, C, DS, device=device)
    scale = torch.tensor([0.5, 2.0], device=device)
    dy = torch.randn(B, S, C, device=device)
    p, s = leaves(inputs), scale.clone().requires_grad_()
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        with count_launches() as n:
            out = mixer_kernels.token_mixing(*p, sample_scale=s)
            out.backward(dy)
    finally:
        torch.set_float32_matmul_precision(old)
    assert n["_token_large_dual_kernel"] >= 1 and not any(n[k] for k in OLD_KERNELS), dict(n)
    ref_p, ref_s = leaves(inputs, torch.float64), scale.double().requires_grad_()
    ref_out = oracle.token_mixing(*ref_p, 1e-6, "none", ref_s)
    ref_out.backward(dy.double())
    check_all(out.detach(), [t.grad for t in p], ref_out.detach(), [t.grad for t in ref_p])
    assert_close("dsample_scale", s.grad, ref_s.grad)


def test_non_contiguous(device):
    """x and dy as transposed, sliced views (the LayerNorm kernel and the residual read any strides)."""
    B, S, C, DS = 2, 262, 12, 20
    base = torch.randn(B, C + 5, S + 3, device=device) + 0.3
    x = base.transpose(1, 2)[:, 1:S + 1, 2:C + 2].to(torch.bfloat16)
    assert not x.is_contiguous()
    inputs = make_inputs(B, S, C, DS, torch.bfloat16, device, x=x)
    dy = torch.randn(B, C, S, device=device).transpose(1, 2).to(torch.bfloat16)
    out, p, n_fwd, n_bwd = _counted(leaves(inputs), dy, device, approximate="tanh")
    assert n_fwd == LARGE_FWD and n_bwd == LARGE_BWD
    ref_out, ref_grads = reference(inputs, dy, "tanh")
    e_out, e_grads = eager(inputs, dy, "tanh")
    check_all(out, [t.grad for t in p], ref_out, ref_grads, e_out, e_grads)


def test_frozen_weights_and_empty_batch(device):
    """Without fc weight gradients the dual GEMM skips GELU(H) and no weight-gradient GEMM runs; x and the
    LayerNorm gradients still right. An empty batch gives zero parameter gradients."""
    B, S, C, DS = 2, 260, 8, 20
    inputs = make_inputs(B, S, C, DS, torch.bfloat16, device)
    dy = torch.randn(B, S, C, device=device).to(torch.bfloat16)
    p = [t.detach().clone().requires_grad_(i < 3) for i, t in enumerate(inputs)]
    out, p, n_fwd, n_bwd = _counted(p, dy, device)
    assert n_bwd == LARGE_BWD
    ref_out, ref_grads = reference(inputs, dy)
    e_out, e_grads = eager(inputs, dy)
    for i in range(3):
        assert_close(f"d{NAMES[i]}", p[i].grad, ref_grads[i], e_grads[i])
    assert all(t.grad is None for t in p[3:])
    q = leaves(make_inputs(0, S, C, DS, torch.bfloat16, device))
    out = mixer_kernels.token_mixing(*q)
    assert out.shape == (0, S, C)
    out.sum().backward()
    assert all(torch.equal(t.grad, torch.zeros_like(t)) for t in q[1:])


def test_autocast(device):
    """fp32 parameters under bf16 autocast: the matmuls in bf16 take the large-S path."""
    B, S, C, DS = 2, 260, 8, 20
    inputs = make_inputs(B, S, C, DS, device=device)
    dy = torch.randn(B, S, C, device=device)
    p, q = leaves(inputs), leaves(inputs)
    with count_launches() as n, torch.autocast(device_type=device, dtype=torch.bfloat16):
        out = mixer_kernels.token_mixing(*p)
        e_out = oracle.token_mixing(*q)
    assert n["_token_large_gemm_kernel"] >= 2 and not any(n[k] for k in OLD_KERNELS), dict(n)
    out.backward(dy)
    e_out.backward(dy)
    ref_out, ref_grads = reference(inputs, dy)
    from test_token_mixing import _assert_like_eager
    _assert_like_eager("out", out.detach(), ref_out, e_out.detach(), torch.bfloat16)
    for name, a, e, r in zip(NAMES, p, q, ref_grads, strict=True):
        assert a.grad.dtype == torch.float32, name
        _assert_like_eager(f"d{name}", a.grad, r, e.grad, torch.bfloat16)


def test_torch_compile_fullgraph(device):
    """The same custom ops trace into one graph at S > 256; forward and backward equal the eager call."""
    torch._dynamo.reset()
    inputs = make_inputs(2, 260, 8, 20, torch.bfloat16, device)
    dy = torch.randn(2, 260, 8, device=device).to(torch.bfloat16)

    def fn(x, *params):
        return mixer_kernels.token_mixing(x * 1.0, *params, approximate="tanh") * 2.0

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    p, q = leaves(inputs), leaves(inputs)
    with count_launches() as n:
        out = compiled(*p)
        out.backward(dy)
    assert n["_token_large_dual_kernel"] >= 1, dict(n)
    ref = fn(*q)
    ref.backward(dy)
    assert torch.equal(out, ref)
    for name, a, b in zip(NAMES, p, q, strict=True):
        assert torch.equal(a.grad, b.grad), name
    torch._dynamo.reset()


def test_saved_activations(device):
    """What autograd keeps at S > 256: x and the fp32 row statistics besides the parameters; T_t, GELU(H) and
    the other [*, B*C] buffers are transient (the backward recomputes them)."""
    B, S, C, DS = 2, 260, 8, 20
    p = leaves(make_inputs(B, S, C, DS, torch.bfloat16, device))
    saved = []
    with count_launches() as n, torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = mixer_kernels.token_mixing(*p)
    assert n["_token_large_gemm_kernel"] >= 2, dict(n)
    params = {t.data_ptr() for t in p[1:]}
    acts = sorted((tuple(t.shape), t.dtype) for t in saved if t.data_ptr() not in params and t.numel() > 0)
    assert acts == sorted([((B * S,), torch.float32), ((B * S,), torch.float32), ((B, S, C), torch.bfloat16)]), acts
    out.sum().backward()
    assert all(t.grad is not None for t in p)
