"""GELU and its derivative, in fp32, for kernel epilogues. One source of truth for both variants:
APPROX_TANH=False is exact erf GELU (timm, torch.nn.GELU()), True the tanh approximation (the original
JAX/Flax code, torch.nn.GELU(approximate="tanh")).
"""
import triton
import triton.language as tl

# Constants as literals inside the @triton.jit bodies: compiled Triton code cannot read plain module
# globals (NameError at compile time), and tl.constexpr globals break the interpreter (constexpr * tensor
# gives a constexpr wrapping a tensor, which tl.exp rejects).
#   0.7071067811865476 = 1/sqrt(2)    0.3989422804014327 = 1/sqrt(2*pi)
#   0.7978845608028654 = sqrt(2/pi)   0.044715 = the tanh approximation's cubic coefficient


@triton.jit
def _tanh(u):
    # tanh(u) = 2*sigmoid(2u) - 1; exact limits +-1 for large |u|, no libdevice needed (interpreter-safe).
    return 2.0 / (1.0 + tl.exp(-2.0 * u)) - 1.0


@triton.jit
def gelu(x, APPROX_TANH: tl.constexpr):
    """GELU(x) for fp32 x."""
    if APPROX_TANH:
        return 0.5 * x * (1.0 + _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    else:
        return 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))


@triton.jit
def gelu_grad(x, APPROX_TANH: tl.constexpr):
    """d GELU(x) / dx for fp32 x."""
    if APPROX_TANH:
        t = _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x)
    else:
        return 0.5 * (1.0 + tl.erf(x * 0.7071067811865476)) + x * 0.3989422804014327 * tl.exp(-0.5 * x * x)


# Branch-free erf for the token kernels' hidden loops: Abramowitz & Stegun 7.1.26,
# erf(z) = 1 - t*(a1 + t*(a2 + t*(a3 + t*(a4 + t*a5)))) * exp(-z^2), t = 1/(1 + p|z|), |error| <= 1.5e-7
# (measured against float64 over [-12, 12] in fp32 arithmetic: GELU within 4.7e-7 absolute, its derivative
# within 3e-7; torch's own fp32 GELU is within 1.2e-6). Compiled, the reciprocal and exp2 are single
# MUFU instructions (rcp/ex2.approx.ftz: no range fix-ups, ~1 ulp), about 15 instructions in all where
# tl.erf selects between two coefficient sets per element and issues about twice that; exp(-z^2) is
# shared with GELU's derivative. The interpreter (which cannot run inline PTX) takes plain 1/x and exp2.
@triton.jit
def _rcp(x, INTERPRET: tl.constexpr):
    if INTERPRET:
        return 1.0 / x
    else:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)


@triton.jit
def _exp2(x, INTERPRET: tl.constexpr):
    if INTERPRET:
        return tl.exp2(x)
    else:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)


@triton.jit
def _erf_and_gauss(z, INTERPRET: tl.constexpr):
    """(erf(z), exp(-z*z)) for fp32 z."""
    t = _rcp(1.0 + 0.3275911 * tl.abs(z), INTERPRET)
    e = _exp2(z * z * -1.4426950408889634, INTERPRET)
    p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    y = 1.0 - p * e
    return tl.where(z < 0.0, -y, y), e


@triton.jit
def _phi_tail_and_gauss(x, INTERPRET: tl.constexpr):
    """(h, e) for fp32 x: h = 0.5 * erfc(|x| / sqrt(2)) = Phi(-|x|), the normal tail, and e = exp(-x*x/2).
    The same A&S 7.1.26 formula as _erf_and_gauss, taken straight from x (1/sqrt(2), the 1/2 and log2(e)
    folded into the constants), so that Phi(x) = where(x < 0, h, 1 - h) needs no sign flip and no
    1 + erf: about 3 instructions fewer per element in the GELU epilogues."""
    t = _rcp(1.0 + 0.23164188826636045 * tl.abs(x), INTERPRET)           # 0.3275911 / sqrt(2)
    e = _exp2(x * x * -0.7213475204444817, INTERPRET)                       # -log2(e) / 2
    p = t * (0.127414796 + t * (-0.142248368 + t * (0.7107068705 + t * (-0.7265760135 + t * 0.5307027145))))
    return p * e, e


@triton.jit
def gelu_fast(x, APPROX_TANH: tl.constexpr, INTERPRET: tl.constexpr):
    """GELU(x) = x * Phi(x) for fp32 x; the erf form through the branch-free A&S erf."""
    if APPROX_TANH:
        return gelu(x, True)
    else:
        h, _ = _phi_tail_and_gauss(x, INTERPRET)
        return x * tl.where(x < 0.0, h, 1.0 - h)      # as gelu_and_grad_fast: bitwise the same GELU


@triton.jit
def gelu_and_grad_fast(x, APPROX_TANH: tl.constexpr, INTERPRET: tl.constexpr):
    """(GELU(x), d GELU(x) / dx) for fp32 x, sharing one reciprocal and one exp."""
    if APPROX_TANH:
        return gelu(x, True), gelu_grad(x, True)
    else:
        h, e = _phi_tail_and_gauss(x, INTERPRET)
        cdf = tl.where(x < 0.0, h, 1.0 - h)
        return x * cdf, cdf + x * 0.3989422804014327 * e
