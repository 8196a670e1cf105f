"""The branch-free erf of the GELU epilogues (ops/_gelu.py _erf_and_gauss, gelu_fast, gelu_and_grad_fast)
against float64, run as a kernel (under the interpreter without a GPU; compiled on one)."""
import pytest
import torch
import triton
import triton.language as tl

from mixer_kernels._config import triton_interpret
from mixer_kernels.ops._gelu import _erf_and_gauss, gelu_and_grad_fast, gelu_fast


@triton.jit
def _erf_kernel(X, ERF, EXP, GELU, DGELU, N, INTERPRET: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(X + offs, mask=mask, other=0.0)
    erf, e = _erf_and_gauss(x, INTERPRET)
    tl.store(ERF + offs, erf, mask=mask)
    tl.store(EXP + offs, e, mask=mask)
    tl.store(GELU + offs, gelu_fast(x, False, INTERPRET), mask=mask)
    g, dg = gelu_and_grad_fast(x, False, INTERPRET)
    tl.store(DGELU + offs, dg, mask=mask)
    tl.store(GELU + offs, tl.where(g == gelu_fast(x, False, INTERPRET), g, float("nan")), mask=mask)


def test_fast_erf_and_gelu_against_float64(device):
    x = torch.cat([torch.linspace(-9, 9, 20001), torch.randn(4096) * 3, torch.tensor([0.0, -0.0, 1e-30, -1e-30])])
    x = x.to(device=device, dtype=torch.float32)
    erf, e, g, dg = (torch.full_like(x, float("nan")) for _ in range(4))
    _erf_kernel[(triton.cdiv(x.numel(), 1024),)](x, erf, e, g, dg, x.numel(), INTERPRET=triton_interpret(),
                                                 BLOCK=1024)
    x64 = x.double().cpu()
    err = (erf.double().cpu() - torch.erf(x64)).abs().max().item()
    assert err <= 6e-7, err                                       # 5.3e-7 measured in fp32 arithmetic
    assert (e.double().cpu() - torch.exp(-x64 * x64)).abs().max().item() <= 1e-6
    ref = torch.nn.functional.gelu(x64)
    gerr = ((g.double().cpu() - ref).abs() / (x64.abs() + 1e-30)).max().item()
    assert gerr <= 3e-7, gerr                                     # |error| <= 0.5 |x| * erf error
    assert torch.equal(erf.cpu()[x.cpu() == 0], torch.zeros(2))
    x64g = x64.clone().requires_grad_()
    torch.nn.functional.gelu(x64g).sum().backward()
    assert (dg.double().cpu() - x64g.grad).abs().max().item() <= 1e-6


@pytest.mark.parametrize("z", [-3.0, -0.5, 0.0, 0.7, 4.0])
def test_fast_gelu_matches_torch_in_fp32(device, z):
    x = torch.full((16,), z, device=device)
    erf, e, g, dg = (torch.empty_like(x) for _ in range(4))
    _erf_kernel[(1,)](x, erf, e, g, dg, x.numel(), INTERPRET=triton_interpret(), BLOCK=16)
    assert g.cpu()[0].item() == pytest.approx(torch.nn.functional.gelu(torch.tensor(z, dtype=torch.float64)).item(),
                                              abs=3e-7 * abs(z) + 1e-12)
