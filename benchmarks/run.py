"""The benchmark runner: `python -m benchmarks.run [options]` (see --help).

With a CUDA device: times mixer-kernels against eager PyTorch and torch.compile, prints a markdown
table and writes results.{json,csv,md,png} and summary.md under benchmarks/results/<card>/ ($OUT when
set, --out to choose). Without one (or with --smoke): a CPU smoke run at tiny shapes that runs the
mixer-kernels path through the Triton interpreter and checks it against eager; it makes no speed claim.
Exit status 1 if any provider failed, disagreed with eager, or the run was interrupted.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback

os.environ.setdefault("KINETO_LOG_LEVEL", "5")    # the profiler's C++ chatter (--kernels) off stderr

FAMILIES = ("anchors", "token", "channel", "block", "resmlp", "gmlp", "gmixer", "model")


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _ints(s: str) -> list[int]:
    return [int(x) for x in _csv(s)]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="the CPU smoke run (the default without a CUDA device)")
    p.add_argument("--families", type=_csv, default=list(FAMILIES), help=f"comma list of {','.join(FAMILIES)}")
    p.add_argument("--shapes", type=_csv, default=None, help="token/channel/block shapes (default B/16,L/16)")
    p.add_argument("--batches", type=_ints, default=None, help="token/channel/block batches (default 1,8,64,256)")
    p.add_argument("--modes", type=_csv, default=None, help="fwd,fwd+bwd,infer (default all)")
    p.add_argument("--models", type=_csv, default=None, help="model sizes (default B/16,L/16)")
    p.add_argument("--model-sources", type=_csv, default=["ref", "timm"], help="ref (reference/), timm, or both")
    p.add_argument("--model-batches", type=_ints, default=None, help="model batches (default: --batches)")
    p.add_argument("--model-infer-batches", type=_ints, default=None,
                   help="model batches for the infer mode (default: --model-batches), e.g. 1024")
    p.add_argument("--model-modes", type=_csv, default=None,
                   help="model modes: fwd,fwd+bwd,infer,train (default: --modes); train = forward, backward and "
                        "an AdamW step under autocast with fp32 weights")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                   help="default bf16 (fp32 in the smoke run)")
    p.add_argument("--providers", type=_csv, default=None,
                   help="mixer-kernels,eager,compile[,compile-max][,mixer-kernels+compile] (default "
                        "mixer-kernels,eager,compile; smoke: mixer-kernels,eager)")
    p.add_argument("--max-autotune", action="store_true",
                   help="add torch.compile(mode='max-autotune-no-cudagraphs') (long compile times)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved measuring rounds per case")
    p.add_argument("--round-ms", type=float, default=100.0, help="target time per provider per round")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no new case after this many seconds (the rest are listed as skipped), and no "
                        "new measuring round inside a case (a running check or compile is not cut short)")
    p.add_argument("--out", default=None, help="results folder (default $OUT, else benchmarks/results/<card>/)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--kernels", action="store_true",
                   help="also profile 3 steps per provider (after timing): device time per kernel")
    return p.parse_args(argv)


def _config(a):
    import torch

    from .cases import DTYPES, MK, RunConfig
    if a.smoke or not torch.cuda.is_available():
        a.smoke = True
        providers = a.providers or [MK, "eager"]
        dtype = DTYPES[a.dtype or "fp32"]
        return RunConfig(device="cpu", dtype=dtype, smoke=True, providers=providers, rounds=1, round_ms=0.0,
                         kernels=a.kernels)
    providers = a.providers or [MK, "eager", "compile"]
    if a.max_autotune and "compile-max" not in providers:
        providers.append("compile-max")
    props = torch.cuda.get_device_properties(0)
    return RunConfig(device="cuda", dtype=DTYPES[a.dtype or "bf16"], smoke=False, providers=providers,
                     rounds=a.rounds, round_ms=a.round_ms, l2_bytes=int(getattr(props, "L2_cache_size", 50 << 20)),
                     kernels=a.kernels)


def build_cases(a, cfg):
    from . import anchors, block, gmixer, gmlp, mixing, models, resmlp
    from .cases import MODEL_MODES, MODES, PROVIDERS, SHAPES
    smoke = cfg.smoke
    shapes = a.shapes or (["tiny"] if smoke else ["B/16", "L/16"])
    batches = a.batches or ([2] if smoke else [1, 8, 64, 256])
    modes = a.modes or list(MODES)
    sizes = a.models or (["tiny"] if smoke else ["B/16", "L/16"])
    big = [s for s in dict.fromkeys(shapes + sizes) if s != "tiny"]
    if smoke and big:
        raise SystemExit(f"--shapes/--models {','.join(big)}: without a GPU (or with --smoke) the runner interprets "
                         f"the kernels in Python, which cannot finish Mixer-size cases (one B/16 channel case ran "
                         f"over 9 minutes on 2 CPU cores); the smoke run takes --shapes tiny --models tiny (the "
                         f"default there). Time real shapes on a CUDA GPU.")
    for name, values, allowed in (("--shapes", shapes + sizes, SHAPES), ("--modes", modes, MODES),
                                  ("--model-modes", a.model_modes or [], MODEL_MODES),
                                  ("--families", a.families, FAMILIES)):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise SystemExit(f"{name}: unknown {bad}; expected some of {list(allowed)}")
    bad = [p for p in cfg.providers if p not in PROVIDERS]
    if bad:
        raise SystemExit(f"--providers: unknown {bad}; expected some of {list(PROVIDERS)}")
    cases = []
    for fam in a.families:
        if fam == "anchors":
            cases += anchors.cases(smoke)
        elif fam in mixing.FAMILIES:
            cases += mixing.cases(fam, shapes, batches, modes)
        elif fam == "block":
            cases += block.cases(shapes, batches, modes)
        elif fam == "resmlp":     # ResMLP-24 on a GPU, the tiny shape in the smoke run (its own shape table)
            cases += resmlp.cases(["tiny"] if smoke else ["resmlp_24"], batches, modes)
        elif fam == "gmlp":       # gMLP-S/16 on a GPU, the tiny shape in the smoke run (its own shape table)
            cases += gmlp.cases(["tiny"] if smoke else ["gmlp_s16"], batches, modes)
        elif fam == "gmixer":     # gMixer-24 on a GPU, the tiny shape in the smoke run (its own shape table)
            cases += gmixer.cases(["tiny"] if smoke else ["gmixer_24"], batches, modes)
        elif fam == "model":
            model_batches, model_modes = a.model_batches or batches, a.model_modes or modes
            cases += models.cases(a.model_sources, sizes, model_batches, [m for m in model_modes if m != "infer"])
            if "infer" in model_modes:
                cases += models.cases(a.model_sources, sizes, a.model_infer_batches or model_batches, ["infer"])
    return cases


def run_case(case, cfg) -> dict:
    """Build, check, time and measure one case; never raises (failures are recorded per provider)."""
    import torch

    from .cases import MK
    from .report import check_tolerance
    from .timing import ProviderResult, first_call, max_rel_err, measure, peak_memory_mib
    cuda = cfg.cuda
    res: dict[str, ProviderResult] = {}

    def fail(p, e):
        first_line = str(e).splitlines()[0][:300] if str(e) else ""
        r = res.setdefault(p, ProviderResult())        # keeps what was measured before the failure
        r.status, r.reason = "error", f"{type(e).__name__}: {first_line}"
        print(f"  {p} failed on {case.label}:\n{traceback.format_exc()}", file=sys.stderr)

    try:
        built = case.build(cfg)
    except Exception as e:
        for p in (["torch"] if case.family == "anchor" else cfg.providers):
            fail(p, e)
        return res
    for p, why in built.skipped.items():
        res[p] = ProviderResult(status="skipped", reason=why)
    outs = {}
    for p, step in built.steps.items():
        try:
            outs[p], launches = first_call(step, p, count_launches=p.startswith(MK), cuda=cuda)
            res[p] = ProviderResult(triton_launches=launches)
            if p.startswith(MK) and not launches:
                res[p] = ProviderResult(status="error", triton_launches=launches,
                                        reason="no Triton kernel launched (a PyTorch fallback answered)")
        except Exception as e:
            fail(p, e)
    ref = outs.get(built.reference) if built.reference else None
    if ref is not None:
        tol = check_tolerance(cfg.dtype, case.family)
        for p, o in outs.items():
            if p == built.reference or res[p].status != "ok":
                continue
            try:
                res[p].rel_err = err = max_rel_err(o, ref)
            except Exception as e:
                fail(p, e)
                continue
            if not err <= tol:
                res[p].status, res[p].reason = "mismatch", f"differs from {built.reference} by {err:.2e} > {tol:g}"
    del outs, ref
    timed = [p for p in built.steps if res[p].status in ("ok", "mismatch")]
    times = measure(built.steps, timed, rounds=cfg.rounds, round_ms=cfg.round_ms, cuda=cuda, on_error=fail,
                    max_iters=2 if cfg.smoke else 50, deadline=cfg.deadline)
    for p, t in times.items():
        res[p].times_ms = t
    if cuda:
        for p in times:
            try:
                res[p].peak_mib = peak_memory_mib(built.steps[p])
            except Exception as e:
                fail(p, e)
    if cfg.kernels and cfg.deadline is not None and time.perf_counter() > cfg.deadline:
        print(f"  time budget spent: no per-kernel profile for {case.label}", file=sys.stderr, flush=True)
    elif cfg.kernels:
        from .kernel_times import kernel_times
        for p in times:
            if res[p].status in ("ok", "mismatch"):
                try:
                    res[p].kernels = kernel_times(built.steps[p], cuda)
                except Exception as e:      # a profiler problem is reported, not a provider failure
                    res[p].kernels = dict(error=f"{type(e).__name__}: {e}"[:300])
    for p in built.steps:
        if p in res:
            res[p].n_sets = built.n_sets
    del built
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return res


STICKY_CUDA_ERRORS = ("illegal memory access", "unspecified launch failure", "illegal instruction",
                      "misaligned address", "device-side assert", "CUDA error: an illegal")


def cuda_context_lost(rec: dict) -> str | None:
    """The reason, if a provider failed with an error that leaves the CUDA context unusable (every later
    CUDA call fails): the run stops instead of reporting a cascade of unrelated failures."""
    for p, r in rec["providers"].items():
        if r["status"] == "error" and any(m in r["reason"] for m in STICKY_CUDA_ERRORS):
            return f"{p}: {r['reason']}"
    return None


def _progress(k, n, case, rec, smoke, seconds):
    parts = []
    for p, r in rec["providers"].items():
        if r["status"] == "skipped":
            parts.append(f"{p} skipped")
        elif r["status"] != "ok":
            parts.append(f"{p} {r['status'].upper()}: {r['reason']}")
        elif smoke:
            err = "" if r["rel_err"] is None else f" err {r['rel_err']:.1e}"
            launches = "" if r["triton_launches"] is None else f", {r['triton_launches']} Triton launches"
            parts.append(f"{p} ok{err}{launches}")
        elif r["median_ms"] is not None:
            sp = rec["speedup"].get(p)
            parts.append(f"{p} {r['median_ms']:.4g} ms" + (f" (mk x{sp:.2f})" if sp else ""))
    print(f"[{k}/{n}] {case.label}: {', '.join(parts)}  ({seconds:.1f} s)", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    import torch
    if a.smoke or not torch.cuda.is_available():
        # Before anything imports mixer_kernels' kernel modules: @triton.jit reads it at decoration time.
        os.environ["TRITON_INTERPRET"] = "1"
        os.environ["MIXER_KERNELS_POISON"] = "1"     # NaN-filled outputs: an unwritten element fails the check
    else:
        from mixer_kernels._config import poison_outputs, triton_interpret  # imports no kernel module
        if triton_interpret():
            raise SystemExit(f"TRITON_INTERPRET={os.environ['TRITON_INTERPRET']} is set: unset it to time the "
                             f"compiled kernels on the GPU")
        if poison_outputs():
            os.environ.pop("MIXER_KERNELS_POISON")
            print("MIXER_KERNELS_POISON ignored: NaN-filling outputs would be timed", file=sys.stderr)
    cfg = _config(a)

    from .report import SMOKE_BANNER, add_matmul_percent, card_slug, case_record, environment, write_files
    for attr in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, attr):
            setattr(torch._dynamo.config, attr, 64)
    meta = environment(cfg, argv)
    meta["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    meta["providers"] = cfg.providers
    meta["env"] = {k: os.environ[k] for k in ("MIXER_KERNELS_NVTX", "MIXER_KERNELS_AUTOTUNE", "MIXER_KERNELS_POISON",
                                               "TRITON_INTERPRET") if k in os.environ}
    out_dir = a.out or os.environ.get("OUT") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "cpu-smoke" if cfg.smoke else card_slug(meta["card"]))
    if cfg.smoke:
        print(SMOKE_BANNER, file=sys.stderr)
    cases = build_cases(a, cfg)
    print(f"{len(cases)} cases on {meta['card']} ({meta['dtype']}), providers {', '.join(cfg.providers)}; "
          f"results to {out_dir}", file=sys.stderr, flush=True)
    records, failed, interrupted, lost = [], False, False, None
    t_start = time.perf_counter()
    if a.budget_s is not None:
        cfg.deadline = t_start + a.budget_s
    for k, case in enumerate(cases, 1):
        over = a.budget_s is not None and time.perf_counter() - t_start > a.budget_s
        if over or lost:
            from .timing import ProviderResult
            why = f"CUDA context lost ({lost})" if lost else f"time budget of {a.budget_s:g} s spent"
            res = {p: ProviderResult(status="skipped", reason=why)
                   for p in (["torch"] if case.family == "anchor" else cfg.providers)}
            records.append(case_record(case, cfg, res, 0.0))
            print(f"[{k}/{len(cases)}] {case.label}: skipped ({why})", file=sys.stderr, flush=True)
            continue
        t0 = time.perf_counter()
        print(f"[{k}/{len(cases)}] {case.label}: running ({t0 - t_start:.0f} s into the run)", file=sys.stderr,
              flush=True)
        try:
            torch._dynamo.reset()
            res = run_case(case, cfg)
        except KeyboardInterrupt:
            print(f"[{k}/{len(cases)}] {case.label}: interrupted; writing what was measured", file=sys.stderr)
            interrupted = True
            break
        rec = case_record(case, cfg, res, time.perf_counter() - t0)
        records.append(rec)
        failed |= any(r["status"] in ("error", "mismatch") for r in rec["providers"].values())
        lost = None if cfg.smoke else cuda_context_lost(rec)
        meta["matmul_tflops"] = add_matmul_percent(records)
        _progress(k, len(cases), case, rec, cfg.smoke, time.perf_counter() - t0)
        write_files(out_dir, meta, records, plot=False)     # partial results survive a timeout
    meta["interrupted"] = interrupted
    meta["seconds"] = round(time.perf_counter() - t_start, 1)
    meta["matmul_tflops"] = add_matmul_percent(records)
    written = write_files(out_dir, meta, records, plot=not a.no_plot)
    with open(os.path.join(out_dir, "results.md")) as f:
        print(f.read())
    if cfg.smoke:
        print(f"{SMOKE_BANNER}.")
    print(f"wrote {', '.join(written)}", file=sys.stderr)
    return 1 if (failed or interrupted) else 0


if __name__ == "__main__":
    sys.exit(main())
