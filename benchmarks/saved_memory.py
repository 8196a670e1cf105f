"""Activation memory kept for the backward pass, from shapes alone: no GPU, no kernel runs.

    python -m benchmarks.saved_memory [--models S/16 B/16 L/16] [--batch 256] [--source timm|ref]

One forward of the model on fake tensors (torch FakeTensorMode: shapes, dtypes and autograd's saved
tensors, no data) in bf16 (`model.to(bfloat16)`), collecting every tensor autograd saves for the
backward (saved_tensors_hooks), each storage once, parameters left out. Compared: the eager model, and
the same model after `mixer_kernels.fuse_mixer_blocks` (default, and recompute=True), whose custom ops
save what their autograd saves (their fake implementations give the shapes).

What this is and is not: the exact bytes of saved activations, a property of the formulas and of what
each implementation keeps, the same on every device. It is not the peak memory of a training step, which
adds parameters, gradients, optimizer state, the backward's transient buffers and allocator slack, and,
under CUDA autocast (LayerNorm in fp32), more saved fp32 tensors in eager; the GPU benchmark
(`--model-modes train`) measures that peak.
"""
from __future__ import annotations

import argparse
import copy
import os
import unittest.mock

import torch


def saved_bytes(model: torch.nn.Module, inputs: torch.Tensor) -> tuple[int, list[tuple]]:
    """(bytes, [(shape, dtype), ...]) of the tensors autograd saves in one forward of `model` on a fake
    copy of `inputs`; each storage counted once (views count as their base), parameters excluded."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    params = {id(p) for p in model.parameters()}
    seen: dict[int, torch.Tensor] = {}

    def pack(t):
        base = t._base if t._base is not None else t
        if id(base) not in params:
            seen[id(base)] = base            # keeps it alive, so ids stay unique
        return t

    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(inputs.shape, dtype=inputs.dtype, device=inputs.device)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
    tensors = list(seen.values())
    return sum(t.numel() * t.element_size() for t in tensors), [(tuple(t.shape), t.dtype) for t in tensors]


def custom_op_dispatch():
    """The fused blocks take the custom-op path for CPU tensors only when TRITON_INTERPRET is on; with
    fake tensors no kernel runs (the custom ops' fake implementations give the shapes). Restored after."""
    return unittest.mock.patch.dict(os.environ, {"TRITON_INTERPRET": "1"})


def model_rows(models, batch: int, source: str) -> list[dict]:
    import mixer_kernels

    from .models import _make_model
    rows = []
    for shape in models:
        torch.manual_seed(0)
        eager = _make_model(source, shape).to(torch.bfloat16)
        images = torch.empty(batch, 3, 224, 224, dtype=torch.bfloat16)
        row = dict(model=f"{source} {shape}", batch=batch, eager=saved_bytes(eager, images)[0])
        for key, recompute in (("fused", False), ("fused_recompute", True)):
            fused = mixer_kernels.fuse_mixer_blocks(copy.deepcopy(eager), recompute=recompute)
            with custom_op_dispatch():
                row[key] = saved_bytes(fused, images)[0]
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["Activations saved for the backward, bf16, exact from shapes (benchmarks/saved_memory.py; "
             "not peak memory)", "",
             "| model | batch | eager GB | fused GB (x eager) | fused, recompute=True GB (x eager) |",
             "|---|---|---|---|---|"]
    for r in rows:
        e = r["eager"]
        lines.append(f"| {r['model']} | {r['batch']} | {e / 1e9:.2f} | {r['fused'] / 1e9:.2f} ({r['fused'] / e:.2f}) | "
                     f"{r['fused_recompute'] / 1e9:.2f} ({r['fused_recompute'] / e:.2f}) |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["S/16", "B/16", "L/16"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--source", choices=("timm", "ref"), default="timm")
    a = p.parse_args(argv)
    print(markdown(model_rows(a.models, a.batch, a.source)))


if __name__ == "__main__":
    main()
