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
