"""The benchmark code imports and runs on CPU: the runner's smoke run (the mixer-kernels path through the
Triton interpreter, checked against eager, no timings shown), and the report code on made-up records
(never written anywhere but a temporary folder)."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow   # ~20 s: the runner in a subprocess
def test_smoke_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "TRITON_INTERPRET")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(tmp_path),
                        "--families", "anchors,token,channel,block,model", "--modes", "fwd+bwd",
                        "--model-sources", "timm", "--model-modes", "infer", "--kernels"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    assert "CPU smoke run: correctness only, no speed claims" in r.stdout
    assert "[1/" in r.stderr and ": running (0 s into the run)" in r.stderr   # a line as each case starts
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["smoke"] is True and data["meta"]["torch"] and data["meta"]["card"]
    families = {rec["family"] for rec in data["results"]}
    assert families == {"anchor", "token", "channel", "block", "model"}
    for rec in data["results"]:
        for p, res in rec["providers"].items():
            assert res["median_ms"] is None and res["rate"] is None, f"{p}: a CPU smoke run reports no timings"
            assert res["status"] in ("ok", "skipped"), f"{rec['family']} {rec['mode']} {p}: {res}"
            if p == "mixer-kernels" and res["status"] == "ok":
                assert res["triton_launches"] > 0 and res["rel_err"] is not None
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert rows and all(row["smoke"] == "True" for row in rows)
    assert "no speed claims" in (tmp_path / "summary.md").read_text()
    kernels = data["results"][2]["providers"]["eager"]["kernels"]      # token mixing, eager: CPU operators
    assert kernels["kernels"] and all(k["us_per_step"] is None for k in kernels["kernels"])
    assert not (tmp_path / "results.png").exists()



@pytest.mark.slow   # ~2 minutes: every stage of the GPU script, dry
def test_gpu_check_dry_run(tmp_path):
    """benchmarks/gpu_check.sh, the one script a GPU session runs, as a dry run without CUDA: every stage
    runs and passes, the files it leaves under $OUT fit what the GPU machine sends back (at most 8 files,
    flat), and the summary table comes last."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "COMPILE_CHECK", "MAX_AUTOTUNE")}
    env.update(OUT=str(tmp_path), PYTHON=sys.executable)
    r = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "no CUDA device: a dry run" in r.stdout
    files = sorted(p.name for p in tmp_path.iterdir())
    assert all((tmp_path / f).is_file() for f in files) and len(files) <= 8, files
    assert {"pytest_gpu.log", "bench.log", "results.json", "summary.md"} <= set(files), files
    tail = r.stdout.strip().splitlines()
    assert tail[-1].startswith("total ") and "| pytest -m gpu | ok |" in r.stdout and "| benchmarks | ok |" in r.stdout
    assert "skipped" in (tmp_path / "pytest_gpu.log").read_text()      # the gpu tests were collected
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["smoke"] is True

def test_saved_memory_is_what_the_ops_promise():
    """benchmarks/saved_memory.py at Mixer-B/16 size, batch 256, bf16, on fake tensors: a fused block
    saves x, the fp32 row statistics of each half and (unless recompute) the channel pre-activation
    [B*S, DC], byte for byte; a timm block saves far more (LN outputs, transposed copies, hidden
    activations)."""
    import timm.models.mlp_mixer as tm

    import mixer_kernels
    from benchmarks.saved_memory import custom_op_dispatch, markdown, model_rows, saved_bytes
    B, S, C, DC = 256, 196, 768, 3072      # nothing of the token MLP's hidden size DS is saved
    block = tm.MixerBlock(C, S).to(torch.bfloat16)
    x = torch.empty(B, S, C, dtype=torch.bfloat16)
    eager_bytes = saved_bytes(block, x)[0]
    for recompute in (False, True):
        fused = mixer_kernels.MixerBlock.from_block(block, recompute=recompute)
        with custom_op_dispatch():
            got, shapes = saved_bytes(fused, x)
        # per half: x in bf16 (the block input, then the token-mixing output) and mean, rstd in fp32
        expected = 2 * (B * S * C * 2 + 2 * B * S * 4) + (0 if recompute else B * S * DC * 2)
        assert got == expected, (recompute, shapes)
    assert eager_bytes > 2.5 * (2 * (B * S * C * 2 + 2 * B * S * 4) + B * S * DC * 2)
    rows = model_rows(["B/16"], 256, "timm")
    assert rows[0]["fused"] < 0.6 * rows[0]["eager"] and rows[0]["fused_recompute"] < rows[0]["fused"]
    assert "| timm B/16 | 256 |" in markdown(rows)


def _fake_records():
    """Two made-up cases, to exercise the number formatting: not measurements."""
    from benchmarks.cases import MK
    def prov(ms, peak=None):
        return dict(status="ok", reason="", rel_err=1e-3, triton_launches=None, median_ms=ms, p20_ms=ms * 0.9,
                    p80_ms=ms * 1.1, rate=None, peak_mib=peak, n_timed=10)
    anchor = dict(family="anchor", name="matmul 8192^3", batch=1, mode="infer", work=2.0 * 8192 ** 3, unit="flop",
                  rate_unit="TFLOP/s", providers={"torch": prov(2.0)}, speedup={}, seconds=1.0)
    anchor["providers"]["torch"]["rate"] = 2.0 * 8192 ** 3 / 2e-3 / 1e12
    case = dict(family="token", name="B/16", batch=256, mode="fwd", work=59.2e9, unit="flop", rate_unit="TFLOP/s",
                providers={MK: prov(0.2, 100.0), "eager": prov(0.8, 300.0),
                           "compile": dict(prov(1.0), status="error", reason="RuntimeError: x", median_ms=None,
                                           p20_ms=None, p80_ms=None)},
                speedup={"eager": 4.0}, seconds=3.0)
    case["providers"][MK]["rate"] = 59.2e9 / 0.2e-3 / 1e12
    case["providers"][MK]["kernels"] = dict(total_us_per_step=120.0, kernels=[
        dict(kernel="_token_mixing_fwd_tm_kernel", calls_per_step=1.0, us_per_step=100.0, share=100 / 120),
        dict(kernel="_layernorm_stats_kernel", calls_per_step=1.0, us_per_step=20.0, share=20 / 120)])
    return [anchor, case]


def test_report_formats(tmp_path):
    from benchmarks.report import add_matmul_percent, markdown_full, markdown_kernels, markdown_summary, write_files
    meta = dict(card="Test Card", compute_capability="9.0", smoke=False, dtype="bfloat16", torch="t", triton="tr",
                cuda="c", python="p", date="d", commit=None, command="x")
    records = _fake_records()
    mm = add_matmul_percent(records)
    meta["matmul_tflops"] = mm
    assert records[1]["providers"]["mixer-kernels"]["pct_matmul"] == pytest.approx(100 * 296.0 / mm)
    fwd, stats = records[1]["providers"]["mixer-kernels"]["kernels"]["kernels"]
    # the fused forward does the block's 2 token matmuls, 2 * 2*B*C*S*DS = 59.2 GFLOP, in 100 us
    assert fwd["tflops"] == pytest.approx(2 * 2 * 256 * 768 * 196 * 384 / 100e-6 / 1e12)
    assert fwd["pct_matmul"] == pytest.approx(100 * fwd["tflops"] / mm)
    assert stats["tflops"] is None and stats["pct_matmul"] is None
    full, summary = markdown_full(meta, records), markdown_summary(meta, records)
    assert "Test Card" in full and "4.00x" in full and "error: RuntimeError: x" in full
    assert "| token B/16 | fwd | 256 | 0.2 |" in summary
    assert "| 3 | token mixing fwd >= 3x eager | 4.00x | yes |" in summary
    assert "| `_token_mixing_fwd_tm_kernel` | 1 | 100.0 | 83% | 592 | 108% |" in markdown_kernels(records)
    written = write_files(str(tmp_path), meta, records, plot=True)
    names = {os.path.basename(p) for p in written}
    assert json.loads((tmp_path / "results.json").read_text())["targets"][0]["met"] is True
    assert {"results.json", "results.csv", "results.md", "summary.md"} <= names
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "results.png" not in names
    else:
        assert (tmp_path / "results.png").stat().st_size > 1000


def test_targets_table():
    """Each issue target is judged from the records the run made, and only from those: made-up records,
    one target met, one missed, the rest not measured."""
    from benchmarks.targets import TARGETS, evaluate, markdown_targets
    records = _fake_records()                   # token B/16 fwd: 4.0x eager; compile failed
    rows = evaluate(records)
    assert len(rows) == len(TARGETS)
    by = {r["target"]: r for r in rows}
    assert by["token mixing fwd >= 3x eager"]["measured"] == 4.0 and by["token mixing fwd >= 3x eager"]["met"]
    assert by["token mixing fwd >= 1.5x torch.compile"]["met"] is None        # compile errored: no speedup
    assert all(r["met"] is None for r in rows if not r["target"].startswith("token mixing fwd "))
    records[1]["speedup"]["eager"] = 2.5
    assert not evaluate(records)[0]["met"]
    table = markdown_targets(records)
    assert "| 3 | token mixing fwd >= 3x eager | 2.50x | **no** |" in table
    assert "| 5 | Mixer-B/16 peak train memory <= 0.6x eager | not measured | — |" in table


def test_failures_are_recorded_per_provider():
    """A provider that fails on its first call or in the middle of the timed rounds is reported as an
    error; the others are still checked and measured; a wrong answer is a mismatch."""
    import torch

    from benchmarks.cases import Built, Case, RunConfig
    from benchmarks.run import cuda_context_lost, run_case

    x = torch.randn(8)

    def raises_after(n):
        calls = []

        def step(i):
            calls.append(i)
            if len(calls) > n:
                raise RuntimeError("boom")
            return (x * 2,)
        return step

    def build(cfg):
        return Built(steps={"eager": lambda i: (x * 2,), "mixer-kernels": raises_after(0),
                            "compile": raises_after(4), "compile-max": lambda i: (x * 3,)})

    cfg = RunConfig(device="cpu", dtype=torch.float32, smoke=True,
                    providers=["mixer-kernels", "eager", "compile", "compile-max"], rounds=2, round_ms=0.0)
    res = run_case(Case("token", "fake", 1, "fwd", 1.0, build), cfg)
    assert res["eager"].status == "ok" and res["eager"].times_ms
    assert res["mixer-kernels"].status == "error" and "boom" in res["mixer-kernels"].reason
    assert res["compile"].status == "error" and res["compile"].rel_err == 0.0
    assert res["compile-max"].status == "mismatch" and res["compile-max"].times_ms
    rec = dict(providers={"p": dict(status="error", reason="RuntimeError: CUDA error: an illegal memory access")})
    assert cuda_context_lost(rec)


def test_smoke_run_refuses_mixer_size_shapes(tmp_path):
    """Without a GPU the kernels are interpreted: a B/16 case would run for many minutes without a word,
    so the runner refuses it at once, naming the option."""
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "TRITON_INTERPRET")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(tmp_path), "--families",
                        "token,channel", "--shapes", "B/16", "--batches", "1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--shapes/--models B/16" in r.stderr and "tiny" in r.stderr, r.stderr[-2000:]
    assert not list(tmp_path.iterdir())


def test_budget_holds_inside_a_case():
    """Past the deadline no new measuring round starts (the first always runs, so the case has numbers)."""
    import time

    from benchmarks.timing import measure
    calls = {"a": 0, "b": 0}

    def step(name):
        def run(i):
            calls[name] += 1
        return run

    steps = {p: step(p) for p in calls}
    kw = dict(rounds=5, round_ms=0.0, cuda=False, on_error=lambda p, e: None, max_iters=2)
    full = measure(steps, list(steps), **kw)
    cut = measure(steps, list(steps), deadline=time.perf_counter() - 1.0, **kw)
    assert {p: len(t) for p, t in full.items()} == {"a": 10, "b": 10}     # 5 rounds of 2 steps
    assert {p: len(t) for p, t in cut.items()} == {"a": 2, "b": 2}        # the first round only
