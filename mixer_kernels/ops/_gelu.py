"""GELU and its derivative, in fp32, for kernel epilogues. One source of truth for both variants:
APPROX_TANH=False is exact erf GELU (timm, torch.nn.GELU()), True the tanh approximation (the original
JAX/Flax code, torch.nn.GELU(approximate="tanh")).
"""
import triton
import triton.language as tl

_SQRT1_2 = 0.7071067811865476       # 1/sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327  # 1/sqrt(2*pi)
_SQRT_2_PI = 0.7978845608028654     # sqrt(2/pi)
_KAPPA = 0.044715


@triton.jit
def _tanh(u):
    # tanh(u) = 2*sigmoid(2u) - 1; exact limits +-1 for large |u|, no libdevice needed (interpreter-safe).
    return 2.0 / (1.0 + tl.exp(-2.0 * u)) - 1.0


@triton.jit
def gelu(x, APPROX_TANH: tl.constexpr):
    """GELU(x) for fp32 x."""
    if APPROX_TANH:
        return 0.5 * x * (1.0 + _tanh(_SQRT_2_PI * (x + _KAPPA * x * x * x)))
    else:
        return 0.5 * x * (1.0 + tl.erf(x * _SQRT1_2))


@triton.jit
def gelu_grad(x, APPROX_TANH: tl.constexpr):
    """d GELU(x) / dx for fp32 x."""
    if APPROX_TANH:
        t = _tanh(_SQRT_2_PI * (x + _KAPPA * x * x * x))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_PI * (1.0 + 3.0 * _KAPPA * x * x)
    else:
        return 0.5 * (1.0 + tl.erf(x * _SQRT1_2)) + x * _INV_SQRT_2PI * tl.exp(-0.5 * x * x)
