"""Hopper speed report without a GPU: every kernel the fused ops launch at Mixer B/16 and L/16, batch 256,
bf16, compiled for sm_90a and read (registers, spills, shared memory, CTAs per SM, grid and waves,
tensor-core instructions, serialisation, loads, the main loop's issue ratio), then timed by the model
of benchmarks/hopper_model.py, per kernel, per op and per block, forward and forward+backward, beside
the same model applied to eager PyTorch's kernel sequence. A model, not a measurement.

    python -m benchmarks.speed_model                    # this Triton, and .venv-torch211's when present
    python -m benchmarks.speed_model --python .venv-torch211/bin/python --out DIR
    python -m benchmarks.speed_model --no-other          # only this interpreter's Triton

Writes summary.md and results.json to benchmarks/results/model-sm90/ (or --out). How it gets the
launches: benchmarks/launch_record.py runs the real launchers on meta tensors and catches each Triton
launch with its grid and the configs its autotuner may pick; the op's modelled time takes, per launch,
the config the model ranks fastest (what a perfect autotuner picks). Eager PyTorch: the reference
MixerBlock's two halves in bf16 with autograd, every ATen op that moves data.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys

TITLE = "model, not a measurement"
SHAPES = ("B/16", "L/16", "B/16@384", "B/8", "resmlp_24", "resmlp_big_24", "gmlp_s16")
# Mixer-B/16 fine-tuned at 384 px and Mixer-B/8 (patch 8 at 224 px): S = 576 and 784 > 256, token mixing's
# large-S path (ops/_token_large_kernels.py)
LARGE_S_SHAPES = {"B/16@384": dict(S=576, C=768, DS=384, DC=3072, depth=12, patch=16),
                  "B/8": dict(S=784, C=768, DS=384, DC=3072, depth=12, patch=8)}
# ResMLP-24 and ResMLP-big-24 (timm's resmlp_24_224, resmlp_big_24_224: patch 8): their ResBlock halves are
# the "token_mixing" / "channel_mixing" rows of that shape (one linear layer along S; Affine and layer
# scales), with timm's ResBlock as the eager side.
RESMLP_SHAPES = {"resmlp_24": dict(S=196, C=384, DS=0, DC=1536, depth=24, patch=16),
                 "resmlp_big_24": dict(S=784, C=768, DS=0, DC=3072, depth=24, patch=8)}
# gMLP-S/16 (timm's gmlp_s16_224): its SpatialGatingBlock is one op, "gmlp_block" (LayerNorm, fc1 to DC,
# GELU, the spatial gating unit on DC/2, fc2), with timm's SpatialGatingBlock as the eager side.
GMLP_SHAPES = {"gmlp_s16": dict(S=196, C=256, DS=0, DC=1536, depth=30, patch=16)}
# gMixer-24 (timm's gmixer_24_224): a MixerBlock with GluMlp + SiLU halves (token fc1 [DS = 384, S], fc2
# [S, DS/2]; channel fc1 [DC = 1536, C], fc2 [C, DC/2]), the gated ops' launchers beside timm's block.
GMIXER_SHAPES = {"gmixer_24": dict(S=196, C=384, DS=384, DC=1536, depth=24, patch=16)}
SHAPES += tuple(GMIXER_SHAPES)
BATCH = 256
CARDS = ("H100", "H200")
LEVELS = ("fast", "central", "slow")      # each constant's published range (benchmarks/hopper_model.py)
PARTS = ("tensor", "issue", "smem", "serial", "l2", "memory")
# the baselines users compare with (benchmarks/baselines.py), beside eager bf16 modules
BASELINES = ("eager_autocast", "compile_default", "compile_max_autotune")
SIDES = ("fused", "library", "eager_bf16") + BASELINES
OUT_DIR = os.path.join(os.path.dirname(__file__), "results", "model-sm90")
OTHER_PYTHON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv-torch211", "bin",
                            "python")


# --------------------------------------------------------------------------------------------------
# The sequences


def _fused(shape: dict, batch: int, dtype):
    """{(op, phase): Recording} of the fused ops' launchers (training: the forward saves what the
    backward reads; the backward computes every gradient)."""
    import torch

    from benchmarks.launch_record import record
    from mixer_kernels.ops import channel_mixing as cm
    from mixer_kernels.ops import token_mixing as tm
    B, S, C, DS, DC = batch, shape["S"], shape["C"], shape["DS"], shape["DC"]
    m = dict(device="meta", dtype=dtype)
    x, dy = torch.empty(B, S, C, **m), torch.empty(B, S, C, **m)
    nw, nb = torch.empty(C, **m), torch.empty(C, **m)
    t1w, t1b, t2w, t2b = torch.empty(DS, S, **m), torch.empty(DS, **m), torch.empty(S, DS, **m), torch.empty(S, **m)
    c1w, c1b, c2w, c2b = torch.empty(DC, C, **m), torch.empty(DC, **m), torch.empty(C, DC, **m), torch.empty(C, **m)
    seqs = {}
    seqs["token_mixing", "fwd"], (_, mean, rstd) = record(
        lambda: tm.token_mixing_fwd(x, nw, nb, t1w, t1b, t2w, t2b, 1e-6, False, None))
    seqs["token_mixing", "bwd"], _ = record(
        lambda: tm.token_mixing_bwd(dy, x, mean, rstd, nw, nb, t1w, t1b, t2w, 1e-6, False, None))
    seqs["channel_mixing", "fwd"], (_, mean, rstd, z) = record(
        lambda: cm._forward(x, nw, nb, c1w, c1b, c2w, c2b, None, 1e-6, "none", True))
    seqs["channel_mixing", "bwd"], _ = record(
        lambda: cm._backward_impl(dy, x, mean, rstd, z, nw, nb, c1w, c1b, c2w, None, "none", True, True, True))
    return seqs


def _fused_resmlp(shape: dict, batch: int, dtype):
    """{(op, phase): Recording} of the ResMLP ops' launchers (training, every gradient)."""
    import torch

    from benchmarks.launch_record import record
    from mixer_kernels.ops import resmlp_channel_mixing as rc
    from mixer_kernels.ops import resmlp_token_mixing as rt
    B, S, C, DC = batch, shape["S"], shape["C"], shape["DC"]
    m = dict(device="meta", dtype=dtype)
    x, dy = torch.empty(B, S, C, **m), torch.empty(B, S, C, **m)
    a, b, ls = torch.empty(C, **m), torch.empty(C, **m), torch.empty(C, **m)
    tw, tb = torch.empty(S, S, **m), torch.empty(S, **m)
    c1w, c1b, c2w, c2b = torch.empty(DC, C, **m), torch.empty(DC, **m), torch.empty(C, DC, **m), torch.empty(C, **m)
    seqs = {}
    seqs["token_mixing", "fwd"], _ = record(lambda: rt.token_linear_forward(x, a, b, tw, tb, ls, None))
    seqs["token_mixing", "bwd"], _ = record(lambda: rt.token_linear_backward(dy, x, a, b, tw, tb, ls, None, True))
    seqs["channel_mixing", "fwd"], (_, z) = record(
        lambda: rc._forward(x, a, b, c1w, c1b, c2w, c2b, ls, None, "none", True))
    seqs["channel_mixing", "bwd"], _ = record(
        lambda: rc._backward_impl(dy, x, z, a, b, c1w, c1b, c2w, c2b, ls, None, "none", True, True, True, True))
    return seqs


def _fused_gmlp(shape: dict, batch: int, dtype):
    """{(op, phase): Recording} of the gMLP block's launchers (training, every gradient)."""
    import torch

    from benchmarks.launch_record import record
    from mixer_kernels.ops import gmlp_block as gb
    B, S, C, DC = batch, shape["S"], shape["C"], shape["DC"]
    H = DC // 2
    m = dict(device="meta", dtype=dtype)
    x, dy = torch.empty(B, S, C, **m), torch.empty(B, S, C, **m)
    nw, nb, gw, gbias = torch.empty(C, **m), torch.empty(C, **m), torch.empty(H, **m), torch.empty(H, **m)
    c1w, c1b, c2w, c2b = torch.empty(DC, C, **m), torch.empty(DC, **m), torch.empty(C, H, **m), torch.empty(C, **m)
    pw, pb = torch.empty(S, S, **m), torch.empty(S, **m)
    seqs = {}
    seqs["gmlp_block", "fwd"], (_, mean, rstd, mean_v, rstd_v, z) = record(
        lambda: gb._forward(x, nw, nb, c1w, c1b, gw, gbias, pw, pb, c2w, c2b, None, 1e-6, 1e-5, "none", True))
    seqs["gmlp_block", "bwd"], _ = record(
        lambda: gb._backward_impl(dy, x, mean, rstd, mean_v, rstd_v, z, nw, nb, c1w, c1b, gw, gbias, pw, pb, c2w, None,
                                  "none", True, True, True, True, True))
    return seqs


def _fused_gmixer(shape: dict, batch: int, dtype):
    """{(op, phase): Recording} of the gMixer ops' launchers (training, every gradient): the token half's
    fused path (S <= 256, bf16), the channel GEMMs with the GLU epilogue."""
    import torch

    from benchmarks.launch_record import record
    from mixer_kernels.ops import channel_mixing as cm
    from mixer_kernels.ops import gmixer_token_mixing as gt
    B, S, C, DS, DC = batch, shape["S"], shape["C"], shape["DS"], shape["DC"]
    m = dict(device="meta", dtype=dtype)
    x, dy = torch.empty(B, S, C, **m), torch.empty(B, S, C, **m)
    nw, nb = torch.empty(C, **m), torch.empty(C, **m)
    t1w, t1b = torch.empty(DS, S, **m), torch.empty(DS, **m)
    t2w, t2b = torch.empty(S, DS // 2, **m), torch.empty(S, **m)
    c1w, c1b = torch.empty(DC, C, **m), torch.empty(DC, **m)
    c2w, c2b = torch.empty(C, DC // 2, **m), torch.empty(C, **m)
    seqs = {}
    seqs["token_mixing", "fwd"], (_, mean, rstd) = record(
        lambda: gt.gmixer_token_mixing_fwd(x, nw, nb, t1w, t1b, t2w, t2b, 1e-6, 1, None))
    seqs["token_mixing", "bwd"], _ = record(
        lambda: gt.gmixer_token_mixing_bwd(dy, x, mean, rstd, nw, nb, t1w, t1b, t2w, 1, None, True))
    seqs["channel_mixing", "fwd"], (_, mean, rstd, z) = record(
        lambda: cm._forward(x, nw, nb, c1w, c1b, c2w, c2b, None, 1e-6, "glu_silu", True))
    seqs["channel_mixing", "bwd"], _ = record(
        lambda: cm._backward_impl(dy, x, mean, rstd, z, nw, nb, c1w, c1b, c2w, None, "glu_silu", True, True, True))
    return seqs


def _eager_gmixer(shape: dict, batch: int, dtype):
    """{(op, phase): Recording} of eager PyTorch: timm's gMixer block halves (MixerBlock, GluMlp, SiLU)."""
    import torch
    from timm.layers import GluMlp
    from timm.models.mlp_mixer import MixerBlock

    with torch.device("meta"):
        blk = MixerBlock(shape["C"], shape["S"], mlp_ratio=(shape["DS"] / shape["C"], shape["DC"] / shape["C"]),
                         mlp_layer=GluMlp, act_layer=torch.nn.SiLU).to(dtype)
    halves = {
        "token_mixing": lambda x: x + blk.mlp_tokens(blk.norm1(x).transpose(1, 2)).transpose(1, 2),
        "channel_mixing": lambda x: x + blk.mlp_channels(blk.norm2(x)),
    }
    return _record_halves(halves, blk, shape, batch, dtype)


def _eager_gmlp(shape: dict, batch: int, dtype):
    """{(op, phase): Recording} of eager PyTorch: timm's SpatialGatingBlock, bf16 modules."""
    import torch
    from timm.layers import GatedMlp
    from timm.models.mlp_mixer import SpatialGatingBlock

    with torch.device("meta"):
        blk = SpatialGatingBlock(shape["C"], shape["S"], mlp_ratio=shape["DC"] / shape["C"],
                                 mlp_layer=GatedMlp).to(dtype)
    return _record_halves({"gmlp_block": lambda x: x + blk.mlp_channels(blk.norm(x))}, blk, shape, batch, dtype)


def _eager_resmlp(shape: dict, batch: int, dtype):
    """{(op, phase): Recording} of eager PyTorch: timm's ResBlock halves, bf16 modules."""
    import torch
    from timm.models.mlp_mixer import ResBlock

    with torch.device("meta"):
        blk = ResBlock(shape["C"], shape["S"]).to(dtype)
    halves = {
        "token_mixing": lambda x: x + blk.ls1 * blk.linear_tokens(blk.norm1(x).transpose(1, 2)).transpose(1, 2),
        "channel_mixing": lambda x: x + blk.ls2 * blk.mlp_channels(blk.norm2(x)),
    }
    return _record_halves(halves, blk, shape, batch, dtype)


def _record_halves(halves, blk, shape, batch, dtype):
    import torch

    from benchmarks.launch_record import record
    B, S, C = batch, shape["S"], shape["C"]
    seqs = {}
    for op, f in halves.items():
        x = torch.empty(B, S, C, device="meta", dtype=dtype, requires_grad=True)
        dy = torch.empty(B, S, C, device="meta", dtype=dtype)
        seqs[op, "fwd"], out = record(lambda f=f, x=x: f(x))
        params = [x] + list(blk.parameters())
        seqs[op, "bwd"], _ = record(lambda out=out, params=params, dy=dy: torch.autograd.grad(out, params, dy,
                                                                                                 allow_unused=True))
    return seqs


def _eager(shape: dict, batch: int, dtype):
    """{(op, phase): Recording} of eager PyTorch: the reference MixerBlock's halves, bf16 modules."""
    import torch

    from reference.mlp_mixer import MixerBlock
    with torch.device("meta"):
        blk = MixerBlock(shape["C"], shape["S"]).to(dtype)
    halves = {
        "token_mixing": lambda x: x + blk.mlp_tokens(blk.norm1(x).transpose(1, 2)).transpose(1, 2),
        "channel_mixing": lambda x: x + blk.mlp_channels(blk.norm2(x)),
    }
    return _record_halves(halves, blk, shape, batch, dtype)


# --------------------------------------------------------------------------------------------------
# Compile and model


def _tile(cfg: dict) -> str:
    blocks = [str(v) for k, v in cfg["kwargs"].items() if k.startswith("BLOCK")]
    return f"{'x'.join(blocks) or '-'} w{cfg['num_warps']} s{cfg['num_stages']}"


def _compile_launch(launch, cfg: dict, cache: dict) -> dict:
    import torch

    from mixer_kernels.ops._compile_check import compile_kernel
    from mixer_kernels.ops._registry import signature_of
    args = {k: (v.dtype if isinstance(v, torch.Tensor) else v) for k, v in launch.args.items()}
    args.update(cfg["kwargs"])
    sig, constexprs, attrs = signature_of(launch.fn, args)
    key = (launch.kernel, tuple(sorted(sig.items())), tuple(sorted(constexprs.items(), key=str)),
           tuple(sorted((k, str(v)) for k, v in attrs.items())), cfg["num_warps"], cfg["num_stages"])
    if key not in cache:
        cache[key] = compile_kernel(launch.fn, sig, constexprs, attrs, cfg["num_warps"], cfg["num_stages"], 90)
    return cache[key]


def _composition_ms(kernel: str, a: dict, work, card: str, level: str = "central") -> float | None:
    """The same model for what a channel GEMM kernel replaces: a cuBLAS GEMM (model_gemm, its shape class)
    plus the elementwise pass for the epilogue it cannot fuse (issue 13: never slower than the composition;
    on a GPU ops/_choice measures both and keeps the faster). None for kernels that are not a GEMM with an
    epilogue."""
    from benchmarks import hopper_model as hm
    if not kernel.startswith("_channel_"):
        return None
    if kernel == "_channel_hidden_kernel":
        M, N, K = a["M"], a["N_SIZE"], a["K_SIZE"]
        e = a["Z"].element_size()
        glu = bool(a.get("GLU", 0))      # gMixer: N = H; the forward GEMM writes z [M, 2H]
        gemm_n = 2 * N if glu and not a["BACKWARD"] else N
        # forward: GELU pass reads z, writes GELU(z); backward: reads dA and z, writes dz and s*GELU(z)
        # (GLU: forward reads z [M, 2H], writes g [M, H]; backward reads dg, z, writes dz [M, 2H], s*g)
        passes = ((3 if not a["BACKWARD"] else 6) if glu else (2 if not a["BACKWARD"] else 4)) * M * N * e
        t = hm.model_gemm(M, gemm_n, K, a["Z"].dtype, card, level=level)
    elif kernel == "_channel_out_kernel":
        M, N, K = a["M"], a["N_SIZE"], a["K_SIZE"]
        e = a["Out"].element_size()
        passes = 3 * M * N * e if a["HAS_RES"] else 0        # residual (+ scale) pass: read, read x, write
        t = hm.model_gemm(M, N, K, a["Out"].dtype, card, level=level)
    else:                                                    # weight gradients: dW [M_SIZE, N_SIZE] = P^T Q
        t, passes = hm.model_gemm(a["M_SIZE"], a["N_SIZE"], a["M"], a["Q"].dtype, card, level=level), 0
    if passes:
        t += hm.model_elementwise(passes, card, level)
    return 1e3 * t


def _gemm_k(args: dict, work) -> int | None:
    """The depth K a GEMM kernel's main loop covers per tile (its ceiling class: trips x BLOCK_K), None for
    kernels without a BLOCK_K (chained dots, no dots)."""
    bk = args.get("BLOCK_K")
    return work.trips * bk if isinstance(bk, int) else None


def _baselines(shape_name: str, batch: int) -> dict:
    """{(card, level): {baseline: {(op, phase): seconds}}} from benchmarks/baselines.py."""
    from benchmarks import baselines as bl
    return {(card, lv): bl.baselines(shape_name, batch=batch, card=card, level=lv) for card in CARDS for lv in LEVELS}


def analyse(shapes=SHAPES, batch=BATCH, baselines: bool = True) -> dict:
    """Everything the report shows, for this interpreter's Triton: kernels, ops, eager steps."""
    import torch
    import triton

    from benchmarks import hopper_model as hm
    from benchmarks.cases import SHAPES as SHAPE_SIZES
    from mixer_kernels.ops._registry import KERNELS, import_all_ops
    import_all_ops()
    dtype = torch.bfloat16
    cache: dict = {}
    kernels, ops = [], []
    for shape_name in shapes:
        if shape_name in RESMLP_SHAPES:
            shape = RESMLP_SHAPES[shape_name]
            fused, eager = _fused_resmlp(shape, batch, dtype), _eager_resmlp(shape, batch, dtype)
        elif shape_name in GMLP_SHAPES:
            shape = GMLP_SHAPES[shape_name]
            fused, eager = _fused_gmlp(shape, batch, dtype), _eager_gmlp(shape, batch, dtype)
        elif shape_name in GMIXER_SHAPES:
            shape = GMIXER_SHAPES[shape_name]
            fused, eager = _fused_gmixer(shape, batch, dtype), _eager_gmixer(shape, batch, dtype)
        else:
            shape = LARGE_S_SHAPES.get(shape_name) or SHAPE_SIZES[shape_name]
            fused, eager = _fused(shape, batch, dtype), _eager(shape, batch, dtype)
        # {(card, level): {name: {(op, phase): s}}}; without: another Triton's run, which takes this run's
        print(f"speed_model: {shape_name} (triton {triton.__version__})", file=sys.stderr, flush=True)
        base = _baselines(shape_name, batch) if baselines else {}
        per = {}     # (op, phase, card) -> {side: {level: seconds}}
        for (op, phase), rec in fused.items():
            for card in CARDS:
                side = {name: dict.fromkeys(LEVELS, 0.0) for name in ("fused", "library")}
                side["eager_bf16"] = {lv: sum(hm.aten_time(s, card, lv) for s in eager[op, phase].steps
                                              if not hasattr(s, "kernel")) for lv in LEVELS}
                for name in BASELINES:
                    got = [base.get((card, lv), {}).get(name, {}).get((op, phase)) for lv in LEVELS]
                    if None not in got:
                        side[name] = dict(zip(LEVELS, got, strict=True))
                seen: dict = {}
                for step in rec.steps:
                    if not hasattr(step, "kernel"):
                        for lv in LEVELS:
                            t = hm.aten_time(step, card, lv)
                            side["fused"][lv] += t
                            side["library"][lv] += t
                        continue
                    seen[step.kernel] = seen.get(step.kernel, 0) + 1
                    label = f"{op} {phase}" + (f" #{seen[step.kernel]}" if seen[step.kernel] > 1 else "")
                    best = None
                    for cfg in step.configs:
                        row = _compile_launch(step, cfg, cache)
                        entry = dict(card=card, triton=triton.__version__, shape=shape_name, batch=batch, op=op,
                                     mode=phase, kernel=step.kernel, case=f"{shape_name} {label} {_tile(cfg)}",
                                     config=_tile(cfg), tuner_choices=len(step.configs))
                        if row["error"]:
                            entry.update(error=row["error"], modelled_ms=None, floor_ms=None)
                            kernels.append(entry)
                            continue
                        grid = step.grid_size(cfg)
                        args = {**step.args, **cfg["kwargs"]}
                        work = KERNELS[step.kernel].work(args)
                        k = _gemm_k(args, work)
                        ms = {lv: hm.kernel_time(row, work, grid, card, level=lv, k=k) for lv in LEVELS}
                        m = ms["central"]
                        sass = row["sass"]
                        comp = {lv: _composition_ms(step.kernel, args, work, card, lv) for lv in LEVELS}
                        entry.update(
                            modelled_ms=m["time_s"] * 1e3, modelled_fast_ms=ms["fast"]["time_s"] * 1e3,
                            modelled_slow_ms=ms["slow"]["time_s"] * 1e3, floor_ms=m["floor_s"] * 1e3,
                            pct_of_floor=100 * m["floor_s"] / m["time_s"], bound=m["bound"],
                            ceiling_class=m["ceiling_class"],
                            **{f"{part}_ms": m[f"{part}_s"] * 1e3 for part in PARTS},
                            serialised=bool(row["notes"]["C7515"]), notes=row["notes"],
                            hmma=sass["total"]["hmma"], hgmma=sass["total"]["hgmma"],
                            a_from_registers=sass["total"]["a_from_registers"], loads=sass["loads"],
                            spills=row["spill_stores"] + row["spill_loads"], registers=row["registers"],
                            shared=row["shared"], ctas_per_sm=row["ctas_per_sm"], grid=grid, waves=m["waves"],
                            resident=m["resident"], issue_ratio=m["issue_ratio"], l2_gb=m["l2_bytes"] / 1e9,
                            main_loop=dict(instructions=(sass["main"] or {}).get("instructions"),
                                           hgmma=(sass["main"] or {}).get("hgmma"), trips=work.trips,
                                           drains=(sass["main"] or {}).get("drains"),
                                           exposed_waits=(sass["main"] or {}).get("exposed_waits"),
                                           outer=work.outer, dot_loops=sass["dot_loops"]),
                            epilogue_instructions=sass["epilogue"]["instructions"],
                            hazards=row["hazards"] + m["model_hazards"],
                            flops=work.flops, bytes=work.bytes, composition_ms=comp["central"],
                            _times={lv: ms[lv]["time_s"] for lv in LEVELS}, _comp=comp)
                        kernels.append(entry)
                        if best is None or entry["modelled_ms"] < best["modelled_ms"]:
                            best = entry
                    if best is not None:
                        best["tuner_pick"] = True
                        for lv in LEVELS:
                            t = best["_times"][lv]
                            side["fused"][lv] += t
                            c = best["_comp"][lv]
                            side["library"][lv] += min(t, c / 1e3) if c else t
                        if best["_comp"]["central"] and best["_comp"]["central"] / 1e3 < best["_times"]["central"]:
                            best["library_takes"] = "cuBLAS + pass"
                per[op, phase, card] = side
        for e in kernels:
            e.pop("_times", None)
            e.pop("_comp", None)
        for card in CARDS:
            S, C, DS, DC = shape["S"], shape["C"], shape["DS"], shape["DC"]
            act = batch * S * C * torch.finfo(dtype).bits // 8
            token_flops = 2.0 * batch * C * S * S if shape_name in RESMLP_SHAPES else 4.0 * batch * C * S * DS
            channel_flops = 4.0 * batch * S * C * DC
            if shape_name in GMIXER_SHAPES:      # GluMlp: fc1 to the full width, fc2 from half of it
                token_flops, channel_flops = 3.0 * batch * C * S * DS, 3.0 * batch * S * C * DC
            mat = {"token_mixing": token_flops, "channel_mixing": channel_flops,
                   "gmlp_block": 2.0 * batch * S * (C * DC + S * DC // 2 + DC // 2 * C)}   # fc1, proj, fc2
            for mode, phases, mult, moved in (("fwd", ("fwd",), 1, 2 * act), ("fwd+bwd", ("fwd", "bwd"), 3, 5 * act)):
                rows = []
                for op in dict.fromkeys(op for op, _ in fused):       # the shape's ops, in order
                    sides = {}
                    for name in SIDES:
                        if all(name in per[op, p, card] for p in phases):
                            sides[name] = {lv: sum(per[op, p, card][name][lv] for p in phases) for lv in LEVELS}
                    rows.append((op, sides, hm.floor_time(mult * mat[op], moved, card)))
                common = set.intersection(*(set(r[1]) for r in rows))
                rows.append(("block", {name: {lv: sum(r[1][name][lv] for r in rows) for lv in LEVELS}
                                       for name in common}, sum(r[2] for r in rows)))
                for op, sides, fl in rows:
                    f = sides["fused"]["central"]
                    o = dict(card=card, triton=triton.__version__, op=op, mode=mode, shape=shape_name, batch=batch,
                             modelled_ms=f * 1e3, floor_ms=fl * 1e3, pct_of_floor=100 * fl / f,
                             eager_modelled_ms=sides["eager_bf16"]["central"] * 1e3,
                             speedup_vs_eager=sides["eager_bf16"]["central"] / f)
                    for name, v in sides.items():
                        o[f"{name}_ms"] = {lv: v[lv] * 1e3 for lv in LEVELS}
                    ops.append(o)
    return dict(triton=triton.__version__, torch=torch.__version__, kernels=kernels, ops=ops)


# --------------------------------------------------------------------------------------------------
# Report


def _ms(v):
    return "-" if v is None else f"{v:.3f}"


def _rng(v):
    """central [fast-slow] of a {level: ms} dict."""
    if not v:
        return "-"
    return f"{v['central']:.3f} [{v['fast']:.3f}-{v['slow']:.3f}]"


def _x(o, side):
    """The library's speedup over a baseline, central over central."""
    b, f = o.get(f"{side}_ms"), o.get("library_ms")
    return f"{b['central'] / f['central']:.2f}x" if b and f else "-"


def _hz(e):
    return ",".join(e.get("hazards") or []) or "-"


def summary_md(results: list[dict], date: str, doc: dict | None = None) -> str:
    from benchmarks import hopper_model as hm
    versions = [r["triton"] for r in results]
    lines = [f"# Hopper speed report (sm_90a): {TITLE}", "",
             f"Triton {', '.join(versions)}; torch {', '.join(r['torch'] for r in results)}; {date}. "
             f"Mixer {', '.join(SHAPES)} (resmlp_*: timm's ResBlock halves; gmlp_s16: timm's SpatialGatingBlock; "
             f"gmixer_24: timm's MixerBlock with GluMlp + SiLU), "
             f"batch {BATCH}, bf16. "
             "Generated by `python -m benchmarks.speed_model`; "
             "the formula and every constant are in benchmarks/hopper_model.py (the model's docstring). "
             "Compiled for sm_90a on a machine without a GPU: no kernel ran.", "",
             f"Model version {hm.MODEL_VERSION}; constants (fast / central / slow, the published range each comes "
             "from is in benchmarks/hopper_model.py): "
             + ", ".join(f"{k}={c.fast:g}/{c.central:g}/{c.slow:g}" for k, c in hm.CONSTANTS.items()), ""]
    lines += ["## Ops and block (H100 model; H200 in results.json)", "",
              "Each time is central [fast-slow] over the published ranges of the model's constants. fused: our "
              "kernels; library: per launch the faster of ours and cuBLAS + a pass (what ops/_choice keeps on a "
              "GPU); eager autocast: timm's block, fp32 modules under bf16 autocast (what timm users run); eager "
              "bf16: bf16 modules; compile default / max-autotune: torch.compile of timm's block "
              "(benchmarks/baselines.py). Speedups: central over central.", "",
              "| triton | shape | op | mode | library ms | floor ms | eager autocast ms | eager bf16 ms | "
              "compile default ms | compile max-autotune ms | vs autocast | vs compile | vs max-autotune |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for o in r["ops"]:
            if o["card"] == "H100":
                lines.append(f"| {o['triton']} | {o['shape']} | {o['op']} | {o['mode']} | "
                             f"{_rng(o.get('library_ms'))} | {o['floor_ms']:.3f} | "
                             f"{_rng(o.get('eager_autocast_ms'))} | {_rng(o.get('eager_bf16_ms'))} | "
                             f"{_rng(o.get('compile_default_ms'))} | {_rng(o.get('compile_max_autotune_ms'))} | "
                             f"{_x(o, 'eager_autocast')} | {_x(o, 'compile_default')} | "
                             f"{_x(o, 'compile_max_autotune')} |")
    if doc is not None:
        from benchmarks.targets import markdown_model_targets
        lines += ["", f"## The issues' speed targets, read off this model (triton {doc['triton'][-1]}, H100)", "",
                  "The GPU run (`benchmarks/gpu_check.sh`) measures the same targets; this is the model's reading.",
                  "", markdown_model_targets(doc)]
    lines += ["", "## Kernels (H100 model; * = the config the model ranks fastest, which the op totals use)", "",
              "| triton | case | kernel | regs | spill B | smem KB | CTA/SM | grid | waves | HGMMA (per warpgroup) | "
              "HMMA | A in regs | C7515/17/19 | loads tma/cp.async/plain | main loop instr x trips | "
              "issue ratio | epilogue instr | ceiling class | bound | tensor/issue/smem/serial/L2/HBM ms | "
              "modelled ms [fast-slow] | floor ms | % floor | hazards |",
              "|" + "---|" * 24]
    for r in results:
        for e in r["kernels"]:
            if e["card"] != "H100":
                continue
            if e.get("error"):
                lines.append(f"| {e['triton']} | {e['case']} | {e['kernel']} | compile error: "
                             f"{e['error'][:80]} |" + " |" * 20)
                continue
            hg = " ".join(f"{k}:{v}" for k, v in e["hgmma"].items()) or "-"
            n = e["notes"]
            ml = e["main_loop"]
            ir = "-" if e["issue_ratio"] is None else f"{e['issue_ratio']:.2f}"
            lines.append(
                f"| {e['triton']} | {e['case']}{' *' if e.get('tuner_pick') else ''} | {e['kernel']} | "
                f"{e['registers']} | {e['spills']} | {e['shared'] / 1024:.0f} | {e['ctas_per_sm']} | {e['grid']} | "
                f"{e['waves']} | {hg} | {e['hmma']} | {e['a_from_registers']} | "
                f"{n['C7515']}/{n['C7517']}/{n['C7519']} | {e['loads']['tma']}/{e['loads']['cp_async']}/"
                f"{e['loads']['plain']} | {ml['instructions']} x {ml['trips']}"
                f"{'x' + str(ml['outer']) if ml['outer'] > 1 else ''} | {ir} | {e['epilogue_instructions']} | "
                f"{e.get('ceiling_class') or '-'} | {e['bound']} | "
                + "/".join(f"{e[f'{p}_ms']:.3f}" for p in PARTS)
                + f" | {e['modelled_ms']:.3f} [{e['modelled_fast_ms']:.3f}-{e['modelled_slow_ms']:.3f}] | "
                f"{e['floor_ms']:.3f} | {e['pct_of_floor']:.0f}% | {_hz(e)} |")
    lines += ["", "## Against the composition (H100 model): our channel GEMM kernels beside cuBLAS + a pass", "",
              "The same model applied to a cuBLAS GEMM at CUBLAS_EFF of peak plus the elementwise pass for the "
              "epilogue it cannot fuse (the fallback issue 13 asks the tuning set to hold). Configs the model "
              "ranks fastest only.", "",
              "| triton | case | kernel | ours ms | composition ms | ours / composition |", "|---|---|---|---|---|---|"]
    for r in results:
        for e in r["kernels"]:
            if e["card"] == "H100" and e.get("tuner_pick") and e.get("composition_ms"):
                lines.append(f"| {e['triton']} | {e['case']} | {e['kernel']} | {e['modelled_ms']:.3f} | "
                             f"{e['composition_ms']:.3f} | {e['modelled_ms'] / e['composition_ms']:.2f} |")
    if len(results) > 1:
        lines += ["", f"## Where Triton {versions[0]} and {' / '.join(versions[1:])} differ (H100 model)", "",
                  "Cases whose hazards differ or whose modelled time differs by more than 10%.", "",
                  "| case | kernel | " + " | ".join(f"{v} hazards | {v} ms" for v in versions) + " |",
                  "|---|---|" + "---|---|" * len(versions)]
        index = [{(e["case"], e["kernel"]): e for e in r["kernels"] if e["card"] == "H100"} for r in results]
        for key in index[0]:
            es = [ix.get(key) for ix in index]
            if any(e is None or e.get("error") for e in es):
                continue
            ts = [e["modelled_ms"] for e in es]
            if len({_hz(e) for e in es}) > 1 or max(ts) > 1.1 * min(ts):
                lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(f"{_hz(e)} | {e['modelled_ms']:.3f}" for e in es)
                             + " |")
    lines += ["", "How to read it: `bound` names the largest of the parts (tensor cores at the ceiling of the "
              "kernel's class, instruction issue, shared-memory bandwidth, one CTA's serial chain, L2->SM operand "
              "traffic, HBM); hazards: ptxas/SASS ones (serialised, mma.sync, spills) and the model's: "
              "'drained chain' (a full wgmma drain inside the main loop: the phases add up), 'exposed load' "
              "(a load waited for right after it is issued, or LDG feeding STS), 'one CTA per SM' (its "
              "prologue, epilogue and drains overlap nothing), 'one warpgroup per SM', 'L2-bound', "
              "'smem-bound', 'issue-bound', 'tail' (a last wave under half full). On a GPU, "
              "`benchmarks/gpu_check.sh` puts the measured device time of each kernel beside this model's "
              "(`--kernels` table), which calibrates it; `python -m benchmarks.calibration.calibrate` checks the "
              "model against published H100 measurements of other people's kernels.", ""]
    return "\n".join(lines)


def _hm():
    from benchmarks import hopper_model
    return hopper_model


def _start_other(python: str, shapes) -> subprocess.Popen:
    """Another interpreter's Triton, our kernels only, in the background (both run at once)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.Popen([python, "-m", "benchmarks.speed_model", "--json-only", "--no-other", "--no-baselines",
                             "--shapes", *shapes], cwd=root, env=env, stdout=subprocess.PIPE, text=True)


def _finish_other(proc: subprocess.Popen, python: str) -> dict | None:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        print(f"speed_model: {python} failed (its stderr is above)", file=sys.stderr)
        return None
    return json.loads(out.strip().splitlines()[-1])


def _take_baselines(theirs: dict, mine: dict):
    """Another Triton's op rows get this run's baselines (the same torch's eager and Inductor sequences)."""
    index = {(o["card"], o["shape"], o["op"], o["mode"]): o for o in mine["ops"]}
    for o in theirs["ops"]:
        m = index.get((o["card"], o["shape"], o["op"], o["mode"]))
        for name in BASELINES:
            if m and f"{name}_ms" in m:
                o[f"{name}_ms"] = m[f"{name}_ms"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=OUT_DIR, help="directory for summary.md and results.json")
    p.add_argument("--python", default=None, help="another interpreter (another Triton) to compare with; default "
                   ".venv-torch211/bin/python when it exists")
    p.add_argument("--no-other", action="store_true", help="only this interpreter's Triton")
    p.add_argument("--json-only", action="store_true", help="print this Triton's results as JSON, write nothing")
    p.add_argument("--no-baselines", action="store_true", help="leave out eager autocast and torch.compile (another "
                   "Triton's run: the report takes them from this interpreter's torch)")
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), help="a subset of the shapes")
    p.add_argument("--render-only", action="store_true", help="rewrite summary.md from the results.json in --out")
    a = p.parse_args(argv)
    if a.render_only:
        with open(os.path.join(a.out, "results.json")) as f:
            doc = json.load(f)
        results = [dict(triton=v, torch=t, kernels=[e for e in doc["kernels"] if e["triton"] == v],
                        ops=[o for o in doc["ops"] if o["triton"] == v]) for v, t in zip(doc["triton"], doc["torch"],
                                                                                          strict=True)]
        with open(os.path.join(a.out, "summary.md"), "w") as f:
            f.write(summary_md(results, doc["date"], doc))
        print(block_table(doc))
        return
    from mixer_kernels._config import triton_interpret
    if triton_interpret():
        p.error("unset TRITON_INTERPRET: the speed model compiles the real kernels")
    other = a.python or (OTHER_PYTHON if os.path.exists(OTHER_PYTHON) else None)
    proc = None
    if not a.json_only and other and not a.no_other and os.path.abspath(other) != os.path.abspath(sys.executable):
        proc = _start_other(other, a.shapes)
    mine = analyse(tuple(a.shapes), baselines=not a.no_baselines)
    if a.json_only:
        print(json.dumps(mine))
        return
    results = [mine]
    if proc is not None:
        theirs = _finish_other(proc, other)
        if theirs:
            _take_baselines(theirs, mine)
            results.append(theirs)
    results.sort(key=lambda r: [int(x) for x in r["triton"].split(".")[:2]])
    date = datetime.date.today().isoformat()
    os.makedirs(a.out, exist_ok=True)
    doc = dict(title=TITLE, date=date, triton=[r["triton"] for r in results], torch=[r["torch"] for r in results],
               shapes=list(a.shapes), batch=BATCH, dtype="bf16",
               model_version=_hm().MODEL_VERSION,
               constants={k: dict(fast=c.fast, central=c.central, slow=c.slow, unit=c.unit, source=c.source)
                          for k, c in _hm().CONSTANTS.items()},
               ceilings={k: dict(fraction=v[0], source=v[1]) for k, v in _hm().CEILINGS.items()},
               kernels=[e for r in results for e in r["kernels"]], ops=[o for r in results for o in r["ops"]])
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(doc, f, indent=1)
    md = summary_md(results, date, doc)
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write(md)
    print(block_table(doc))
    from benchmarks.targets import markdown_model_targets
    print("\n" + markdown_model_targets(doc))
    print(f"\nspeed_model: {TITLE}; wrote {a.out}/summary.md and results.json")


def block_table(doc: dict, card: str = "H100") -> str:
    """The README's table: per Triton, shape and mode, the block and its ops (model): the library's time and
    the baselines', central [fast-slow], and the speedups central over central."""
    lines = [f"| triton | shape | mode | op | library ({TITLE}) ms | eager autocast ms | compile default ms | "
             "compile max-autotune ms | vs eager autocast | vs compile | vs max-autotune |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for o in doc["ops"]:
        if o["card"] == card:
            lines.append(f"| {o['triton']} | {o['shape']} | {o['mode']} | {o['op']} | {_rng(o.get('library_ms'))} | "
                         f"{_rng(o.get('eager_autocast_ms'))} | {_rng(o.get('compile_default_ms'))} | "
                         f"{_rng(o.get('compile_max_autotune_ms'))} | {_x(o, 'eager_autocast')} | "
                         f"{_x(o, 'compile_default')} | {_x(o, 'compile_max_autotune')} |")
    return "\n".join(lines)


_FAMILY_OPS = {"token": ("token_mixing",), "channel": ("channel_mixing",), "block": ("token_mixing", "channel_mixing"),
               "resmlp": ("token_mixing", "channel_mixing"),   # resmlp: the shape resmlp_24 holds its halves
               "gmlp": ("gmlp_block",),
               "gmixer": ("token_mixing", "channel_mixing")}   # gmixer: the shape gmixer_24 holds its halves


def model_us_per_step(doc: dict | None, family: str, shape: str, batch: int, mode: str, card_name: str,
                      kernel: str) -> float | None:
    """The committed model's device time of `kernel` in one benchmark case (us per step, its launches at the
    model's fastest config summed), for the calibration columns of the benchmark's --kernels table; None
    where the model has no such case (other batches, shapes, families). The Triton version nearest the
    running one; the H200's memory bandwidth on an H200, else the H100's."""
    if not doc or family not in _FAMILY_OPS or shape not in doc["shapes"] or batch != doc["batch"]:
        return None
    import triton
    mine = [int(x) for x in triton.__version__.split(".")[:2]]
    versions = sorted({e["triton"] for e in doc["kernels"]},
                      key=lambda v: abs((int(v.split(".")[0]) - mine[0]) * 100 + int(v.split(".")[1]) - mine[1]))
    card = "H200" if "H200" in card_name.upper() else "H100"
    phases = ("fwd",) if mode in ("fwd", "infer") else ("fwd", "bwd")
    ms = [e["modelled_ms"] for e in doc["kernels"]
          if e.get("tuner_pick") and e["triton"] == versions[0] and e["card"] == card and e["shape"] == shape
          and e["op"] in _FAMILY_OPS[family] and e["mode"] in phases and e["kernel"] == kernel]
    return 1e3 * sum(ms) if ms else None


def load_committed() -> dict | None:
    path = os.path.join(OUT_DIR, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


if __name__ == "__main__":
    main()
