"""The interpreter's out-of-bounds check (tests/bounds_check.py) catches what it is for: a load or store
past the end of a tensor, or outside a strided view, fails; masked-off lanes and in-bounds accesses pass."""
import pytest
import torch
import triton
import triton.language as tl

from mixer_kernels._config import bounds_check

pytestmark = pytest.mark.skipif(not bounds_check(), reason="the bounds check runs under the Triton interpreter only "
                                                           "(and not with MIXER_KERNELS_BOUNDS_CHECK=0)")


@triton.jit
def _copy_kernel(X, Y, N, STRIDE, EXTRA, MASKED: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    if MASKED:
        x = tl.load(X + i * STRIDE, mask=i < N + EXTRA, other=0.0)
        tl.store(Y + i, x, mask=i < N)
    else:
        x = tl.load(X + i * STRIDE)
        tl.store(Y + i, x)


def _run(x, y, n, stride=1, extra=0, masked=True, block=16):
    _copy_kernel[(1,)](x, y, n, stride, extra, MASKED=masked, BLOCK=block)


def test_in_bounds_passes():
    x, y = torch.randn(10), torch.zeros(10)
    _run(x, y, 10)
    assert torch.equal(x, y)


def test_load_past_the_end_fails():
    x, y = torch.randn(10), torch.zeros(16)
    with pytest.raises(Exception, match="_copy_kernel: load of 1 element"):
        _run(x, y, 10, extra=1)      # the mask lets element 10 of a 10-element tensor through


def test_unmasked_store_past_the_end_fails():
    x, y = torch.randn(16), torch.zeros(10)
    with pytest.raises(Exception, match="store of 6 element"):
        _run(x, y, 16, masked=False)


def test_outside_a_strided_view_fails():
    """Inside the storage but outside the view: x[:, 0] of a [10, 2] tensor ends at element 18."""
    base = torch.randn(10, 2)
    x, y = base[:, 0], torch.zeros(10)
    _run(x, y, 10, stride=2)
    assert torch.equal(y, base[:, 0])
    with pytest.raises(Exception, match="load of 1 element"):
        _run(base[:5, 0], y, 5, stride=2, extra=1)    # element 5 of the view: inside base, outside the view
