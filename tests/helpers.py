"""Shared test helpers: the launch counter, the accuracy rules (docs/design.md, "Accuracy: how the
tests judge"; in one place), parameter perturbation, and the shape lists chosen by device. The
float64 oracle of each op is reference/ops.py."""
from __future__ import annotations

import shutil

import pytest
import torch

# The launch counter (proves the Triton kernel answered, not a PyTorch fallback): one, in the kernel
# registry, which the benchmarks use too.
from mixer_kernels.ops._registry import count_launches  # noqa: F401

# --------------------------------------------------------------------------------------------------
# Accuracy (docs/design.md, "Accuracy: how the tests judge"). Reference in float64; error = ||out - ref|| /
# ||ref|| (Frobenius).

# fp32 kernels: interpreter dots are exact fp32, and on the GPU the tests ask for ieee precision
# ("highest"), so the only error is fp32 rounding of sums over at most a few thousand terms.
FP32_RTOL = 1e-5
# fp16/bf16: within 2x the error eager PyTorch makes in the same dtype, plus this absolute floor on
# the relative error, for tensors where eager happens to be nearly exact (e.g. a bias gradient that
# is a plain sum, which eager also accumulates in fp32).
LOWP_FACTOR = 2.0
LOWP_ATOL = {torch.float16: 2e-4, torch.bfloat16: 1e-3}


def rel_err(out: torch.Tensor, ref: torch.Tensor, scale: float = 0.0) -> float:
    """||out - ref|| / max(||ref||, scale)."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    return ((out64 - ref64).norm() / ref64.norm().clamp_min(max(scale, 1e-300))).item()


def assert_close(name: str, out: torch.Tensor, ref64: torch.Tensor, eager: torch.Tensor | None = None,
                 scale: float = 0.0):
    """Judge `out` against the float64 reference `ref64` (docs/design.md, "Accuracy: how the tests judge"). For
    fp16/bf16 `eager` is the
    same quantity computed by eager PyTorch in out's dtype. `scale`: a floor for the reference's norm,
    for tensors that are zero in exact arithmetic (e.g. the token MLP's fc2 bias gradient when a
    LayerNorm follows: it adds a per-token constant that every later LayerNorm removes); pass the norm
    of a comparable non-zero tensor so rounding noise is judged against the size it comes from."""
    assert out.shape == ref64.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref64.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values (unwritten output or overflow)"
    err = rel_err(out, ref64, scale)
    if out.dtype in (torch.float32, torch.float64):
        assert err <= FP32_RTOL, f"{name}: relative error {err:.3g} > {FP32_RTOL:g} ({out.dtype})"
        return err
    if eager is None:
        raise ValueError(f"{name}: fp16/bf16 output needs the eager result to compare with")
    eager_err = rel_err(eager, ref64, scale)
    bound = LOWP_FACTOR * eager_err + LOWP_ATOL[out.dtype]
    assert err <= bound, (f"{name}: relative error {err:.3g} > {LOWP_FACTOR:g} x eager's {eager_err:.3g} "
                          f"+ {LOWP_ATOL[out.dtype]:g} ({out.dtype})")
    return err


# --------------------------------------------------------------------------------------------------
# Parameters away from their init: biases != 0, LayerNorm weights != 1.


@torch.no_grad()
def perturb_(module: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    for name, p in module.named_parameters():
        if p.dim() == 1 and ("norm" in name and name.endswith("weight")):
            p.copy_(1.0 + scale * torch.randn_like(p))
        elif p.dim() == 1:
            p.copy_(scale * torch.randn_like(p))
        elif p.std() < 1e-6:   # zero-initialised (timm's classifier head): give it fan-in-scaled weights
            p.copy_(torch.randn_like(p) * p[0].numel() ** -0.5)
        else:
            p.add_(scale * p.std() * torch.randn_like(p))
    return module


def layernorm_params(C: int, dtype=torch.float32, device="cpu"):
    """LayerNorm weight, bias away from (1, 0)."""
    w = (1.0 + 0.1 * torch.randn(C, dtype=torch.float64)).to(device=device, dtype=dtype)
    b = (0.1 * torch.randn(C, dtype=torch.float64)).to(device=device, dtype=dtype)
    return w, b


def linear_params(out_features: int, in_features: int, dtype=torch.float32, device="cpu"):
    """nn.Linear-like weight [out, in] and a non-zero bias [out]."""
    bound = in_features ** -0.5
    w = ((torch.rand(out_features, in_features, dtype=torch.float64) * 2 - 1) * bound).to(device=device, dtype=dtype)
    b = (0.1 * torch.randn(out_features, dtype=torch.float64)).to(device=device, dtype=dtype)
    return w, b


# torch.compile backends the custom-op tests trace with: aot_eager (dynamo + AOTAutograd, no codegen) and
# inductor, which on CPU needs a C++ compiler (CI has one; inductor leaves the custom ops alone either way).
COMPILE_BACKENDS = [
    "aot_eager",
    pytest.param("inductor", marks=pytest.mark.skipif(
        not (shutil.which("c++") or shutil.which("g++")) and not torch.cuda.is_available(),
        reason="inductor on CPU needs a C++ compiler")),
]


# --------------------------------------------------------------------------------------------------
# One shape list chosen by device: the same test functions judge small shapes under the interpreter
# (CPU) and real Mixer sizes on a GPU.

ON_GPU = torch.cuda.is_available()


def by_device(small, real, ids=None):
    """Parameters for one test: on a GPU the `real` cases (marked gpu: `pytest -m gpu` selects them);
    elsewhere the `small` ones, which the interpreter finishes in seconds, then the `real` ones, which
    skip there with the reason (conftest). Each case is a tuple of the test's arguments; `ids`, when
    given, names a case from its tuple."""
    def param(case, marks=()):
        case = case if isinstance(case, tuple) else (case,)
        return pytest.param(*case, marks=marks, id=None if ids is None else ids(case))

    real = [param(c, pytest.mark.gpu) for c in real]
    return real if ON_GPU else [param(c) for c in small] + real


def compile_planted(script: str, *cases: str) -> dict:
    """Run tests/<script> (planted kernels compiled for sm_90a) in a subprocess with TRITON_INTERPRET unset (the
    interpreter replaces @triton.jit functions) and return its last JSON line: {case: compile_kernel row}."""
    import json
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = root
    r = subprocess.run([sys.executable, os.path.join(root, "tests", script), *cases], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
