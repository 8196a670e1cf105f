"""LayerNorm row statistics kernel against float64 (small shapes under the interpreter, Mixer widths on a
GPU: helpers.by_device)."""
import pytest
import torch
from helpers import by_device, count_launches

from mixer_kernels.ops.layernorm_stats import layernorm_stats
from reference import ops as oracle


def _ref(x, eps):
    x64 = x.double()
    mean = x64.mean(-1)
    var = x64.var(-1, unbiased=False)
    return mean.reshape(-1), (var + eps).rsqrt().reshape(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B,S,C", by_device([(2, 49, 40), (1, 197, 130), (3, 5, 8), (2, 3, 1100), (1, 1, 1)],
                                           [(4, 196, 512), (4, 196, 768), (2, 196, 1024)]))   # S/16, B/16, L/16
def test_stats_match_float64(device, dtype, B, S, C):
    x = (3.0 + 2.0 * torch.randn(B, S, C, dtype=torch.float64)).to(device=device, dtype=dtype)
    with count_launches() as n:
        mean, rstd = layernorm_stats(x, 1e-6)
    assert n["_layernorm_stats_kernel"] == 1
    assert mean.dtype == rstd.dtype == torch.float32 and mean.shape == (B * S,)
    ref_mean, ref_rstd = _ref(x, 1e-6)   # statistics of the rounded input: only fp32 summation error remains
    torch.testing.assert_close(mean.double().cpu(), ref_mean.cpu(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rstd.double().cpu(), ref_rstd.cpu(), rtol=1e-5, atol=0)


def test_stats_large_mean_is_two_pass_exact(device):
    # A row with a large mean and small spread: one-pass E[x^2]-E[x]^2 would lose everything.
    x = (1000.0 + 0.01 * torch.randn(4, 7, 256, dtype=torch.float64)).to(device=device, dtype=torch.float32)
    mean, rstd = layernorm_stats(x, 1e-12)
    _, ref_rstd = _ref(x, 1e-12)
    torch.testing.assert_close(rstd.double().cpu(), ref_rstd.cpu(), rtol=1e-3, atol=0)


@pytest.mark.parametrize("layout", ["transposed", "sliced", "2d_strided"])
def test_stats_any_strides(device, layout):
    base = torch.randn(3, 40, 33, device=device)
    if layout == "transposed":
        x = base.transpose(1, 2)                      # [3, 33, 40], channel stride 33
    elif layout == "sliced":
        x = base[:, ::2, 1:30]                        # row stride 66, non-unit S stride
    else:
        x = base.reshape(120, 33)[:, 3:20]            # [M, C] with row stride 33
    assert not x.is_contiguous()
    mean, rstd = layernorm_stats(x, 1e-6)
    ref_mean, ref_rstd = _ref(x.contiguous(), 1e-6)
    torch.testing.assert_close(mean.double().cpu(), ref_mean.cpu(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rstd.double().cpu(), ref_rstd.cpu(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype,out_dtype", [(torch.float32, torch.float32), (torch.float32, torch.bfloat16),
                                             (torch.bfloat16, torch.bfloat16)])
@pytest.mark.parametrize("B,S,C", [(2, 13, 40), (2, 3, 1100)])       # one chunk, and the looping form
def test_layernorm_output_and_recompute(device, dtype, out_dtype, B, S, C):
    """layernorm_forward's y (what channel mixing's fc1 reads) against float64 rounded once to the output
    dtype, as eager's LayerNorm output is; layernorm_apply (the backward's recomputation from the saved
    statistics) bitwise equal to it."""
    from mixer_kernels.ops.layernorm_stats import layernorm_apply, layernorm_forward
    x = (3.0 + 2.0 * torch.randn(B, S, C, dtype=torch.float64)).to(device=device, dtype=dtype)
    w = (1.0 + 0.1 * torch.randn(C, dtype=torch.float64)).to(device=device, dtype=dtype)
    b = (0.1 * torch.randn(C, dtype=torch.float64)).to(device=device, dtype=dtype)
    with count_launches() as n:
        y, mean, rstd = layernorm_forward(x, 1e-6, w, b, out_dtype)
    assert n["_layernorm_stats_kernel"] == 1 and y.dtype == out_dtype and y.shape == (B, S, C)
    y64 = oracle.layer_norm(x.double().cpu(), w.double().cpu(), b.double().cpu(), 1e-6)
    err = (y.double().cpu() - y64).abs().max().item()
    # one rounding to the output dtype (plus fp32 arithmetic)
    assert err <= (1e-5 if out_dtype == torch.float32 else 2.0 ** -8 * y64.abs().max().item()), err
    y2 = layernorm_apply(x, mean, rstd, w, b, out_dtype)
    assert torch.equal(y2, y)
