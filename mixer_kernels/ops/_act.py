"""SiLU and the SiLU-gated GLU of gMixer (timm's GluMlp with act_layer=nn.SiLU), in fp32, for kernel epilogues.

    GLU:  h = fc1(x) [.., 2H];  x1, x2 = h[.., :H], h[.., H:]  (timm's h.chunk(2, -1))
          g = x1 * SiLU(x2)   (gate_last=True, timm's default)   or   SiLU(x1) * x2   (gate_last=False)
    SiLU(u) = u * sigmoid(u),  SiLU'(u) = sigmoid(u) * (1 + u * (1 - sigmoid(u)))

Branch-free sigmoid: 1 / (1 + 2^(-u * log2(e))) with the MUFU reciprocal and exp2 of ops/_gelu.py
(rcp.approx.ftz, ex2.approx.ftz: ~1-2 ulp each, no range fix-ups), about 5 instructions where tl.sigmoid's
libdevice path issues a full-precision division. Limits are exact for finite u: below about -88 the exp2
overflows to inf and 1 / inf = 0 (SiLU = u * 0 = 0, SiLU' = 0 * (1 + u) = 0, no inf * 0); above about 104 it
underflows to 0 and sigmoid = 1. (u = -inf gives SiLU = -inf * 0 = nan, as torch.nn.functional.silu does.)
Measured against float64 over [-100, 100] (tests/test_gmixer.py::test_silu_against_float64, interpreter):
sigmoid within 8.6e-8 absolute and 1.1e-7 * (1 + |u|) relative (the rounding of u * log2(e) in the tail, as in
torch's fp32 sigmoid), SiLU within 1.3e-7 * |u| (torch's fp32 SiLU: 1.1e-7), SiLU' within 9.7e-7 absolute. The
interpreter takes plain 1/x and exp2; the same test bounds the compiled MUFU forms on a GPU.
"""
import triton
import triton.language as tl

from ._gelu import _exp2, _rcp

# gate position: which half of fc1's output goes through SiLU (a constexpr of every GLU kernel)
GATE_LAST = 1     # g = x1 * SiLU(x2), timm's GluMlp default (gmixer_*)
GATE_FIRST = 2    # g = SiLU(x1) * x2 (gate_last=False; timm's SwiGLUPacked)


def glu_mode(gate_last: bool) -> int:
    """The GLU constexpr of the kernels for timm's `gate_last` flag."""
    return GATE_LAST if gate_last else GATE_FIRST


@triton.jit
def sigmoid_fast(u, INTERPRET: tl.constexpr):
    """sigmoid(u) for fp32 u, branch-free (MUFU rcp and ex2)."""
    return _rcp(1.0 + _exp2(u * -1.4426950408889634, INTERPRET), INTERPRET)


@triton.jit
def silu_fast(u, INTERPRET: tl.constexpr):
    """SiLU(u) = u * sigmoid(u) for fp32 u."""
    return u * sigmoid_fast(u, INTERPRET)


@triton.jit
def silu_and_grad_fast(u, INTERPRET: tl.constexpr):
    """(SiLU(u), SiLU'(u)) for fp32 u, sharing one sigmoid."""
    s = sigmoid_fast(u, INTERPRET)
    return u * s, s * (1.0 + u * (1.0 - s))


@triton.jit
def glu(x1, x2, GATE: tl.constexpr, INTERPRET: tl.constexpr):
    """The gated activation g of fp32 halves x1, x2 (GATE: GATE_LAST = 1 or GATE_FIRST = 2)."""
    if GATE == 1:
        return x1 * silu_fast(x2, INTERPRET)
    else:
        return silu_fast(x1, INTERPRET) * x2


@triton.jit
def glu_and_grad(x1, x2, dg, GATE: tl.constexpr, INTERPRET: tl.constexpr):
    """(g, dx1, dx2) for fp32 halves x1, x2 and the gradient dg of g: gate last, dx1 = dg * SiLU(x2),
    dx2 = dg * x1 * SiLU'(x2); gate first the mirror image."""
    if GATE == 1:
        a, da = silu_and_grad_fast(x2, INTERPRET)
        return x1 * a, dg * a, dg * x1 * da
    else:
        a, da = silu_and_grad_fast(x1, INTERPRET)
        return a * x2, dg * x2 * da, dg * a
