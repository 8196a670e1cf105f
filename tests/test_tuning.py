"""ops/_tuning.py without a GPU: which tile configs a card keeps (simulated cards: the compiled sizes come from a
function argument), MIXER_KERNELS_AUTOTUNE=0's pick, the error when nothing fits, the autotuner's behaviour
inside a CUDA-graph capture and its disk cache. The same pruning judged with the real compiled sizes of every
kernel's table for sm_80/86/90/120 is tests/test_compile.py; the capture on a real GPU is
tests/test_gpu.py::test_gpu_first_call_in_cuda_graph_capture."""
import json
import os

import pytest
import torch
import triton
import triton.language as tl
from helpers import assert_close, count_launches

import mixer_kernels as mk
import mixer_kernels.ops.gmixer_token_mixing as gtm
from mixer_kernels._config import triton_interpret
from mixer_kernels.ops import _token_kernels as tk
from mixer_kernels.ops import _tuning, affine
from mixer_kernels.ops._tuning import SHARED_PER_BLOCK, Entry, NoConfigFits, keep
from reference import ops as ref_ops

KB = 1024


def _sizes(table):
    """A fake compile: (shared, spills) per config name."""
    return lambda c: table[c]


def test_card_limits():
    assert SHARED_PER_BLOCK[90] == 227 * KB and SHARED_PER_BLOCK[80] == 163 * KB
    assert SHARED_PER_BLOCK[86] == SHARED_PER_BLOCK[89] == SHARED_PER_BLOCK[120] == 99 * KB
    assert _tuning.shared_limit(arch=86) == 99 * KB


@pytest.mark.parametrize("arch", [90, 80, 86, 89, 120])
def test_keep_drops_what_does_not_fit(arch):
    """An H100-sized table on each card: entries over the card's limit are dropped, the rest kept in table
    order; at least one is kept on every card."""
    sizes = {"big": (224 * KB, 0), "mid": (160 * KB, 0), "small": (96 * KB, 0), "tiny": (40 * KB, 0)}
    limit = SHARED_PER_BLOCK[arch]
    kept = [e.config for e in keep("k", [Entry(n) for n in sizes], _sizes(sizes), limit, tune=True)]
    assert kept == [n for n, (sh, _) in sizes.items() if sh <= limit]
    assert kept and all(sizes[n][0] <= limit for n in kept)


def test_keep_prefers_clean_primaries_then_fallbacks():
    sizes = {"a": (100 * KB, 0), "b": (90 * KB, 16), "fb": (80 * KB, 0), "fb2": (60 * KB, 8)}
    table = [Entry("a"), Entry("b"), Entry("fb", fallback=True), Entry("fb2", fallback=True)]

    def kept(limit, tune=True):
        return [e.config for e in keep("k", [Entry(e.config, e.fallback) for e in table], _sizes(sizes), limit,
                                       tune=tune)]
    assert kept(227 * KB) == ["a"]               # a clean primary: the fallbacks are never tuned over
    assert kept(99 * KB) == ["fb"]               # "a" does not fit, "b" spills: the clean fallback
    sizes["fb"] = (80 * KB, 4)
    assert kept(99 * KB) == ["b"]                # nothing clean: the fitting primary before the fallbacks
    assert kept(70 * KB) == ["fb2"]              # only a fallback fits
    with pytest.raises(NoConfigFits, match=r"k: no tile config fits .* 40960 bytes .*a: 102400 B"):
        kept(40 * KB)


def test_autotune_off_takes_the_first_fitting_compiling_no_more():
    """tune=False (MIXER_KERNELS_AUTOTUNE=0, one-entry tables, a capture): the first kept entry, and the
    entries after it are never compiled (on an H100 the one compile the launch needs)."""
    sizes = {"a": (104 * KB, 0), "b": (86 * KB, 0), "c": (50 * KB, 0)}
    compiled = []

    def compile_(c):
        compiled.append(c)
        return sizes[c]
    assert [e.config for e in keep("k", map(Entry, sizes), compile_, 227 * KB, tune=False)] == ["a"]
    assert compiled == ["a"]
    compiled.clear()
    assert [e.config for e in keep("k", map(Entry, sizes), compile_, 99 * KB, tune=False)] == ["b"]
    assert compiled == ["a", "b"]
    compiled.clear()     # autotuning: every primary compiled, a fallback only when no primary is clean
    entries = [Entry("a"), Entry("b"), Entry("c", fallback=True)]
    assert [e.config for e in keep("k", entries, compile_, 227 * KB, tune=True)] == ["a", "b"]
    assert compiled == ["a", "b"]


@pytest.mark.parametrize("kernel, fp32", [("fwd", False), ("fwd", True), ("dt", False), ("dt", True)])
def test_token_tables_have_a_fallback_for_99kb_cards(kernel, fp32):
    """The token-major tables: the default config first (it stays MIXER_KERNELS_AUTOTUNE=0's on an H100), the
    autotune list, then fallbacks; small C and DS shrink every entry as they shrink the default."""
    dtype = torch.float32 if fp32 else torch.bfloat16
    table = tk.tuning_table(kernel, 196, 768, 384, dtype)
    assert table[0] == tk.default_config(kernel, 196, 768, 384, dtype)
    primaries = [c for c in table if not c.get("fallback")]
    assert all(c in primaries for c in [table[0]] + tk.GPU_CONFIGS[(kernel, fp32)])
    assert table[:len(primaries)] == primaries
    assert table[len(primaries):] == [dict(c, fallback=True) for c in tk.FALLBACK_CONFIGS[(kernel, fp32)]]
    small = tk.tuning_table(kernel, 49, 20, 24, dtype)
    assert all(c["BLOCK_C"] <= 32 and c["BLOCK_H"] <= tk.ds_pad(24) for c in small)
    assert len({tuple(sorted(c.items())) for c in small}) == len(small)


# ------------------------------------------------------------------------------------------------
# The autotuner (interpreted kernels, a fake benchmark; the card simulated)


@triton.jit
def _plus_one_kernel(X, Y, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    tl.store(Y + offs, tl.load(X + offs, mask=m) + 1, mask=m)


def _tuner(benchmarks):
    def bench(fn, quantiles=None):
        fn()
        benchmarks.append(1)
        return [1.0, 1.0, 1.0]
    cfgs = [dict(BLOCK=b, num_warps=4, num_stages=1, fallback=f) for b, f in ((64, False), (32, False), (16, True))]
    return _tuning.autotuner(cfgs, ["N"], do_bench=bench)(_plus_one_kernel)


def _launch(tuner, n=100):
    x = torch.randn(n)
    y = torch.full_like(x, float("nan"))
    tuner[lambda m: (triton.cdiv(n, m["BLOCK"]),)](x, y, n)
    torch.testing.assert_close(y, x + 1)


# as a card would compile them: BLOCK 64 needs 120 KB (over 99 KB), 32 and the fallback fit
_CARD = {64: (120 * KB, 0), 32: (80 * KB, 0), 16: (40 * KB, 0)}


def _sim_compiled(c):
    return _CARD[c.kwargs["BLOCK"]]


def test_autotuner_on_a_simulated_card(monkeypatch):
    benchmarks = []
    tuner = _tuner(benchmarks)
    with _tuning.simulated(86, _sim_compiled):
        _launch(tuner)
    assert [c.kwargs["BLOCK"] for c in tuner.cache.values()] == [32]   # only BLOCK 32 kept: nothing to measure
    assert benchmarks == []
    tuner = _tuner(benchmarks)
    with _tuning.simulated(90, _sim_compiled):
        _launch(tuner)
    assert len(benchmarks) == 2                                         # 64 and 32 measured, the fallback not
    monkeypatch.setenv("MIXER_KERNELS_AUTOTUNE", "0")
    benchmarks.clear()
    for arch, block in ((90, 64), (86, 32)):
        tuner = _tuner(benchmarks)
        with _tuning.simulated(arch, _sim_compiled):
            _launch(tuner)
        assert [c.kwargs["BLOCK"] for c in tuner.cache.values()] == [block]
    assert benchmarks == []


def test_autotuner_in_capture_measures_nothing(monkeypatch):
    """A first call inside a CUDA-graph capture runs the first kept config unmeasured and remembers nothing;
    the next call outside tunes; a later capture reuses the tuned config (the key is triton's own)."""
    benchmarks = []
    tuner = _tuner(benchmarks)
    ran = []
    orig = tuner.fn.run

    def spy(*args, **kwargs):
        ran.append(kwargs["BLOCK"])
        return orig(*args, **kwargs)
    monkeypatch.setattr(tuner.fn, "run", spy)
    with _tuning.simulated(90, _sim_compiled):
        monkeypatch.setattr(_tuning, "_capturing", lambda: True)
        _launch(tuner)
        assert benchmarks == [] and tuner.cache == {} and ran == [64]
        monkeypatch.setattr(_tuning, "_capturing", lambda: False)
        _CARD[32] = (80 * KB, 0)
        _launch(tuner)
        assert len(benchmarks) == 2 and len(tuner.cache) == 1
        (key, best), = tuner.cache.items()
        assert tuner._key((torch.empty(1), torch.empty(1), 100), {}) == key
        monkeypatch.setattr(_tuning, "_capturing", lambda: True)
        ran.clear()
        _launch(tuner)
        assert len(benchmarks) == 2 and ran == [best.kwargs["BLOCK"]]


def test_autotuner_caches_timings_on_disk(tmp_path, monkeypatch):
    """cache_results: the timings go to Triton's cache manager (TRITON_CACHE_DIR), and a new autotuner (a new
    process) reads them back instead of measuring. The interpreter turns Triton's disk cache off and has no
    driver, so both are stood in for here (an sm_90 target); the GPU test checks the real one."""
    import triton.runtime.autotuner as at
    from triton.backends.compiler import GPUTarget
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))

    class _Driver:
        class active:
            @staticmethod
            def get_current_target():
                return GPUTarget("cuda", 90, 32)
    monkeypatch.setattr(at, "driver", _Driver)
    interpreted = _plus_one_kernel        # an InterpretedFunction here: triton's cache wants a JITFunction's key
    monkeypatch.setattr(at, "JITFunction", type(interpreted))
    monkeypatch.setattr(interpreted, "cache_key", "plus-one-source", raising=False)
    benchmarks = []
    with _tuning.simulated(90, _sim_compiled):
        first = _tuner(benchmarks)
        first.cache_results = True
        _launch(first)
        assert len(benchmarks) == 2
        files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".autotune.json")]
        assert len(files) == 1 and "_plus_one_kernel" in files[0]
        with open(files[0]) as f:
            assert len(json.load(f)["configs_timings"]) == 2
        second = _tuner(benchmarks)
        second.cache_results = True
        _launch(second)
        assert len(benchmarks) == 2 and list(second.cache.values())[0].kwargs == list(first.cache.values())[0].kwargs


def test_plain_launch_pick(monkeypatch):
    """_tuning.pick (one-config launches): the first kept table entry on the simulated card."""
    table = [dict(BLOCK=64, num_warps=4, num_stages=1), dict(BLOCK=16, num_warps=4, num_stages=1, fallback=True)]
    sizes = {64: (120 * KB, 0), 16: (40 * KB, 0)}
    x = torch.empty(1)
    assert _tuning.pick(_plus_one_kernel, table, ("k",), x.device, (), {}) == table[0]    # CPU: the first
    with _tuning.simulated(86, lambda c: sizes[c["BLOCK"]]):
        assert _tuning.pick(_plus_one_kernel, table, ("k",), x.device, (), {}) == dict(BLOCK=16, num_warps=4,
                                                                                       num_stages=1)
    with _tuning.simulated(90, lambda c: sizes[c["BLOCK"]]):
        assert _tuning.pick(_plus_one_kernel, table, ("k",), x.device, (), {}) == table[0]
    sizes[16] = (100 * KB, 0)
    with _tuning.simulated(86, lambda c: sizes[c["BLOCK"]]), pytest.raises(NoConfigFits, match="RTX 3090"):
        _tuning.pick(_plus_one_kernel, table, ("k",), x.device, (), {})


def test_device_compiled_reads_the_compiled_kernel():
    """The run-time reading (a GPU's path, here with a stand-in for the JIT function): the launch's own
    arguments and the config's meta go to JITFunction.warmup (an autotuner's grid and warmup flags left out),
    the compiled shared memory is read, and the kernel is loaded (n_spills) only when it fits."""
    calls = []

    class Compiled:
        def __init__(self, shared):
            self.metadata = type("M", (), {"shared": shared})()
            self.n_spills = None

        def _init_handles(self):
            calls.append("load")
            self.n_spills = 12

    class Fn:
        def __init__(self, shared):
            self.shared = shared

        def warmup(self, *args, grid, **kwargs):
            calls.append((args, grid, kwargs))
            return Compiled(self.shared)
    got = _tuning._device_compiled(Fn(50 * KB), (1, 2), dict(grid=lambda m: (1,), warmup=False, N=3),
                                   dict(BLOCK=64, num_warps=4), 99 * KB)
    assert got == (50 * KB, 12)
    assert calls == [((1, 2), (1,), dict(N=3, BLOCK=64, num_warps=4)), "load"]
    calls.clear()
    assert _tuning._device_compiled(Fn(120 * KB), (), {}, {}, 99 * KB) == (120 * KB, None)
    assert "load" not in calls          # over the limit: never loaded (Triton would raise OutOfResources)


def test_capture_compile_failure_says_what_to_do(monkeypatch):
    """Where compiling or loading a kernel fails inside a CUDA-graph capture, the error says to warm up first."""
    tuner = _tuner([])

    def broken(c):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(_tuning, "_capturing", lambda: True)
    with _tuning.simulated(90, broken), pytest.raises(RuntimeError, match="inside a CUDA graph capture.*warm up"):
        _launch(tuner)


# ------------------------------------------------------------------------------------------------
# Plain launches through _tuning.pick: gMixer's GLU token kernels, the Affine (interpreted, the card simulated
# with the sizes the compile check read at gmixer_24 / resmlp_big_24, triton 3.8)

_GLU_DT = {  # (BLOCK_C, BLOCK_H, num_warps, num_stages) -> arch -> (shared, spills)
    (16, 64, 4, 2): {90: (214 * KB, 0), 80: (214 * KB, None), 86: (214 * KB, None), 120: (214 * KB, None)},
    (16, 64, 8, 2): {90: (84 * KB, 0), 80: (84 * KB, 0), 86: (84 * KB, 24), 120: (84 * KB, 12)},
    (16, 32, 8, 1): {90: (48 * KB, 0), 80: (48 * KB, 0), 86: (48 * KB, 0), 120: (48 * KB, 0)},
}


def _glu_sizes(arch, over=False):
    def compiled(c):
        if "BLOCK_H" not in c:      # the LayerNorm kernels' one entry
            return 4 * KB, 0
        if over:                    # no GLU entry fits
            return 200 * KB, None
        if c["BLOCK_C"] == 32:      # the forward's one entry: 80 KB, no spills on any card
            return 80 * KB, 0
        return _GLU_DT[(c["BLOCK_C"], c["BLOCK_H"], c["num_warps"], c["num_stages"])][arch]
    return compiled


def _spy_picks(monkeypatch):
    picks = []
    real = _tuning.pick

    def spy(fn, table, key, device, args, kwargs):
        got = real(fn, table, key, device, args, kwargs)
        picks.append((fn.__name__ if hasattr(fn, "__name__") else fn.fn.__name__, got))
        return got
    monkeypatch.setattr(_tuning, "pick", spy)
    return picks


def test_glu_tables():
    """gMixer's GLU launches: the sm_90 entry first and unchanged (the H100 report's), then the fallbacks."""
    for kernel in ("fwd", "dt"):
        table = tk.glu_table(kernel, 196, 384, 192, torch.bfloat16)
        assert table[0] == tk.default_config(kernel, 196, 384, 192, torch.bfloat16, glu=True)
        assert table[1:] == [dict(c, fallback=True) for c in tk.GLU_FALLBACK_CONFIGS[kernel]]
    assert tk.glu_table("dt", 196, 384, 192, torch.bfloat16)[0] == dict(BLOCK_C=16, BLOCK_H=64, num_warps=4,
                                                                         num_stages=2)


@pytest.mark.parametrize("arch, dt_tile", [(90, (16, 64, 4, 2)), (80, (16, 64, 8, 2)), (86, (16, 32, 8, 1)),
                                           (120, (16, 32, 8, 1))])
def test_glu_launches_pick_per_card(monkeypatch, arch, dt_tile):
    """The GLU token kernels on a simulated card take the first clean entry of their table (A100: 16x64 on 8
    warps; 99 KB cards: 16x32), and compute the same block as the float64 oracle (fp32 through the kernels,
    as test_gmixer's interpreter check; H = 40 over 64 padded rows: two 32-row chunks at 16x32)."""
    monkeypatch.setattr(gtm, "fast_path", lambda S, dtype: True)
    picks = _spy_picks(monkeypatch)
    B, S, C, H = 2, 37, 40, 40
    torch.manual_seed(arch)
    inputs = [torch.randn(B, S, C, dtype=torch.float64), 1 + 0.2 * torch.randn(C, dtype=torch.float64),
              0.2 * torch.randn(C, dtype=torch.float64), torch.randn(2 * H, S, dtype=torch.float64) / S ** 0.5,
              0.2 * torch.randn(2 * H, dtype=torch.float64), torch.randn(S, H, dtype=torch.float64) / H ** 0.5,
              0.2 * torch.randn(S, dtype=torch.float64)]
    g = torch.randn(B, S, C, dtype=torch.float64)
    out64, grads64 = ref_ops.forward_backward(ref_ops.gmixer_token_mixing, inputs, g, gate_last=True)
    leaves = [t.float().requires_grad_() for t in inputs]
    with _tuning.simulated(arch, _glu_sizes(arch)), count_launches() as n:
        out = mk.gmixer_token_mixing(*leaves, gate_last=True)
        out.backward(g.float())
    assert n["_token_mixing_fwd_tm_kernel"] == 1 and n["_token_mixing_bwd_dt_tm_kernel"] == 1, dict(n)
    tiles = {name: (c["BLOCK_C"], c["BLOCK_H"], c["num_warps"], c["num_stages"]) for name, c in picks
             if name.startswith("_token_mixing")}
    assert tiles == {"_token_mixing_fwd_tm_kernel": (32, 64, 4, 1),
                     "_token_mixing_bwd_dt_tm_kernel": dt_tile}
    assert_close("out", out, out64)
    for i, (leaf, r) in enumerate(zip(leaves, grads64, strict=True)):
        assert_close(f"grad {i}", leaf.grad, r, scale=grads64[5].norm().item() if i == 6 else 0.0)


def test_glu_launch_nothing_fits(monkeypatch):
    monkeypatch.setattr(gtm, "fast_path", lambda S, dtype: True)
    x = torch.randn(2, 37, 40)
    args = [x, torch.ones(40), torch.zeros(40), torch.randn(80, 37), torch.zeros(80), torch.randn(37, 40),
            torch.zeros(37)]
    with _tuning.simulated(86, _glu_sizes(86, over=True)), \
            pytest.raises(NoConfigFits, match=r"_token_mixing_fwd_tm_kernel: no tile config fits RTX 3090"):
        mk.gmixer_token_mixing(*args, gate_last=True)


@pytest.mark.parametrize("arch, tile", [(90, (16, 512)), (80, (16, 512)), (86, (32, 256)), (120, (16, 512))])
def test_affine_forward_pick_per_card(monkeypatch, arch, tile):
    """The Affine forward (resmlp_big_24's C > 256): the 16 x 512 tile spilled 8 B on sm_86 (triton 3.8), so
    that card takes the 32 x 256 fallback; the result is the same y = alpha * x + beta (exact in fp32)."""
    picks = _spy_picks(monkeypatch)

    def compiled(c):
        return (2 * KB, 16 if (c["BLOCK_C"], arch) == (512, 86) else 0)
    B, S, C = 2, 5, 300
    x, a, b = torch.randn(B, S, C), torch.randn(C), torch.randn(C)
    with _tuning.simulated(arch, compiled), count_launches() as n:
        y = affine.affine_forward(x, a, b, torch.float32)
    assert n["_affine_fwd_kernel"] == 1
    assert [(c["BLOCK_M"], c["BLOCK_C"]) for name, c in picks] == [tile]
    torch.testing.assert_close(y, (x.double() * a.double() + b.double()).float(), rtol=1e-6, atol=1e-6)


def test_pick_compiles_nothing_under_the_interpreter():
    """Under TRITON_INTERPRET (the test session's setting) pick takes the first primary entry, even for a CUDA
    device, without compiling (the stand-in's warmup would raise)."""
    if not triton_interpret():
        pytest.skip("an interpreter check")

    class NoCompile:
        __name__ = "_no_compile_kernel"

        def warmup(self, *a, **k):
            raise AssertionError("compiled under the interpreter")
    table = [dict(BLOCK=64, num_warps=4, fallback=True), dict(BLOCK=32, num_warps=4)]
    assert _tuning.pick(NoCompile(), table, ("k",), torch.device("cuda", 0), (), {}) == dict(BLOCK=32, num_warps=4)


def test_layernorm_launches_check_the_card():
    """The LayerNorm statistics and backward (one-entry tables through pick): on a card the entry fits they
    launch and compute the float64 statistics and gradients; on a card it does not fit, an error naming the
    kernel and the card instead of Triton's OutOfResources."""
    from mixer_kernels.ops.layernorm_backward import layernorm_backward
    from mixer_kernels.ops.layernorm_stats import layernorm_stats
    x = torch.randn(2, 7, 40)
    with _tuning.simulated(86, lambda c: (4 * KB, 0)), count_launches() as n:
        mean, rstd = layernorm_stats(x, 1e-6)
    assert n["_layernorm_stats_kernel"] == 1
    x64 = x.double()
    torch.testing.assert_close(mean, x64.mean(-1).flatten().float())
    torch.testing.assert_close(rstd, (x64.var(-1, unbiased=False) + 1e-6).rsqrt().flatten().float())
    w, dn = torch.randn(40), torch.randn(2, 7, 40)
    with _tuning.simulated(120, lambda c: (4 * KB, 0)), count_launches() as n:
        dx, dw, db = layernorm_backward(dn, x, mean, rstd, w)
    assert n["_layernorm_bwd_kernel"] == 1
    xr = x64.clone().requires_grad_()
    wr = w.double().requires_grad_()
    br = torch.zeros(40, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.layer_norm(xr, (40,), wr, br, 1e-6).backward(dn.double())
    for got, ref in ((dx, xr.grad), (dw, wr.grad), (db, br.grad)):
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    with _tuning.simulated(86, lambda c: (120 * KB, None)), \
            pytest.raises(NoConfigFits, match="_layernorm_stats_kernel: no tile config fits RTX 3090"):
        layernorm_stats(x, 1e-6)
    with _tuning.simulated(80, lambda c: (170 * KB, None)), \
            pytest.raises(NoConfigFits, match="_layernorm_bwd_kernel: no tile config fits A100"):
        layernorm_backward(dn, x, mean, rstd, w)


def test_launch_key_follows_the_specialisation():
    x = torch.zeros(64)
    base = _tuning.launch_key((x, 32, 7, 1e-6), dict(FLAG=True))
    assert base == _tuning.launch_key((torch.zeros(64), 48, 9, 1e-5), dict(FLAG=True))   # same specialisation
    assert base != _tuning.launch_key((x[1:], 32, 7, 1e-6), dict(FLAG=True))            # misaligned pointer
    assert base != _tuning.launch_key((x.half(), 32, 7, 1e-6), dict(FLAG=True))         # dtype
    assert base != _tuning.launch_key((x, 33, 7, 1e-6), dict(FLAG=True))                # 16-divisibility
    assert base != _tuning.launch_key((x, 32, 1, 1e-6), dict(FLAG=True))                # == 1
    assert base != _tuning.launch_key((x, 32, 2**31, 1e-6), dict(FLAG=True))            # 64-bit
    assert base != _tuning.launch_key((x, 32, 7, 1e-6), dict(FLAG=False))               # constexpr
