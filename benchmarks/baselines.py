"""The baselines users compare the fused ops with, as kernel sequences priced by the speed model
(benchmarks/hopper_model.py entry points). A model, not a measurement. No GPU is needed or used.

For each family shape of benchmarks/speed_model.py (Mixer via timm's MixerBlock, ResMLP via ResBlock, gMLP via
SpatialGatingBlock, gMixer via MixerBlock with GluMlp + SiLU), per half ("token_mixing", "channel_mixing", or
"gmlp_block") and phase ("fwd": the training forward; "bwd": autograd.grad of the half's output w.r.t. x and
every parameter), four step lists:

- `eager_bf16`: timm's block as bf16 modules, every ATen op recorded on meta tensors
  (benchmarks/launch_record.record): alias-free views cost nothing, matrix products carry their GEMM shape.
- `eager_autocast`: what timm users run: fp32 modules under torch.autocast("cuda", dtype=torch.bfloat16).
  Recorded for real: the half is traced with make_fx on FakeTensorMode tensors of device "cuda" (no driver
  needed; torch.cuda.is_available patched so that torch.autocast does not disable itself), where autocast's
  dispatch key runs as on a GPU and inserts its casts (`_to_copy` of weights, biases and activations to bf16
  before each matmul; LayerNorm runs on the fp32 input and returns fp32; GELU runs in bf16; the residual add
  promotes to fp32). The traced ATen graph is then replayed on meta tensors under the recorder, forward and
  autograd backward (the backward of each recorded op, casts included, is what autograd runs in eager).
- `compile_default`: torch.compile (Inductor, default mode) of the same autocast graph, training: Inductor's
  real output, generated here without a GPU. The autocast ATen graph goes to torch._inductor.compile_fx
  (AOTAutograd + Inductor's min-cut partitioner + Inductor's lowering and scheduler) with: torch.cuda's device
  queries patched to an H100 (sm_90, 132 SMs, 80 GB), Triton's active driver replaced by one whose target is
  GPUTarget("cuda", 90, 32), the two pattern families that allocate real CUDA tensors at init (attention and
  randperm patterns, irrelevant here) skipped, and the joint graph traced on meta tensors (the autograd engine
  needs a CUDA context for "cuda" fake tensors) then moved to "cuda" fake tensors before Inductor's joint-graph
  passes, partitioning and lowering (compile_fx.partition_fn, compile_fx_forward/backward wrapped). Dynamo's
  pre-grad passes are not run (make_fx's graph replaces Dynamo's). Each scheduler node Inductor emits is one
  step: extern kernels (cuBLAS mm/addmm/bmm, Inductor's default for every GEMM) with their shapes, generated
  Triton kernels with the bytes Inductor counts for them (get_read_write_buffers_sizes). Where Inductor would
  benchmark (pad_mm's padded-versus-unpadded GEMM, torch/_inductor/fx_passes/pad_mm.py `_should_pad`) the
  model answers instead, with pad_mm's own rule (pad when the unpadded time exceeds 1.1x the padded one).
- `compile_max_autotune`: the default sequence with every GEMM step made an alternative, priced as the
  cheapest (what Inductor's autotuning and `benchmark_epilogue_fusion` would pick, torch/_inductor/config.py):
  cuBLAS (+ the separate kernel that consumes its output), or Inductor's Triton mm template
  (benchmarks/baselines_kernels.py, a faithful copy) for each config of Inductor's H100 list
  (CUDAConfigHeuristic().get_mm_configs(), torch/_inductor/heuristics/template/triton.py) with the consumer
  fused as its epilogue when Inductor can fuse it (a pointwise node over the GEMM's output numel: bias, GELU,
  residual add, casts; a reduction such as LayerNorm's backward cannot be an epilogue). The template's
  prologue never takes LayerNorm: Inductor's prologue fusion takes pointwise nodes only
  (torch/_inductor/scheduler.py `Scheduler.can_fuse_prologue` / `check_prologue_fusion_heuristics_fusable`),
  and refuses upcasts into a lower-precision template (`TritonTemplateKernel` prologue checks in
  torch/_inductor/select_algorithm.py); the default sequence keeps LayerNorm in its own generated kernel, which
  is therefore unchanged here. This part is written from Inductor's rules, on top of its real default graph:
  Inductor's template autotuning itself needs a GPU to benchmark its candidates.

    python -m benchmarks.baselines          # B/16 per half, and the timm-ratio sanity check

Entry points: `steps(family_shape_name, batch)` -> {baseline: {(op, phase): [step, ...]}},
`price(steps, card)` -> dict(time_s, parts), `baselines(family_shape_name, batch, card)` ->
{baseline: {(op, phase): time_s}}.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field

BASELINES = ("eager_bf16", "eager_autocast", "compile_default", "compile_max_autotune")
PHASES = ("fwd", "bwd")


# --------------------------------------------------------------------------------------------------
# Steps beyond launch_record.AtenOp


@dataclass
class TemplateGemm:
    """Inductor's Triton mm/bmm template over [batch] x [M, K] @ [K, N] with a fused epilogue, priced as
    the fastest of Inductor's H100 configs."""
    name: str
    M: int
    N: int
    K: int
    batch: int
    dtype: object
    out_dtype: object
    a_strides: tuple          # (m, k, batch) in elements
    b_strides: tuple          # (k, n, batch)
    bias: bool = False
    n_extra: int = 0          # further [M, N] tensors the epilogue reads
    act: int = 0              # 0 none, 1 GELU, 2 times GELU'(aux)
    out2: bool = False        # the GEMM result is also written (saved for the backward)
    epilogue_bytes: float = 0.0

    @property
    def flops(self) -> float:
        return 2.0 * self.batch * self.M * self.N * self.K


@dataclass
class Choice:
    """Alternatives (each a list of steps); priced as the cheapest."""
    name: str
    options: list = field(default_factory=list)

    @property
    def flops(self) -> float:
        return _flops(self.options[0])


def _flops(steps) -> float:
    return sum(getattr(s, "flops", 0.0) or 0.0 for s in steps)


# --------------------------------------------------------------------------------------------------
# Shapes and blocks


def family_shapes() -> dict:
    """family_shape_name -> (family, shape dict), from speed_model's and cases' dicts."""
    from benchmarks import speed_model as sm
    from benchmarks.cases import SHAPES as MIXER
    out = {k: ("mixer", v) for k, v in MIXER.items()}
    out.update({k: ("mixer", v) for k, v in sm.LARGE_S_SHAPES.items()})
    out.update({k: ("resmlp", v) for k, v in sm.RESMLP_SHAPES.items()})
    out.update({k: ("gmlp", v) for k, v in sm.GMLP_SHAPES.items()})
    out.update({k: ("gmixer", v) for k, v in sm.GMIXER_SHAPES.items()})
    return out


def _block(family: str, shape: dict):
    """timm's block on the meta device, fp32 parameters."""
    import torch
    from timm.models import mlp_mixer as mm
    with torch.device("meta"):
        if family == "mixer":
            return mm.MixerBlock(shape["C"], shape["S"], mlp_ratio=(shape["DS"] / shape["C"],
                                                                   shape["DC"] / shape["C"]))
        if family == "gmixer":
            from timm.layers import GluMlp
            return mm.MixerBlock(shape["C"], shape["S"], mlp_ratio=(shape["DS"] / shape["C"],
                                                                   shape["DC"] / shape["C"]),
                                 mlp_layer=GluMlp, act_layer=torch.nn.SiLU)
        if family == "resmlp":
            return mm.ResBlock(shape["C"], shape["S"])
        if family == "gmlp":
            from timm.layers import GatedMlp
            return mm.SpatialGatingBlock(shape["C"], shape["S"], mlp_ratio=shape["DC"] / shape["C"],
                                         mlp_layer=GatedMlp)
    raise ValueError(f"family: expected mixer, gmixer, resmlp or gmlp, got {family!r}")


def _halves(family: str, blk) -> dict:
    """op -> f(x) on the block's modules (speed_model's halves: x [B, S, C] -> [B, S, C])."""
    if family in ("mixer", "gmixer"):
        return {"token_mixing": lambda x: x + blk.mlp_tokens(blk.norm1(x).transpose(1, 2)).transpose(1, 2),
                "channel_mixing": lambda x: x + blk.mlp_channels(blk.norm2(x))}
    if family == "resmlp":
        return {"token_mixing": lambda x: x + blk.ls1 * blk.linear_tokens(blk.norm1(x).transpose(1, 2)).transpose(1, 2),
                "channel_mixing": lambda x: x + blk.ls2 * blk.mlp_channels(blk.norm2(x))}
    return {"gmlp_block": lambda x: x + blk.mlp_channels(blk.norm(x))}


def matmul_flops(family: str, shape: dict, batch: int) -> dict:
    """op -> the half's forward matrix-product FLOPs (speed_model's counts)."""
    B, S, C, DS, DC = batch, shape["S"], shape["C"], shape["DS"], shape["DC"]
    if family == "resmlp":
        return {"token_mixing": 2.0 * B * C * S * S, "channel_mixing": 4.0 * B * S * C * DC}
    if family == "gmixer":
        return {"token_mixing": 3.0 * B * C * S * DS, "channel_mixing": 3.0 * B * S * C * DC}
    if family == "gmlp":
        return {"gmlp_block": 2.0 * B * S * (C * DC + S * DC // 2 + DC // 2 * C)}
    return {"token_mixing": 4.0 * B * C * S * DS, "channel_mixing": 4.0 * B * S * C * DC}


# --------------------------------------------------------------------------------------------------
# A driverless H100 for torch.autocast and Inductor


class _H100Props:
    name = "NVIDIA H100 80GB HBM3"
    major, minor = 9, 0
    multi_processor_count = 132
    total_memory = 80 * 2**30
    warp_size = 32
    L2_cache_size = 50 * 2**20
    max_threads_per_multi_processor = 2048
    max_threads_per_block = 1024
    regs_per_multiprocessor = 65536
    shared_memory_per_block_optin = 232448
    shared_memory_per_multiprocessor = 233472
    shared_memory_per_block = 49152
    gcnArchName = "NVIDIA H100"
    is_integrated = False
    is_multi_gpu_board = False
    uuid = "00000000-0000-0000-0000-000000000000"
    pci_bus_id = pci_device_id = pci_domain_id = 0
    clock_rate = 1830000
    memory_clock_rate = 2619000
    memory_bus_width = 5120


class _FakeDriver:
    """Triton's active driver for code generation only: its target is sm_90; nothing launches."""

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, *a):
        return 0

    def get_device_interface(self):
        import torch
        return torch.cuda

    def is_active(self):
        return True

    def get_active_torch_device(self):
        import torch
        return torch.device("cuda", 0)

    def get_benchmarker(self):
        raise RuntimeError("baselines: no benchmarking without a GPU (the speed model prices candidates)")


@contextlib.contextmanager
def _patched(obj, **attrs):
    old = {k: getattr(obj, k) for k in attrs}
    for k, v in attrs.items():
        setattr(obj, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(obj, k, v)


@contextlib.contextmanager
def fake_h100():
    """torch.cuda reports one H100 (sm_90, 132 SMs, 80 GB) without a driver; restored on exit."""
    import torch
    import torch.cuda.random as cr
    props = _H100Props()
    rng = lambda *a, **k: torch.zeros(16, dtype=torch.uint8)    # noqa: E731
    with contextlib.ExitStack() as st:
        st.enter_context(_patched(
            torch.cuda, is_available=lambda: True, is_bf16_supported=lambda *a, **k: True,
            device_count=lambda: 1, current_device=lambda: 0, get_device_properties=lambda *a, **k: props,
            get_device_capability=lambda *a, **k: (9, 0), get_device_name=lambda *a, **k: props.name,
            set_device=lambda *a, **k: None, synchronize=lambda *a, **k: None, get_rng_state=rng,
            set_rng_state=lambda *a, **k: None, _lazy_init=lambda: None, _exchange_device=lambda i: -1,
            _maybe_exchange_device=lambda i: -1))
        st.enter_context(_patched(cr, get_rng_state=rng, set_rng_state=lambda *a, **k: None))
        # FakeTensorMode allocates one real CUDA tensor when torch.cuda says it is available (torch 2.11)
        import torch._subclasses.fake_tensor as ft
        st.enter_context(_patched(ft, init_gpu_context=lambda device: None))
        # Inductor's device interface bound torch.cuda's functions when it was imported
        from torch._dynamo.device_interface import CudaInterface
        sm = staticmethod
        st.enter_context(_patched(
            CudaInterface, current_device=sm(lambda: 0), set_device=sm(lambda *a, **k: None),
            device_count=sm(lambda: 1), synchronize=sm(lambda *a, **k: None),
            get_device_properties=sm(lambda *a, **k: props), exchange_device=sm(lambda i: -1),
            maybe_exchange_device=sm(lambda i: -1), is_bf16_supported=sm(lambda *a, **k: True)))
        yield


def _meta_to(gm, device):
    import torch
    for n in gm.graph.nodes:
        if n.op in ("placeholder", "output"):
            continue
        d = n.kwargs.get("device")
        if isinstance(d, torch.device) and d.type != device:
            n.kwargs = {**n.kwargs, "device": torch.device(device, 0) if device == "cuda" else torch.device(device)}
    gm.recompile()
    return gm


@functools.lru_cache(maxsize=32)
def autocast_graph(family_shape_name: str, op: str, batch: int):
    """(make_fx ATen graph of the half under bf16 autocast, fp32 parameter shapes in the graph's input
    order after x). Traced on "cuda" FakeTensorMode tensors: autocast's dispatch inserts its casts."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.nn.utils.stateless import _reparametrize_module
    family, shape = family_shapes()[family_shape_name]
    blk = _block(family, shape)
    half = _halves(family, blk)[op]
    names = [n for n, _ in blk.named_parameters()]
    shapes = [tuple(p.shape) for _, p in blk.named_parameters()]
    with fake_h100(), FakeTensorMode():
        x = torch.empty(batch, shape["S"], shape["C"], device="cuda")
        ps = [torch.empty(s, device="cuda") for s in shapes]

        def f(x, *ps):
            with _reparametrize_module(blk, dict(zip(names, ps, strict=True))), \
                    torch.autocast("cuda", dtype=torch.bfloat16):
                return half(x)
        gm = make_fx(f)(x, *ps)
    return gm, shapes


# --------------------------------------------------------------------------------------------------
# Eager


def _record_fwd_bwd(f, x, params) -> dict:
    import torch

    from benchmarks.launch_record import record
    out_rec, out = record(lambda: f(x, *params))
    dy = torch.empty(out.shape, dtype=out.dtype, device="meta")
    bwd_rec, _ = record(lambda: torch.autograd.grad(out, [x, *params], dy, allow_unused=True))
    return {"fwd": out_rec.steps, "bwd": bwd_rec.steps}


def eager_bf16(family_shape_name: str, batch: int) -> dict:
    """{(op, phase): [AtenOp]}: timm's block as bf16 modules on meta tensors."""
    import torch
    family, shape = family_shapes()[family_shape_name]
    blk = _block(family, shape).to(torch.bfloat16)
    for p in blk.parameters():
        p.requires_grad_(True)
    out = {}
    for op, half in _halves(family, blk).items():
        x = torch.empty(batch, shape["S"], shape["C"], device="meta", dtype=torch.bfloat16, requires_grad=True)
        rec = _record_fwd_bwd(lambda x, *ps, half=half: half(x), x, list(blk.parameters()))
        out.update({(op, ph): rec[ph] for ph in PHASES})
    return out


def eager_autocast(family_shape_name: str, batch: int) -> dict:
    """{(op, phase): [AtenOp]}: fp32 modules under bf16 autocast (autocast_graph replayed on meta)."""
    import copy

    import torch
    family, shape = family_shapes()[family_shape_name]
    out = {}
    for op in _halves(family, _block(family, shape)):
        gm, shapes = autocast_graph(family_shape_name, op, batch)
        gm = _meta_to(copy.deepcopy(gm), "meta")
        x = torch.empty(batch, shape["S"], shape["C"], device="meta", requires_grad=True)
        ps = [torch.empty(s, device="meta", requires_grad=True) for s in shapes]
        rec = _record_fwd_bwd(gm, x, ps)
        out.update({(op, ph): rec[ph] for ph in PHASES})
    return out


# --------------------------------------------------------------------------------------------------
# Inductor


def _layout_of(node):
    lay = node.get_layout()
    return [int(s) for s in lay.size], [int(s) for s in lay.stride], int(lay.offset), lay.dtype


def _aligned(strides, sizes, offset, dtype) -> bool:
    e = dtype.itemsize
    return (offset * e) % 16 == 0 and all((st * e) % 16 == 0 for sz, st in zip(sizes, strides, strict=True)
                                          if sz > 1 and st != 1)


def _scheduler_steps(sched) -> list:
    """One step per Inductor scheduler node: extern GEMMs with their shapes, everything else by bytes."""
    from torch._inductor import scheduler as S
    from torch._inductor.utils import get_fused_kernel_name

    from benchmarks.launch_record import AtenOp
    steps = []
    for sn in sched.nodes:
        if isinstance(sn, S.NopKernelSchedulerNode):
            continue
        nbytes = float(sn.get_read_write_buffers_sizes())
        reads = sorted(d.name for d in sn.read_writes.reads)
        writes = sorted(sn.get_buffer_names())
        if isinstance(sn, S.ExternKernelSchedulerNode):
            k = sn.node
            kname = str(getattr(k, "python_kernel_name", None) or type(k).__name__).split(".")[-1]
            if kname in ("mm", "addmm", "bmm", "baddbmm"):
                ins = [_layout_of(i) for i in k.inputs]
                a, b = (ins[1], ins[2]) if kname in ("addmm", "baddbmm") else (ins[0], ins[1])
                osz, ost, ooff, odt = _layout_of(k)
                K = a[0][-1]
                batch = a[0][0] if len(a[0]) == 3 else 1
                st = AtenOp(kname, nbytes, 2.0 * math.prod(osz) * K, M=a[0][-2], N=b[0][-1], K=K, batch=batch,
                            dtype=a[3], aligned=all(_aligned(t[1], t[0], t[2], t[3]) for t in (a, b))
                            and _aligned(ost, osz, ooff, odt))
                st.inductor = dict(reads=reads, writes=writes, a=a, b=b, bias=kname in ("addmm", "baddbmm"),
                                   out=(osz, ost, ooff, odt))
            else:
                st = AtenOp(f"extern:{kname}", nbytes)
                st.inductor = dict(reads=reads, writes=writes)
        else:
            kinds = {n.node.get_reduction_type() is not None if hasattr(n.node, "get_reduction_type") else False
                     for n in sn.get_nodes()}
            name = "triton_" + ("red_" if True in kinds else "poi_") + get_fused_kernel_name(sn.get_nodes(),
                                                                                            "original_aten")
            st = AtenOp(name[:90], nbytes)
            st.inductor = dict(reads=reads, writes=writes, reduction=True in kinds,
                               numel=int(sn.get_nodes()[0].node.get_numel()) if hasattr(sn.get_nodes()[0].node,
                                                                                           "get_numel") else 0)
        steps.append(st)
    return steps


def _model_should_pad(match, mat1, mat2, op, input=None) -> bool:
    """pad_mm's decision (torch/_inductor/fx_passes/pad_mm.py `_should_pad`) with the model as the
    benchmark: pad when the unpadded GEMM takes over 1.1x the padded one plus the padding copies."""
    import torch
    from torch._inductor.fx_passes import pad_mm as pm

    from benchmarks import hopper_model as hm
    if op is torch.ops.aten.bmm:
        b, m, k = (int(v) for v in mat1.shape)
        n = int(mat2.shape[2])
    elif op in (torch.ops.aten.mm, torch.ops.aten.addmm):
        b, (m, k), n = 1, (int(v) for v in mat1.shape), int(mat2.shape[1])
    else:
        return False
    if not pm.is_mm_compute_bound(m, k, n, mat1.dtype):
        return False
    kp = k + pm.get_padded_length(k, pm.get_alignment_size(mat1))
    mp = m + pm.get_padded_length(m, pm.get_alignment_size(mat1))
    np_ = n + pm.get_padded_length(n, pm.get_alignment_size(mat2))
    e = mat1.dtype.itemsize
    ori = gemm_time(m, n, k, mat1.dtype, batch=b, aligned=(k * e) % 16 == 0 and (n * e) % 16 == 0)
    copies = 0.0
    if (kp, mp) != (k, m):
        copies += hm.model_elementwise(b * (m * k + mp * kp) * e)
    if (kp, np_) != (k, n):
        copies += hm.model_elementwise(b * (k * n + kp * np_) * e)
    pad = gemm_time(mp, np_, kp, mat1.dtype, batch=b, aligned=True) + copies
    return ori > 1.1 * pad


@contextlib.contextmanager
def _inductor_codegen(captured: list):
    """Inductor generates its code for a driverless H100; every graph's scheduler steps go to `captured`
    as (kind, steps), kind "forward", "backward" or "inference"; nothing is compiled or loaded."""
    import types

    import torch
    import torch._functorch.config as fconf
    import torch._inductor.compile_fx as cfx
    import torch._inductor.config as iconf
    import torch.utils._pytree as pytree
    from torch._guards import detect_fake_mode
    from torch._inductor.fx_passes import fuse_attention, misc_patterns, pad_mm
    from torch._inductor.graph import GraphLowering
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp
    from triton.runtime.driver import driver

    def to_cuda(gm, inputs):
        mode = detect_fake_mode(inputs)
        _meta_to(gm, "cuda")
        with mode:
            ins = [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cuda")
                   if isinstance(t, torch.Tensor) else t for t in inputs]
        FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*ins)
        return gm, ins

    kind = ["inference"]
    of, ob, opf = cfx.compile_fx_forward, cfx.compile_fx_backward, cfx.partition_fn

    def fwd(gm, inputs, *a, **k):
        kind[0] = "inference" if k.get("is_inference") else "forward"
        gm, ins = to_cuda(gm, inputs)
        return of(gm, ins, *a, **k)

    def bwd(gm, inputs, *a, **k):
        kind[0] = "backward"
        gm, ins = to_cuda(gm, inputs)
        return ob(gm, ins, *a, **k)

    def part(gm, joint_inputs, **k):
        flat, spec = pytree.tree_flatten(joint_inputs)
        gm, ins = to_cuda(gm, flat)
        return opf(gm, pytree.tree_unflatten(ins, spec), **k)

    def grab(self):
        self.codegen()
        captured.append((kind[0], _scheduler_steps(self.scheduler)))
        mod = types.ModuleType("baselines_grabbed")
        mod.call = lambda args: None
        mod.runner = None
        mod.recursively_apply_fns = lambda fns: None
        return mod

    old_driver = getattr(driver, "_active", None)      # not `.active`: that creates the (absent) CUDA driver
    driver.set_active(_FakeDriver())
    try:
        with contextlib.ExitStack() as st:
            st.enter_context(fake_h100())
            st.enter_context(_patched(cfx, compile_fx_forward=fwd, compile_fx_backward=bwd, partition_fn=part))
            st.enter_context(_patched(GraphLowering, compile_to_module=grab))
            st.enter_context(_patched(fuse_attention, _sfdp_init=lambda *a, **k: None))
            st.enter_context(_patched(misc_patterns, _misc_patterns_init=lambda *a, **k: None))
            st.enter_context(_patched(pad_mm, _should_pad=_model_should_pad))
            st.enter_context(iconf.patch(fx_graph_cache=False, fx_graph_remote_cache=False, force_disable_caches=True,
                                         compile_threads=1, max_autotune=False, max_autotune_gemm=False))
            st.enter_context(fconf.patch(force_non_lazy_backward_lowering=True, enable_autograd_cache=False))
            yield
    finally:
        driver._active = old_driver


@functools.lru_cache(maxsize=32)
def inductor_steps(family_shape_name: str, op: str, batch: int) -> dict:
    """{"fwd": steps, "bwd": steps}: Inductor's (default mode) kernels for the half's autocast graph,
    training (every input and parameter requires grad)."""
    import copy

    import torch
    from torch._inductor.compile_fx import compile_fx
    from torch._subclasses.fake_tensor import FakeTensorMode
    _, shape = family_shapes()[family_shape_name]
    gm, shapes = autocast_graph(family_shape_name, op, batch)
    gm = _meta_to(copy.deepcopy(gm), "meta")
    captured: list = []
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(batch, shape["S"], shape["C"], device="meta", requires_grad=True)
        ps = [torch.empty(s, device="meta", requires_grad=True) for s in shapes]
    with _inductor_codegen(captured):
        torch._dynamo.reset()
        compile_fx(gm, [x, *ps])
    got = dict(captured)
    return {"fwd": got["forward"], "bwd": got["backward"]}


def compile_default(family_shape_name: str, batch: int) -> dict:
    """{(op, phase): steps}: Inductor default mode, training."""
    family, shape = family_shapes()[family_shape_name]
    out = {}
    for op in _halves(family, _block(family, shape)):
        got = inductor_steps(family_shape_name, op, batch)
        out.update({(op, ph): list(got[ph]) for ph in PHASES})
    return out


def _epilogue(steps, i):
    """The consumer of GEMM step i that Inductor could fuse as the template's epilogue: the only node
    reading its output, pointwise over the same numel. (index, n_extra, act, out2) or None."""
    g = steps[i]
    out = g.inductor["writes"]
    users = [j for j, s in enumerate(steps) if j != i and set(out) & set(s.inductor["reads"])]
    if len(users) != 1:
        return None
    j = users[0]
    c = steps[j]
    numel = g.batch * g.M * g.N
    if not c.name.startswith("triton_poi") or c.inductor.get("numel") != numel:
        return None
    n_extra = min(2, max(0, len(set(c.inductor["reads"]) - set(out))))
    act = 2 if "gelu_backward" in c.name else (1 if "gelu" in c.name else 0)
    return j, n_extra, act, len(c.inductor["writes"]) > 1


def compile_max_autotune(family_shape_name: str, batch: int) -> dict:
    """{(op, phase): steps}: the default sequence with every GEMM (and the pointwise kernel Inductor could
    fuse into it) an alternative: cuBLAS (+ that kernel) or Inductor's Triton template with it fused."""
    from benchmarks.launch_record import AtenOp
    out = {}
    for key, steps in compile_default(family_shape_name, batch).items():
        new, skip = [], set()
        for i, s in enumerate(steps):
            if i in skip:
                continue
            if not (isinstance(s, AtenOp) and s.M is not None):
                new.append(s)
                continue
            ep = _epilogue(steps, i)
            a, b = s.inductor["a"], s.inductor["b"]
            a_str = (a[1][-2], a[1][-1], a[1][0] if len(a[1]) == 3 else 0)
            b_str = (b[1][-2], b[1][-1], b[1][0] if len(b[1]) == 3 else 0)
            out_dtype = s.inductor["out"][3]
            base = dict(name=f"template_{s.name}", M=s.M, N=s.N, K=s.K, batch=s.batch, dtype=s.dtype,
                        out_dtype=out_dtype, a_strides=a_str, b_strides=b_str, bias=s.inductor["bias"])
            plain = TemplateGemm(**base, epilogue_bytes=s.batch * s.M * s.N * out_dtype.itemsize
                                 + (s.N * s.dtype.itemsize if s.inductor["bias"] else 0))
            options = [[s], [plain]]
            if ep is not None:
                j, n_extra, act, out2 = ep
                c = steps[j]
                gemm_out = s.batch * s.M * s.N * out_dtype.itemsize
                fused = TemplateGemm(**{**base, "name": f"template_{s.name}+{c.name[:40]}"}, n_extra=n_extra,
                                     act=act, out2=out2,
                                     epilogue_bytes=c.bytes - gemm_out + (s.N * s.dtype.itemsize
                                                                          if s.inductor["bias"] else 0))
                options = [[s, c], [plain, c], [fused]]
                skip.add(j)
                # keep order: the consumer follows the GEMM in Inductor's schedule only if nothing between
                # them reads its output; fine for pricing (a sum)
            new.append(Choice(f"{s.name} {s.batch}x{s.M}x{s.N}x{s.K}", options))
        out[key] = new
    return out


# --------------------------------------------------------------------------------------------------
# Pricing


def gemm_time(M, N, K, dtype=None, card="H100", *, batch=1, aligned=True, level="central") -> float:
    """hopper_model.model_gemm (cuBLAS by its shape class)."""
    from benchmarks import hopper_model as hm
    return hm.model_gemm(int(M), int(N), int(K), dtype, card, batch=int(batch), aligned=bool(aligned), level=level)


def inductor_mm_configs(M: int, N: int, K: int, dtype_size: int = 2) -> list[dict]:
    """The configs Inductor's max-autotune tries for an mm of these sizes on an H100 (sm_90)."""
    import types

    from torch._inductor.heuristics.template.triton import CUDAConfigHeuristic
    from torch._inductor.sizevars import SizeVarAllocator
    from torch._inductor.virtualized import V
    with fake_h100(), V.set_graph_handler(types.SimpleNamespace(sizevars=SizeVarAllocator())):
        cfgs = list(CUDAConfigHeuristic().get_mm_configs()(M, N, K, dtype_size=dtype_size, op_name="mm"))
    return [dict(kwargs=dict(c.kwargs), num_warps=c.num_warps, num_stages=c.num_stages) for c in cfgs]


_TEMPLATE_CACHE: dict = {}


def template_time(t: TemplateGemm, card="H100", configs=None, level="central") -> tuple[float, str]:
    """(seconds, config) of the fastest of Inductor's configs for the rendered template (model)."""
    from benchmarks import hopper_model as hm
    from benchmarks.baselines_kernels import template_args, triton_mm_template
    key = (t.M, t.N, t.K, t.batch, str(t.dtype), str(t.out_dtype), t.a_strides, t.b_strides, t.bias, t.n_extra,
           t.act, t.out2, t.epilogue_bytes, card, level, None if configs is None else repr(configs))
    if key in _TEMPLATE_CACHE:
        return _TEMPLATE_CACHE[key]
    best = (math.inf, "none")
    e = t.dtype.itemsize
    for cfg in configs or inductor_mm_configs(t.M, t.N, t.K, e):
        kw = cfg["kwargs"]
        args = template_args(t.M, t.N, t.K, t.dtype, t.out_dtype, t.a_strides, t.b_strides, kw, bias=t.bias,
                             n_extra=t.n_extra, act=t.act, out2=t.out2)
        grid = (math.ceil(t.M / kw["BLOCK_M"]) * math.ceil(t.N / kw["BLOCK_N"]), t.batch)
        work = dict(flops=t.flops, bytes=t.batch * (t.M * t.K + t.K * t.N) * e + t.epilogue_bytes,
                    trips=math.ceil(t.K / kw["BLOCK_K"]), outer=1, k=t.K)
        try:
            r = hm.model_triton_launch(triton_mm_template, args, grid, cfg["num_warps"], cfg["num_stages"], work,
                                       card, level=level)
        except (RuntimeError, ValueError):   # does not compile or fit on an SM: Inductor drops it too
            continue
        if r["time_s"] < best[0]:
            best = (r["time_s"], f"{kw['BLOCK_M']}x{kw['BLOCK_N']}x{kw['BLOCK_K']} w{cfg['num_warps']} "
                                 f"s{cfg['num_stages']}")
    _TEMPLATE_CACHE[key] = best
    return best


def price(steps, card: str = "H100", configs=None, level: str = "central") -> dict:
    """dict(time_s, parts=[(name, seconds), ...]) of a step list: matrix products by model_gemm with their
    shape class, other ATen/generated kernels by model_elementwise of their bytes, templates by
    model_triton_launch (fastest config), alternatives by their cheapest option. `configs` limits the
    template configs (tests); `level` the end of the constants' ranges (hopper_model.CONSTANTS)."""
    from benchmarks import hopper_model as hm
    from benchmarks.launch_record import AtenOp, TritonLaunch
    parts = []
    for s in steps:
        if isinstance(s, Choice):
            opts = [price(o, card, configs, level) for o in s.options]
            best = min(range(len(opts)), key=lambda i: opts[i]["time_s"])
            parts.append((f"{s.name} [{'+'.join(p[0] for p in opts[best]['parts'])}]", opts[best]["time_s"]))
        elif isinstance(s, TemplateGemm):
            t, cfg = template_time(s, card, configs, level)
            parts.append((f"{s.name} ({cfg})", t))
        elif isinstance(s, AtenOp):
            if s.M is not None:
                parts.append((s.name, gemm_time(s.M, s.N, s.K, s.dtype, card, batch=s.batch,
                                                aligned=s.aligned is not False, level=level)))
            else:          # by its bytes, at its ATen class's efficiency (hopper_model.ATEN_EFF)
                parts.append((s.name, hm.aten_time(s, card, level)))
        elif isinstance(s, TritonLaunch):
            raise TypeError("price: Triton launches of the fused ops are priced by speed_model")
        else:
            raise TypeError(f"price: unknown step {type(s).__name__}")
    return dict(time_s=sum(t for _, t in parts), parts=parts)


def steps(family_shape_name: str, batch: int = 256) -> dict:
    """{baseline: {(op, phase): [step, ...]}} for the four baselines."""
    return {"eager_bf16": eager_bf16(family_shape_name, batch),
            "eager_autocast": eager_autocast(family_shape_name, batch),
            "compile_default": compile_default(family_shape_name, batch),
            "compile_max_autotune": compile_max_autotune(family_shape_name, batch)}


@functools.lru_cache(maxsize=16)
def _steps_cached(family_shape_name: str, batch: int) -> dict:
    return steps(family_shape_name, batch)


def baselines(family_shape_name: str, batch: int = 256, card: str = "H100", level: str = "central") -> dict:
    """{baseline: {(op, phase): time_s}} (model)."""
    return {b: {k: price(v, card, level=level)["time_s"] for k, v in seqs.items()}
            for b, seqs in _steps_cached(family_shape_name, batch).items()}


def main():
    import sys
    names = sys.argv[1:] or ["B/16", "mixer_b16_ratio"]
    fam = family_shapes()
    for name in names:
        if name == "mixer_b16_ratio":
            print("\ntimm ratio check (inference = fwd; compile_default vs eager_autocast, model, not tuned):")
            for n, pub in (("B/16", "1.38-1.43"), ("resmlp_24", "1.6-2.6"), ("gmixer_24", "1.6-2.6"),
                           ("gmlp_s16", "1.6-2.6")):
                r = baselines(n)
                e = sum(t for (op, ph), t in r["eager_autocast"].items() if ph == "fwd")
                c = sum(t for (op, ph), t in r["compile_default"].items() if ph == "fwd")
                b = sum(t for (op, ph), t in r["eager_bf16"].items() if ph == "fwd")
                print(f"  {n:10s} eager_autocast/compile_default {e / c:.2f}x  eager_bf16/compile_default "
                      f"{b / c:.2f}x  (timm CSV, RTX 4090/5090: {pub}x)")
            continue
        if name not in fam:
            raise SystemExit(f"unknown shape {name!r}: {sorted(fam)}")
        r = baselines(name)
        print(f"\n{name}, batch 256, bf16, H100 model (ms):")
        print("| baseline | op | fwd | fwd+bwd |")
        for b, d in r.items():
            for op in dict.fromkeys(op for op, _ in d):
                print(f"| {b} | {op} | {d[op, 'fwd'] * 1e3:.3f} | {(d[op, 'fwd'] + d[op, 'bwd']) * 1e3:.3f} |")


if __name__ == "__main__":
    main()
