"""Shared LayerNorm backward kernel against float64 autograd."""
import pytest
import torch
from helpers import assert_close, count_launches, layernorm_params

from mixer_kernels.ops.layernorm_backward import layernorm_backward
from mixer_kernels.ops.layernorm_stats import layernorm_stats
from reference import ops as oracle


def _ref(x, w, b, dn, dres, eps):
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    y = oracle.layer_norm(x64, w64, b64, eps)
    y.backward(dn.double())
    dx = x64.grad + (0 if dres is None else dres.double())
    return dx, w64.grad, b64.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("B,S,C", [(2, 49, 40), (1, 13, 130), (2, 3, 1500), (1, 1, 1)])
@pytest.mark.parametrize("with_residual", [True, False])
def test_layernorm_backward(device, dtype, B, S, C, with_residual):
    x = (0.5 + torch.randn(B, S, C, dtype=torch.float64)).to(device=device, dtype=dtype)
    w, b = layernorm_params(C, dtype, device)
    dn = torch.randn(B, S, C, device=device, dtype=torch.float32)   # as a fused kernel hands it over
    dres = torch.randn(B, S, C, device=device, dtype=dtype) if with_residual else None
    mean, rstd = layernorm_stats(x, 1e-6)
    with count_launches() as n:
        dx, dw, db = layernorm_backward(dn, x, mean, rstd, w, dres)
    assert n["_layernorm_bwd_kernel"] == 1
    assert dx.dtype == dtype and dw.dtype == db.dtype == torch.float32
    ref_dx, ref_dw, ref_db = _ref(x, w, b, dn, dres, 1e-6)
    # The kernel's only rounding besides fp32 sums is dx's final cast; judge fp16/bf16 dx against
    # eager's own result in that dtype.
    if dtype == torch.float32:
        assert_close("dx", dx, ref_dx)
    else:
        xe, we, be = (t.detach().clone().requires_grad_() for t in (x, w, b))
        oracle.layer_norm(xe, we, be, 1e-6).backward(dn.to(dtype))
        eager_dx = xe.grad + (0 if dres is None else dres)
        assert_close("dx", dx, ref_dx, eager_dx)
    assert_close("dweight", dw, ref_dw)
    assert_close("dbias", db, ref_db)


def test_layernorm_backward_strided_and_deterministic(device):
    base = torch.randn(3, 40, 70, device=device)
    x = base.transpose(1, 2)[:, :, 5:37]                  # [3, 70, 32], non-contiguous
    dn = torch.randn(3, 32, 70, device=device).transpose(1, 2)
    w, b = layernorm_params(32, torch.float32, device)
    mean, rstd = layernorm_stats(x, 1e-6)
    out1 = layernorm_backward(dn, x, mean, rstd, w)
    out2 = layernorm_backward(dn, x, mean, rstd, w)
    for a, c in zip(out1, out2, strict=True):
        assert torch.equal(a, c)
    ref = _ref(x, w, b, dn, None, 1e-6)
    for name, a, r in zip(("dx", "dweight", "dbias"), out1, ref, strict=True):
        assert_close(name, a, r)
